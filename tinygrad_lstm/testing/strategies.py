"""Hypothesis strategies for tensors, built on ``hypothesis.extra.numpy``.

Use them in your own property tests::

    from hypothesis import given
    from tinygrad_lstm.testing import gradcheck, strategies as tst

    @given(tst.tensors(shape=tst.shapes(max_dims=2)))
    def test_my_op(x):
        assert gradcheck(my_op, (x,))

Values default to a bounded float64 range, away from overflow; ``away_from`` keeps
draws off non-differentiable points (relu and abs at 0), and ``distinct=True`` keeps
ties out of a max. Requires the ``test`` extra (hypothesis).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..tensor import Tensor


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    """Array shapes (tuples of ints), 0-d included by default."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    shape: tuple[int, ...], min_dims: int = 0, max_dims: int | None = None, min_side: int = 1, max_side: int = 4
) -> st.SearchStrategy:
    """Shapes that broadcast against ``shape`` (NumPy rules)."""
    if max_dims is None:
        max_dims = max(len(shape), min_dims)
    return hnp.broadcastable_shapes(shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def mutually_broadcastable_shapes(num_shapes: int = 2, max_dims: int = 3, max_side: int = 4) -> st.SearchStrategy:
    """``num_shapes`` shapes that broadcast together; ``.input_shapes`` and ``.result_shape``."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, max_dims=max_dims, max_side=max_side)


def floats(low: float = -3.0, high: float = 3.0, away_from: Any = (), margin: float = 0.1) -> st.SearchStrategy:
    """Finite floats in [low, high], at least ``margin`` away from each point in ``away_from``."""
    values = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False, width=64)
    points = (away_from,) if isinstance(away_from, (int, float)) else tuple(away_from)
    if points:
        values = values.filter(lambda v: all(abs(v - p) >= margin for p in points))
    return values


@st.composite
def arrays(
    draw,
    shape: Any = None,
    dtype: Any = np.float64,
    elements: Any = None,
    distinct: bool = False,
    min_gap: float = 1e-3,
) -> np.ndarray:
    """A NumPy array; ``distinct=True`` keeps every pair of values ``min_gap`` apart."""
    if shape is None:
        shape = shapes()
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    if elements is None:
        elements = floats() if np.dtype(dtype).kind == "f" else None
    array = draw(hnp.arrays(dtype=dtype, shape=shape, elements=elements, unique=distinct))
    if distinct and array.size > 1 and np.dtype(dtype).kind == "f":
        spread = np.sort(array.reshape(-1))
        from hypothesis import assume

        assume(np.min(np.diff(spread)) >= min_gap)
    return array


@st.composite
def tensors(
    draw,
    shape: Any = None,
    dtype: Any = np.float64,
    elements: Any = None,
    requires_grad: bool = True,
    distinct: bool = False,
    device: str | None = None,
) -> Tensor:
    """A Tensor (float64 by default, requiring grad) of a given or drawn shape."""
    array = draw(arrays(shape=shape, dtype=dtype, elements=elements, distinct=distinct))
    grad = requires_grad and np.dtype(dtype).kind == "f"
    return Tensor(array, requires_grad=grad, device=device)


@st.composite
def axes(draw, ndim: int, allow_none: bool = True, allow_tuple: bool = True) -> Any:
    """A valid ``axis`` argument for an ``ndim``-d tensor: None, an int (negatives too) or a tuple."""
    options = []
    if allow_none:
        options.append(st.none())
    if ndim > 0:
        options.append(st.integers(-ndim, ndim - 1))
        if allow_tuple:
            options.append(hnp.valid_tuple_axes(ndim, min_size=1))
    return draw(st.one_of(*options)) if options else None
