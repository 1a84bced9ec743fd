"""Loss modules: ``nn.MSELoss()(prediction, target)`` is ``functional.mse_loss(prediction, target)``.

As in PyTorch, a loss is built once and called like a function; both average over the
batch (``reduction="mean"``, the only reduction offered).
"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from . import functional as F
from .module import Module


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction != "mean":
            raise ValueError(f"{type(self).__name__}: only reduction='mean' is offered, got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean of (prediction - target)² over all elements (``functional.mse_loss``)."""

    def forward(self, prediction: Tensor, target: Any) -> Tensor:
        return F.mse_loss(prediction, target)


class CrossEntropyLoss(_Loss):
    """Mean of -log softmax(logits)[target]; targets are integer class indices (``functional.cross_entropy``)."""

    def forward(self, logits: Tensor, targets: Any) -> Tensor:
        return F.cross_entropy(logits, targets)
