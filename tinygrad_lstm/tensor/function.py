"""``Function``: an op written as forward on raw arrays plus its vector-Jacobian product.

Every built-in op is a ``Function`` subclass (see ``ops.py``), and so is any op a user
writes: what a user writes is exactly what the engine does.

    class Square(Function):
        @staticmethod
        def forward(ctx, x):            # backend arrays in, backend array out
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):        # one gradient per forward input (None = none)
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    y = Square.apply(t)

Positional arguments of ``apply`` that are Tensors are the op's inputs (differentiable
when they require grad); other positional arguments (Python scalars, say) reach
``forward`` unchanged and get no gradient. Keyword arguments are configuration
(``axis=``, ``keepdims=``) and reach ``forward`` as keywords.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from . import backend
from .tensor import Tensor


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True unless inside ``with no_grad():``."""
    return _grad_mode.enabled


@contextlib.contextmanager
def set_grad_enabled(enabled: bool):
    """Record graphs (``True``) or not (``False``) inside the ``with`` block."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = bool(enabled)
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad():
    """``with no_grad():`` computes without recording anything for backward."""
    return set_grad_enabled(False)


class Context:
    """What one application of a Function remembers for its backward pass.

    ``saved_tensors`` holds what forward saved; ``needs_input_grad[i]`` says whether
    input ``i`` wants a gradient (backward may skip the others); ``xp`` is the array
    module of the device. Forward may store anything else as attributes.

    For the engine, a recorded Context is also a node of the graph: ``edges[i]`` is
    where input ``i``'s gradient goes (a leaf Tensor, a ``(node, output_index)`` pair,
    or None), and ``grads`` collects the gradients of this node's outputs.
    """

    __slots__ = (
        "function",
        "saved_tensors",
        "needs_input_grad",
        "xp",
        "device",
        "output_device",
        "edges",
        "grads",
        "owned",
        "output_meta",
        "multi_output",
        "retained",
        "source",
        "freed",
        "__dict__",
    )

    def __init__(self, function, xp, device):
        self.function = function
        self.xp = xp
        self.device = device
        self.output_device = device
        self.saved_tensors = ()
        self.retained = None
        self.source = None
        self.freed = False

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep ``arrays`` until the backward pass has used them."""
        self.saved_tensors = arrays

    @property
    def name(self) -> str:
        return self.function.__name__

    def release(self) -> None:
        """Drop everything kept for backward, so memory is freed as backward proceeds."""
        self.saved_tensors = ()
        self.edges = ()
        self.grads = None
        self.owned = None
        self.__dict__.clear()
        self.freed = True

    def __repr__(self) -> str:
        return f"<{self.name} node>"


# When set (by testing.localize), each recorded node remembers where user code made it.
record_source = None


class Function:
    """Base class of every op: subclass it and write ``forward`` and ``backward``."""

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define forward(ctx, *inputs)")

    @staticmethod
    def backward(ctx: Context, *grad_outputs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, *grads)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` on the inputs' arrays and record the node if grad is needed."""
        device = None
        requires_grad = False
        arrays = []
        for arg in args:
            if isinstance(arg, Tensor):
                if device is None:
                    device = arg.device
                elif arg.device != device:
                    raise backend.DeviceError(
                        f"{cls.__name__}: inputs are on different devices, {device!r} and "
                        f"{arg.device!r}; move them to one device with .to(device)"
                    )
                requires_grad = requires_grad or arg.requires_grad
                arrays.append(arg.data)
            else:
                arrays.append(arg)
        if device is None:
            device = backend.default_device()
        ctx = Context(cls, backend.get_array_module(device), device)
        output = cls.forward(ctx, *arrays, **kwargs)
        record = requires_grad and _grad_mode.enabled
        if record:
            ctx.needs_input_grad = tuple(isinstance(arg, Tensor) and arg.requires_grad for arg in args)
            ctx.edges = tuple(_edge_to(arg) for arg in args)
            if record_source is not None:
                ctx.source = record_source()
        if isinstance(output, tuple):
            outputs = tuple(_wrap(ctx, out, record, i) for i, out in enumerate(output))
            if record:
                ctx.grads = [None] * len(outputs)
                ctx.owned = [False] * len(outputs)
                ctx.output_meta = tuple((out.data.shape, out.data.dtype) for out in outputs)
                ctx.multi_output = True
            return outputs
        result = _wrap(ctx, output, record, 0)
        if record:
            ctx.grads = [None]
            ctx.owned = [False]
            ctx.output_meta = ((result.data.shape, result.data.dtype),)
            ctx.multi_output = False
        return result


def _edge_to(arg: Any) -> Any:
    """Where the gradient for ``arg`` goes: the leaf itself, its creator node, or None."""
    if not isinstance(arg, Tensor) or not arg.requires_grad:
        return None
    node = arg._node
    if node is None:
        return arg
    return (node, arg._output_index)


def _wrap(ctx: Context, array: Any, record: bool, index: int) -> Tensor:
    xp = ctx.xp
    if not isinstance(array, xp.ndarray):
        array = xp.asarray(array)  # NumPy reductions return scalars, not 0-d arrays
    return Tensor._make(array, ctx.output_device, record, ctx if record else None, index)
