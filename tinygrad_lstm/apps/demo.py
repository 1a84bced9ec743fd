"""The adding problem: why an LSTM can learn what a plain tanh RNN cannot.

Each sequence has T steps of two channels: a value drawn from U(0, 1) and a marker that
is 1 at exactly two positions (one in each half of the sequence) and 0 elsewhere. The
target is the sum of the two marked values. A model that ignores its input and always
predicts 1.0 (the mean of the target) scores MSE = Var(u₁ + u₂) = 2/12 ≈ 0.167.

To beat that, a model must carry a value across up to T steps. The LSTM's cell state
``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t`` is an additive path along which the gradient is
multiplied only by the forget gate; the tanh RNN's gradient is multiplied at every step
by ``diag(1 - h_t²) W_hh``, and vanishes geometrically with the lag. This module trains
both with the same budget and measures exactly that: ``gradient_flow`` returns
‖∂loss/∂x_t‖ for every t.

Nothing here prints or plots (that is ``cli.py``'s job): functions compute and return
data; ``on_step`` callbacks let the caller show progress.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import nn, optim
from ..nn import functional as F
from ..tensor import Tensor, manual_seed, no_grad

BASELINE_MSE = 2.0 / 12.0  # always predicting 1.0: the variance of the sum of two U(0, 1)
TEST_SEED = 20240  # the test set is the same for every --seed, so runs compare fairly
PROBE_SIZE = 256  # test sequences used to measure the gradient flow
MODEL_KINDS = ("lstm", "rnn")
MODEL_LABELS = {"lstm": "LSTM", "rnn": "tanh RNN"}


@dataclass
class DemoConfig:
    """Everything a demo run depends on (the defaults are the documented experiment)."""

    seq_len: int = 100
    hidden_size: int = 32
    batch_size: int = 64
    steps: int = 2000
    lr: float = 1e-2
    clip: float = 1.0
    test_size: int = 2560
    seed: int = 0
    device: str | None = None


def adding_batch(batch_size: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the adding problem: x of shape (T, batch, 2) and targets (batch, 1), float32.

    Channel 0 holds values from U(0, 1); channel 1 marks one position in [0, T/2) and one
    in [T/2, T). The target is the sum of the two marked values.
    """
    if seq_len < 2:
        raise ValueError(f"the adding problem needs sequences of at least 2 steps, got {seq_len}")
    half = seq_len // 2
    values = rng.random((seq_len, batch_size))
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, seq_len, size=batch_size)
    markers = np.zeros((seq_len, batch_size))
    columns = np.arange(batch_size)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    y = (values[first, columns] + values[second, columns]).reshape(batch_size, 1).astype(np.float32)
    return x, y


