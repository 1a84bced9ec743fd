"""Activation modules, for ``nn.Sequential``: each one calls the Tensor op of its name."""

from __future__ import annotations

from ..tensor import Tensor
from .module import Module


class Tanh(Module):
    """y = tanh(x), elementwise (``x.tanh()``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class ReLU(Module):
    """y = max(x, 0), elementwise (``x.relu()``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)), elementwise (``x.sigmoid()``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()
