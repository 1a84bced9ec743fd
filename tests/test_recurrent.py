"""Recurrent cells and layers: gradients, forward values, shapes, and canaries.

* Gradients: Hypothesis draws cells and layers (sizes 1-4, seq 1-6, batch 1-3, 1-2
  layers, bidirectional, batch_first, with or without an initial state and ``lengths``)
  and ``testing.gradcheck`` compares every gradient — input, initial states and every
  parameter — against central differences, in float64, for the output and the final
  states alike.
* Forward values: a per-sequence NumPy transcription of PyTorch's equations (each
  sequence run only over its own length, no masks) is the reference. A gradcheck cannot
  see a wrong forward — a wrong function still has a right derivative — so this is what
  catches a swapped gate.
* Canaries prove both checks can go red: forward-broken cells fail the reference and
  still pass gradcheck; backward-broken primitives fail gradcheck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn
from tinygrad_lstm.nn import recurrent
from tinygrad_lstm.tensor import ops
from tinygrad_lstm.testing import GradcheckError, gradcheck
from tinygrad_lstm.testing import strategies as tst

KINDS = ("rnn_tanh", "lstm", "gru")
FORWARD_TOLERANCE = dict(rtol=1e-12, atol=1e-12)

# ------------------------------------------------------------- NumPy reference


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(kind: str, weights: tuple, x: np.ndarray, state):
    """One step of PyTorch's cell equations; ``state`` is h, or (h, c) for the LSTM."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    if kind == "lstm":
        h, c = state
        gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh
        i, f, g, o = np.split(gates, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    h = state
    if kind == "gru":
        x_r, x_z, x_n = np.split(x @ weight_ih.T + bias_ih, 3, axis=-1)
        h_r, h_z, h_n = np.split(h @ weight_hh.T + bias_hh, 3, axis=-1)
        r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h
    pre_activation = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh
    return np.tanh(pre_activation) if kind == "rnn_tanh" else np.maximum(pre_activation, 0.0)


def _weights(state_dict: dict, suffix: str) -> tuple:
    return (
        state_dict[f"weight_ih{suffix}"],
        state_dict[f"weight_hh{suffix}"],
        state_dict.get(f"bias_ih{suffix}", 0.0),
        state_dict.get(f"bias_hh{suffix}", 0.0),
    )


def reference_layer(
    kind, state_dict, x, state=None, lengths=None, num_layers=1, bidirectional=False, batch_first=False
):
    """(output, final state) of a PyTorch-style layer, one sequence at a time."""
    x = x.transpose(1, 0, 2) if batch_first else x
    steps, batch, _ = x.shape
    hidden = state_dict["weight_hh_l0"].shape[1]
    directions = 2 if bidirectional else 1
    has_cell = kind == "lstm"
    lengths = [steps] * batch if lengths is None else list(lengths)
    if state is None:
        zeros = np.zeros((num_layers * directions, batch, hidden))
        state = (zeros, zeros) if has_cell else zeros
    parts = state if has_cell else (state,)
    finals = [np.zeros_like(part) for part in parts]
    layer_input = x
    for layer in range(num_layers):
        output = np.zeros((steps, batch, directions * hidden))
        for direction in range(directions):
            index = layer * directions + direction
            weights = _weights(state_dict, f"_l{layer}" + ("_reverse" if direction else ""))
            for b in range(batch):
                carried = tuple(part[index, b : b + 1] for part in parts)
                carried = carried if has_cell else carried[0]
                times = range(lengths[b])
                for t in reversed(times) if direction else times:
                    carried = reference_step(kind, weights, layer_input[t, b : b + 1], carried)
                    h = carried[0] if has_cell else carried
                    output[t, b, direction * hidden : (direction + 1) * hidden] = h[0]
                for final, piece in zip(finals, carried if has_cell else (carried,)):
                    final[index, b] = piece[0]
        layer_input = output
    output = layer_input.transpose(1, 0, 2) if batch_first else layer_input
    return output, (tuple(finals) if has_cell else finals[0])


# ----------------------------------------------------------- configurations


def make_cell(kind: str, input_size: int, hidden_size: int, bias: bool = True) -> nn.RecurrentCell:
    if kind == "lstm":
        cell = nn.LSTMCell(input_size, hidden_size, bias)
    elif kind == "gru":
        cell = nn.GRUCell(input_size, hidden_size, bias)
    else:
        cell = nn.RNNCell(input_size, hidden_size, bias, nonlinearity=kind.removeprefix("rnn_"))
    return cell.astype(tl.float64)


@dataclass(frozen=True)
class LayerConfig:
    """One recurrent layer problem: the layer's options, the data's shape, the weights' seed."""

    kind: str  # "rnn_tanh", "rnn_relu", "lstm" or "gru"
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    with_state: bool = False
    lengths: tuple[int, ...] | None = None
    seed: int = 0

    @property
    def state_parts(self) -> int:
        return 2 if self.kind == "lstm" else 1

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return (self.num_layers * (2 if self.bidirectional else 1), self.batch, self.hidden_size)

    @property
    def x_shape(self) -> tuple[int, int, int]:
        if self.batch_first:
            return (self.batch, self.seq_len, self.input_size)
        return (self.seq_len, self.batch, self.input_size)

    def build(self) -> nn.Recurrent:
        tl.manual_seed(self.seed)
        options = dict(
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
        )
        if self.kind == "lstm":
            layer = nn.LSTM(self.input_size, self.hidden_size, **options)
        elif self.kind == "gru":
            layer = nn.GRU(self.input_size, self.hidden_size, **options)
        else:
            layer = nn.RNN(self.input_size, self.hidden_size, nonlinearity=self.kind.removeprefix("rnn_"), **options)
        return layer.astype(tl.float64)


@st.composite
def layer_configs(draw, kind: str, max_side: int = 4) -> LayerConfig:
    seq_len = draw(st.integers(1, 6))
    batch = draw(st.integers(1, 3))
    with_lengths = draw(st.booleans())
    lengths = tuple(draw(st.lists(st.integers(1, seq_len), min_size=batch, max_size=batch))) if with_lengths else None
    return LayerConfig(
        kind=kind,
        seq_len=seq_len,
        batch=batch,
        input_size=draw(st.integers(1, max_side)),
        hidden_size=draw(st.integers(1, max_side)),
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        with_state=draw(st.booleans()),
        lengths=lengths,
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def layer_problems(draw, kind: str, max_side: int = 4):
    """(config, x, initial state parts): Tensors that require grad, float64."""
    config = draw(layer_configs(kind, max_side))
    x = draw(tst.tensors(shape=config.x_shape, elements=tst.floats(-2.0, 2.0)))
    state = ()
    if config.with_state:
        state = tuple(
            draw(tst.tensors(shape=config.state_shape, elements=tst.floats(-1.0, 1.0)))
            for _ in range(config.state_parts)
        )
    return config, x, state


def _as_state(config_or_kind, parts: tuple):
    """The state argument a layer or cell takes: None, h, or (h, c)."""
    kind = config_or_kind if isinstance(config_or_kind, str) else config_or_kind.kind
    if not parts:
        return None
    return tuple(parts) if kind == "lstm" else parts[0]


def _flatten(result) -> tuple[tl.Tensor, ...]:
    """(output, final) or (output, (h, c)) or (h, c) or h, as a flat tuple of Tensors."""
    flat = []
    for item in result if isinstance(result, tuple) else (result,):
        flat.extend(item if isinstance(item, tuple) else (item,))
    return tuple(flat)


def check_layer_gradients(layer: nn.Recurrent, config: LayerConfig, x: tl.Tensor, state: tuple) -> None:
    """gradcheck of output and final states w.r.t. x, the initial states and every parameter."""
    named = list(layer.named_parameters())
    names = ["x", *(("h_0", "c_0")[: len(state)]), *(name for name, _ in named)]

    def run(x, *rest):  # the parameters in ``rest`` are used through the layer itself
        return _flatten(layer(x, _as_state(config, rest[: len(state)]), lengths=config.lengths))

    assert gradcheck(run, (x, *state, *(p for _, p in named)), names=names)


def check_layer_forward(layer: nn.Recurrent, config: LayerConfig, x: tl.Tensor, state: tuple) -> None:
    output, final = layer(x, _as_state(config, state), lengths=config.lengths)
    expected_output, expected_final = reference_layer(
        config.kind,
        layer.state_dict(),
        x.numpy(),
        _as_state(config, tuple(part.numpy() for part in state)),
        config.lengths,
        config.num_layers,
        config.bidirectional,
        config.batch_first,
    )
    np.testing.assert_allclose(output.numpy(), expected_output, **FORWARD_TOLERANCE, err_msg="output")
    for got, expected, name in zip(_flatten(final), _flatten(expected_final), ("h_n", "c_n")):
        np.testing.assert_allclose(got.numpy(), expected, **FORWARD_TOLERANCE, err_msg=name)


# ------------------------------------------------------------------- cells


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_cell_gradients(kind, data):
    batch, input_size, hidden_size = (data.draw(st.integers(1, n)) for n in (3, 4, 4))
    bias, with_state = data.draw(st.booleans()), data.draw(st.booleans())
    tl.manual_seed(data.draw(st.integers(0, 2**16)))
    cell = make_cell(kind, input_size, hidden_size, bias)
    x = data.draw(tst.tensors(shape=(batch, input_size), elements=tst.floats(-2.0, 2.0)))
    parts = 2 if kind == "lstm" else 1
    state = (
        tuple(data.draw(tst.tensors(shape=(batch, hidden_size), elements=tst.floats(-1.0, 1.0))) for _ in range(parts))
        if with_state
        else ()
    )
    named = list(cell.named_parameters())

    def run(x, *rest):
        return _flatten(cell(x, _as_state(kind, rest[: len(state)])))

    names = ["x", *(("h", "c")[: len(state)]), *(name for name, _ in named)]
    assert gradcheck(run, (x, *state, *(p for _, p in named)), names=names)


def _relu_safe_example(seed: int = 3):
    """A relu RNN cell and inputs whose pre-activations are all at least 0.01 from the kink."""
    tl.manual_seed(seed)
    cell = make_cell("rnn_relu", 3, 4)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (3, 3))
    h = rng.uniform(-1, 1, (3, 4))
    weights = _weights(cell.state_dict(), "")
    pre_activation = x @ weights[0].T + weights[2] + h @ weights[1].T + weights[3]
    return cell, x, h, pre_activation


def test_relu_cell_gradients_on_a_kink_free_example():
    cell, x, h, pre_activation = _relu_safe_example()
    # Both sides of the kink are exercised, none of it within reach of the finite differences.
    assert np.abs(pre_activation).min() > 0.01
    assert (pre_activation > 0).any() and (pre_activation < 0).any()
    x, h = tl.Tensor(x, requires_grad=True), tl.Tensor(h, requires_grad=True)
    assert gradcheck(lambda x, h, *params: cell(x, h), (x, h, *cell.parameters()))


def test_relu_layer_gradients_on_a_kink_free_example(monkeypatch):
    config = LayerConfig(
        "rnn_relu",
        seq_len=3,
        batch=2,
        input_size=3,
        hidden_size=3,
        num_layers=2,
        bidirectional=True,
        with_state=True,
        lengths=(3, 2),
        seed=5,
    )
    layer = config.build()
    rng = np.random.default_rng(0)
    x = tl.Tensor(rng.uniform(0.5, 2.0, config.x_shape), requires_grad=True)
    h0 = tl.Tensor(rng.uniform(-1.0, 1.0, config.state_shape), requires_grad=True)
    check_layer_forward(layer, config, x, (h0,))  # the relu reference agrees too
    # Record every pre-activation the layer feeds to relu, and check it is off the kink.
    distances = []
    relu = ops.Relu

    class RecordingRelu(relu):
        @staticmethod
        def forward(ctx, pre_activation):
            distances.append(np.abs(pre_activation).min())
            return relu.forward(ctx, pre_activation)

    monkeypatch.setattr(ops, "Relu", RecordingRelu)
    layer(x, h0, lengths=config.lengths)
    monkeypatch.undo()
    assert distances and min(distances) > 1e-3
    check_layer_gradients(layer, config, x, (h0,))


@pytest.mark.parametrize("kind", (*KINDS, "rnn_relu"))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_cell_matches_numpy_reference(kind, data):
    batch, input_size, hidden_size = (data.draw(st.integers(1, n)) for n in (3, 4, 4))
    tl.manual_seed(data.draw(st.integers(0, 2**16)))
    cell = make_cell(kind, input_size, hidden_size, bias=data.draw(st.booleans()))
    x = data.draw(tst.arrays(shape=(batch, input_size)))
    parts = tuple(data.draw(tst.arrays(shape=(batch, hidden_size))) for _ in range(2 if kind == "lstm" else 1))
    state = _as_state(kind, parts)
    got = cell(tl.Tensor(x), _as_state(kind, tuple(tl.Tensor(p) for p in parts)))
    expected = reference_step(kind, _weights(cell.state_dict(), ""), x, state)
    for got_part, expected_part in zip(_flatten(got), _flatten(expected)):
        np.testing.assert_allclose(got_part.numpy(), expected_part, **FORWARD_TOLERANCE)


def test_cell_default_state_is_zeros():
    tl.manual_seed(0)
    x = tl.Tensor(np.random.default_rng(0).normal(size=(2, 3)))
    for kind in KINDS:
        cell = make_cell(kind, 3, 4)
        zeros = tuple(tl.zeros(2, 4, dtype=tl.float64) for _ in range(2 if kind == "lstm" else 1))
        for got, expected in zip(_flatten(cell(x)), _flatten(cell(x, _as_state(kind, zeros)))):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_cell_parameter_names_and_shapes_follow_pytorch():
    for kind, gates in (("rnn_tanh", 1), ("lstm", 4), ("gru", 3)):
        cell = make_cell(kind, 3, 5)
        assert {name: p.shape for name, p in cell.named_parameters()} == {
            "weight_ih": (gates * 5, 3),
            "weight_hh": (gates * 5, 5),
            "bias_ih": (gates * 5,),
            "bias_hh": (gates * 5,),
        }
    assert [name for name, _ in nn.LSTMCell(2, 3, bias=False).named_parameters()] == ["weight_ih", "weight_hh"]


def test_default_init_is_uniform_within_one_over_sqrt_hidden():
    tl.manual_seed(0)
    layer = nn.LSTM(7, 16, num_layers=2, bidirectional=True)
    bound = 1 / np.sqrt(16)
    values = np.concatenate([p.reshape(-1) for p in layer.state_dict().values()])
    assert values.dtype == np.float32
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    assert abs(values.mean()) < 0.1 * bound


def test_cells_reject_bad_inputs():
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        nn.LSTMCell(3, 2)(tl.zeros(2, 4))


# ------------------------------------------------------------------ layers


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_layer_gradients(kind, data):
    config, x, state = data.draw(layer_problems(kind))
    check_layer_gradients(config.build(), config, x, state)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradients_with_every_option_at_once(kind):
    """The richest configuration, whatever Hypothesis happens to draw: two bidirectional
    layers, batch_first, an initial state and unsorted lengths."""
    config = LayerConfig(
        kind,
        seq_len=4,
        batch=3,
        input_size=2,
        hidden_size=2,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        with_state=True,
        lengths=(2, 4, 1),
        seed=12,
    )
    rng = np.random.default_rng(12)
    x = tl.Tensor(rng.normal(size=config.x_shape), requires_grad=True)
    state = tuple(tl.Tensor(rng.normal(size=config.state_shape), requires_grad=True) for _ in range(config.state_parts))
    layer = config.build()
    check_layer_forward(layer, config, x, state)
    check_layer_gradients(layer, config, x, state)


@pytest.mark.parametrize("kind", (*KINDS, "rnn_relu"))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_layer_matches_numpy_reference(kind, data):
    config, x, state = data.draw(layer_problems(kind))
    check_layer_forward(config.build(), config, x, state)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_shapes_follow_pytorch(kind):
    config = LayerConfig(
        kind, seq_len=5, batch=3, input_size=2, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True
    )
    layer = config.build()
    output, final = layer(tl.zeros(*config.x_shape, dtype=tl.float64))
    assert output.shape == (3, 5, 8)  # batch_first: (batch, seq, directions * hidden)
    for part in _flatten(final):
        assert part.shape == (4, 3, 4)  # (layers * directions, batch, hidden), never batch_first
    assert len(_flatten(final)) == config.state_parts


def test_batch_first_is_a_transpose():
    plain = LayerConfig(
        "lstm", seq_len=4, batch=2, input_size=3, hidden_size=3, num_layers=2, bidirectional=True, seed=1
    ).build()
    batch_first = LayerConfig(
        "lstm",
        seq_len=4,
        batch=2,
        input_size=3,
        hidden_size=3,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        seed=2,
    ).build()
    batch_first.load_state_dict(plain.state_dict())
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    out_plain, (h_plain, c_plain) = plain(tl.Tensor(x), lengths=[4, 2])
    out_first, (h_first, c_first) = batch_first(tl.Tensor(x.transpose(1, 0, 2)), lengths=[4, 2])
    np.testing.assert_array_equal(out_first.numpy(), out_plain.numpy().transpose(1, 0, 2))
    np.testing.assert_array_equal(h_first.numpy(), h_plain.numpy())
    np.testing.assert_array_equal(c_first.numpy(), c_plain.numpy())


def test_full_lengths_equal_no_lengths():
    config = LayerConfig(
        "gru", seq_len=4, batch=3, input_size=2, hidden_size=3, num_layers=2, bidirectional=True, seed=3
    )
    layer = config.build()
    x = tl.Tensor(np.random.default_rng(1).normal(size=config.x_shape))
    without, h_without = layer(x)
    with_lengths, h_with = layer(x, lengths=[4, 4, 4])
    np.testing.assert_array_equal(without.numpy(), with_lengths.numpy())
    np.testing.assert_array_equal(h_without.numpy(), h_with.numpy())


def test_outputs_past_a_sequence_end_are_zero_and_get_no_gradient():
    config = LayerConfig(
        "lstm", seq_len=5, batch=3, input_size=2, hidden_size=3, bidirectional=True, lengths=(5, 2, 1), seed=4
    )
    layer = config.build()
    x = tl.Tensor(np.random.default_rng(2).normal(size=config.x_shape), requires_grad=True)
    output, (h_n, c_n) = layer(x, lengths=config.lengths)
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    for b, length in enumerate(config.lengths):
        assert not output.numpy()[length:, b].any()
        assert np.abs(output.numpy()[:length, b]).min() > 0
        assert not x.grad.numpy()[length:, b].any()


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ([3, 0], "between 1 and the sequence length 3, got 0"),
        ([4, 1], "between 1 and the sequence length 3, got 4"),
        ([3], "lengths must be 2 integers"),
        ([3.0, 2.0], "lengths must be 2 integers"),
    ],
)
def test_bad_lengths_raise_clear_errors(lengths, message):
    layer = nn.GRU(2, 3)
    with pytest.raises(ValueError, match=message):
        layer(tl.zeros(3, 2, 2), lengths=lengths)


