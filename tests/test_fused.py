"""The opt-in fused LSTM step: its hand-derived VJP is gradchecked, and it equals the composed cell."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn
from tinygrad_lstm.tensor import ops
from tinygrad_lstm.testing import GradcheckError, gradcheck


def _step_inputs(batch, hidden, seed):
    rng = np.random.default_rng(seed)
    x_t = tl.Tensor(rng.normal(size=(batch, 4 * hidden)), requires_grad=True)
    h = tl.Tensor(rng.normal(size=(batch, hidden)) * 0.5, requires_grad=True)
    c = tl.Tensor(rng.normal(size=(batch, hidden)) * 0.5, requires_grad=True)
    weight = tl.Tensor(rng.normal(size=(4 * hidden, hidden)) * 0.5, requires_grad=True)
    return x_t, h, c, weight


@settings(max_examples=15)
@given(batch=st.integers(1, 3), hidden=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_fused_step_vjp_matches_finite_differences(batch, hidden, seed):
    assert gradcheck(lambda *inputs: nn.FusedLSTMStep.apply(*inputs), _step_inputs(batch, hidden, seed))


def test_a_wrong_fused_vjp_is_caught(monkeypatch):
    backward = nn.FusedLSTMStep.backward

    def forget_gate_term_dropped(ctx, grad_h, grad_c):
        grad_x, grad_h_prev, _, grad_weight = backward(ctx, grad_h, grad_c)
        return grad_x, grad_h_prev, grad_c * 0.0, grad_weight

    monkeypatch.setattr(nn.FusedLSTMStep, "backward", staticmethod(forget_gate_term_dropped))
    with pytest.raises(GradcheckError):
        gradcheck(lambda *inputs: nn.FusedLSTMStep.apply(*inputs), _step_inputs(2, 3, 0), localize=False)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_fused_layer_equals_the_composed_lstm(bidirectional, lengths):
    tl.manual_seed(0)
    composed = nn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional).astype(tl.float64)
    fused = nn.Recurrent(nn.FusedLSTMCell, 3, 4, num_layers=2, bidirectional=bidirectional).astype(tl.float64)
    fused.load_state_dict(composed.state_dict())  # same names and layout
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3, 3))
    h0, c0 = (rng.normal(size=(2 * (2 if bidirectional else 1), 3, 4)) for _ in range(2))
    results = []
    for layer in (composed, fused):
        inputs = [tl.Tensor(a, requires_grad=True) for a in (x, h0, c0)]
        output, (h_n, c_n) = layer(inputs[0], (inputs[1], inputs[2]), lengths=lengths)
        ((output * output).sum() + (h_n * c_n).sum()).backward()
        grads = [t.grad.numpy() for t in inputs] + [p.grad.numpy() for p in layer.parameters()]
        results.append([output.numpy(), h_n.numpy(), c_n.numpy(), *grads])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_fused_cell_is_one_node_per_step():
    cell = nn.FusedLSTMCell(3, 4)
    h, c = cell(tl.randn(2, 3), (tl.zeros(2, 4), tl.zeros(2, 4)))
    assert h.grad_fn.function is nn.FusedLSTMStep
    assert nn.LSTMCell(3, 4)(tl.randn(2, 3))[0].grad_fn.function is ops.Mul  # the default stays composed
