"""Every differentiable op of API.md, checked on drawn shapes and values.

Each op is one row of ``OP_SPECS``: the op in each of its spellings (``x.exp()``,
``tl.exp(x)``, ...), a NumPy reference, and a Hypothesis strategy that draws the inputs
(shapes with broadcasting, 0-d and size-1 edges; values kept off kinks) and the keyword
arguments. ``op_property`` turns a row into a Hypothesis test that checks

1. forward parity with NumPy for every spelling, in float64 and in float32 (same values,
   same dtype, same device);
2. reverse-mode gradients against central differences (``gradcheck``, float64), for a
   drawn spelling.

The same rows run on the strict stand-in device (``test_strict_device.py``) and against
sabotaged backward passes (``test_canaries.py``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lstm as tl
import tinygrad_lstm.testing.strategies as tst
from tinygrad_lstm.tensor import backend
from tinygrad_lstm.testing import gradcheck

# ------------------------------------------------------------------ the factory


@dataclass
class Case:
    """One drawn input: arrays that become Tensors (float ones require grad), plus keywords."""

    arrays: tuple[np.ndarray, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpSpec:
    """One op: its spellings (label -> callable), a NumPy reference, a strategy of Cases."""

    name: str
    forms: dict[str, Callable[..., Any]]
    reference: Callable[..., Any]
    cases: st.SearchStrategy
    gradcheck_options: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"OpSpec({self.name!r})"


FLOAT64_TOLERANCE = dict(rtol=1e-10, atol=1e-12)
FLOAT32_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def to_tensors(arrays: tuple[np.ndarray, ...], device: str) -> tuple[tl.Tensor, ...]:
    return tuple(tl.Tensor(a, requires_grad=a.dtype.kind == "f", device=device) for a in arrays)


def assert_matches(got: Any, expected: Any, device: str, what: str, rtol: float, atol: float) -> None:
    """``got`` (Tensor or tuple) equals NumPy's ``expected`` in shape, dtype, values and device."""
    if isinstance(expected, tuple):
        assert isinstance(got, tuple), f"{what}: NumPy gives a tuple, we give {type(got).__name__}"
        assert len(got) == len(expected), f"{what}: {len(got)} outputs, NumPy gives {len(expected)}"
        for i, (one_got, one_expected) in enumerate(zip(got, expected)):
            assert_matches(one_got, one_expected, device, f"{what}, output {i}", rtol, atol)
        return
    assert isinstance(got, tl.Tensor), f"{what}: expected a Tensor, got {type(got).__name__}"
    expected = np.asarray(expected)
    assert got.device == device, f"{what}: result on {got.device!r}, inputs on {device!r}"
    assert backend.device_of_array(got.data) == device, f"{what}: result holds a {type(got.data).__name__}"
    actual = got.numpy()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, NumPy gives {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, NumPy gives {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
    if expected.dtype.kind == "f":
        assert got.requires_grad, f"{what}: the result does not require grad"


def check_forward(spec: OpSpec, case: Case, device: str) -> None:
    """Every spelling matches NumPy in float64; the first also in float32 (dtype kept)."""
    expected = spec.reference(*case.arrays, **case.kwargs)
    for label, form in spec.forms.items():
        got = form(*to_tensors(case.arrays, device), **case.kwargs)
        assert_matches(got, expected, device, f"{spec.name}: {label}", **FLOAT64_TOLERANCE)
    single = tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in case.arrays)
    expected = spec.reference(*single, **case.kwargs)
    label, form = next(iter(spec.forms.items()))
    got = form(*to_tensors(single, device), **case.kwargs)
    assert_matches(got, expected, device, f"{spec.name}: {label} in float32", **FLOAT32_TOLERANCE)


def check_gradient(spec: OpSpec, label: str, case: Case, device: str) -> None:
    """Reverse mode against central differences in float64, for the spelling ``label``."""
    form = spec.forms[label]
    inputs = to_tensors(case.arrays, device)
    gradcheck(lambda *tensors: form(*tensors, **case.kwargs), inputs, **spec.gradcheck_options)


def op_property(spec: OpSpec, device: str = "cpu", **hypothesis_settings: Any) -> Callable[[], None]:
    """A Hypothesis test of ``spec`` on ``device`` (forward parity + gradcheck); call it to run.

    ``hypothesis_settings`` override the loaded profile (``max_examples=5``, ``phases=``).
    """

    @settings(**hypothesis_settings)
    @given(case=spec.cases, label=st.sampled_from(list(spec.forms)))
    def check(case: Case, label: str) -> None:
        check_forward(spec, case, device)
        check_gradient(spec, label, case, device)

    return check


# -------------------------------------------------- values kept off the kinks

ANY = tst.floats(-3.0, 3.0)
POSITIVE = tst.floats(0.1, 3.0)  # log, sqrt
OFF_ZERO = tst.floats(-3.0, 3.0, away_from=0.0, margin=0.1)  # relu, abs
DIVISOR = tst.floats(-3.0, 3.0, away_from=0.0, margin=0.5)
BASE = tst.floats(0.5, 2.5)  # a ** b with a > 0
EXPONENT = tst.floats(-2.0, 2.0)


def _scalars(low: float, high: float, away_from: Any = ()) -> st.SearchStrategy:
    """Python ints and floats, the operands that must never change a tensor's dtype."""
    points = (away_from,) if isinstance(away_from, (int, float)) else tuple(away_from)
    integers = st.integers(math.ceil(low), math.floor(high)).filter(lambda v: all(abs(v - p) >= 0.5 for p in points))
    return st.one_of(integers, tst.floats(low, high, away_from=points, margin=0.5))


# ------------------------------------------------------------- case strategies


@st.composite
def elementwise(draw, *elements: st.SearchStrategy) -> Case:
    """One array per element strategy, of mutually broadcastable shapes."""
    shapes = draw(tst.mutually_broadcastable_shapes(num_shapes=len(elements)))
    return Case(tuple(draw(tst.arrays(shape, elements=e)) for shape, e in zip(shapes.input_shapes, elements)))


@st.composite
def against(draw, left: st.SearchStrategy, right: st.SearchStrategy) -> Case:
    """A drawn array and a second one whose shape broadcasts against the first's."""
    a = draw(tst.arrays(tst.shapes(), elements=left))
    b = draw(tst.arrays(tst.broadcastable_shapes(a.shape, max_dims=a.ndim + 1), elements=right))
    return Case((a, b))


@st.composite
def with_scalar(draw, elements: st.SearchStrategy, scalars: st.SearchStrategy) -> Case:
    """An array and a Python scalar, the scalar on the left or on the right."""
    x = draw(tst.arrays(tst.shapes(), elements=elements))
    return Case((x,), {"scalar": draw(scalars), "left": draw(st.booleans())})


@st.composite
def distinct_pair(draw) -> Case:
    """Two broadcastable arrays with no value shared between or within them (maximum's kink)."""
    a_shape, b_shape = draw(tst.mutually_broadcastable_shapes(num_shapes=2)).input_shapes
    a_size, b_size = math.prod(a_shape), math.prod(b_shape)
    values = draw(tst.arrays((a_size + b_size,), distinct=True))
    return Case((values[:a_size].reshape(a_shape), values[a_size:].reshape(b_shape)))


@st.composite
def distinct_with_scalar(draw) -> Case:
    shape = draw(tst.shapes())
    values = draw(tst.arrays((math.prod(shape) + 1,), distinct=True))
    return Case((values[:-1].reshape(shape),), {"scalar": float(values[-1]), "left": draw(st.booleans())})


@st.composite
def clip_case(draw) -> Case:
    lo = draw(st.none() | tst.floats(-2.0, 0.0))
    hi = draw(tst.floats(0.5, 2.0) if lo is None else st.none() | tst.floats(0.5, 2.0))
    bounds = [bound for bound in (lo, hi) if bound is not None]
    x = draw(tst.arrays(tst.shapes(), elements=tst.floats(-3.0, 3.0, away_from=bounds, margin=0.05)))
    return Case((x,), {"lo": lo, "hi": hi})


@st.composite
def matmul_case(draw) -> Case:
    """1-D and N-D operands on either side; batch dims broadcast."""
    rows, inner, columns = (draw(st.integers(1, 3)) for _ in range(3))
    a_batch, b_batch = draw(tst.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    a_shape = (inner,) if draw(st.booleans()) else a_batch + (rows, inner)
    b_shape = (inner,) if draw(st.booleans()) else b_batch + (inner, columns)
    return Case((draw(tst.arrays(a_shape)), draw(tst.arrays(b_shape))))


@st.composite
def linear_case(draw) -> Case:
    in_features, out_features = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x = draw(tst.arrays(tst.shapes(min_dims=0, max_dims=2, max_side=3).map(lambda s: s + (in_features,))))
    weight = draw(tst.arrays((out_features, in_features)))
    bias = (draw(tst.arrays((out_features,))),) if draw(st.booleans()) else ()
    return Case((x, weight) + bias)


@st.composite
def reduction(draw, distinct: bool = False) -> Case:
    """An array, an axis (None, an int, negative, or a tuple) and keepdims."""
    x = draw(tst.arrays(tst.shapes(), distinct=distinct))
    return Case((x,), {"axis": draw(tst.axes(x.ndim)), "keepdims": draw(st.booleans())})


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def reshape_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes()))
    remaining, shape = x.size, []
    ndim = draw(st.integers(0 if x.size == 1 else 1, 3))
    for _ in range(ndim - 1):
        size = draw(st.sampled_from(_divisors(remaining)))
        shape.append(size)
        remaining //= size
    if ndim:
        shape.append(remaining)
        if draw(st.booleans()):
            shape[draw(st.integers(0, ndim - 1))] = -1
    return Case((x,), {"shape": tuple(shape)})


