"""Recording the backward pass: the VJP table run on Tensors, for ``create_graph=True``.

A first-order backward calls each op's ``backward(ctx, *grads)`` on backend arrays.
With ``create_graph=True`` the engine calls the *same* function on Tensors instead:

* the gradients arriving at the op's outputs are Tensors (with their own graph);
* ``ctx.saved_tensors`` holds, for each array ``forward`` saved, the Tensor it was: an
  input (connected to the node that made it, or the leaf itself) or an output of this
  very node, so a VJP like Tanh's ``g · (1 - y²)`` depends on ``x`` through ``y``;
* ``ctx.xp`` is :class:`DifferentiableArrays`, functions with NumPy's names and
  signatures made of recorded ops.

Every op the VJP applies is then recorded like any other, so the gradients it returns
can be differentiated again, to any order, without a second table of derivatives. What
cannot be recorded raises :class:`DoubleBackwardError` naming the op.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from . import backend
from .tensor import Tensor

_NUMBERS = (int, float)


class DoubleBackwardError(RuntimeError):
    """An op's backward cannot be recorded, so ``create_graph=True`` cannot go through it."""


def _constant(value: Any, device: str) -> Any:
    """A backend array as a Tensor without gradient; Tensors and Python scalars unchanged."""
    if isinstance(value, Tensor) or not hasattr(value, "dtype"):
        return value
    return Tensor._make(value, device)


class DifferentiableArrays:
    """``ctx.xp`` under ``create_graph=True``: the array functions the VJPs use, on Tensors.

    Each function takes Tensors (or backend arrays, treated as constants) and returns
    Tensors, recorded when an argument requires grad. Only what a VJP needs is here.
    """

    def __init__(self, device: str):
        self.device = device

    def __getattr__(self, name: str) -> Any:
        raise DoubleBackwardError(
            f"under create_graph=True, ctx.xp is the differentiable namespace, which has no {name!r}; "
            "use the functions it has (exp, log, tanh, sqrt, abs, sign, maximum, where, zeros, ones, "
            "zeros_like, ones_like, broadcast_to, expand_dims, swapaxes, concatenate, stack) and "
            "arithmetic operators"
        )

    def _tensor(self, value: Any) -> Any:
        return _constant(value, self.device)

    # elementwise (of a Python number, a Python number: it must not change a Tensor's dtype)
    def exp(self, x):
        return math.exp(x) if isinstance(x, _NUMBERS) else self._tensor(x).exp()

    def log(self, x):
        return math.log(x) if isinstance(x, _NUMBERS) else self._tensor(x).log()

    def tanh(self, x):
        return math.tanh(x) if isinstance(x, _NUMBERS) else self._tensor(x).tanh()

    def sqrt(self, x):
        return math.sqrt(x) if isinstance(x, _NUMBERS) else self._tensor(x).sqrt()

    def abs(self, x):
        return abs(x) if isinstance(x, _NUMBERS) else self._tensor(x).abs()

    def sign(self, x):
        """Piecewise constant: no gradient."""
        x = self._tensor(x)
        xp = backend.get_array_module(x.device)
        return Tensor._make(xp.sign(x.data), x.device)

    def maximum(self, a, b):
        from .tensor import maximum

        return maximum(self._tensor(a), self._tensor(b))

    def where(self, condition, a, b):
        from .tensor import where

        condition = condition.data if isinstance(condition, Tensor) else condition
        return where(Tensor._make(condition, self.device), self._tensor(a), self._tensor(b))

    # constants
    def zeros(self, shape, dtype=None):
        xp = backend.get_array_module(self.device)
        return Tensor._make(xp.zeros(shape, dtype=dtype), self.device)

    def ones(self, shape, dtype=None):
        xp = backend.get_array_module(self.device)
        return Tensor._make(xp.ones(shape, dtype=dtype), self.device)

    def zeros_like(self, x, dtype=None):
        return self.zeros(tuple(x.shape), dtype=dtype or x.dtype)

    def ones_like(self, x, dtype=None):
        return self.ones(tuple(x.shape), dtype=dtype or x.dtype)

    # shape
    def broadcast_to(self, x, shape):
        return self._tensor(x).expand(*shape)

    def expand_dims(self, x, axis):
        x = self._tensor(x)
        return x.unsqueeze(axis) if isinstance(axis, int) else x.reshape(*_expanded_shape(x.shape, axis))

    def swapaxes(self, x, axis1, axis2):
        return self._tensor(x).swapaxes(axis1, axis2)

    def concatenate(self, arrays, axis=0):
        from .tensor import cat

        return cat([self._tensor(a) for a in arrays], axis=axis)

    def stack(self, arrays, axis=0):
        from .tensor import stack

        return stack([self._tensor(a) for a in arrays], axis=axis)


def _expanded_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[int]:
    """NumPy's expand_dims with several axes: size-1 axes at ``axes`` of the result."""
    ndim = len(shape) + len(axes)
    positions = {a % ndim for a in axes}
    sizes = iter(shape)
    return [1 if i in positions else next(sizes) for i in range(ndim)]


_namespaces: dict[str, DifferentiableArrays] = {}