def test_bad_inputs_and_states_raise_clear_errors():
    lstm = nn.LSTM(2, 3, num_layers=2)
    x = tl.zeros(4, 5, 2)
    with pytest.raises(ValueError, match=r"\(seq, batch, input\) with input=2"):
        lstm(tl.zeros(4, 5, 3))
    with pytest.raises(ValueError, match=r"\(batch, seq, input\)"):
        nn.GRU(2, 3, batch_first=True)(tl.zeros(4, 2))
    with pytest.raises(ValueError, match="state of 2 tensor"):
        lstm(x, tl.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"shaped \(2, 5, 3\).*got \(1, 5, 3\)"):
        lstm(x, (tl.zeros(1, 5, 3), tl.zeros(1, 5, 3)))
    with pytest.raises(ValueError, match="num_layers"):
        nn.RNN(2, 3, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        nn.LSTM(2, 3, dropout=1.5)


def test_dropout_between_layers_only_in_training():
    tl.manual_seed(0)
    layer = nn.LSTM(3, 4, num_layers=2, dropout=0.5).astype(tl.float64)
    reference = nn.LSTM(3, 4, num_layers=2).astype(tl.float64)
    reference.load_state_dict(layer.state_dict())
    x = tl.Tensor(np.random.default_rng(3).normal(size=(5, 2, 3)))
    expected = reference(x)[0].numpy()

    layer.eval()
    np.testing.assert_array_equal(layer(x)[0].numpy(), expected)
    layer.train()
    first, second = layer(x)[0].numpy(), layer(x)[0].numpy()
    assert not np.allclose(first, expected) and not np.allclose(first, second)
    # The first layer's input is never dropped: a one-layer LSTM ignores dropout.
    single = nn.LSTM(3, 4, dropout=0.5).astype(tl.float64).train()
    np.testing.assert_array_equal(single(x)[0].numpy(), single.eval()(x)[0].numpy())


def test_recurrent_runs_any_cell_and_names_its_parameters():
    layer = nn.Recurrent(lambda i, h: make_cell("gru", i, h), 2, 3, num_layers=2, bidirectional=True)
    assert [name for name, _ in layer.named_parameters()][:5] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "weight_ih_l0_reverse",
    ]
    assert layer.weight_ih_l1.shape == (9, 6)
    x = tl.Tensor(np.random.default_rng(4).normal(size=(3, 2, 2)))
    expected = reference_layer("gru", layer.state_dict(), x.numpy(), num_layers=2, bidirectional=True)
    np.testing.assert_allclose(layer(x)[0].numpy(), expected[0], **FORWARD_TOLERANCE)


