"""The hand-derived NumPy reference (benchmarks/numpy_reference.py) is right, in float64.

Its gradients are checked three ways, for the LSTM, the tanh RNN and the GRU alike:
against central finite differences, against PyTorch's autograd (when torch is
installed), and against our engine's ``nn.LSTM`` / ``nn.RNN`` / ``nn.GRU``.

The loss is a fixed random linear functional of everything the layer returns,
``Σ output ⊙ W_out + Σ h_n ⊙ W_h (+ Σ c_n ⊙ W_c)``, so that every output element and the
final state all carry gradient, and ``grad_output = W_out`` exactly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import numpy_reference as ref  # noqa: E402


@dataclass(frozen=True)
class Layer:
    """One recurrent layer kind: its reference functions and its names elsewhere."""

    kind: str  # "lstm", "rnn", "gru"
    layer_name: str  # class name in torch.nn and tinygrad_lstm.nn
    has_cell_state: bool

    def forward(self, x, h0, c0, params):
        """(output, h_n, c_n or None, cache)."""
        if self.has_cell_state:
            return ref.lstm_forward(x, h0, c0, params)
        forward = ref.rnn_forward if self.kind == "rnn" else ref.gru_forward
        output, h_n, cache = forward(x, h0, params)
        return output, h_n, None, cache

    def backward(self, weights, cache, need_input_grad=True):
        if self.has_cell_state:
            return ref.lstm_backward(weights["output"], cache, weights["h_n"], weights["c_n"], need_input_grad)
        backward = ref.rnn_backward if self.kind == "rnn" else ref.gru_backward
        return backward(weights["output"], cache, weights["h_n"], need_input_grad)

    @property
    def gradient_names(self) -> tuple[str, ...]:
        return ("x", "h0") + (("c0",) if self.has_cell_state else ()) + ref.PARAM_NAMES


LAYERS = [Layer("lstm", "LSTM", True), Layer("rnn", "RNN", False), Layer("gru", "GRU", False)]
LAYER_IDS = [layer.kind for layer in LAYERS]


def make_problem(layer: Layer, steps: int, batch: int, input_size: int, hidden: int, seed: int = 0):
    """Float64 inputs, parameters and loss weights; values kept away from tanh/σ saturation."""
    rng = np.random.default_rng(seed)
    inputs = {
        "x": rng.standard_normal((steps, batch, input_size)),
        "h0": 0.5 * rng.standard_normal((batch, hidden)),
        "c0": 0.5 * rng.standard_normal((batch, hidden)) if layer.has_cell_state else None,
    }
    params = ref.init_params(layer.kind, input_size, hidden, np.float64, seed=seed + 1)
    weights = {
        "output": rng.standard_normal((steps, batch, hidden)),
        "h_n": rng.standard_normal((batch, hidden)),
        "c_n": rng.standard_normal((batch, hidden)) if layer.has_cell_state else None,
    }
    return inputs, params, weights


def reference_loss(layer: Layer, inputs, params, weights) -> float:
    output, h_n, c_n, _ = layer.forward(inputs["x"], inputs["h0"], inputs["c0"], params)
    loss = np.sum(output * weights["output"]) + np.sum(h_n * weights["h_n"])
    if c_n is not None:
        loss += np.sum(c_n * weights["c_n"])
    return float(loss)


def reference_grads(layer: Layer, inputs, params, weights, need_input_grad=True) -> dict[str, Any]:
    _, _, _, cache = layer.forward(inputs["x"], inputs["h0"], inputs["c0"], params)
    return layer.backward(weights, cache, need_input_grad)


def assert_grads_close(what: str, got: dict, expected: dict, names, rtol: float, atol: float) -> None:
    """Compare gradient dicts; on failure say which gradient, where, expected and got."""
    problems = []
    for name in names:
        actual, wanted = np.asarray(got[name]), np.asarray(expected[name])
        if actual.shape != wanted.shape:
            problems.append(f"  {name}: shape {actual.shape}, expected {wanted.shape}")
            continue
        excess = np.abs(actual - wanted) - (atol + rtol * np.abs(wanted))
        if np.any(excess > 0):
            index = np.unravel_index(np.argmax(excess), wanted.shape)
            problems.append(
                f"  d loss/d {name}{list(index)}: expected {wanted[index]!r}, got {actual[index]!r} "
                f"({int(np.sum(excess > 0))} of {wanted.size} elements off)"
            )
    if problems:
        raise AssertionError(f"{what}: gradients differ (rtol={rtol}, atol={atol}):\n" + "\n".join(problems))


# ------------------------------------------------------------ finite differences


def finite_difference_grads(layer: Layer, inputs, params, weights, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences (L(v + ε) - L(v - ε)) / 2ε for every element of every input."""
    arrays = {**{k: v for k, v in inputs.items() if v is not None}, **params}
    grads = {}
    for name, array in arrays.items():
        grad = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            plus = reference_loss(layer, inputs, params, weights)
            array[index] = saved - eps
            minus = reference_loss(layer, inputs, params, weights)
            array[index] = saved
            grad[index] = (plus - minus) / (2 * eps)
        grads[name] = grad
    return grads


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_reference_matches_finite_differences(layer):
    inputs, params, weights = make_problem(layer, steps=3, batch=2, input_size=3, hidden=4)
    expected = finite_difference_grads(layer, inputs, params, weights)
    got = reference_grads(layer, inputs, params, weights)
    assert_grads_close(f"reference {layer.kind} vs finite differences", got, expected, layer.gradient_names, 1e-6, 1e-8)


