"""Localising a failed gradcheck: the op (``testing.localize``) and, for recurrent models,
the time step and the gate (``testing.recurrent_report``).

The op-level check must blame exactly the wrong op — never a correct one at a kink,
under broadcasting, with several outputs or in float32 — and name the line of user code
that made it. The recurrent report must put the error at the right step and gate.
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
from tinygrad_lstm.tensor import function as function_module
from tinygrad_lstm.testing import GradcheckError, check_gradients, gradcheck, localize_ops, recurrent_report
from tinygrad_lstm.testing.localize import recording

RECURRENT_PY = nn.recurrent.__file__


def f64(values, requires_grad=True):
    return tl.Tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


class DoubleBackward(tl.Function):
    """y = x²;  VJP (wrong on purpose): 4x · g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 4 * x * grad


class ScaleNoGradForScale(tl.Function):
    """y = a · s;  VJP (wrong on purpose): (g · s, None)."""

    @staticmethod
    def forward(ctx, a, scale):
        ctx.save_for_backward(a, scale)
        return a * scale

    @staticmethod
    def backward(ctx, grad):
        a, scale = ctx.saved_tensors
        return grad * scale, None


class SwappedHalves(tl.Function):
    """(lo, hi) = split(x);  VJP (wrong on purpose): the two gradients swap places."""

    @staticmethod
    def forward(ctx, x):
        half = x.shape[0] // 2
        return x[:half], x[half:]

    @staticmethod
    def backward(ctx, grad_lo, grad_hi):
        return ctx.xp.concatenate([grad_hi, grad_lo])


# ------------------------------------------------------------------------- which op


def test_gradcheck_names_the_wrong_op_and_the_line_that_made_it():
    x = f64([0.3, -0.7, 1.1])
    w = f64(np.linspace(-1, 1, 9).reshape(3, 3))

    def fn(x, w):
        hidden = (w @ x).tanh()
        squared = DoubleBackward.apply(hidden)  # the bug
        return (squared * x).sigmoid().sum()

    with pytest.raises(GradcheckError) as caught:
        gradcheck(fn, (x, w))
    localization = caught.value.report.localization
    culprit = localization.culprit
    assert culprit.op == "DoubleBackward" and culprit.input_shapes == ((3,),)
    assert culprit.source.filename == __file__ and culprit.source.code.startswith("squared = DoubleBackward.apply")
    assert [check.position for check in culprit.inputs] == [0]
    assert localization.checked == localization.nodes == 6 and len(localization.wrong) == 1
    text = str(caught.value)
    assert "first wrong VJP: DoubleBackward (op #2, inputs (3,)) at tests/test_localize.py:" in text
    assert "squared = DoubleBackward.apply(hidden)  # the bug" in text


def test_the_first_wrong_node_in_forward_order_is_the_culprit():
    x = f64([0.5, -0.25])

    def fn(x):
        first = ScaleNoGradForScale.apply(x.exp(), x)
        return DoubleBackward.apply(first).sum()

    localization = check_gradients(fn, (x,)).localization
    assert [node.op for node in localization.wrong] == ["ScaleNoGradForScale", "DoubleBackward"]
    assert localization.culprit.op == "ScaleNoGradForScale"
    (check,) = localization.culprit.inputs
    assert check.position == 1 and check.returned_none and "returned None" in str(check)


def test_a_multi_output_op_is_checked_output_by_output():
    x = f64([0.1, 0.2, -0.3, 0.4])
    localization = check_gradients(lambda x: SwappedHalves.apply(x * x), (x,)).localization
    assert localization.culprit.op == "SwappedHalves"
    assert localization.culprit.input_shapes == ((4,),)