class AddingModel(nn.Module):
    """A recurrent layer read out at the last step: prediction = Linear(h_T).

    ``kind`` is ``"lstm"`` (nn.LSTM) or ``"rnn"`` (nn.RNN with tanh). x: (T, batch, 2)
    -> prediction (batch, 1).
    """

    def __init__(self, kind: str, hidden_size: int, device: str | None = None):
        super().__init__()
        if kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
        self.kind = kind
        layer = nn.LSTM if kind == "lstm" else nn.RNN
        self.recurrent = layer(2, hidden_size, device=device)
        self.head = nn.Linear(hidden_size, 1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        output, _ = self.recurrent(x)
        return self.head(output[-1])


def gradient_flow(model: AddingModel, x: np.ndarray, y: np.ndarray, device: str | None = None) -> np.ndarray:
    """‖∂loss/∂x_t‖ for t = 0 … T-1 (the norm over the batch and both channels), for the MSE loss."""
    target = Tensor(y, device=device)
    inputs = Tensor(x, device=device)
    return nn.utils.gradient_flow(model, inputs, loss=lambda prediction: F.mse_loss(prediction, target)).input


def evaluate(
    model: AddingModel, x: np.ndarray, y: np.ndarray, device: str | None = None, chunk: int = 512
) -> dict[str, float]:
    """Test MSE and the share of sequences predicted within 0.04 and 0.08 of the target."""
    predictions = []
    with no_grad():
        for start in range(0, x.shape[1], chunk):
            predictions.append(model(Tensor(x[:, start : start + chunk], device=device)).numpy())
    errors = np.concatenate(predictions).astype(np.float64) - y
    return {
        "test_mse": float(np.mean(errors**2)),
        "within_0.04": float(np.mean(np.abs(errors) < 0.04)),
        "within_0.08": float(np.mean(np.abs(errors) < 0.08)),
    }


def train(
    model: AddingModel,
    config: DemoConfig,
    rng: np.random.Generator,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Adam on fresh batches with gradient clipping; returns the training loss of every step."""
    parameters = list(model.parameters())
    optimizer = optim.Adam(parameters, lr=config.lr)
    losses = []
    for step in range(config.steps):
        x, y = adding_batch(config.batch_size, config.seq_len, rng)
        loss = F.mse_loss(model(Tensor(x, device=config.device)), Tensor(y, device=config.device))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, config.clip)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def run_model(
    kind: str,
    config: DemoConfig,
    test: tuple[np.ndarray, np.ndarray],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Build, measure, train and evaluate one model; every figure of it as plain data."""
    manual_seed(config.seed)  # the same initial-weight stream for both models
    model = AddingModel(kind, config.hidden_size, device=config.device)
    x_test, y_test = test
    probe = (x_test[:, :PROBE_SIZE], y_test[:PROBE_SIZE])
    flow_initial = gradient_flow(model, *probe, device=config.device)
    rng = np.random.default_rng(config.seed)  # both models see exactly the same batches
    start = time.perf_counter()
    losses = train(model, config, rng, on_step)
    train_seconds = time.perf_counter() - start
    metrics = evaluate(model, x_test, y_test, device=config.device)
    flow_trained = gradient_flow(model, *probe, device=config.device)
    return {
        "model": MODEL_LABELS[kind],
        **metrics,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(config.steps, 1),
        "parameters": sum(p.size for p in model.parameters()),
        "losses": losses,
        # index k is the distance from the end: x_{T-1-k}
        "gradient_flow_initial": flow_initial[::-1].tolist(),
        "gradient_flow_trained": flow_trained[::-1].tolist(),
    }


def make_test_set(config: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """The fixed test set: the same sequences for every seed (for a given T)."""
    return adding_batch(config.test_size, config.seq_len, np.random.default_rng(TEST_SEED))


def run_demo(
    config: DemoConfig,
    on_step: Callable[[str, int, float], None] | None = None,
    kinds: tuple[str, ...] = MODEL_KINDS,
) -> dict[str, Any]:
    """Train each model kind with the same budget; returns everything results.json holds.

    ``on_step(kind, step, loss)`` is called after every training step.
    """
    test = make_test_set(config)
    constant_mse = float(np.mean((test[1].astype(np.float64) - 1.0) ** 2))
    results: dict[str, Any] = {
        "problem": "adding",
        "config": asdict(config),
        "baseline_mse": BASELINE_MSE,
        "test_constant_prediction_mse": constant_mse,
        "models": {},
        "notes": {
            "losses": "training MSE of every step, on that step's fresh batch",
            "gradient_flow": f"index k holds ||dloss/dx_(T-1-k)||, k steps before the end, over {PROBE_SIZE} test "
            "sequences (norm over the batch and both channels)",
            "within": "share of test sequences with |prediction - target| below 0.04 and 0.08",
        },
    }
    for kind in kinds:
        callback = None if on_step is None else (lambda step, loss, kind=kind: on_step(kind, step, loss))
        results["models"][kind] = run_model(kind, config, test, callback)
    return results


def run_id(results: dict[str, Any]) -> str:
    """A digest of a run's configuration and every number of its models: names the run.

    The CLI stores it in results.json and in the pictures it draws, so a figure or picture
    quoted in the docs can be traced to (and checked against) the run it came from.
    """
    payload = json.dumps({"config": results["config"], "models": results["models"]}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
