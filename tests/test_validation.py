"""Never silently wrong: constructor arguments, inputs and recurrent states are checked once,
by PyTorch's rules, and the error names the argument, what was expected and what was given."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn

CELLS = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}
LAYERS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}

# Values a user might pass as a size: ints of every sign, floats, strings, None.
size_values = st.one_of(
    st.integers(min_value=-3, max_value=5),
    st.sampled_from([2.0, 2.5, float("nan"), "4", None]),
)


def outcome(build):
    """'ok' or the exception's type name, for comparing two libraries' verdicts."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
    except Exception as error:  # noqa: BLE001  (any refusal counts)
        return type(error).__name__
    return "ok"


# --------------------------------------------------------------- constructors


@given(
    name=st.sampled_from(sorted({**CELLS, **LAYERS})),
    input_size=size_values,
    hidden_size=size_values,
)
def test_sizes_are_accepted_exactly_where_pytorch_accepts_them(name, input_size, hidden_size):
    torch = pytest.importorskip("torch")
    ours = outcome(lambda: {**CELLS, **LAYERS}[name](input_size, hidden_size))
    theirs = outcome(lambda: getattr(torch.nn, name)(input_size, hidden_size))
    assert (ours == "ok") == (theirs == "ok"), (name, input_size, hidden_size, ours, theirs)
    if ours != "ok":
        assert ours in ("TypeError", "ValueError")


@pytest.mark.parametrize("name", sorted({**CELLS, **LAYERS}))
@pytest.mark.parametrize("argument", ["input_size", "hidden_size"])
@pytest.mark.parametrize("value", [2.0, "4", -1, True])
def test_a_bad_size_error_names_the_argument_and_the_value(name, argument, value):
    sizes = {"input_size": 3, "hidden_size": 4, argument: value}
    with pytest.raises((TypeError, ValueError)) as caught:
        {**CELLS, **LAYERS}[name](sizes["input_size"], sizes["hidden_size"])
    message = str(caught.value)
    assert name in message and argument in message and repr(value).strip("'") in message
    assert "math domain" not in message and "division" not in message


@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_cell_of_hidden_size_zero_builds_and_returns_batch_by_zero_as_pytorch(name):
    torch = pytest.importorskip("torch")
    cell = CELLS[name](3, 0)
    x = tl.randn(2, 3, requires_grad=True)
    out = cell(x)
    ours = out[0] if isinstance(out, tuple) else out
    reference = getattr(torch.nn, name)(3, 0)(torch.randn(2, 3))
    reference = reference[0] if isinstance(reference, tuple) else reference
    assert ours.shape == tuple(reference.shape) == (2, 0)
    (ours.sum() + x.sum()).backward()  # the empty gates carry a (zero) gradient through
    assert x.grad.shape == (2, 3)


def test_a_layer_needs_positive_sizes_as_in_pytorch():
    for make in LAYERS.values():
        with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
            make(3, 0)
        with pytest.raises(ValueError, match="input_size must be greater than zero"):
            make(0, 3)
        with pytest.raises(ValueError, match="num_layers must be greater than zero"):
            make(3, 4, num_layers=0)
        with pytest.raises(TypeError, match="num_layers must be an int"):
            make(3, 4, num_layers=2.0)


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda v: nn.Linear(v, 4), "in_features"),
        (lambda v: nn.Linear(4, v), "out_features"),
        (lambda v: nn.Embedding(v, 4), "num_embeddings"),
        (lambda v: nn.Embedding(4, v), "embedding_dim"),
    ],
)
@pytest.mark.parametrize("value", [2.5, 2.0, "4", -1, None])
def test_linear_and_embedding_sizes_are_ints(build, argument, value):
    with pytest.raises((TypeError, ValueError), match=argument):
        build(value)


def test_linear_and_embedding_of_size_zero_build_as_in_pytorch():
    assert nn.Linear(0, 4)(tl.zeros(2, 0)).shape == (2, 4)
    assert nn.Linear(3, 0)(tl.zeros(2, 3)).shape == (2, 0)
    assert nn.Embedding(4, 0)(tl.Tensor([1, 2])).shape == (2, 0)


probabilities = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2, max_value=2),
    st.booleans(),
    st.sampled_from(["0.5", None]),
)


@given(p=probabilities)
def test_dropout_is_a_number_in_the_unit_interval_everywhere(p):
    valid = not isinstance(p, (bool, str, type(None))) and not math.isnan(p) and 0 <= p <= 1
    builders = [
        lambda: nn.Dropout(p),
        lambda: nn.functional.dropout(tl.ones(3), p),
        lambda: nn.LSTM(3, 4, num_layers=2, dropout=p),
        lambda: nn.GRU(3, 4, num_layers=2, dropout=p),
    ]
    for build in builders:
        if valid:
            assert outcome(build) == "ok", p
        else:
            with pytest.raises((TypeError, ValueError), match=r"\[0, 1\]"):
                build()