def differentiable_arrays(device: str) -> DifferentiableArrays:
    namespace = _namespaces.get(device)
    if namespace is None:
        namespace = _namespaces[device] = DifferentiableArrays(device)
    return namespace


class GraphContext:
    """The view of a node that its ``backward`` sees under ``create_graph=True``.

    ``saved_tensors`` are Tensors (see :func:`saved_as_tensors`), ``xp`` is the
    differentiable namespace; everything else (``needs_input_grad``, what forward
    stored as attributes) is read from the node itself.
    """

    def __init__(self, node: Any, saved: tuple):
        self._node = node
        self.saved_tensors = saved
        self.xp = differentiable_arrays(node.device)
        self.needs_input_grad = node.needs_input_grad

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._node, name)
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind is not None and kind in "fc" and not isinstance(value, Tensor):
            raise DoubleBackwardError(
                f"{self._node.name}.backward reads ctx.{name}, a floating-point array that forward stored "
                "as an attribute: create_graph=True cannot follow how it depends on the inputs. "
                f"Save it with ctx.save_for_backward if it is an input or output of forward, else "
                f"recompute it in backward from those; or {_advice(self._node.function)}"
            )
        return value


def _advice(function: type) -> str:
    """How to make ``function`` twice differentiable, or to say plainly that it is not."""
    return (
        f"to make it twice differentiable, {function.create_graph_advice} (or set "
        f"{function.__name__}.differentiable_backward = False to mark it first-order only)"
    )


_role_cache: dict[type, tuple] = {}


def declared_roles(function: type) -> tuple:
    """A built-in op's ``saves`` (parameter names, ``"y"``) as ``("input", i)``/``("output", 0)``."""
    roles = _role_cache.get(function)
    if roles is None:
        parameters = list(inspect.signature(function.forward).parameters)[1:]  # after ctx
        roles = tuple(("output", 0) if name == "y" else ("input", parameters.index(name)) for name in function.saves)
        _role_cache[function] = roles
    return roles


def saved_as_tensors(node: Any) -> tuple:
    """The node's saved arrays as the Tensors they were in forward, connected to the graph."""
    saved = node.saved_tensors
    if not saved:
        return ()
    function = node.function
    roles = declared_roles(function) if function.saves is not None else node.saved_roles
    if roles is None or len(roles) != len(saved):
        raise DoubleBackwardError(
            f"{node.name}: the engine does not know what its saved arrays are, so create_graph=True "
            f"cannot connect them to the graph; {_advice(function)}"
        )
    tensors = []
    for position, (array, role) in enumerate(zip(saved, roles)):
        if role is None:
            raise DoubleBackwardError(
                f"{node.name}.forward saved an array (saved_tensors[{position}], shape "
                f"{tuple(getattr(array, 'shape', ()))}) that is neither one of its inputs nor its output, "
                "so create_graph=True cannot follow how it depends on the inputs and its second "
                f"derivative would be wrong; {_advice(function)}"
            )
        if not hasattr(array, "dtype") or isinstance(array, Tensor):
            tensors.append(array)  # a Python scalar argument: a constant
            continue
        kind, index = role
        if kind == "output":
            if not hasattr(array, "ndim") or array.ndim == 0:  # a NumPy scalar from a 0-d result
                array = backend.get_array_module(node.output_device).asarray(array)
            tensors.append(Tensor._make(array, node.output_device, True, node, index))
            continue
        edge = node.edges[index]
        if edge is None:
            tensors.append(Tensor._make(array, node.device))
        elif isinstance(edge, Tensor):  # a leaf: itself, as long as it still holds that array
            if edge.data is not array:
                raise DoubleBackwardError(
                    f"{node.name}: the leaf tensor of input {index} no longer holds the array forward "
                    "saw (its .data was replaced), so its second derivative cannot be recorded"
                )
            tensors.append(edge)
        else:
            parent, output_index = edge
            tensors.append(Tensor._make(array, parent.output_device, True, parent, output_index))
    return tuple(tensors)


def recorded_backward(node: Any, output_grads: list) -> tuple:
    """Run ``node``'s backward on Tensors so that its ops are recorded (``create_graph``)."""
    function = node.function
    if not function.differentiable_backward:
        raise DoubleBackwardError(
            f"{node.name}.backward is not differentiable ({node.name}.differentiable_backward is False), "
            f"so backward(create_graph=True) cannot record it: {function.create_graph_advice}"
        )
    grads = [_constant(g, node.output_device) for g in output_grads]
    context = GraphContext(node, saved_as_tensors(node))
    try:
        input_grads = function.backward(context, *grads)
    except DoubleBackwardError:
        raise
    except (TypeError, AttributeError) as error:
        raise DoubleBackwardError(
            f"{node.name}.backward failed when run on Tensors for create_graph=True ({type(error).__name__}: "
            f"{error}); {_advice(function)}"
        ) from error
    if type(input_grads) is not tuple:
        input_grads = (input_grads,)
    for position, grad in enumerate(input_grads):
        if grad is not None and not isinstance(grad, Tensor):
            raise DoubleBackwardError(
                f"{node.name}.backward returned a {type(grad).__name__} for input {position} under "
                "create_graph=True, not a Tensor computed from its arguments, so its derivative "
                f"would be lost; {_advice(function)}"
            )
    return input_grads
