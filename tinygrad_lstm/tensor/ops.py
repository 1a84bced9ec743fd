"""The primitive ops: each one's forward and its vector-Jacobian product (VJP) together.

Read top to bottom, this file is the whole table of derivative rules. Notation: ``g`` is
the gradient arriving at the op's output, ``y`` the op's output. Each ``backward``
returns one gradient per forward input.

Broadcasting is undone once, by the engine (``autograd.sum_to``), after an op's
backward: an elementwise op returns its gradient in the broadcast shape and the engine
sums it back to each input's shape. Ops here never reduce broadcasting themselves.

Every ``backward`` serves first and higher order alike. Normally its arguments are
backend arrays and ``ctx.xp`` is the array module (NumPy or CuPy). Under
``backward(create_graph=True)`` the same code runs on Tensors: the gradients, and the
saved arrays as the Tensors of the inputs/outputs they were (``saves`` names which),
with ``ctx.xp`` a namespace of differentiable functions (``graph_backward.py``), so
the VJP is itself recorded and can be differentiated again. Hence the VJPs below use
only arithmetic, methods Tensors share with arrays, and ``ctx.xp`` functions; masks
(``y > 0``, ``x == max``) are comparisons, which carry no gradient in either case.
"""

from __future__ import annotations

import functools

import numpy as np

from . import backend
from .function import Function
from .tensor import Tensor

# --------------------------------------------------------------------- binary


class Add(Function):
    """y = a + b;  VJP: (g, g)."""

    saves = ()
    row_wise = (0, 1)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b;  VJP: (g, -g)."""

    saves = ()
    row_wise = (0, 1)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a · b;  VJP: (g · b, g · a)."""

    fresh_gradients = True  # (see Function)
    saves = ("a", "b")
    row_wise = (0, 1)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if a is b:  # x · x: both gradients are g · x, so compute (and hold) it once
            grad = g * a
            return grad, grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    """y = a / b;  VJP: (g / b, -g · y / b)."""

    fresh_gradients = True  # (see Function)
    saves = ("b", "y")

    @staticmethod
    def forward(ctx, a, b):
        y = a / b
        ctx.save_for_backward(b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        grad_a = g / b if need_a else None
        grad_b = -g * y / b if need_b else None
        return grad_a, grad_b


class Pow(Function):
    """y = a ** b;  VJP: (g · b · a ** (b - 1), g · y · log a)."""

    fresh_gradients = True  # (see Function)
    saves = ("a", "b", "y")

    @staticmethod
    def forward(ctx, a, b):
        y = a**b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        grad_a = grad_b = None
        if need_a:
            if isinstance(b, (int, float)) and b == 0:  # x ** 0 is constant: 0 · x⁻¹ would be nan at x = 0
                grad_a = ctx.xp.zeros_like(g * a)
            else:
                grad_a = g * b * a ** (b - 1)
        if need_b:
            grad_b = g * y * ctx.xp.log(a)
        return grad_a, grad_b


class Maximum(Function):
    """y = max(a, b);  VJP: g to the larger input, g/2 to each where a == b."""

    fresh_gradients = True  # (see Function)
    saves = ("a", "b")

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        grad_a = g * (a > b) + (g * 0.5) * (a == b)  # the masks are constants: no gradient
        return grad_a, g - grad_a


class Where(Function):
    """y = a where condition else b;  VJP: (g · condition, g · ¬condition, none for the condition)."""

    fresh_gradients = True  # (see Function)

    @staticmethod
    def forward(ctx, a, b, condition):
        ctx.condition = condition
        return ctx.xp.where(condition, a, b)

    @staticmethod
    def backward(ctx, g):
        zero = ctx.xp.zeros((), dtype=g.dtype)
        return ctx.xp.where(ctx.condition, g, zero), ctx.xp.where(ctx.condition, zero, g), None


def _rows_times(a, b):
    """``a @ b`` for a matrix b and a of any rank: the rows of all of a's leading axes as one matrix.

    For a 3-D a and Linear's transposed weight, one (rows × k) GEMM is 1.6-3.5 times
    faster than NumPy's 3-D matmul (measured here for a sequence's input projection,
    from (200, 1, 8) to (64, 64, 256) inputs).
    """
    if a.ndim <= 2:
        return a @ b
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])


