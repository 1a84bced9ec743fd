"""``nn.utils.gradient_flow``: ‖dLoss/dx_t‖ and ‖dLoss/dh_t‖ per time step, for cells, layers
and plain functions, checked against gradients read off by hand with ``retain_grad``."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn
from tinygrad_lstm.nn.utils import gradient_flow


def inputs(steps=5, batch=2, size=3, seed=0):
    return tl.Tensor(np.random.default_rng(seed).uniform(-1, 1, (steps, batch, size)))


def by_hand(cell, x, loss_of_outputs):
    """Run the cell step by step and read, with retain_grad, the gradient of the state each
    step hands on: a copy (``part * 1.0``) that the output and the next step read."""
    x = tl.Tensor(x, requires_grad=True)
    state = cell.initial_state(x.shape[1], dtype=x.dtype)
    states, outputs = [], []
    for x_t in x.unbind(0):
        new = cell.step(cell.project_input(x_t), state)
        parts = tuple(part * 1.0 for part in (new if isinstance(new, tuple) else (new,)))
        for part in parts:
            part.retain_grad()
        state = parts if isinstance(new, tuple) else parts[0]
        states.append(parts)
        outputs.append(cell.output(state))
    loss_of_outputs(outputs).backward()
    norms = [
        [np.linalg.norm(part.grad.numpy()) if part.grad is not None else 0.0 for part in parts] for parts in states
    ]
    return np.linalg.norm(x.grad.numpy(), axis=(1, 2)), np.array(norms).T


@pytest.mark.parametrize("make_cell", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_cell_flow_matches_gradients_read_by_hand(make_cell):
    tl.manual_seed(0)
    cell = make_cell(3, 4).astype(tl.float64)
    x = inputs()
    flow = gradient_flow(cell, x)
    x_norms, state_norms = by_hand(cell, x, lambda outputs: outputs[-1].sum())
    np.testing.assert_allclose(flow.input, x_norms, rtol=1e-10)
    np.testing.assert_allclose(flow.hidden, state_norms[0], rtol=1e-10)
    if make_cell is nn.LSTMCell:
        np.testing.assert_allclose(flow.cell, state_norms[1], rtol=1e-10, atol=1e-300)
        assert flow.cell[-1] == 0.0  # c_T-1 reaches the default loss only through h_T-1, inside the last step
    else:
        assert flow.cell is None
    # d(sum of h_T-1)/dh_T-1 is all ones: its norm is sqrt(batch · hidden)
    assert flow.hidden[-1] == pytest.approx(np.sqrt(2 * 4))
    assert flow.loss == pytest.approx(float(nn.run_cell(cell, x, cell.initial_state(2, dtype=tl.float64))[0][-1].sum()))


def test_small_weights_make_the_gradient_vanish_back_in_time():
    tl.manual_seed(0)
    rnn = nn.RNN(3, 8).astype(tl.float64)
    for parameter in rnn.parameters():
        parameter.data *= 0.3
    flow = gradient_flow(rnn, inputs(steps=8))
    assert np.all(np.diff(flow.hidden) > 0)  # strictly growing towards the end ...
    assert flow.hidden[0] < 1e-3 * flow.hidden[-1]  # ... from almost nothing at t = 0
    assert flow.input.shape == flow.hidden.shape == (8,)


def test_layers_report_every_cell_and_restore_themselves():
    tl.manual_seed(1)
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).astype(tl.float64)
    x = tl.Tensor(np.random.default_rng(1).uniform(-1, 1, (2, 6, 3)))  # (batch, T, input)
    before = lstm(x)[0].numpy()
    flow = gradient_flow(lstm, x)
    assert sorted(flow.states) == ["l0", "l0_reverse", "l1", "l1_reverse"]
    assert all(norms["h"].shape == norms["c"].shape == (6,) for norms in flow.states.values())
    np.testing.assert_array_equal(flow.hidden, flow.states["l1"]["h"])  # the top layer's forward cell
    assert flow.input.shape == (6,)
    # the default loss reads the last step's output, where the reverse cell starts: of its
    # states only the first it makes (t = T-1) reaches that loss
    reverse = flow.states["l1_reverse"]["h"]
    assert reverse[-1] == pytest.approx(np.sqrt(2 * 4)) and reverse[:-1].max() == 0.0
    assert np.all(flow.states["l0_reverse"]["h"] > 0)  # through layer 1's forward cell, all of layer 0 counts
    assert all(isinstance(cell, nn.LSTMCell) for cell in lstm.cells)
    np.testing.assert_array_equal(lstm(x)[0].numpy(), before)


def test_custom_loss_and_plain_functions():
    tl.manual_seed(2)
    gru = nn.GRU(3, 4).astype(tl.float64)
    x = inputs()
    every_step = gradient_flow(gru, x, loss=lambda result: result[0].sum())
    last_step = gradient_flow(gru, x)
    assert np.all(every_step.hidden > last_step.hidden - 1e-12)
    assert every_step.hidden[-1] == pytest.approx(last_step.hidden[-1])

    linear = nn.Linear(3, 2).astype(tl.float64)
    flow = gradient_flow(lambda x: linear(x).tanh(), x)
    assert flow.hidden is None and flow.cell is None
    assert np.count_nonzero(flow.input) == 1 and flow.input[-1] > 0  # no recurrence: only x_T-1 matters
    assert "‖dL/dx_t‖" in str(flow)


def test_the_input_is_left_alone():
    x = tl.Tensor(inputs().numpy(), requires_grad=True)
    gradient_flow(nn.RNNCell(3, 2).astype(tl.float64), x)
    assert x.grad is None and x.requires_grad
