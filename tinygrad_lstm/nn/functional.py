"""Losses and activations, each a composition of public Tensor ops (no new primitives)."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor, arange, rand
from . import validation


def softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """exp(x - max x) / Σ exp(x - max x) along ``axis`` (PyTorch: ``dim``); stable at any magnitude."""
    return x.softmax(axis, dim=dim)


def log_softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """(x - max x) - log Σ exp(x - max x) along ``axis`` (PyTorch: ``dim``); ``Tensor.log_softmax``."""
    return x.log_softmax(axis, dim=dim)


def _as_index_tensor(targets: Any, device: str) -> Tensor:
    targets = targets if isinstance(targets, Tensor) else Tensor(targets, device=device)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy targets must be integer class indices, got dtype {targets.dtype}")
    return targets


def cross_entropy(logits: Tensor, targets: Any) -> Tensor:
    """Mean over the batch of -log softmax(logits)[target].

    ``logits``: (N, C), or (..., C) with ``targets`` shaped (...); targets are integer
    class indices in [0, C), as an integer Tensor or array.
    """
    targets = _as_index_tensor(targets, logits.device)
    if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} need targets of shape {logits.shape[:-1]}, "
            f"got {targets.shape}"
        )
    classes = logits.shape[-1]
    flat_targets = targets.reshape(-1)
    if flat_targets.size:
        low, high = int(flat_targets.data.min()), int(flat_targets.data.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise IndexError(f"cross_entropy: target {bad} is out of range for {classes} classes")
    log_probs = log_softmax(logits.reshape(-1, classes), axis=-1)
    rows = arange(flat_targets.size, device=logits.device)
    return -log_probs[rows, flat_targets].mean()


def mse_loss(prediction: Tensor, target: Any) -> Tensor:
    """Mean of (prediction - target)² over all elements."""
    difference = prediction - target
    if isinstance(target, Tensor) and target.shape != prediction.shape:
        raise ValueError(f"mse_loss: prediction shape {prediction.shape} != target shape {target.shape}")
    return (difference * difference).mean()


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    validation.check_probability(p, "p", "dropout")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = rand(*x.shape, dtype=x.dtype, device=x.device) >= p
    return x * (keep.astype(x.dtype) * (1.0 / (1.0 - p)))