@st.composite
def transpose_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes()))
    axes = draw(st.none() | st.permutations(range(x.ndim)))
    if axes is not None:
        axes = tuple(a - x.ndim if draw(st.booleans()) else a for a in axes)
    return Case((x,), {"axes": axes})


@st.composite
def expand_case(draw) -> Case:
    """A target shape and an array that broadcasts to it; -1 keeps a dim where allowed."""
    target = draw(tst.shapes(max_dims=3))
    offset = len(target) - draw(st.integers(0, len(target)))
    x_shape = tuple(1 if draw(st.booleans()) else size for size in target[offset:])
    shape = tuple(
        -1 if i >= offset and x_shape[i - offset] == size and draw(st.booleans()) else size
        for i, size in enumerate(target)
    )
    return Case((draw(tst.arrays(x_shape)),), {"shape": shape})


@st.composite
def squeeze_case(draw) -> Case:
    """An array with size-1 axes inserted, and which of them to squeeze (or None: all)."""
    shape = list(draw(tst.shapes(max_dims=2)))
    inserted = []
    for _ in range(draw(st.integers(1, 2))):
        position = draw(st.integers(0, len(shape)))
        shape.insert(position, 1)
        inserted = [p + (p >= position) for p in inserted] + [position]
    x = draw(tst.arrays(tuple(shape)))
    chosen = draw(st.lists(st.sampled_from(inserted), min_size=1, unique=True))
    chosen = [p - x.ndim if draw(st.booleans()) else p for p in chosen]
    axis = draw(st.sampled_from([None, chosen[0], tuple(chosen)]))
    return Case((x,), {"axis": axis})


