"""Function transforms: vjp, jvp, hvp, jacobian and hessian of a function of Tensors.

Argument order and result structure are those of ``torch.autograd.functional``:
``inputs`` is a Tensor or a tuple of Tensors, ``fn(*inputs)`` returns a Tensor or a
tuple of Tensors, and every result mirrors the structure it belongs to (a Tensor for
a Tensor, a tuple for a tuple). Each transform is a few calls of ``grad``:

* ``vjp``: one reverse pass, ``vᵀ J``;
* ``jvp``: ``J v`` by the double-VJP trick: ``g(u) = uᵀ J`` is linear in ``u``, so its
  VJP with ``v`` is ``J v`` (two reverse passes; true forward mode would need one);
* ``hvp``: ``vᵀ H`` for a scalar ``fn``, the VJP of the gradient (reverse over reverse);
* ``jacobian``: one VJP per output element, stacked;
* ``hessian``: the Jacobian of the gradient.

The inputs are differentiated as fresh leaves sharing their data, so nothing reaches
their ``.grad``; with ``create_graph=True`` an input that requires grad is used as it
is, and the results stay connected to it (to differentiate them again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .autograd import grad
from .creation import full, zeros
from .tensor import Tensor, stack


def _as_tuple(value: Any, what: str, transform: str) -> tuple[bool, tuple[Tensor, ...]]:
    """(was it a single Tensor, the Tensors as a tuple), checking every entry is a Tensor."""
    single = isinstance(value, Tensor)
    values = (value,) if single else value
    if not isinstance(values, (tuple, list)):
        raise TypeError(f"{transform}: {what} must be a Tensor or a tuple of Tensors, got {type(value).__name__}")
    for position, entry in enumerate(values):
        if not isinstance(entry, Tensor):
            raise TypeError(f"{transform}: {what}[{position}] must be a Tensor, got {type(entry).__name__}")
    return single, tuple(values)


def _filled(like: Tensor, value: float) -> Tensor:
    """A Tensor shaped like ``like`` (same dtype, device) holding ``value`` everywhere."""
    return full(like.shape, value, dtype=like.dtype, device=like.device)


def _mirror(single: bool, values: Any) -> Any:
    return values[0] if single else tuple(values)


def _prepare(inputs: tuple[Tensor, ...], create_graph: bool, transform: str) -> tuple[Tensor, ...]:
    """The inputs as leaves to differentiate with respect to (see the module docstring)."""
    prepared = []
    for position, x in enumerate(inputs):
        if x.dtype.kind not in "fc":
            raise TypeError(
                f"{transform}: inputs[{position}] is {x.dtype}; only floating-point inputs can be differentiated"
            )
        prepared.append(x if create_graph and x.requires_grad else Tensor._make(x.data, x.device, True))
    return tuple(prepared)


def _finish(values: tuple, create_graph: bool) -> tuple:
    """Results cut from the graph unless ``create_graph`` (as torch.autograd.functional)."""
    return values if create_graph else tuple(v.detach() for v in values)


def _check_like(vectors: tuple[Tensor, ...], like: tuple[Tensor, ...], name: str, of: str, transform: str) -> None:
    if len(vectors) != len(like):
        raise ValueError(f"{transform}: v has {len(vectors)} entries but {of} has {len(like)}")
    for position, (vector, target) in enumerate(zip(vectors, like)):
        if vector.shape != target.shape:
            raise ValueError(
                f"{transform}: {name}[{position}] has shape {vector.shape} but {of}[{position}] "
                f"has shape {target.shape}"
            )


def _default_v(v: Any, like: tuple[Tensor, ...], of: str, transform: str) -> tuple[bool, tuple[Tensor, ...]]:
    """``v``, or the 1 it may default to when ``like`` is a single one-element Tensor."""
    if v is not None:
        single, vectors = _as_tuple(v, "v", transform)
        _check_like(vectors, like, "v", of, transform)
        return single, vectors
    if len(like) != 1 or like[0].size != 1:
        raise ValueError(f"{transform}: v may be omitted only when {of} is a single Tensor with one element")
    return True, (_filled(like[0], 1.0),)


def _vjp_of(outputs: tuple[Tensor, ...], inputs: tuple[Tensor, ...], vectors: tuple, create_graph: bool) -> tuple:
    """Σ_k v_kᵀ d(outputs_k)/d(inputs); zeros where no output depends on an input."""
    pairs = [(out, vector) for out, vector in zip(outputs, vectors) if out.requires_grad]
    if not pairs:
        return tuple(zeros(*x.shape, dtype=x.dtype, device=x.device) for x in inputs)
    return grad([p[0] for p in pairs], list(inputs), [p[1] for p in pairs], create_graph=create_graph)


def vjp(fn: Callable, inputs: Any, v: Any = None, create_graph: bool = False) -> tuple[Any, Any]:
    """``(fn(*inputs), vᵀ J)``: the vector-Jacobian product, shaped like ``inputs``.

    ``v`` is shaped like ``fn``'s output (a Tensor or tuple); it may be omitted for a
    one-element output.
    """
    single_input, xs = _as_tuple(inputs, "inputs", "vjp")
    xs = _prepare(xs, create_graph, "vjp")
    single_output, outputs = _as_tuple(fn(*xs), "fn's output", "vjp")
    _, vectors = _default_v(v, outputs, "fn's output", "vjp")
    result = _vjp_of(outputs, xs, vectors, create_graph)
    return _mirror(single_output, _finish(outputs, create_graph)), _mirror(single_input, _finish(result, create_graph))


def jvp(fn: Callable, inputs: Any, v: Any = None, create_graph: bool = False) -> tuple[Any, Any]:
    """``(fn(*inputs), J v)``: the Jacobian-vector product (forward mode), shaped like the output.

    Computed by the double-VJP trick: with ``u`` a dummy output gradient,
    ``g(u) = uᵀ J`` (one reverse pass, recorded), and ``J v`` is the VJP of ``g``
    with ``v``. ``v`` is shaped like ``inputs``; it may be omitted for a one-element input.
    """
    single_input, xs = _as_tuple(inputs, "inputs", "jvp")
    xs = _prepare(xs, create_graph, "jvp")
    _, vectors = _default_v(v, xs, "inputs", "jvp")
    single_output, outputs = _as_tuple(fn(*xs), "fn's output", "jvp")
    dummies = tuple(_filled(out, 0.0).requires_grad_() for out in outputs)
    pulled = _vjp_of(outputs, xs, dummies, create_graph=True)  # uᵀ J, linear in u
    pushed = _vjp_of(pulled, dummies, vectors, create_graph)  # d(uᵀ J v)/du = J v
    return _mirror(single_output, _finish(outputs, create_graph)), _mirror(single_output, _finish(pushed, create_graph))


def _scalar_output(fn: Callable, xs: tuple[Tensor, ...], transform: str) -> Tensor:
    output = fn(*xs)
    if not isinstance(output, Tensor) or output.size != 1:
        shape = output.shape if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"{transform}: fn must return a Tensor with a single element, got {shape}")
    return output


def hvp(fn: Callable, inputs: Any, v: Any = None, create_graph: bool = False) -> tuple[Tensor, Any]:
    """``(fn(*inputs), vᵀ H)`` for a scalar ``fn``: the Hessian-vector product (reverse over reverse).

    The Hessian is symmetric for a twice continuously differentiable ``fn``, so this is
    also ``H v``. It costs two reverse passes and never forms ``H``.
    """
    single_input, xs = _as_tuple(inputs, "inputs", "hvp")
    xs = _prepare(xs, create_graph, "hvp")
    _, vectors = _default_v(v, xs, "inputs", "hvp")
    output = _scalar_output(fn, xs, "hvp")
    gradients = _vjp_of((output,), xs, (None,), create_graph=True)
    result = _vjp_of(gradients, xs, vectors, create_graph)
    return _finish((output,), create_graph)[0], _mirror(single_input, _finish(result, create_graph))


def _jacobian_rows(output: Tensor, xs: tuple[Tensor, ...], create_graph: bool) -> list[Tensor]:
    """d(output)/d(x_i) for each input, shaped ``output.shape + x_i.shape``: one VJP per output element."""
    if not output.requires_grad or output.size == 0:
        return [zeros(*output.shape, *x.shape, dtype=x.dtype, device=x.device) for x in xs]
    rows: list[list[Tensor]] = [[] for _ in xs]
    seed = _filled(output, 0.0).data
    flat = seed.reshape(-1)  # a view: setting its entries sets the seed's
    for element in range(output.size):
        flat[element] = 1
        seed_tensor = Tensor._make(seed.copy(), output.device)
        grads = grad([output], list(xs), [seed_tensor], retain_graph=True, create_graph=create_graph)
        flat[element] = 0
        for i, g in enumerate(grads):
            rows[i].append(g)
    return [stack(row).reshape(*output.shape, *x.shape) for row, x in zip(rows, xs)]


def jacobian(fn: Callable, inputs: Any, create_graph: bool = False) -> Any:
    """d fn / d inputs: for output k and input i a Tensor of shape ``out_k.shape + in_i.shape``.

    A single output and input give one Tensor; a tuple of inputs a tuple over inputs;
    a tuple of outputs a tuple over outputs (of Tensors, or of tuples over inputs).
    """
    single_input, xs = _as_tuple(inputs, "inputs", "jacobian")
    xs = _prepare(xs, create_graph, "jacobian")
    single_output, outputs = _as_tuple(fn(*xs), "fn's output", "jacobian")
    blocks = [
        _mirror(single_input, _finish(tuple(_jacobian_rows(out, xs, create_graph)), create_graph)) for out in outputs
    ]
    return _mirror(single_output, blocks)


def hessian(fn: Callable, inputs: Any, create_graph: bool = False) -> Any:
    """d² fn / d inputs² for a scalar ``fn``: the Jacobian of its gradient.

    One input gives a Tensor of shape ``in.shape + in.shape``; a tuple of inputs a
    tuple of tuples, entry ``[i][j]`` of shape ``in_i.shape + in_j.shape``.
    """
    single_input, xs = _as_tuple(inputs, "inputs", "hessian")

    def gradient(*leaves: Tensor) -> tuple[Tensor, ...]:
        output = _scalar_output(fn, leaves, "hessian")
        return tuple(_vjp_of((output,), leaves, (None,), create_graph=True))

    blocks = jacobian(gradient, xs, create_graph=create_graph)
    return blocks[0][0] if single_input else blocks
