"""``testing.check_cell``: it passes the built-in cells, and it names what is wrong in broken ones.

Each broken cell below is an LSTM written the way a user would write one, with a single
injected bug that gradcheck can observe (a wrong *forward* still has a right gradient,
so every bug here is in a VJP or in how gradient flows). For each, the test asserts on
the report's data: the op it blames, the gate, the time step, the contract.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
import tinygrad_lstm.testing.strategies as tst
from tinygrad_lstm import nn
from tinygrad_lstm.testing import CellCheckError, check_cell, gradcheck
from tinygrad_lstm.testing.cell_check import FIRST_EXAMPLE

LAST = FIRST_EXAMPLE.seq_len - 1  # the fixed first example runs t = 0..3


# ----------------------------------------------------------------- a user-written LSTM


class UserLSTMCell(nn.RecurrentCell):
    """An LSTM cell as a user writes it: gate order (i, f, g, o), PyTorch's layout.

    Subclasses inject one bug each by overriding a hook: ``sigmoid`` (the i and o
    gates), ``forget_sigmoid``, ``add_bias_hh``, ``recurrent_matmul``, ``forget_h``.
    """

    gate_names = ("i", "f", "g", "o")

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        rows = 4 * hidden_size

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter((tl.rand(*shape) * 2.0 - 1.0) * bound)

        self.weight_ih, self.weight_hh = uniform(rows, input_size), uniform(rows, hidden_size)
        self.bias_ih, self.bias_hh = uniform(rows), uniform(rows)

    def initial_state(self, batch, dtype=tl.float32, device=None):
        zeros = tl.zeros(batch, self.hidden_size, dtype=dtype, device=device)
        return zeros, zeros

    # hooks a broken cell overrides
    def sigmoid(self, x):
        return x.sigmoid()

    def forget_sigmoid(self, x):
        return self.sigmoid(x)

    def add_bias_hh(self, x):
        return x + self.bias_hh

    def recurrent_matmul(self, h):
        return h @ self.weight_hh.T

    def forget_h(self, h):
        return h  # what the forget gate reads of the previous hidden state

    def step(self, x_t, state):
        h, c = state
        from_input = x_t @ self.weight_ih.T + self.bias_ih
        gates = from_input + self.add_bias_hh(self.recurrent_matmul(h))
        i, _, g, o = gates.chunk(4, axis=1)
        f = (
            from_input.chunk(4, axis=1)[1]
            + self.add_bias_hh(self.recurrent_matmul(self.forget_h(h))).chunk(4, axis=1)[1]
        )
        input_gate, candidate, output_gate = self.sigmoid(i), g.tanh(), self.sigmoid(o)
        forget_gate = self.forget_sigmoid(f)
        c = forget_gate * c + input_gate * candidate
        h = output_gate * c.tanh()
        return h, c


class PeepholeLSTMCell(UserLSTMCell):
    """LSTM with peepholes (Gers & Schmidhuber): the gates also see the cell state.

    i = σ(… + w_ci ⊙ c), f = σ(… + w_cf ⊙ c), o = σ(… + w_co ⊙ c')
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)
        self.peephole = nn.Parameter((tl.rand(3, hidden_size) * 2.0 - 1.0) * bound)  # rows: i, f, o

    def step(self, x_t, state):
        h, c = state
        gates = x_t @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, axis=1)
        w_ci, w_cf, w_co = self.peephole[0], self.peephole[1], self.peephole[2]
        c = (f + w_cf * c).sigmoid() * c + (i + w_ci * c).sigmoid() * g.tanh()
        h = (o + w_co * c).sigmoid() * c.tanh()
        return h, c


# ------------------------------------------------------------------- injected bugs