@st.composite
def unsqueeze_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes()))
    return Case((x,), {"axis": draw(st.integers(-x.ndim - 1, x.ndim))})


@st.composite
def basic_index_case(draw) -> Case:
    """Ints, slices (negative steps too), None and Ellipsis."""
    x = draw(tst.arrays(tst.shapes()))
    return Case((x,), {"index": draw(hnp.basic_indices(x.shape, allow_newaxis=True))})


@st.composite
def advanced_index_case(draw) -> Case:
    """Integer arrays (repeats likely, negatives too) mixed with slices and ints."""
    x = draw(tst.arrays(tst.shapes(min_dims=1)))
    count = draw(st.integers(1, x.ndim))
    kinds = [draw(st.sampled_from(["array", "slice", "int"])) for _ in range(count)]
    kinds[draw(st.integers(0, count - 1))] = "array"
    array_shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5))
    parts: list[Any] = []
    for size, kind in zip(x.shape, kinds):
        if kind == "array":
            parts.append(draw(hnp.arrays(np.int64, array_shape, elements=st.integers(-size, size - 1))))
        elif kind == "slice":
            parts.append(draw(st.slices(size)))
        else:
            parts.append(draw(st.integers(-size, size - 1)))
    index = parts[0] if count == 1 and draw(st.booleans()) else tuple(parts)
    return Case((x,), {"index": index})


def _index_with(index: Any, convert: Callable[[np.ndarray], Any]) -> Any:
    if isinstance(index, tuple):
        return tuple(convert(part) if isinstance(part, np.ndarray) else part for part in index)
    return convert(index) if isinstance(index, np.ndarray) else index