def test_localize_switch_and_automatic_size_limit():
    x = f64([0.5, -0.5])
    assert check_gradients(DoubleBackward.apply, (x,), localize=False).localization is None
    assert check_gradients(lambda x: (x * 2).sum(), (x,)).localization is None  # passed: nothing to localise

    def long_chain(x):
        for _ in range(120):
            x = x * 1.0 + 0.0
        return DoubleBackward.apply(x)

    automatic = check_gradients(long_chain, (x,)).localization  # 241 nodes > 200
    assert automatic.checked == 0 and "pass localize=True" in str(automatic)
    forced = check_gradients(long_chain, (x,), localize=True).localization
    assert forced.checked == 241 and forced.culprit.op == "DoubleBackward"


# ------------------------------------------------------------ no false accusations


def every_primitive(x, w, b):
    """Uses the engine's ops (all but Cast and ToDevice), every VJP right: none may be blamed."""
    a = (x @ w + b).tanh()  # MatMul, Add, Tanh (b broadcasts)
    a = a.sigmoid() * a.exp() / (a.abs() + 1.0) - a.relu()  # Sigmoid Exp Mul Div Abs Sub Relu
    a = (a * a + 1.0).sqrt().log() ** 1.5  # Sqrt Log Pow
    a = tl.maximum(a, a.T.sum(axis=0, keepdims=True).reshape(1, -1) * 0.1).clip(-2.0, 2.0)  # Transpose Sum Max..
    lo, hi = a.split([1, 2], axis=1)
    parts = tl.cat([hi, lo], axis=1).unbind(0)
    b2 = tl.stack(parts, axis=1)[1:, ::-1]  # Stack, GetItem with a negative step
    c = tl.where(b2 > 0.5, b2, -b2).expand(2, *b2.shape).mean(axis=0)
    return c.max(axis=1).sum() + c.logsumexp(axis=0).sum()


def test_correct_ops_are_never_blamed_even_at_kinks_and_under_broadcasting():
    rng = np.random.default_rng(0)
    x = f64(rng.uniform(-1, 1, (3, 4)))
    w = f64(rng.uniform(-1, 1, (4, 3)))
    b = f64(rng.uniform(-1, 1, (3,)))
    assert gradcheck(every_primitive, (x, w, b))
    localization = localize_ops(every_primitive, (x, w, b))
    assert localization.nodes > 30 and localization.checked == localization.nodes
    assert localization.wrong == [] and localization.cuts == []

    # an op computing in float32 (Cast) is checked with float32-sized steps, not blamed for round-off
    assert localize_ops(lambda t: (t.astype(tl.float32) * 3.0).astype(tl.float64).tanh().sum(), (x,)).wrong == []

    kinks = f64([0.0, 1.0, 1.0, -2.0])  # relu and abs at 0, a tie in max, a clip boundary
    localization = localize_ops(lambda t: t.relu() + t.abs() + t.max() + t.clip(-2.0, 0.5), (kinks,))
    assert localization.wrong == []


@settings(max_examples=15, deadline=None)
@given(tst.tensors(shape=tst.shapes(min_dims=1, max_dims=3, max_side=3), dtype=np.float32))
def test_float32_graphs_are_checked_in_float64(x):
    localization = localize_ops(lambda t: (t.tanh() * t.sigmoid()).sum(axis=0), (x,))
    assert localization.wrong == []


# ----------------------------------------------------------------------------- cuts


def test_a_detach_is_reported_as_a_cut_where_it_happens():
    x = f64([0.3, -0.6, 0.9])

    def fn(x):
        h = x.tanh()
        frozen = h.detach()  # the bug: the product below should see h's gradient
        return (frozen * h).sum()

    localization = check_gradients(fn, (x,)).localization
    assert localization.culprit is None
    (cut,) = localization.cuts
    assert cut.consumer.name == "Mul" and cut.position == 0
    assert "frozen = h.detach()" in cut.via and "the output of Tanh" in cut.origin
    assert "every op's VJP is right" in str(localization)