# --------------------------------------------------------------- canaries
# A canary is a deliberately broken cell or primitive; each must turn a check red.


class SwappedGatesLSTMCell(nn.LSTMCell):
    """Canary: the input and forget gates trade places."""

    def step(self, x_t, state):
        h, c = state
        i, f, g, o = (x_t + h @ self.weight_hh.T).chunk(4, axis=1)
        f, i = i, f
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class NoForgetLSTMCell(nn.LSTMCell):
    """Canary: the forget gate's contribution is dropped, c' = i ⊙ g."""

    def step(self, x_t, state):
        h, _ = state
        i, f, g, o = (x_t + h @ self.weight_hh.T).chunk(4, axis=1)
        c = i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class ResetBeforeMatmulGRUCell(nn.GRUCell):
    """Canary: the reset gate scales h before W_hn (the 2014 paper's variant), not after."""

    def step(self, x_t, h):
        x_r, x_z, x_n = x_t.chunk(3, axis=1)
        weight_r, weight_z, weight_n = self.weight_hh.chunk(3, axis=0)
        bias_r, bias_z, bias_n = self.bias_hh.chunk(3, axis=0)
        reset = (x_r + h @ weight_r.T + bias_r).sigmoid()
        update = (x_z + h @ weight_z.T + bias_z).sigmoid()
        new = (x_n + (reset * h) @ weight_n.T + bias_n).tanh()
        return (1 - update) * new + update * h