@st.composite
def cat_case(draw) -> Case:
    shape = draw(tst.shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        piece = list(shape)
        piece[axis] = draw(st.integers(1, 3))
        pieces.append(draw(tst.arrays(tuple(piece))))
    return Case(tuple(pieces), {"axis": axis})


@st.composite
def stack_case(draw) -> Case:
    shape = draw(tst.shapes())
    pieces = tuple(draw(tst.arrays(shape)) for _ in range(draw(st.integers(1, 3))))
    return Case(pieces, {"axis": draw(st.integers(-len(shape) - 1, len(shape)))})


@st.composite
def split_case(draw) -> Case:
    """An int (each piece's size) or a list of sizes (zeros allowed) that add up."""
    x = draw(tst.arrays(tst.shapes(min_dims=1)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    length = x.shape[axis]
    if draw(st.booleans()):
        sizes: Any = draw(st.integers(1, length + 1))
    else:
        cuts = sorted(draw(st.lists(st.integers(0, length), max_size=3)))
        sizes = [stop - start for start, stop in zip([0] + cuts, cuts + [length])]
    return Case((x,), {"sizes": sizes, "axis": axis})


@st.composite
def chunk_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes(min_dims=1)))
    return Case((x,), {"chunks": draw(st.integers(1, 5)), "axis": draw(st.integers(-x.ndim, x.ndim - 1))})


@st.composite
def unbind_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes(min_dims=1)))
    return Case((x,), {"axis": draw(st.integers(-x.ndim, x.ndim - 1))})


@st.composite
def where_case(draw) -> Case:
    condition_shape, a_shape, b_shape = draw(tst.mutually_broadcastable_shapes(num_shapes=3)).input_shapes
    condition = draw(hnp.arrays(np.bool_, condition_shape))
    return Case((condition, draw(tst.arrays(a_shape)), draw(tst.arrays(b_shape))))


@st.composite
def where_scalar_case(draw) -> Case:
    condition_shape, x_shape = draw(tst.mutually_broadcastable_shapes(num_shapes=2)).input_shapes
    condition = draw(hnp.arrays(np.bool_, condition_shape))
    return Case((condition, draw(tst.arrays(x_shape))), {"scalar": draw(ANY), "left": draw(st.booleans())})


@st.composite
def cast_case(draw) -> Case:
    x = draw(tst.arrays(tst.shapes()))
    return Case((x,), {"dtype": draw(st.sampled_from([tl.float32, np.float32, "float32"]))})


# ------------------------------------------------------------ NumPy references