@given(p=probabilities)
def test_layer_dropout_is_refused_exactly_where_pytorch_refuses_it(p):
    torch = pytest.importorskip("torch")
    ours = outcome(lambda: nn.LSTM(3, 4, num_layers=2, dropout=p))
    theirs = outcome(lambda: torch.nn.LSTM(3, 4, num_layers=2, dropout=p))
    assert (ours == "ok") == (theirs == "ok"), (p, ours, theirs)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("flag", ["batch_first", "bidirectional", "bias"])
@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_layer_flags_must_be_bools(name, flag, value):
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        LAYERS[name](3, 4, **{flag: value})


@pytest.mark.parametrize("value", [1, "yes"])
def test_cell_and_linear_bias_must_be_a_bool(value):
    for build in (*CELLS.values(), nn.Linear):
        with pytest.raises(TypeError, match="bias must be a bool"):
            build(3, 4, bias=value)


@pytest.mark.parametrize("name", sorted({**CELLS, **LAYERS, "Linear": nn.Linear}))
def test_an_unknown_keyword_argument_names_the_public_class(name):
    make = {**CELLS, **LAYERS, "Linear": nn.Linear}[name]
    with pytest.raises(TypeError) as caught:
        make(3, 4, hiden_size=5)
    message = str(caught.value)
    assert "hiden_size" in message and name in message
    assert "_Gated" not in message and "_Builtin" not in message


