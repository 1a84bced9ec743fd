"""Same weights, same inputs: our layers, cells and optimizers against PyTorch's, in float64.

Everything is compared: outputs, final states and every gradient (input, initial states,
each parameter), to 1e-10. The loss is a fixed random linear functional of everything a
layer returns, so every output element and every final state carries gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim

torch = pytest.importorskip("torch")

TOLERANCE = dict(rtol=1e-10, atol=1e-10)


def _ours_and_theirs(kind: str, input_size: int, hidden_size: int, seed: int = 0, **options):
    """Our float64 layer and a torch layer holding the same weights under the same names."""
    tl.manual_seed(seed)
    if kind == "lstm":
        ours, theirs = nn.LSTM(input_size, hidden_size, **options), torch.nn.LSTM
    elif kind == "gru":
        ours, theirs = nn.GRU(input_size, hidden_size, **options), torch.nn.GRU
    else:
        nonlinearity = kind.removeprefix("rnn_")
        ours = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **options)
        theirs = lambda *args, **kw: torch.nn.RNN(*args, nonlinearity=nonlinearity, **kw)  # noqa: E731
    ours.astype(tl.float64)
    theirs = theirs(input_size, hidden_size, dtype=torch.float64, **options)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # names and order
    theirs.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})
    return ours, theirs


def _cells(kind: str, input_size: int, hidden_size: int, bias: bool = True):
    tl.manual_seed(1)
    if kind == "lstm":
        ours, theirs = nn.LSTMCell(input_size, hidden_size, bias), torch.nn.LSTMCell
        theirs = theirs(input_size, hidden_size, bias, dtype=torch.float64)
    elif kind == "gru":
        ours = nn.GRUCell(input_size, hidden_size, bias)
        theirs = torch.nn.GRUCell(input_size, hidden_size, bias, dtype=torch.float64)
    else:
        nonlinearity = kind.removeprefix("rnn_")
        ours = nn.RNNCell(input_size, hidden_size, bias, nonlinearity=nonlinearity)
        theirs = torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity=nonlinearity, dtype=torch.float64)
    ours.astype(tl.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})
    return ours, theirs


def _leaf_pair(array: np.ndarray):
    return tl.Tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def _flat(result) -> list:
    flat = []
    for item in result if isinstance(result, tuple) else (result,):
        flat.extend(item if isinstance(item, tuple) else (item,))
    return flat


def _backward_with_random_weights(ours: list, theirs: list, rng: np.random.Generator) -> None:
    """Backpropagate Σ_k Σ out_k ⊙ W_k through both, with the same random W_k."""
    loss_ours, loss_theirs = 0.0, 0.0
    for out, their_out in zip(ours, theirs):
        weight = rng.normal(size=out.shape)
        loss_ours = loss_ours + (out * tl.Tensor(weight)).sum()
        loss_theirs = loss_theirs + (their_out * torch.from_numpy(weight)).sum()
    loss_ours.backward()
    loss_theirs.backward()


def _assert_same(ours, theirs, what: str) -> float:
    ours = ours.numpy() if isinstance(ours, tl.Tensor) else ours
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, **TOLERANCE, err_msg=what)
    return float(np.abs(ours - theirs).max(initial=0.0))


def _assert_same_gradients(ours_module, theirs_module, leaves: list[tuple[str, tl.Tensor, object]]) -> None:
    for name, ours, theirs in leaves:
        assert ours.grad is not None, f"no gradient reached {name}"
        _assert_same(ours.grad, theirs.grad, f"gradient of {name}")
    their_parameters = dict(theirs_module.named_parameters())
    for name, parameter in ours_module.named_parameters():
        assert parameter.grad is not None, f"no gradient reached {name}"
        _assert_same(parameter.grad, their_parameters[name].grad, f"gradient of {name}")


def _state_pair(kind: str, shape, rng):
    parts = [_leaf_pair(rng.normal(size=shape)) for _ in range(2 if kind == "lstm" else 1)]
    ours = tuple(p[0] for p in parts) if kind == "lstm" else parts[0][0]
    theirs = tuple(p[1] for p in parts) if kind == "lstm" else parts[0][1]
    names = ("h_0", "c_0")
    return ours, theirs, [(names[i], *parts[i]) for i in range(len(parts))]


LAYER_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True, with_state=True),
    dict(num_layers=2, with_state=True, bias=False),
    dict(num_layers=1, bidirectional=True, with_state=True),
    dict(num_layers=2, bidirectional=True),
]
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.mark.parametrize("case", LAYER_CASES, ids=_case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_torch(kind, case):
    case = dict(case)
    with_state = case.pop("with_state", False)
    steps, batch, input_size, hidden = 5, 3, 4, 3
    ours, theirs = _ours_and_theirs(kind, input_size, hidden, seed=2, **case)
    rng = np.random.default_rng(2)
    shape = (batch, steps, input_size) if case.get("batch_first") else (steps, batch, input_size)
    x, their_x = _leaf_pair(rng.normal(size=shape))
    leaves = [("x", x, their_x)]
    state = their_state = None
    if with_state:
        directions = 2 if case.get("bidirectional") else 1
        state, their_state, state_leaves = _state_pair(kind, (case["num_layers"] * directions, batch, hidden), rng)
        leaves += state_leaves

    result = _flat(ours(x, state))
    their_result = _flat(theirs(their_x, their_state))
    for name, got, expected in zip(("output", "h_n", "c_n"), result, their_result):
        _assert_same(got, expected, name)
    _backward_with_random_weights(result, their_result, rng)
    _assert_same_gradients(ours, theirs, leaves)


@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "state"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_torch(kind, bias, with_state):
    ours, theirs = _cells(kind, 4, 3, bias)
    rng = np.random.default_rng(3)
    x, their_x = _leaf_pair(rng.normal(size=(2, 4)))
    leaves = [("x", x, their_x)]
    state = their_state = None
    if with_state:
        state, their_state, state_leaves = _state_pair(kind, (2, 3), rng)
        leaves += state_leaves
    result, their_result = _flat(ours(x, state)), _flat(theirs(their_x, their_state))
    for name, got, expected in zip(("h", "c"), result, their_result):
        _assert_same(got, expected, name)
    _backward_with_random_weights(result, their_result, rng)
    _assert_same_gradients(ours, theirs, leaves)


def _packed_torch_run(theirs, x, state, lengths, batch_first: bool):
    pack = torch.nn.utils.rnn.pack_padded_sequence
    packed = pack(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    output, final = theirs(packed, state)
    total = x.shape[1] if batch_first else x.shape[0]
    output, _ = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=batch_first, total_length=total)
    return output, final


LENGTH_CASES = [
    dict(num_layers=1, lengths=[5, 2, 3, 5]),
    dict(num_layers=2, bidirectional=True, lengths=[2, 5, 1, 4]),
    dict(num_layers=2, bidirectional=True, batch_first=True, with_state=True, lengths=[3, 1, 5, 5]),
    dict(num_layers=1, bidirectional=True, with_state=True, lengths=[1, 1, 1, 1]),
]


@pytest.mark.parametrize("case", LENGTH_CASES, ids=_case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_lengths_match_torch_packed_sequences(kind, case):
    case = dict(case)
    with_state, lengths = case.pop("with_state", False), case.pop("lengths")
    steps, batch, input_size, hidden = 5, len(lengths), 3, 3
    ours, theirs = _ours_and_theirs(kind, input_size, hidden, seed=4, **case)
    rng = np.random.default_rng(4)
    batch_first = case.get("batch_first", False)
    x, their_x = _leaf_pair(rng.normal(size=(batch, steps, input_size) if batch_first else (steps, batch, input_size)))
    leaves = [("x", x, their_x)]
    state = their_state = None
    if with_state:
        directions = 2 if case.get("bidirectional") else 1
        state, their_state, state_leaves = _state_pair(kind, (case["num_layers"] * directions, batch, hidden), rng)
        leaves += state_leaves

    result = _flat(ours(x, state, lengths=np.array(lengths)))
    their_result = _flat(_packed_torch_run(theirs, their_x, their_state, lengths, batch_first))
    for name, got, expected in zip(("output", "h_n", "c_n"), result, their_result):
        _assert_same(got, expected, name)
    output = result[0].numpy()
    for b, length in enumerate(lengths):
        past_end = output[b, length:] if batch_first else output[length:, b]
        assert not past_end.any(), "outputs past a sequence's end must be zero"
    _backward_with_random_weights(result, their_result, rng)
    _assert_same_gradients(ours, theirs, leaves)


@pytest.mark.parametrize("bad", [0, 6])
def test_lengths_out_of_range_raise_clear_errors(bad):
    ours, _ = _ours_and_theirs("lstm", 2, 2, num_layers=1)
    with pytest.raises(ValueError, match=rf"between 1 and the sequence length 5, got {bad}"):
        ours(tl.zeros(5, 2, 2, dtype=tl.float64), lengths=[3, bad])


def test_a_forward_canary_fails_torch_parity():
    """A swapped-gate LSTM cell, run by the same runner, no longer matches PyTorch."""

    class SwappedGatesLSTMCell(nn.LSTMCell):
        def step(self, x_t, state):
            h, c = state
            i, f, g, o = (x_t + h @ self.weight_hh.T).chunk(4, axis=1)
            c = i.sigmoid() * c + f.sigmoid() * g.tanh()  # i and f swapped
            return o.sigmoid() * c.tanh(), c

    correct, theirs = _ours_and_theirs("lstm", 3, 3, num_layers=2, bidirectional=True)
    broken = nn.Recurrent(lambda i, h: SwappedGatesLSTMCell(i, h), 3, 3, num_layers=2, bidirectional=True)
    broken.astype(tl.float64).load_state_dict(correct.state_dict())
    x = np.random.default_rng(5).normal(size=(4, 2, 3))
    expected = theirs(torch.from_numpy(x))[0]
    _assert_same(correct(tl.Tensor(x))[0], expected, "output")
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        _assert_same(broken(tl.Tensor(x))[0], expected, "output")


# ------------------------------------------------------------------- optimizers

OPTIMIZER_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.01)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize(("name", "options"), OPTIMIZER_CASES, ids=lambda v: v if isinstance(v, str) else _case_id(v))
def test_optimizer_matches_torch(name, options):
    rng = np.random.default_rng(6)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    ours = [nn.Parameter(rng.normal(size=shape)) for shape in shapes]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    optimizer = getattr(optim, name)(ours, **options)
    their_optimizer = getattr(torch.optim, name)(theirs, **options)
    for step in range(6):
        optimizer.zero_grad()
        their_optimizer.zero_grad()
        for index, (p, q) in enumerate(zip(ours, theirs)):
            if step == 2 and index == 1:
                continue  # a parameter without a gradient this step is skipped by both
            gradient = rng.normal(size=p.shape)
            p.grad = tl.Tensor(gradient)
            q.grad = torch.from_numpy(gradient.copy())
        optimizer.step()
        their_optimizer.step()
        for index, (p, q) in enumerate(zip(ours, theirs)):
            _assert_same(p, q, f"parameter {index} after step {step + 1}")
            assert p.dtype == np.float64


def test_training_loop_matches_torch():
    """LSTM + Linear head, cross-entropy, clip_grad_norm_, Adam: five steps in lockstep."""
    ours_rnn, their_rnn = _ours_and_theirs("lstm", 3, 4, seed=7, num_layers=2)
    tl.manual_seed(7)
    ours_head = nn.Linear(4, 5).astype(tl.float64)
    their_head = torch.nn.Linear(4, 5, dtype=torch.float64)
    their_head.load_state_dict({k: torch.from_numpy(v) for k, v in ours_head.state_dict().items()})
    ours_params = [*ours_rnn.parameters(), *ours_head.parameters()]
    their_params = [*their_rnn.parameters(), *their_head.parameters()]
    optimizer = optim.Adam(ours_params, lr=0.05, weight_decay=0.01)
    their_optimizer = torch.optim.Adam(their_params, lr=0.05, weight_decay=0.01)
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.normal(size=(6, 2, 3))
        targets = rng.integers(0, 5, size=(6, 2))
        logits = ours_head(ours_rnn(tl.Tensor(x))[0])
        loss = nn.functional.cross_entropy(logits, targets)
        their_logits = their_head(their_rnn(torch.from_numpy(x))[0])
        their_loss = torch.nn.functional.cross_entropy(
            their_logits.reshape(-1, 5), torch.from_numpy(targets).reshape(-1)
        )
        _assert_same(loss, their_loss, "loss")
        optimizer.zero_grad()
        their_optimizer.zero_grad()
        loss.backward()
        their_loss.backward()
        norm = nn.utils.clip_grad_norm_(ours_params, 0.5)
        their_norm = torch.nn.utils.clip_grad_norm_(their_params, 0.5)
        assert isinstance(norm, float) and norm == pytest.approx(their_norm.item(), rel=1e-12)
        optimizer.step()
        their_optimizer.step()
    for (name, p), q in zip([*ours_rnn.named_parameters(), *ours_head.named_parameters()], their_params):
        _assert_same(p, q, name)