class MatMul(Function):
    """y = a @ b;  VJP: (g @ bᵀ, aᵀ @ g), with 1-D operands treated as a row / a column."""

    fresh_gradients = True  # (see Function)
    saves = ("a", "b")

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need_a, need_b = ctx.needs_input_grad
        # Promote 1-D operands to matrices, as NumPy's matmul does, and undo it after.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:  # first: for 1-D @ 1-D, g is 0-d and has no axis -2 yet
            g2 = xp.expand_dims(g2, -1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        grad_a = grad_b = None
        if need_a:
            grad_a = g2 @ xp.swapaxes(b2, -1, -2)
            if a.ndim == 1:
                grad_a = grad_a[..., 0, :]
        if need_b:
            grad_b = xp.swapaxes(a2, -1, -2) @ g2
            if b.ndim == 1:
                grad_b = grad_b[..., 0]
        return grad_a, grad_b


class Linear(Function):
    """y = x @ Wᵀ + b for x (..., in), W (out, in), optional b broadcast to y;  VJP: (g @ W, gᵀ @ x, g).

    A primitive rather than ``x @ W.T + b`` for speed: one node instead of three, the
    bias added in place into the fresh product, and the weight gradient comes out as
    one contiguous (out, in) matrix, summed over all leading axes of x by a single 2-D
    matmul (instead of a transposed view accumulated with strided adds). ``weight_t``,
    optional, is the same weight already transposed into a contiguous (in, out) array:
    a loop (``tl.scan``) makes it once for all its steps, as ``x @ Wᵀ`` is a slower
    matmul on the transposed view than on a contiguous matrix.
    """

    saves = ("x", "weight")
    row_wise = (0, 2)  # x and b: the rows of all leading axes of x are independent (see Function)

    @staticmethod
    def forward(ctx, x, weight, bias=None, weight_t=None):
        ctx.save_for_backward(x, weight)
        y = _rows_times(x, weight.T if weight_t is None else weight_t)
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _rows_times(g, weight) if need_x else None  # (one 2-D product for any rank of x)
        grad_weight = None
        if need_weight:
            grad_weight = g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_weight, (g if need_bias else None)


# ---------------------------------------------------------------------- unary


class Neg(Function):
    """y = -x;  VJP: -g."""

    fresh_gradients = True  # (see Function)

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """y = exp(x);  VJP: g · y."""

    fresh_gradients = True  # (see Function)
    saves = ("y",)
    row_wise = (0,)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    """y = log(x);  VJP: g / x."""

    fresh_gradients = True  # (see Function)
    saves = ("x",)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Tanh(Function):
    """y = tanh(x);  VJP: g · (1 - y²)."""

    fresh_gradients = True  # (see Function)
    saves = ("y",)
    row_wise = (0,)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        grad = 1 - y * y
        grad *= g  # in place on our own temporary
        return grad


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x));  VJP: g · y · (1 - y).

    A primitive rather than a composition for speed (one node instead of four) and
    stability. Computed as 1 / (1 + exp(-x)) with -x capped where exp would overflow:
    no cancellation anywhere (sigmoid(-20) in float32 is 2.06e-9 to full precision,
    where (1 + tanh(x / 2)) / 2 gives 0), and for x below the cap (-88.7 in float32,
    -709.7 in float64) y stays the tiny positive 1 / (1 + exp(cap)).
    """

    fresh_gradients = True  # (see Function)
    saves = ("y",)
    row_wise = (0,)  # elementwise (see Function)
    # Just below log(largest finite value), as NumPy scalars of each dtype (a Python float
    # as the bound of ``minimum`` costs a conversion per call).
    exp_cap = {np.dtype(t): t(cap) for t, cap in ((np.float16, 11.0), (np.float32, 88.7), (np.float64, 709.7))}

    @staticmethod
    def forward(ctx, x):
        y = Sigmoid.of_array(ctx.xp, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def of_array(xp, x):
        """σ(x) of a backend array, as a new array (also used by fused steps: one formula)."""
        y = xp.negative(x)
        if y.ndim == 0:  # NumPy returns a scalar for a 0-d array; the steps below work in place
            y = xp.asarray(y)
        xp.minimum(y, Sigmoid.exp_cap.get(y.dtype, 709.7), out=y)
        xp.exp(y, out=y)
        y += 1
        xp.reciprocal(y, out=y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        grad = 1 - y  # one temporary, then updated in place
        grad *= y
        grad *= g
        return grad


class Relu(Function):
    """y = max(x, 0);  VJP: g · [x > 0]."""

    fresh_gradients = True  # (see Function)
    saves = ("y",)
    row_wise = (0,)  # elementwise (see Function)

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (y > 0)


class Sqrt(Function):
    """y = √x;  VJP: g / (2y)."""

    fresh_gradients = True  # (see Function)
    saves = ("y",)

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Abs(Function):
    """y = |x|;  VJP: g · sign(x)."""

    fresh_gradients = True  # (see Function)
    saves = ("x",)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.sign(x)


class Clip(Function):
    """y = min(max(x, lo), hi);  VJP: g · [lo ≤ x ≤ hi]."""

    saves = ("x",)

    @staticmethod
    def forward(ctx, x, lo=None, hi=None):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return ctx.xp.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.lo is not None:
            g = g * (x >= ctx.lo)
        if ctx.hi is not None:
            g = g * (x <= ctx.hi)
        return g


class Cast(Function):
    """y = x as another dtype;  VJP: g (the engine casts it back to x's dtype)."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g


class ToDevice(Function):
    """y = x copied to another device;  VJP: g copied back."""

    @staticmethod
    def forward(ctx, x, device):
        ctx.source_device = ctx.device
        ctx.output_device = device
        return backend.to_device(x, ctx.device, device)

    @staticmethod
    def backward(ctx, g):
        if isinstance(g, Tensor):  # under create_graph: the copy back is itself this op
            return g.to(ctx.source_device)
        return backend.to_device(g, ctx.output_device, ctx.source_device)


class Compare(Function):
    """y = compare(a, b) for ==, <, ... (boolean);  no gradient. Eager comparisons skip the
    graph altogether; a trace records them as this op, so the result follows each step."""

    @staticmethod
    def forward(ctx, a, b, compare):
        return compare(a, b)

    @staticmethod
    def backward(ctx, g):
        return None, None


class Detach(Function):
    """y = x, cut from the graph;  no gradient. How a trace records ``.detach()``."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return None


# ----------------------------------------------------------------- reductions


class Sum(Function):
    """y = Σ_axis x;  VJP: g broadcast back along the summed axes."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.input_shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.broadcast_to(_keep_reduced_dims(g, ctx.axis, ctx.keepdims, ctx.xp), ctx.input_shape)


class Max(Function):
    """y = max_axis x;  VJP: g to the maximal entries, split evenly among ties."""

    fresh_gradients = True  # (see Function)
    saves = ("x", "y")

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        y = x.max(axis=axis, keepdims=True)
        if not keepdims:  # (an array even for a full reduction, where NumPy gives a scalar)
            y = y.reshape(()) if axis is None else y.squeeze(axis)
        ctx.save_for_backward(x, y)
        ctx.axis, ctx.keepdims = axis, keepdims
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        g = _keep_reduced_dims(g, ctx.axis, ctx.keepdims, ctx.xp)
        y = _keep_reduced_dims(y, ctx.axis, ctx.keepdims, ctx.xp)
        is_max = (x == y).astype(g.dtype)
        ties = is_max.sum(axis=ctx.axis, keepdims=True)
        return is_max * (g / ties)


def _keep_reduced_dims(g, axis, keepdims, xp):
    """Re-insert the size-1 axes a reduction without keepdims removed."""
    if keepdims or axis is None:  # a 0-d gradient already broadcasts against x
        return g
    return xp.expand_dims(g, axis)


# ---------------------------------------------------------------------- shape


class Reshape(Function):
    """y = x with a new shape;  VJP: g reshaped to x's shape."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.input_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.input_shape)


class Transpose(Function):
    """y = x with axes permuted;  VJP: g permuted back by the inverse permutation."""

    @staticmethod
    def forward(ctx, x, axes):
        ctx.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(ctx.inverse)


class Expand(Function):
    """y = x broadcast to a larger shape (a view);  VJP: g (the engine sums it back)."""

    @staticmethod
    def forward(ctx, x, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g


class GetItem(Function):
    """y = x[index];  VJP: zeros like x with g added at index (repeats accumulate)."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.input_shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        if isinstance(g, Tensor):  # under create_graph: the scatter is itself an op
            return IndexAdd.apply(g, shape=ctx.input_shape, index=ctx.index)
        return _scatter_into_zeros(ctx.xp, ctx.input_shape, ctx.index, g)


class IndexAdd(Function):
    """y = zeros(shape) with x added at index (repeats accumulate);  VJP: g[index].

    The VJP of ``GetItem``, as an op of its own so that a gradient of indexing can be
    differentiated again (its VJP is indexing once more).
    """

    @staticmethod
    def forward(ctx, x, shape, index):
        ctx.index = index
        return _scatter_into_zeros(ctx.xp, shape, index, x)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.index]


