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

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..tensor import Tensor
from .recurrent_report import away_from_zero


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


# ------------------------------------------------------------------- recurrent layers


@dataclass(frozen=True)
class RecurrentConfig:
    """One drawn shape of a recurrent problem (see :func:`recurrent_configs`).

    ``x_shape`` is the input's shape ((batch, T, input) when ``batch_first``) and
    ``state_shape`` that of each initial-state part, (layers·directions, batch, hidden).
    """

    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    with_initial_state: bool = False

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def x_shape(self) -> tuple[int, int, int]:
        if self.batch_first:
            return (self.batch, self.seq_len, self.input_size)
        return (self.seq_len, self.batch, self.input_size)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return (self.num_layers * self.num_directions, self.batch, self.hidden_size)

    def describe(self) -> str:
        """``"seq_len=4, batch=2, input_size=2, hidden_size=3, 1 layer, ..."``: for reports."""
        layers = f"{self.num_layers} layer{'s' if self.num_layers > 1 else ''}"
        return (
            f"seq_len={self.seq_len}, batch={self.batch}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, {layers}, {'bidirectional' if self.bidirectional else 'one direction'}, "
            f"{'batch_first' if self.batch_first else 'time first'}, "
            f"{'with' if self.with_initial_state else 'no'} initial state"
        )

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nn.Recurrent`` / ``nn.LSTM`` / ... of this shape."""
        return {"num_layers": self.num_layers, "bidirectional": self.bidirectional, "batch_first": self.batch_first}


def _flag(value: bool | None) -> st.SearchStrategy:
    return st.booleans() if value is None else st.just(value)


def recurrent_configs(
    max_seq_len: int = 5,
    max_batch: int = 3,
    max_input_size: int = 4,
    max_hidden_size: int = 4,
    max_layers: int = 2,
    bidirectional: bool | None = None,
    batch_first: bool | None = None,
    with_initial_state: bool | None = None,
) -> st.SearchStrategy:
    """:class:`RecurrentConfig` s: sequence length, batch, sizes, 1..``max_layers`` layers,
    and (unless fixed by passing True/False) bidirectional, batch_first and whether an
    initial state is given. Sizes start at 1, where off-by-one bugs live::

        from tinygrad_lstm import nn

        @given(tst.recurrent_configs(max_layers=1), st.data())
        def test_lstm_shapes(config, data):
            x = data.draw(tst.sequences(config))
            layer = nn.LSTM(config.input_size, config.hidden_size, **config.layer_kwargs())
            output, (h, c) = layer(x)
            assert h.shape == config.state_shape
    """
    return st.builds(
        RecurrentConfig,
        seq_len=st.integers(1, max_seq_len),
        batch=st.integers(1, max_batch),
        input_size=st.integers(1, max_input_size),
        hidden_size=st.integers(1, max_hidden_size),
        num_layers=st.integers(1, max_layers),
        bidirectional=_flag(bidirectional),
        batch_first=_flag(batch_first),
        with_initial_state=_flag(with_initial_state),
    )


@st.composite
def _seeded(draw, make: Any) -> Any:
    return make(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))


def sequences(config: RecurrentConfig, low: float = 0.1, high: float = 1.0, requires_grad: bool = True):
    """An input Tensor of ``config.x_shape``, float64, |values| in [low, high] (:func:`away_from_zero`).

    Values come from a NumPy generator seeded by a drawn integer rather than element by
    element: Hypothesis likes repeated and round values (all zeros, all 0.5), which make
    weight matrices' gradients symmetric or zero and hide transposes and dropped terms::

        @given(tst.recurrent_configs(), st.data())
        def test_rnn_gradients(config, data):
            x = data.draw(tst.sequences(config))
            layer = nn.RNN(config.input_size, config.hidden_size, **config.layer_kwargs()).astype(tl.float64)
            assert gradcheck(lambda x: layer(x)[0], (x,))
    """
    return _seeded(lambda rng: Tensor(away_from_zero(rng, config.x_shape, low, high), requires_grad=requires_grad))


def initial_states(config: RecurrentConfig, parts: int = 1, low: float = 0.1, high: float = 1.0):
    """An initial state for ``config``: a Tensor of ``config.state_shape`` (``parts=1``, RNN/GRU)
    or a tuple of ``parts`` of them ((h_0, c_0) for an LSTM: ``parts=2``), float64, requiring grad."""

    def make(rng: np.random.Generator) -> Any:
        tensors = tuple(
            Tensor(away_from_zero(rng, config.state_shape, low, high), requires_grad=True) for _ in range(parts)
        )
        return tensors[0] if parts == 1 else tensors

    return _seeded(make)


@st.composite
def cell_inputs(
    draw,
    input_size: Any = None,
    hidden_size: Any = None,
    batch: Any = None,
    parts: int = 1,
    low: float = 0.1,
    high: float = 1.0,
) -> tuple[Tensor, Any]:
    """``(x, state)`` for one step of a cell: x (batch, input_size) and the state, a
    (batch, hidden_size) Tensor or a tuple of ``parts`` of them; float64, requiring grad.
    Sizes may be ints or strategies (drawn from 1..4 / 1..3 by default)::

        @given(tst.cell_inputs(input_size=3, hidden_size=4, parts=2))
        def test_lstm_cell_step(inputs):
            x, (h, c) = inputs
            cell = nn.LSTMCell(3, 4).astype(tl.float64)
            assert gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))
    """

    def size(value: Any, default_max: int) -> int:
        if value is None:
            value = st.integers(1, default_max)
        return draw(value) if isinstance(value, st.SearchStrategy) else int(value)

    input_size, hidden_size, batch = size(input_size, 4), size(hidden_size, 4), size(batch, 3)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = Tensor(away_from_zero(rng, (batch, input_size), low, high), requires_grad=True)
    state = tuple(
        Tensor(away_from_zero(rng, (batch, hidden_size), low, high), requires_grad=True) for _ in range(parts)
    )
    return x, (state[0] if parts == 1 else state)