def test_dropout_with_one_layer_warns_as_pytorch():
    for make in LAYERS.values():
        with pytest.warns(UserWarning, match="no effect with num_layers=1"):
            make(3, 4, dropout=0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make(3, 4, num_layers=2, dropout=0.5)
            make(3, 4, dropout=0.0)


# --------------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", sorted({**CELLS, **LAYERS}))
def test_nested_lists_are_refused_with_the_way_out(name):
    module = {**CELLS, **LAYERS}[name](3, 4)
    data = [[1.0, 2.0, 3.0]] if name in CELLS else [[[1.0, 2.0, 3.0]]]
    with pytest.raises(TypeError, match=r"expects a Tensor.*got list.*tl\.Tensor"):
        module(data)
    with pytest.raises(TypeError, match="expects a Tensor"):
        nn.Linear(3, 4)(data)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_a_zero_length_sequence_is_refused_as_in_pytorch(name, batch_first):
    layer = LAYERS[name](3, 4, batch_first=batch_first)
    x = tl.zeros(2, 0, 3) if batch_first else tl.zeros(0, 2, 3)
    with pytest.raises(ValueError, match="at least one step, got length 0"):
        layer(x)


@pytest.mark.parametrize("name", sorted({**CELLS, **LAYERS, "Linear": nn.Linear}))
@pytest.mark.parametrize("input_dtype", ["float64", "int64", "bool"])
def test_an_input_of_another_dtype_raises_naming_both(name, input_dtype):
    module = {**CELLS, **LAYERS, "Linear": nn.Linear}[name](3, 4)
    shape = (5, 2, 3) if name in LAYERS else (2, 3)
    x = tl.Tensor(np.ones(shape), dtype=input_dtype)
    with pytest.raises(TypeError, match=f"{input_dtype}.*float32"):
        module(x)
    module(x.astype(tl.float32))  # the way out the message names works


def test_a_float64_layer_takes_float64_input_and_refuses_float32():
    layer = nn.LSTM(3, 4).astype(tl.float64)
    assert layer(tl.zeros(5, 2, 3, dtype=tl.float64))[0].dtype == tl.float64
    with pytest.raises(TypeError, match="float32.*float64"):
        layer(tl.zeros(5, 2, 3))


# --------------------------------------------------------------------- states

BATCH, HIDDEN = 2, 4


@st.composite
def states(draw, parts_expected: int, leading: tuple[int, ...]):
    """A state with at most one mistake: a wrong container, count, shape of one part, or dtype.

    Returns (state, structure_ok, shapes_ok, dtype_ok); a correct tuple state comes as a
    tuple or as a list (PyTorch accepts both).
    """
    mistake = draw(st.sampled_from(["none", "container", "count", "shape", "dtype"]))
    expected_shape = (*leading, BATCH, HIDDEN)
    count = parts_expected
    if mistake == "count":
        count = draw(st.sampled_from([n for n in range(4) if n != parts_expected]))
    shapes = [expected_shape] * count
    if mistake == "shape" and count:
        wrong = [(1, HIDDEN), (*leading, 1, HIDDEN), (*leading, BATCH, HIDDEN + 1), (HIDDEN,), (BATCH, HIDDEN, 1)]
        shapes[draw(st.integers(0, count - 1))] = draw(st.sampled_from([w for w in wrong if w != expected_shape]))
    dtype = "float64" if mistake == "dtype" else "float32"
    tensors = [tl.Tensor(np.full(shape, 0.5), dtype=dtype) for shape in shapes]
    if parts_expected == 1 and mistake != "container" and count == 1:
        state = tensors[0]
    elif parts_expected > 1 and mistake == "container":
        state = tensors[0]
    else:
        state = tuple(tensors) if draw(st.booleans()) else list(tensors)
    return state, mistake not in ("container", "count"), mistake != "shape", mistake != "dtype"


def check_state_verdict(run, state, structure_ok, shapes_ok, dtype_ok, parts_expected, expected_shape):
    if structure_ok and shapes_ok and dtype_ok:
        run(state)  # accepted, a list like a tuple
        return
    with pytest.raises((TypeError, ValueError)) as caught:
        run(state)
    message = str(caught.value)
    if not structure_ok:
        assert f"state of {parts_expected} tensor" in message
    elif not shapes_ok:
        bad = next(p for p in (state if isinstance(state, (tuple, list)) else [state]) if p.shape != expected_shape)
        assert re.search(r"\b[hc](_0)?\b", message), message  # names the state
        assert str(expected_shape) in message and str(bad.shape) in message
    else:
        assert "float64" in message and "float32" in message


@pytest.mark.parametrize("name", sorted(CELLS))
@given(data=st.data())
def test_a_cell_checks_its_state_structure_shape_and_dtype(name, data):
    cell = CELLS[name](3, HIDDEN)
    parts = 2 if name == "LSTMCell" else 1
    state, structure_ok, shapes_ok, dtype_ok = data.draw(states(parts, ()))
    x = tl.zeros(BATCH, 3)
    check_state_verdict(lambda s: cell(x, s), state, structure_ok, shapes_ok, dtype_ok, parts, (BATCH, HIDDEN))


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
@given(data=st.data())
def test_a_layer_checks_its_state_structure_shape_and_dtype(name, num_layers, bidirectional, data):
    layer = LAYERS[name](3, HIDDEN, num_layers=num_layers, bidirectional=bidirectional)
    parts = 2 if name == "LSTM" else 1
    leading = (num_layers * (2 if bidirectional else 1),)
    state, structure_ok, shapes_ok, dtype_ok = data.draw(states(parts, leading))
    x = tl.zeros(5, BATCH, 3)
    expected = (*leading, BATCH, HIDDEN)
    check_state_verdict(lambda s: layer(x, s), state, structure_ok, shapes_ok, dtype_ok, parts, expected)


@pytest.mark.parametrize("name", sorted({**CELLS, **LAYERS}))
@given(data=st.data())
def test_state_verdicts_agree_with_pytorch(name, data):
    torch = pytest.importorskip("torch")
    is_layer = name in LAYERS
    parts = 2 if name.startswith("LSTM") else 1
    state, *_ = data.draw(states(parts, (1,) if is_layer else ()))
    ours = {**CELLS, **LAYERS}[name](3, HIDDEN)
    theirs = getattr(torch.nn, name)(3, HIDDEN).double()
    ours.astype(tl.float64)
    shape = (5, BATCH, 3) if is_layer else (BATCH, 3)
    as_float64 = [
        tl.Tensor(p.numpy(), dtype="float64") for p in (state if not isinstance(state, tl.Tensor) else [state])
    ]
    torch_parts = [torch.tensor(p.numpy()) for p in as_float64]

    def rebuild(parts_list, like):
        return parts_list[0] if isinstance(like, tl.Tensor) else type(like)(parts_list)

    verdict_ours = outcome(lambda: ours(tl.zeros(*shape, dtype="float64"), rebuild(as_float64, state)))
    verdict_theirs = outcome(lambda: theirs(torch.zeros(*shape, dtype=torch.float64), rebuild(torch_parts, state)))
    assert (verdict_ours == "ok") == (verdict_theirs == "ok"), (state, verdict_ours, verdict_theirs)


def test_a_list_state_gives_what_the_tuple_gives():
    tl.manual_seed(0)
    layer = nn.LSTM(3, 4, num_layers=2)
    x = tl.randn(5, 2, 3)
    h0, c0 = tl.randn(2, 2, 4), tl.randn(2, 2, 4)
    out_list, (h_list, c_list) = layer(x, [h0, c0])
    out_tuple, (h_tuple, c_tuple) = layer(x, (h0, c0))
    np.testing.assert_array_equal(out_list.numpy(), out_tuple.numpy())
    np.testing.assert_array_equal(c_list.numpy(), c_tuple.numpy())
    cell = nn.LSTMCell(3, 4)
    np.testing.assert_array_equal(cell(x[0], [h0[0], c0[0]])[1].numpy(), cell(x[0], (h0[0], c0[0]))[1].numpy())