# ----------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_reference_matches_torch(layer):
    torch = pytest.importorskip("torch")
    inputs, params, weights = make_problem(layer, steps=5, batch=3, input_size=4, hidden=6, seed=7)
    module = getattr(torch.nn, layer.layer_name)(4, 6).double()
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.from_numpy(params[name]))
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in inputs.items() if value is not None}
    x, h0 = leaves["x"], leaves["h0"][None]
    if layer.has_cell_state:
        output, (h_n, c_n) = module(x, (h0, leaves["c0"][None]))
    else:
        (output, h_n), c_n = module(x, h0), None
    loss = (output * torch.from_numpy(weights["output"])).sum() + (h_n[0] * torch.from_numpy(weights["h_n"])).sum()
    if c_n is not None:
        loss = loss + (c_n[0] * torch.from_numpy(weights["c_n"])).sum()
    loss.backward()

    expected = {name: leaf.grad.numpy() for name, leaf in leaves.items()}
    expected.update({name: parameter.grad.numpy() for name, parameter in module.named_parameters()})
    reference_output, *_ = layer.forward(inputs["x"], inputs["h0"], inputs["c0"], params)
    np.testing.assert_allclose(reference_output, output.detach().numpy(), rtol=1e-12, atol=1e-14)
    got = reference_grads(layer, inputs, params, weights)
    assert_grads_close(
        f"reference {layer.kind} vs torch.nn.{layer.layer_name}", got, expected, layer.gradient_names, 1e-10, 1e-13
    )


# ------------------------------------------------------------------- our engine


def our_layer_class(name: str):
    """tinygrad_lstm.nn.<name>."""
    from tinygrad_lstm import nn

    return getattr(nn, name)


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_reference_matches_our_engine(layer):
    layer_class = our_layer_class(layer.layer_name)
    import tinygrad_lstm as tl

    inputs, params, weights = make_problem(layer, steps=5, batch=3, input_size=4, hidden=6, seed=11)
    module = layer_class(4, 6).astype(tl.float64)
    module.load_state_dict(params)
    leaves = {name: tl.Tensor(value, requires_grad=True) for name, value in inputs.items() if value is not None}
    x = leaves["x"]
    h0 = leaves["h0"].unsqueeze(0)
    if layer.has_cell_state:
        output, (h_n, c_n) = module(x, (h0, leaves["c0"].unsqueeze(0)))
    else:
        (output, h_n), c_n = module(x, h0), None
    loss = (output * tl.Tensor(weights["output"])).sum() + (h_n[0] * tl.Tensor(weights["h_n"])).sum()
    if c_n is not None:
        loss = loss + (c_n[0] * tl.Tensor(weights["c_n"])).sum()
    loss.backward()

    got = {name: leaf.grad.numpy() for name, leaf in leaves.items()}
    got.update({name: parameter.grad.numpy() for name, parameter in module.named_parameters()})
    assert output.dtype == np.float64
    reference_output, *_ = layer.forward(inputs["x"], inputs["h0"], inputs["c0"], params)
    np.testing.assert_allclose(output.numpy(), reference_output, rtol=1e-12, atol=1e-14)
    expected = reference_grads(layer, inputs, params, weights)
    assert_grads_close(
        f"tinygrad_lstm.nn.{layer.layer_name} vs reference", got, expected, layer.gradient_names, 1e-10, 1e-13
    )


# ------------------------------------------------------------ reference contract


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_reference_float32_keeps_dtype_and_agrees(layer):
    inputs, params, weights = make_problem(layer, steps=4, batch=2, input_size=3, hidden=5, seed=3)
    expected = reference_grads(layer, inputs, params, weights)
    inputs32 = {name: None if value is None else value.astype(np.float32) for name, value in inputs.items()}
    params32 = {name: value.astype(np.float32) for name, value in params.items()}
    output, h_n, _, cache = layer.forward(inputs32["x"], inputs32["h0"], inputs32["c0"], params32)
    assert output.dtype == h_n.dtype == np.float32
    got = layer.backward({k: None if v is None else v.astype(np.float32) for k, v in weights.items()}, cache)
    assert all(got[name].dtype == np.float32 for name in layer.gradient_names)
    assert_grads_close(f"reference {layer.kind} float32 vs float64", got, expected, layer.gradient_names, 1e-4, 1e-5)


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_reference_cache_serves_one_backward(layer):
    inputs, params, weights = make_problem(layer, steps=2, batch=1, input_size=2, hidden=3)
    with_x = reference_grads(layer, inputs, params, weights)
    _, _, _, cache = layer.forward(inputs["x"], inputs["h0"], inputs["c0"], params)
    without_x = layer.backward(weights, cache, need_input_grad=False)
    assert without_x["x"] is None
    names = [name for name in layer.gradient_names if name != "x"]
    assert_grads_close(f"reference {layer.kind} without dx", without_x, with_x, names, 0, 0)
    with pytest.raises(RuntimeError, match="already used"):
        layer.backward(weights, cache)
