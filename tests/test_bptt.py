"""Truncated BPTT, long sequences, memory, and dtype hygiene of a training step.

* Carrying the state across chunks with ``nn.detach_state`` cuts the graph: a chunk's
  gradients equal those of the same chunk run from a constant initial state.
* Memory stays flat from chunk to chunk (tracemalloc), and each chunk's graph is freed
  (weak references die) — and a deliberately leaking loop shows the measurement bites.
* An LSTM runs forward and backward over 2,000 steps (the backward pass is iterative).
* A float32 training step never produces a float64 gradient.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim
from tinygrad_lstm.nn import functional as F


def _grads(module: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.grad.numpy() for name, p in module.named_parameters()}


def _chunk_loss(output: tl.Tensor, weights: np.ndarray) -> tl.Tensor:
    return (output * tl.Tensor(weights)).sum()


# ------------------------------------------------------------ truncation


def test_detach_state_cuts_the_graph_between_chunks():
    tl.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2).astype(tl.float64)
    rng = np.random.default_rng(0)
    x = tl.Tensor(rng.normal(size=(8, 2, 3)), requires_grad=True)
    weights = rng.normal(size=(4, 2, 4))

    output, state = lstm(x[:4])
    _chunk_loss(output, weights).backward()
    first_chunk_x_grad = x.grad.numpy()
    assert np.abs(first_chunk_x_grad[:4]).min() > 0

    lstm.zero_grad()
    x.grad = None
    carried = nn.detach_state(state)
    assert isinstance(carried, tuple) and len(carried) == 2
    for part, original in zip(carried, state):
        assert part.is_leaf and not part.requires_grad and part.grad_fn is None
        np.testing.assert_array_equal(part.numpy(), original.numpy())
    output, _ = lstm(x[4:], carried)
    _chunk_loss(output, weights).backward()
    truncated = _grads(lstm)
    # No gradient flowed back into the first chunk's inputs.
    assert not x.grad.numpy()[:4].any() and np.abs(x.grad.numpy()[4:]).min() > 0

    # Manual computation: the second chunk from a constant state with the same values.
    lstm.zero_grad()
    constant = tuple(tl.Tensor(part.numpy()) for part in state)
    output, _ = lstm(tl.Tensor(x.numpy()[4:]), constant)
    _chunk_loss(output, weights).backward()
    for name, grad in _grads(lstm).items():
        np.testing.assert_array_equal(truncated[name], grad, err_msg=name)

    # Full BPTT through both chunks gives different parameter gradients: truncation mattered.
    lstm.zero_grad()
    output, state = lstm(x[:4])
    output, _ = lstm(x[4:], state)
    _chunk_loss(output, weights).backward()
    assert not np.allclose(_grads(lstm)["weight_hh_l0"], truncated["weight_hh_l0"])


def test_detach_state_handles_a_tensor_a_tuple_and_a_list():
    h = tl.randn(1, 2, 3, requires_grad=True) * 2.0
    assert not nn.detach_state(h).requires_grad
    assert nn.detach_state(h).numpy().tolist() == h.numpy().tolist()
    assert type(nn.detach_state([h, h])) is list
    assert nn.utils.detach_state is nn.detach_state
    plain = h.detach()
    assert plain.is_leaf and plain.data is h.data  # shares memory, as PyTorch's detach


def test_without_detach_the_second_chunk_backpropagates_into_a_freed_graph():
    gru = nn.GRU(2, 3)
    output, h = gru(tl.randn(4, 1, 2))
    output.sum().backward()
    output, _ = gru(tl.randn(4, 1, 2), h)  # h still points into the first chunk's graph
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        output.sum().backward()


# --------------------------------------------------------------- memory


def _numpy_bytes() -> int:
    """Bytes of NumPy array data alive now (NumPy reports its buffers in its own domain)."""
    snapshot = tracemalloc.take_snapshot()
    arrays = snapshot.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(trace.size for trace in arrays.traces)


def _train_chunks(chunks: int, keep_graphs: bool = False) -> list[tuple[int, int, int | None]]:
    """A truncated-BPTT loop; after each chunk: (current, peak, NumPy bytes) from tracemalloc
    (NumPy bytes after chunks 5 and ``chunks`` only: a snapshot takes a while)."""
    tl.manual_seed(0)
    lstm, head = nn.LSTM(16, 64), nn.Linear(64, 5)
    optimizer = optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(chunks, 10, 16, 16)).astype(np.float32)
    targets = rng.integers(0, 5, size=(chunks, 10, 16))
    state, kept, memory, previous = None, [], [], None
    for chunk in range(chunks):
        tracemalloc.reset_peak()
        output, state = lstm(tl.Tensor(data[chunk]), state)
        loss = F.cross_entropy(head(output), targets[chunk])
        if keep_graphs:  # the leak of the control loop: graphs kept, never backpropagated
            kept.append(loss)
            state = nn.detach_state(state)
        else:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            graph = [weakref.ref(t) for t in (output, loss, *state)]
            state = nn.detach_state(state)
            del output, loss
            if previous is not None:  # the chunk before this one has been freed entirely
                assert all(reference() is None for reference in previous), f"chunk {chunk - 1}'s graph is alive"
            previous = graph
        current, peak = tracemalloc.get_traced_memory()
        memory.append((current, peak, _numpy_bytes() if chunk in (4, chunks - 1) else None))
    return memory


def test_memory_does_not_grow_from_chunk_to_chunk():
    gc.collect()
    tracemalloc.start()
    try:
        memory = _train_chunks(30)
        leaking = _train_chunks(30, keep_graphs=True)
    finally:
        tracemalloc.stop()
    (current_5, peak_5, arrays_5), (current_30, peak_30, arrays_30) = memory[4], memory[29]
    # Array data is exactly flat: parameters, gradients, Adam's moments, the carried state.
    assert arrays_30 <= arrays_5 + 4096, f"array data grew from {arrays_5} to {arrays_30} bytes"
    # All allocations: CPython's free lists keep a few tens of KiB of small objects while they
    # fill up, far less than one chunk's graph (about 0.5 MiB here).
    graph = peak_5 - current_5
    margin = 128 * 1024
    assert graph > 3 * margin
    assert current_30 <= current_5 + margin, f"current grew from {current_5} to {current_30} bytes"
    assert peak_30 <= peak_5 + margin, f"peak grew from {peak_5} to {peak_30} bytes"
    # Control: a loop that keeps its graphs grows by far more than the margin.
    assert leaking[29][0] - leaking[4][0] > 10 * margin
    assert leaking[29][2] - leaking[4][2] > 10 * margin


# ---------------------------------------------------------- long sequence


def test_lstm_over_2000_steps_runs_forward_and_backward():
    tl.manual_seed(0)
    lstm = nn.LSTM(4, 8)
    x = tl.Tensor(np.random.default_rng(0).normal(size=(2000, 2, 4)).astype(np.float32), requires_grad=True)
    start = time.perf_counter()
    output, (h_n, c_n) = lstm(x)
    (output.mean() + h_n.sum() + c_n.sum()).backward()
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0, f"2,000 steps took {elapsed:.1f} s"
    assert output.shape == (2000, 2, 8) and output.dtype == np.float32
    for name, parameter in lstm.named_parameters():
        grad = parameter.grad.numpy()
        assert grad.dtype == np.float32 and np.isfinite(grad).all() and np.abs(grad).max() > 0, name
    assert np.isfinite(x.grad.numpy()).all() and np.abs(x.grad.numpy()[-1]).max() > 0


# ----------------------------------------------------------------- dtypes


def _recurrent_step(layer, x, lengths=None):
    output, _ = layer(x, lengths=lengths)
    return output


LAYERS = {
    "RNN": lambda: (nn.RNN(3, 4, num_layers=2, bidirectional=True, dropout=0.3), _recurrent_step),
    "RNN-relu": lambda: (nn.RNN(3, 4, nonlinearity="relu", batch_first=True), _recurrent_step),
    "LSTM": lambda: (nn.LSTM(3, 4, num_layers=2, bidirectional=True, dropout=0.3), _recurrent_step),
    "GRU": lambda: (nn.GRU(3, 4, num_layers=2, dropout=0.3), _recurrent_step),
    "RNNCell": lambda: (nn.RNNCell(3, 4), lambda cell, x, lengths=None: cell(x[0])),
    "LSTMCell": lambda: (nn.LSTMCell(3, 4), lambda cell, x, lengths=None: cell(x[0])[0]),
    "GRUCell": lambda: (nn.GRUCell(3, 4), lambda cell, x, lengths=None: cell(x[0])),
    "Linear": lambda: (nn.Linear(3, 4), lambda linear, x, lengths=None: linear(x)),
}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_float32_training_step_keeps_every_gradient_float32(name, with_lengths):
    tl.manual_seed(0)
    layer, run = LAYERS[name]()
    embedding = nn.Embedding(10, 3)
    model = nn.Sequential(embedding, layer)
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    tokens = np.random.default_rng(0).integers(0, 10, size=(5, 2))
    batch = 5 if getattr(layer, "batch_first", False) else 2
    lengths = np.array([5, 3] if batch == 2 else [2, 1, 2, 2, 1]) if with_lengths else None
    output = run(layer, nn.Dropout(0.2)(embedding(tokens)), lengths=lengths)
    assert output.dtype == np.float32
    loss = F.cross_entropy(output, np.zeros(output.shape[:-1], dtype=np.int64)) + F.mse_loss(
        output, tl.zeros(*output.shape)
    )
    assert loss.dtype == np.float32
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad.dtype == np.float32, f"{parameter_name}: gradient is {parameter.grad.dtype}"
        assert parameter.dtype == np.float32, f"{parameter_name}: parameter became {parameter.dtype}"