FORWARD_CANARIES = [
    ("lstm", SwappedGatesLSTMCell),
    ("lstm", NoForgetLSTMCell),
    ("gru", ResetBeforeMatmulGRUCell),
]


def _canary_problem(kind: str, cell_class: type | None = None):
    """A correct float64 cell, the same weights in ``cell_class`` (if given), and inputs."""
    tl.manual_seed(7)
    correct = make_cell(kind, 3, 4)
    broken = None
    if cell_class is not None:
        broken = cell_class(3, 4).astype(tl.float64)
        broken.load_state_dict(correct.state_dict())
    rng = np.random.default_rng(7)
    x = tl.Tensor(rng.normal(size=(2, 3)), requires_grad=True)
    parts = tuple(tl.Tensor(rng.normal(size=(2, 4)), requires_grad=True) for _ in range(2 if kind == "lstm" else 1))
    return correct, broken, x, parts


def _assert_cell_matches_reference(kind, cell, x, parts):
    expected = reference_step(
        kind, _weights(cell.state_dict(), ""), x.numpy(), _as_state(kind, [p.numpy() for p in parts])
    )
    for got, want in zip(_flatten(cell(x, _as_state(kind, parts))), _flatten(expected)):
        np.testing.assert_allclose(got.numpy(), want, **FORWARD_TOLERANCE)