def test_a_numpy_round_trip_and_ops_after_a_detach_are_cuts_too():
    x = f64([0.3, -0.6, 0.9])

    def round_trip(x):
        h = x.tanh()
        return (tl.Tensor(h.numpy()) * h).sum()

    (cut,) = localize_ops(round_trip, (x,)).cuts
    assert "copying its values" in cut.via

    def after_detach(x):
        h = x.tanh()
        scaled = h.detach()[::-1] * 2.0  # no-grad ops on the detached value
        return (scaled * h).sum()

    (cut,) = localize_ops(after_detach, (x,)).cuts
    assert cut.via.startswith("ops run without gradient after detach() at")


def test_the_engines_own_detach_is_not_a_cut():
    x = f64([0.3, -0.6, 0.9])  # logsumexp detaches its shift on purpose
    assert localize_ops(lambda x: x.logsumexp() * x.sum(), (x,)).cuts == []


# ----------------------------------------------------------------------- recording


def test_sources_point_at_user_code_and_at_nn_for_nodes_made_there():
    tl.manual_seed(0)
    cell = nn.LSTMCell(2, 3)
    x = tl.randn(3, 1, 2, requires_grad=True)
    with recording() as rec:
        nn.run_cell(cell, x, cell.initial_state(1), compile=False)  # every op of every step recorded
        made_here = x.sum()
    by_op = {}
    for record in rec.records:
        by_op.setdefault(record.name, record)
    assert by_op["Sigmoid"].source.filename == RECURRENT_PY
    assert by_op["Sigmoid"].source.function == "step"  # a line of LSTMCell.step
    assert by_op["Stack"].source.filename == RECURRENT_PY
    assert rec.records[-1].source.filename == __file__ and "made_here = x.sum()" in rec.records[-1].source.code
    assert made_here.grad_fn is not None


def test_recording_puts_the_engine_back_even_on_error():
    forwards = {cls: cls.__dict__["forward"] for cls in (tl.ops.Tanh, tl.ops.MatMul, DoubleBackward)}
    detach = tl.Tensor.__dict__["detach"]
    with pytest.raises(RuntimeError, match="in the middle"):
        with recording():
            assert tl.ops.Tanh.__dict__["forward"] is not forwards[tl.ops.Tanh]
            raise RuntimeError("an error in the middle of a recorded forward")
    assert all(cls.__dict__["forward"] is forward for cls, forward in forwards.items())
    assert tl.Tensor.__dict__["detach"] is detach and function_module.record_source is None


def test_an_apply_bound_before_recording_is_still_recorded():
    apply = DoubleBackward.apply  # as in gradcheck(DoubleBackward.apply, ...)
    localization = check_gradients(apply, (f64([0.5, -1.5]),)).localization
    assert localization.checked == 1 and localization.culprit.op == "DoubleBackward"
    assert "check_gradients(apply" in localization.culprit.source.code  # the user's line, not the engine's


# ------------------------------------------------------------- which step, which gate