class WrongSigmoid(tl.Function):
    """y = σ(x);  VJP (wrong on purpose): g · (1 - y²), tanh's derivative."""

    @staticmethod
    def forward(ctx, x):
        y = 1.0 / (1.0 + ctx.xp.exp(-x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class AddBiasDroppingGrad(tl.Function):
    """y = x + b;  VJP (wrong on purpose): (g, None) — the bias gets no gradient."""

    @staticmethod
    def forward(ctx, x, bias):
        return x + bias

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class HiddenMatMul(tl.Function):
    """y = h @ Wᵀ;  VJP: (g @ W, gᵀ @ h), except (on purpose) the candidate gate's block
    of the weight gradient comes back transposed."""

    @staticmethod
    def forward(ctx, h, weight):
        ctx.save_for_backward(h, weight)
        return h @ weight.T

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        grad_weight = grad.T @ h
        hidden = h.shape[1]
        block = slice(2 * hidden, 3 * hidden)  # gate g
        grad_weight[block] = grad_weight[block].T.copy()
        return grad @ weight, grad_weight


class SigmoidBug(UserLSTMCell):
    def sigmoid(self, x):
        return WrongSigmoid.apply(x)  # the i, f and o gates


class ForgetGateBug(UserLSTMCell):
    def forget_sigmoid(self, x):
        return WrongSigmoid.apply(x)  # the forget gate only


class DetachedForgetInput(UserLSTMCell):
    def forget_h(self, h):
        return h.detach()  # the forget gate reads h_{t-1} without its gradient


class DroppedBiasGrad(UserLSTMCell):
    def add_bias_hh(self, x):
        return AddBiasDroppingGrad.apply(x, self.bias_hh)


class TransposedBlock(UserLSTMCell):
    def recurrent_matmul(self, h):
        return HiddenMatMul.apply(h, self.weight_hh)


def failure(make_cell, **kwargs):
    with pytest.raises(CellCheckError) as caught:
        check_cell(make_cell, **kwargs)
    report = caught.value.report
    assert not report.passed and str(report) == str(caught.value)
    return report


def source_code(check) -> str:
    return check.source.code


# ----------------------------------------------------------------------------- passing


@pytest.mark.parametrize(
    "make_cell",
    [nn.RNNCell, lambda i, h: nn.RNNCell(i, h, nonlinearity="relu"), nn.LSTMCell, nn.GRUCell, UserLSTMCell],
    ids=["rnn_tanh", "rnn_relu", "lstm", "gru", "user_lstm"],
)
def test_correct_cells_pass(make_cell):
    report = check_cell(make_cell)
    assert report.passed and report.examples == 10
    assert "passed" in str(report)


def test_peephole_lstm_passes():
    report = check_cell(PeepholeLSTMCell, max_examples=6)
    assert report.passed and report.examples == 6


def test_check_cell_leaves_the_global_generator_alone():
    tl.manual_seed(123)
    expected = tl.rand(3).numpy()
    tl.manual_seed(123)
    check_cell(nn.RNNCell, max_examples=2)
    np.testing.assert_array_equal(tl.rand(3).numpy(), expected)


# ------------------------------------------------------------------ gradient bugs


def test_wrong_sigmoid_vjp_names_the_op_the_gates_and_the_step():
    report = failure(SigmoidBug)
    assert report.examples == 1 and report.config == FIRST_EXAMPLE
    culprit = report.culprit
    assert culprit.op == "WrongSigmoid"
    assert culprit.source.filename == __file__ and "WrongSigmoid.apply" in source_code(culprit)
    assert culprit.input_shapes == ((FIRST_EXAMPLE.batch, FIRST_EXAMPLE.hidden_size),)
    recurrent = report.recurrent
    assert recurrent.wrong_gates == ["i", "f", "o"]  # not g: its tanh is right
    # dLoss/dh_3 reaches the loss directly; backpropagating through step 3 goes wrong
    assert recurrent.first_wrong_step == LAST - 1
    assert recurrent.timeline("h").wrong_steps == list(range(LAST))
    assert "wrong VJP: WrongSigmoid" in str(report)


def test_forget_gate_bug_is_blamed_on_gate_f_from_the_right_step():
    report = failure(ForgetGateBug)
    assert report.culprit.op == "WrongSigmoid"
    assert "WrongSigmoid.apply(x)  # the forget gate only" in source_code(report.culprit)
    recurrent = report.recurrent
    assert recurrent.wrong_gates == ["f"]
    step = recurrent.step("l0")
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        (parameter,) = [p for p in step.parameters if p.name == name]
        assert parameter.wrong_gates == ["f"], name
        right = [block for block in parameter.blocks if block.gate != "f"]
        assert all(block.error < 1e-6 for block in right)
    h = recurrent.timeline("h", "l0")
    assert h.first_wrong == LAST - 1 and h.span() == f"from t={LAST - 1} back"
    assert not recurrent.timeline("c").wrong[LAST - 1]  # c_{T-2} only goes wrong one step later
    assert f"weight_hh_l0, bias_ih_l0, bias_hh_l0: gate f rows wrong, from t={LAST - 1} back" in "\n".join(
        report.findings
    )


def test_detached_state_is_reported_as_a_cut_at_the_detach():
    report = failure(DetachedForgetInput)
    localization = report.localization
    assert localization.culprit is None  # every op's VJP is right ...
    cut = localization.cuts[0]  # ... but the forward reads h_{t-1} without its gradient
    assert cut.consumer.name == "MatMul" and cut.position == 0
    assert cut.consumer.source.code == "return h @ self.weight_hh.T"  # where the op reading it is made
    assert "h.detach()" in cut.via and "forget gate reads" in cut.via
    recurrent = report.recurrent
    step = recurrent.step()
    assert step.wrong_gates == [] and [part.name for part in step.state if part.wrong] == ["h"]
    assert recurrent.first_wrong_step == LAST - 1
    assert any("dLoss/dh_(t-1)" in line for line in report.findings)


def test_dropped_bias_gradient_names_the_op_and_the_bias():
    report = failure(DroppedBiasGrad)
    culprit = report.culprit
    assert culprit.op == "AddBiasDroppingGrad"
    (wrong_input,) = culprit.inputs
    assert wrong_input.position == 1 and wrong_input.returned_none
    step = report.recurrent.step()
    assert [p.name for p in step.parameters if p.wrong] == ["bias_hh_l0"]
    assert report.recurrent.first_wrong_step is None  # state gradients are right at every step
    assert "bias_hh_l0: gradient wrong in every row" in report.findings
    assert "returned None" in str(report)


def test_transposed_weight_block_names_the_gate():
    report = failure(TransposedBlock)
    culprit = report.culprit
    assert culprit.op == "HiddenMatMul" and [check.position for check in culprit.inputs] == [1]
    step = report.recurrent.step()
    assert [p.name for p in step.parameters if p.wrong] == ["weight_hh_l0"]
    assert step.parameters[1].wrong_gates == ["g"]
    assert report.recurrent.first_wrong_step is None
    assert "weight_hh_l0: gate g rows wrong" in report.findings


def test_bug_outside_the_first_example_is_found_by_the_search():
    class WrongForSingleSequence(tl.Function):
        """y = tanh(x); VJP right except (on purpose) for a batch of one sequence."""

        @staticmethod
        def forward(ctx, x):
            y = ctx.xp.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * (1 - y * y) * (2.0 if grad.shape[0] == 1 else 1.0)

    class Cell(nn.RNNCell):
        def step(self, x_t, h):
            return WrongForSingleSequence.apply(x_t + h @ self.weight_hh.T)

    report = failure(Cell)
    assert report.examples > 1 and report.config.batch == 1
    assert report.culprit.op == "WrongForSingleSequence"
    assert "drawn by Hypothesis" in str(report)


# ------------------------------------------------------------------ contract bugs


class Float64Leak(UserLSTMCell):
    def step(self, x_t, state):
        h, c = super().step(x_t, state)
        return h * tl.Tensor(np.ones(self.hidden_size)), c  # np.ones is float64


class KeepsStateBetweenCalls(nn.RNNCell):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def step(self, x_t, h):
        self.calls += 1
        return (x_t + h @ self.weight_hh.T + 0.001 * self.calls).tanh()


class GraphUnderNoGrad(nn.GRUCell):
    def step(self, x_t, h):
        with tl.set_grad_enabled(True):
            return super().step(x_t, h)


class DropsCellState(nn.LSTMCell):
    def step(self, x_t, state):
        h, c = super().step(x_t, state)
        return h, c[:, :1]


@pytest.mark.parametrize(
    "make_cell, contract, words",
    [
        (Float64Leak, "float32", "a float64 value leaks"),
        (KeepsStateBetweenCalls, "determinism", "two runs on the same input differ"),
        (GraphUnderNoGrad, "no_grad", "under no_grad() an output of step still has a graph"),
        (DropsCellState, "step", "turned c of shape"),
    ],
)
def test_broken_contracts_are_named(make_cell, contract, words):
    report = failure(make_cell, max_examples=1)
    assert any(problem.startswith(f"{contract}: ") and words in problem for problem in report.contract), report.contract
    if contract == "determinism":  # finite differences of a changing function are noise: not localised
        assert report.recurrent is None and "not deterministic" in report.notes[0]


def test_a_cell_that_raises_is_reported_not_crashed():
    class Raises(nn.RNNCell):
        def step(self, x_t, h):
            raise RuntimeError("boom")

    report = failure(Raises, max_examples=1)
    assert report.error == "RuntimeError: boom"


def test_report_can_be_returned_instead_of_raised():
    report = check_cell(ForgetGateBug, raise_on_failure=False)
    assert not report.passed and report.recurrent.wrong_gates == ["f"]


# ---------------------------------------------------------------------- strategies


@settings(max_examples=10, deadline=None)
@given(tst.cell_inputs(parts=2))
def test_cell_inputs_feed_one_lstm_step(inputs):
    x, (h, c) = inputs
    assert x.dtype == h.dtype == c.dtype == tl.float64 and x.requires_grad
    assert h.shape == c.shape and x.shape[0] == h.shape[0]
    assert np.all((np.abs(x.numpy()) >= 0.1) & (np.abs(x.numpy()) <= 1.0))  # away from 0 and saturation
    cell = nn.LSTMCell(x.shape[1], h.shape[1]).astype(tl.float64)
    assert gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))


@settings(max_examples=10, deadline=None)
@given(tst.recurrent_configs(), st.data())
def test_recurrent_configs_sequences_and_states_fit_a_layer(config, data):
    x = data.draw(tst.sequences(config))
    h_0, c_0 = data.draw(tst.initial_states(config, parts=2))
    assert x.shape == config.x_shape and h_0.shape == c_0.shape == config.state_shape
    layer = nn.LSTM(config.input_size, config.hidden_size, **config.layer_kwargs()).astype(tl.float64)
    output, (h_n, c_n) = layer(x, (h_0, c_0))
    time_and_batch = config.x_shape[:2]
    assert output.shape == (*time_and_batch, config.num_directions * config.hidden_size)
    assert h_n.shape == c_n.shape == config.state_shape


def test_check_cell_draws_from_a_given_strategy():
    configs = tst.recurrent_configs(max_seq_len=2, max_hidden_size=2, max_layers=1, bidirectional=True)
    report = check_cell(nn.GRUCell, configs=configs, max_examples=3)
    assert report.passed and report.examples == 3