def np_logsumexp(x, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def np_expand(x, shape):
    offset = len(shape) - x.ndim
    full = tuple(x.shape[i - offset] if size == -1 else size for i, size in enumerate(shape))
    return np.broadcast_to(x, full)


def np_split(x, sizes, axis):
    length = x.shape[axis]
    if isinstance(sizes, int):
        return tuple(np.split(x, list(range(sizes, length, sizes)), axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def np_chunk(x, chunks, axis):
    """PyTorch's chunk: pieces of ceil(n / chunks), the last one smaller."""
    length = x.shape[axis]
    size = max(1, -(-length // chunks))
    return tuple(np.split(x, list(range(size, length, size)), axis=axis))


def np_unbind(x, axis):
    return tuple(np.moveaxis(x, axis, 0))


def np_linear(x, weight, *bias):
    y = x @ weight.T
    return y + bias[0] if bias else y


def _scalar_form(op: Callable) -> Callable:
    """``op`` with the scalar on the drawn side; the same code runs on Tensors and arrays."""
    return lambda x, scalar, left: op(scalar, x) if left else op(x, scalar)


def _unary(name: str, elements: st.SearchStrategy, reference: Callable) -> OpSpec:
    forms = {f"x.{name}()": lambda x: getattr(x, name)(), f"tl.{name}(x)": getattr(tl, name)}
    return OpSpec(name, forms, reference, elementwise(elements))


def _reduction(name: str, reference: Callable, distinct: bool = False) -> OpSpec:
    forms = {
        f"x.{name}(axis, keepdims)": lambda x, axis, keepdims: getattr(x, name)(axis, keepdims),
        f"tl.{name}(x, axis=, keepdims=)": lambda x, **kwargs: getattr(tl, name)(x, **kwargs),
    }
    return OpSpec(name, forms, reference, reduction(distinct=distinct))


# ----------------------------------------------------------------- the table

OP_SPECS = [
    # operators, tensor with tensor (broadcasting) and with a Python scalar on either side
    OpSpec("add", {"a + b": operator.add}, operator.add, elementwise(ANY, ANY)),
    OpSpec("sub", {"a - b": operator.sub}, operator.sub, against(ANY, ANY)),
    OpSpec("mul", {"a * b": operator.mul}, operator.mul, elementwise(ANY, ANY)),
    OpSpec("div", {"a / b": operator.truediv}, operator.truediv, against(ANY, DIVISOR)),
    OpSpec("pow", {"a ** b": operator.pow}, operator.pow, elementwise(BASE, EXPONENT)),
    OpSpec("neg", {"-x": operator.neg}, operator.neg, elementwise(ANY)),
    OpSpec(
        "add_scalar",
        {"x + s, s + x": _scalar_form(operator.add)},
        _scalar_form(operator.add),
        with_scalar(ANY, _scalars(-3, 3)),
    ),
    OpSpec(
        "sub_scalar",
        {"x - s, s - x": _scalar_form(operator.sub)},
        _scalar_form(operator.sub),
        with_scalar(ANY, _scalars(-3, 3)),
    ),
    OpSpec(
        "mul_scalar",
        {"x * s, s * x": _scalar_form(operator.mul)},
        _scalar_form(operator.mul),
        with_scalar(ANY, _scalars(-3, 3)),
    ),
    OpSpec(
        "div_scalar",
        {"x / s, s / x": _scalar_form(operator.truediv)},
        _scalar_form(operator.truediv),
        with_scalar(DIVISOR, _scalars(-3, 3, away_from=0)),
    ),
    OpSpec(
        "pow_scalar_exponent",
        {"x ** s": lambda x, scalar, left: x**scalar},
        lambda x, scalar, left: x**scalar,
        with_scalar(BASE, _scalars(-2, 3)),
    ),
    OpSpec(
        "pow_int_exponent_any_sign",
        {"x ** k": lambda x, scalar, left: x**scalar},
        lambda x, scalar, left: x**scalar,
        with_scalar(ANY, st.integers(1, 3)),
    ),
    OpSpec(
        "pow_scalar_base",
        {"s ** x": lambda x, scalar, left: scalar**x},
        lambda x, scalar, left: scalar**x,
        with_scalar(tst.floats(-2.0, 2.0), st.one_of(st.integers(1, 3), tst.floats(0.5, 3.0))),
    ),
    OpSpec("matmul", {"a @ b": operator.matmul, "tl.matmul(a, b)": tl.matmul}, np.matmul, matmul_case()),
    OpSpec("linear", {"tl.linear(x, w[, b])": tl.linear}, np_linear, linear_case()),
    # elementwise
    _unary("exp", ANY, np.exp),
    _unary("log", POSITIVE, np.log),
    _unary("tanh", ANY, np.tanh),
    _unary("sigmoid", ANY, lambda x: 1 / (1 + np.exp(-x))),
    _unary("relu", OFF_ZERO, lambda x: np.maximum(x, 0)),
    _unary("sqrt", POSITIVE, np.sqrt),
    _unary("abs", OFF_ZERO, np.abs),
    OpSpec(
        "maximum",
        {"tl.maximum(a, b)": tl.maximum, "a.maximum(b)": lambda a, b: a.maximum(b)},
        np.maximum,
        distinct_pair(),
    ),
    OpSpec(
        "maximum_scalar",
        {
            "tl.maximum(x, s), tl.maximum(s, x)": _scalar_form(tl.maximum),
            "x.maximum(s)": lambda x, scalar, left: x.maximum(scalar),
        },
        lambda x, scalar, left: np.maximum(x, scalar),
        distinct_with_scalar(),
    ),
    OpSpec(
        "clip",
        {
            "x.clip(lo, hi)": lambda x, lo, hi: x.clip(lo, hi),
            "tl.clip(x, lo=, hi=)": lambda x, **bounds: tl.clip(x, **bounds),
        },
        lambda x, lo, hi: np.clip(x, lo, hi),
        clip_case(),
    ),
    # reductions
    _reduction("sum", np.sum),
    _reduction("mean", np.mean),
    _reduction("max", np.max, distinct=True),
    _reduction("logsumexp", np_logsumexp),
    # shape
    OpSpec(
        "reshape",
        {
            "x.reshape(*shape)": lambda x, shape: x.reshape(*shape),
            "x.reshape(shape)": lambda x, shape: x.reshape(shape),
            "tl.reshape(x, shape)": lambda x, shape: tl.reshape(x, shape),
        },
        lambda x, shape: np.reshape(x, shape),
        reshape_case(),
    ),
    OpSpec(
        "transpose",
        {
            "x.transpose(*axes)": lambda x, axes: x.transpose() if axes is None else x.transpose(*axes),
            "tl.transpose(x, axes)": lambda x, axes: tl.transpose(x) if axes is None else tl.transpose(x, axes),
        },
        lambda x, axes: np.transpose(x, axes),
        transpose_case(),
    ),
    OpSpec("T", {"x.T": lambda x: x.T}, lambda x: x.T, elementwise(ANY)),
    OpSpec(
        "expand",
        {
            "x.expand(*shape)": lambda x, shape: x.expand(*shape),
            "x.expand(shape)": lambda x, shape: x.expand(shape),
            "tl.expand(x, *shape)": lambda x, shape: tl.expand(x, *shape),
        },
        np_expand,
        expand_case(),
    ),
    OpSpec(
        "squeeze",
        {
            "x.squeeze(axis)": lambda x, axis: x.squeeze(axis),
            "tl.squeeze(x, axis=)": lambda x, axis: tl.squeeze(x, axis=axis),
        },
        lambda x, axis: np.squeeze(x, axis),
        squeeze_case(),
    ),
    OpSpec(
        "unsqueeze",
        {"x.unsqueeze(axis)": lambda x, axis: x.unsqueeze(axis), "tl.unsqueeze(x, axis)": tl.unsqueeze},
        lambda x, axis: np.expand_dims(x, axis),
        unsqueeze_case(),
    ),
    OpSpec("getitem_basic", {"x[index]": lambda x, index: x[index]}, lambda x, index: x[index], basic_index_case()),
    OpSpec(
        "getitem_advanced",
        {
            "x[arrays]": lambda x, index: x[index],
            "x[Tensors]": lambda x, index: x[_index_with(index, lambda a: tl.Tensor(a, device=x.device))],
            "x[lists]": lambda x, index: x[_index_with(index, np.ndarray.tolist)],
        },
        lambda x, index: x[index],
        advanced_index_case(),
    ),
    OpSpec(
        "cat",
        {
            "tl.cat([..], axis=)": lambda *xs, axis: tl.cat(list(xs), axis=axis),
            "tl.cat((..), axis)": lambda *xs, axis: tl.cat(xs, axis),
        },
        lambda *xs, axis: np.concatenate(xs, axis=axis),
        cat_case(),
    ),
    OpSpec(
        "stack",
        {
            "tl.stack([..], axis=)": lambda *xs, axis: tl.stack(list(xs), axis=axis),
            "tl.stack((..), axis)": lambda *xs, axis: tl.stack(xs, axis),
        },
        lambda *xs, axis: np.stack(xs, axis=axis),
        stack_case(),
    ),
    OpSpec(
        "split",
        {
            "x.split(sizes, axis)": lambda x, sizes, axis: x.split(sizes, axis),
            "tl.split(x, sizes, axis=)": lambda x, sizes, axis: tl.split(x, sizes, axis=axis),
        },
        np_split,
        split_case(),
    ),
    OpSpec(
        "chunk",
        {
            "x.chunk(n, axis)": lambda x, chunks, axis: x.chunk(chunks, axis),
            "tl.chunk(x, n, axis=)": lambda x, chunks, axis: tl.chunk(x, chunks, axis=axis),
        },
        np_chunk,
        chunk_case(),
    ),
    OpSpec(
        "unbind",
        {
            "x.unbind(axis)": lambda x, axis: x.unbind(axis),
            "tl.unbind(x, axis=)": lambda x, axis: tl.unbind(x, axis=axis),
        },
        np_unbind,
        unbind_case(),
    ),
    OpSpec(
        "where",
        {"tl.where(c, a, b)": tl.where, "tl.where(c.data, a, b)": lambda c, a, b: tl.where(c.data, a, b)},
        np.where,
        where_case(),
    ),
    OpSpec(
        "where_scalar",
        {
            "tl.where(c, x, s), tl.where(c, s, x)": lambda c, x, scalar, left: (
                tl.where(c, scalar, x) if left else tl.where(c, x, scalar)
            )
        },
        lambda c, x, scalar, left: np.where(c, scalar, x) if left else np.where(c, x, scalar),
        where_scalar_case(),
    ),
    OpSpec(
        "astype",
        {
            "x.astype(dtype)": lambda x, dtype: x.astype(dtype),
            "x.float()": lambda x, dtype: x.float(),
            "ops.Cast.apply(x, dtype=)": lambda x, dtype: tl.ops.Cast.apply(x, dtype=tl.as_dtype(dtype)),
        },
        lambda x, dtype: x.astype(dtype),
        cast_case(),
        # float32 rounding is ~1e-7 of |x|: a wider step keeps the differences meaningful
        gradcheck_options=dict(eps=1e-3),
    ),
]
SPECS_BY_NAME = {spec.name: spec for spec in OP_SPECS}


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda spec: spec.name)
def test_op_matches_numpy_and_finite_differences(spec: OpSpec) -> None:
    op_property(spec)()


ELEMENTWISE_AND_SHAPE = "exp log tanh sigmoid relu sqrt abs maximum clip sum mean max logsumexp".split()
ELEMENTWISE_AND_SHAPE += "reshape transpose expand squeeze unsqueeze split chunk unbind".split()
API_METHODS = ELEMENTWISE_AND_SHAPE + ["astype"]
API_FUNCTIONS = ELEMENTWISE_AND_SHAPE + ["cat", "stack", "where", "matmul"]


def test_the_table_covers_every_spelling_of_the_api() -> None:
    labels = " | ".join(label for spec in OP_SPECS for label in spec.forms)
    missing = [f"x.{name}(" for name in API_METHODS if f"x.{name}(" not in labels]
    missing += [f"tl.{name}(" for name in API_FUNCTIONS if f"tl.{name}(" not in labels]
    missing += [
        symbol
        for symbol in ("a + b", "a - b", "a * b", "a / b", "a ** b", "a @ b", "-x", "x.T", "x[")
        if symbol not in labels
    ]
    assert not missing, f"ops without a property test: {missing}"


# ------------------------------------------------------------- comparisons

COMPARISONS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
FEW_VALUES = st.sampled_from([-1.0, 0.0, 0.5, 1.0])  # ties are common


@given(
    case=elementwise(FEW_VALUES, FEW_VALUES),
    symbol=st.sampled_from(list(COMPARISONS)),
    scalar=st.sampled_from([None, "left", "right"]),
)
def test_comparisons_give_bool_tensors_without_gradient(case: Case, symbol: str, scalar: str | None) -> None:
    compare = COMPARISONS[symbol]
    a_array, b_array = case.arrays
    a, b = to_tensors(case.arrays, "cpu")
    if scalar == "left":
        got, expected = compare(0.5, a), compare(0.5, a_array)
    elif scalar == "right":
        got, expected = compare(a, 0.5), compare(a_array, 0.5)
    else:
        got, expected = compare(a, b), compare(a_array, b_array)
    assert isinstance(got, tl.Tensor)
    assert got.dtype == np.bool_
    assert not got.requires_grad and got.grad_fn is None
    np.testing.assert_array_equal(got.numpy(), expected)


# ---------------------------------------------------- documented tie behaviour


def test_max_splits_the_gradient_evenly_among_ties() -> None:
    x = tl.Tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, 5.0, -1.0]], dtype=tl.float64, requires_grad=True)
    x.max(axis=1).sum().backward()
    expected = [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)

    y = tl.Tensor([4.0, 1.0, 4.0, 4.0, 2.0], dtype=tl.float64, requires_grad=True)
    tl.max(y).backward()
    np.testing.assert_allclose(y.grad.numpy(), [1 / 3, 0.0, 1 / 3, 1 / 3, 0.0], rtol=1e-15)


def test_maximum_splits_the_gradient_evenly_where_inputs_tie() -> None:
    a = tl.Tensor([1.0, 2.0, 3.0], dtype=tl.float64, requires_grad=True)
    b = tl.Tensor([2.0, 2.0, 1.0], dtype=tl.float64, requires_grad=True)
    tl.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 0.5, 0.0])


def test_indexing_with_repeated_indices_accumulates_gradients() -> None:
    x = tl.Tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 2, 0, -1]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0, 1.0])

    m = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    weights = tl.Tensor([1.0, 10.0, 100.0, 1000.0], dtype=tl.float64)
    (m[np.array([1, 1, 0, 1]), np.array([2, 2, 0, -1])] * weights).sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [[100.0, 0.0, 0.0], [0.0, 0.0, 1011.0]])