@pytest.mark.parametrize(("kind", "cell_class"), FORWARD_CANARIES, ids=lambda v: getattr(v, "__name__", v))
def test_forward_canary_is_caught_by_the_reference_not_by_gradcheck(kind, cell_class):
    correct, broken, x, parts = _canary_problem(kind, cell_class)
    _assert_cell_matches_reference(kind, correct, x, parts)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        _assert_cell_matches_reference(kind, broken, x, parts)
    # The broken function still has the right derivative: gradcheck alone stays green.
    assert gradcheck(lambda x, *rest: broken(x, _as_state(kind, rest[: len(parts)])), (x, *parts, *broken.parameters()))


def test_forward_canary_inside_a_layer_is_caught_by_the_reference():
    config = LayerConfig(
        "lstm",
        seq_len=4,
        batch=2,
        input_size=3,
        hidden_size=3,
        num_layers=2,
        bidirectional=True,
        lengths=(4, 3),
        seed=8,
    )
    correct = config.build()
    broken = nn.Recurrent(
        lambda i, h: SwappedGatesLSTMCell(i, h).astype(tl.float64), 3, 3, num_layers=2, bidirectional=True
    )
    broken.load_state_dict(correct.state_dict())
    x = tl.Tensor(np.random.default_rng(8).normal(size=config.x_shape))
    check_layer_forward(correct, config, x, ())
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_layer_forward(broken, config, x, ())