def _scatter_into_zeros(xp, shape, index, values):
    grad = xp.zeros(shape, dtype=values.dtype)
    if _is_basic_index(index):
        grad[index] = values  # basic indexing never repeats an element
    else:
        backend.scatter_add(xp, grad, index, values)
    return grad


def _is_basic_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(part is None or part is Ellipsis or isinstance(part, (int, slice)) for part in parts)


class Cat(Function):
    """y = concatenate(xs, axis);  VJP: g split into pieces of the inputs' sizes."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        ctx.offsets = _offsets([x.shape[axis] for x in xs])
        return ctx.xp.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(_slice_along(g, ctx.axis, start, stop) for start, stop in ctx.offsets)


class Stack(Function):
    """y = stack(xs, axis);  VJP: g unbound along the new axis."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis, ctx.count = axis, len(xs)
        return ctx.xp.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        lead = (slice(None),) * ctx.axis
        return tuple(g[lead + (i,)] for i in range(ctx.count))


class Split(Function):
    """ys = pieces of x along axis (views);  VJP: concatenate(gs, axis), one copy."""

    fresh_gradients = True  # (see Function)
    row_wise = (0,)  # (see Function; ``axis`` counts the axes of one call's x)
    axis_arguments = ("axis",)

    @staticmethod
    def forward(ctx, x, sizes, axis=0):
        ctx.axis = axis
        return tuple([x[index] for index in _split_indices(tuple(sizes), axis)])

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concatenate(grads, axis=ctx.axis)


class Unbind(Function):
    """ys = the slices of x along axis (views, axis removed);  VJP: stack(gs, axis)."""

    fresh_gradients = True  # (see Function)

    @staticmethod
    def forward(ctx, x, axis=0):
        ctx.axis = axis
        lead = (slice(None),) * axis
        return tuple(x[lead + (i,)] for i in range(x.shape[axis]))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.stack(grads, axis=ctx.axis)


@functools.lru_cache(maxsize=256)
def _split_indices(sizes, axis):
    """The index of each piece of a split along ``axis`` (``x[index]`` is a view), made once per split."""
    lead = (slice(None),) * axis
    return tuple((*lead, slice(start, stop)) for start, stop in _offsets(sizes))


def _offsets(sizes):
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def _slice_along(array, axis, start, stop):
    return array[(slice(None),) * axis + (slice(start, stop),)]