class BadTanh(tl.Function):
    """y = tanh(x);  VJP (wrong on purpose): g · (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y)


class CandidateBugLSTM(nn.LSTMCell):
    """nn.LSTMCell with a wrong VJP in the candidate gate g only."""

    def step(self, x_t, state):
        h, c = state
        i, f, g, o = (x_t + h @ self.weight_hh.T).chunk(4, axis=1)
        c = f.sigmoid() * c + i.sigmoid() * BadTanh.apply(g)
        return o.sigmoid() * c.tanh(), c


def sequence(steps, batch, size, seed=0):
    return tl.Tensor(tst.away_from_zero(np.random.default_rng(seed), (steps, batch, size)))


def test_built_in_cells_and_layers_pass_the_recurrent_report():
    tl.manual_seed(1)
    for model in [nn.RNNCell(2, 3), nn.GRUCell(2, 3), nn.LSTM(2, 2, bidirectional=True)]:
        report = recurrent_report(model.astype(tl.float64), sequence(3, 2, 2))
        assert report.passed, str(report)
        assert "agrees" in str(report)


def test_gate_and_step_for_a_built_in_layout_cell():
    tl.manual_seed(2)
    cell = CandidateBugLSTM(2, 3).astype(tl.float64)
    report = recurrent_report(cell, sequence(6, 2, 2))
    assert report.wrong_gates == ["g"]
    step = report.step("cell")
    assert step.preactivations.wrong_gates == ["g"]  # the projected input, split by gate
    assert step.parameters[1].name == "weight_hh" and step.parameters[1].wrong_gates == ["g"]
    assert report.first_wrong_step == 4
    assert report.timeline("h").span() == "from t=4 back"
    assert "weight_ih, weight_hh, bias_ih, bias_hh: gate g rows wrong, from t=4 back" in report.findings


def test_a_bug_in_the_reverse_direction_is_located_forward_in_time():
    made = []

    def make_cell(input_size, hidden_size):
        cls = CandidateBugLSTM if len(made) == 1 else nn.LSTMCell  # the second cell: l0_reverse
        made.append(cls)
        return cls(input_size, hidden_size)

    tl.manual_seed(3)
    layer = nn.Recurrent(make_cell, 2, 3, bidirectional=True).astype(tl.float64)
    report = recurrent_report(layer, sequence(5, 1, 2))
    assert report.step("l0").passed and report.step("l0_reverse").wrong_gates == ["g"]
    forward, backward = report.timeline("h", "l0"), report.timeline("h", "l0_reverse")
    assert not forward.wrong.any()
    assert backward.reverse and backward.first_wrong == 1 and backward.span() == "from t=1 forward"
    assert report.parameter("weight_hh_l0_reverse").wrong and not report.parameter("weight_hh_l0").wrong
    assert any(line.startswith("weight_ih_l0_reverse, weight_hh_l0_reverse") for line in report.findings)


def test_gates_of_a_user_cell_are_inferred_from_rows_over_hidden_size():
    class TwoGateCell(nn.RecurrentCell):
        """h' = σ(a) ⊙ tanh(b), with (a; b) = W [x; h]: two gate blocks, unnamed."""

        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.input_size, self.hidden_size = input_size, hidden_size
            self.weight = nn.Parameter(tl.rand(2 * hidden_size, input_size + hidden_size) - 0.5)

        def step(self, x_t, h):
            a, b = (tl.cat([x_t, h], axis=1) @ self.weight.T).chunk(2, axis=1)
            return a.sigmoid() * BadTanh.apply(b)

    tl.manual_seed(4)
    report = recurrent_report(TwoGateCell(2, 3).astype(tl.float64), sequence(3, 2, 2))
    (weight,) = report.step().parameters
    assert [block.gate for block in weight.blocks] == ["block 0", "block 1"]
    assert weight.wrong_gates == ["block 1"] and math.isclose(weight.blocks[0].error, 0.0, abs_tol=1e-6)


@settings(max_examples=5, deadline=None)
@given(tst.recurrent_configs(max_seq_len=3, max_batch=2, max_input_size=2, max_hidden_size=2, max_layers=1), st.data())
def test_recurrent_report_passes_on_drawn_gru_layers(config, data):
    x = data.draw(tst.sequences(config))
    layer = nn.GRU(config.input_size, config.hidden_size, **config.layer_kwargs()).astype(tl.float64)
    report = recurrent_report(layer, x, parameters=False)
    assert report.passed, str(report)
    assert [t.errors.shape for t in report.timelines] == [(config.seq_len,)] * config.num_directions


def test_a_value_computed_under_no_grad_is_a_cut():
    x = f64([0.3, -0.6, 0.9])

    def fn(x):
        h = x.tanh()
        with tl.no_grad():
            peak = h.max()  # the bug: h's largest entry, as a constant
        return (h / peak).sum()

    (cut,) = check_gradients(fn, (x,)).localization.cuts
    assert cut.consumer.name == "Div" and cut.position == 1 and "the output of Tanh" in cut.origin