def test_canary_runner_that_never_reverses_time_is_caught(monkeypatch):
    config = LayerConfig("gru", seq_len=4, batch=2, input_size=2, hidden_size=3, bidirectional=True, seed=9)
    layer = config.build()
    x = tl.Tensor(np.random.default_rng(9).normal(size=config.x_shape))
    check_layer_forward(layer, config, x, ())
    correct_run_cell = recurrent.run_cell

    def forward_only(cell, x, state, mask=None, reverse=False, *options):
        return correct_run_cell(cell, x, state, mask, False, *options)

    monkeypatch.setattr(recurrent, "run_cell", forward_only)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_layer_forward(layer, config, x, ())


def _broken_sigmoid_backward(ctx, g):
    (y,) = ctx.saved_tensors
    return g * y  # forgets the (1 - y) factor


def _broken_split_backward(ctx, *grads):
    return ctx.xp.concatenate(grads[::-1], axis=ctx.axis)  # pieces back in the wrong order


def _broken_unbind_backward(ctx, *grads):
    return ctx.xp.stack(grads[::-1], axis=ctx.axis)  # time steps back in the wrong order


@pytest.mark.parametrize(
    ("primitive", "broken_backward", "kind"),
    [
        (ops.Sigmoid, _broken_sigmoid_backward, "lstm"),
        (ops.Sigmoid, _broken_sigmoid_backward, "gru"),
        (ops.Split, _broken_split_backward, "lstm"),
        (ops.Split, _broken_split_backward, "gru"),
    ],
    ids=["sigmoid-lstm", "sigmoid-gru", "split-lstm", "split-gru"],
)
def test_backward_canary_in_a_primitive_fails_the_cell_gradcheck(monkeypatch, primitive, broken_backward, kind):
    correct, _, x, parts = _canary_problem(kind)
    inputs = (x, *parts, *correct.parameters())

    def run(x, *rest):
        return _flatten(correct(x, _as_state(kind, rest[: len(parts)])))

    assert gradcheck(run, inputs)
    monkeypatch.setattr(primitive, "backward", staticmethod(broken_backward))
    with pytest.raises(GradcheckError, match="reverse mode gives"):
        gradcheck(run, inputs)


def test_backward_canary_in_unbind_fails_the_layer_gradcheck(monkeypatch):
    config = LayerConfig("rnn_tanh", seq_len=3, batch=2, input_size=2, hidden_size=2, with_state=True, seed=10)
    layer = config.build()
    layer.compile = False  # the written-out loop takes the projected inputs apart with Unbind
    rng = np.random.default_rng(10)
    x = tl.Tensor(rng.normal(size=config.x_shape), requires_grad=True)
    h0 = tl.Tensor(rng.normal(size=config.state_shape), requires_grad=True)
    check_layer_gradients(layer, config, x, (h0,))
    monkeypatch.setattr(ops.Unbind, "backward", staticmethod(_broken_unbind_backward))
    with pytest.raises(GradcheckError):
        check_layer_gradients(layer, config, x, (h0,))


class WrongTanh(tl.Function):
    """Canary op: tanh with the derivative 1 - y instead of 1 - y²."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y)


class WrongTanhRNNCell(nn.RNNCell):
    """A custom cell whose nonlinearity is a user Function with a wrong backward."""

    def step(self, x_t, h):
        return WrongTanh.apply(x_t + h @ self.weight_hh.T)


def test_backward_canary_in_a_custom_function_fails_the_gradcheck():
    tl.manual_seed(11)
    cell = WrongTanhRNNCell(2, 3).astype(tl.float64)
    rng = np.random.default_rng(11)
    x = tl.Tensor(rng.normal(size=(2, 2)), requires_grad=True)
    h = tl.Tensor(rng.normal(size=(2, 3)), requires_grad=True)
    _assert_cell_matches_reference("rnn_tanh", cell, x, (h,))  # forward is right
    with pytest.raises(GradcheckError, match=r"d\(input 0\)|d\(input 1\)|d\(input \d\)"):
        gradcheck(lambda x, h, *params: cell(x, h), (x, h, *cell.parameters()))


def test_the_input_projection_is_hoisted_out_of_the_loop_only_while_it_is_small(monkeypatch) -> None:
    looped = []  # the shape of what tl.scan steps over: projected inputs (G·H wide) or raw ones

    def spy(step, init, xs, **options):
        looped.append(xs.shape)
        return real_scan(step, init, xs, **options)

    real_scan = recurrent.scan
    monkeypatch.setattr(recurrent, "scan", spy)
    lstm, gru = nn.LSTM(3, 4), nn.GRU(3, 4)
    x = tl.Tensor(np.ones((5, 2, 3), dtype=np.float32))
    lstm(x), gru(x)
    assert looped == [(5, 2, 16), (5, 2, 12)]  # 4 and 3 gates of 4
    monkeypatch.setattr(recurrent, "PROJECTION_LIMIT", 5 * 2 * 16 - 1)  # one number too many for the LSTM
    lstm(x), gru(x)
    assert looped[2:] == [(5, 2, 3), (5, 2, 12)]
