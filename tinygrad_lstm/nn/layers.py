"""Linear, Embedding, Dropout."""

from __future__ import annotations

import math
from typing import Any

from ..tensor import Tensor, float32, linear, rand, randn
from . import functional as F
from . import validation
from .module import Module, Parameter


def uniform_parameter(
    shape: tuple[int, ...], bound: float, dtype: Any = float32, device: str | None = None
) -> Parameter:
    """A Parameter drawn from U(-bound, bound) (from the generator ``tl.manual_seed`` sets)."""
    values = (rand(*shape, dtype=dtype, device=device) * 2.0 - 1.0) * bound
    return Parameter(values)


class Linear(Module):
    """y = x @ Wᵀ + b, with W of shape (out_features, in_features); init U(±1/√in)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, dtype: Any = float32, device: str | None = None
    ):
        in_features = validation.check_size(in_features, "in_features", "Linear")
        out_features = validation.check_size(out_features, "out_features", "Linear")
        bias = validation.check_flag(bias, "bias", "Linear")
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = uniform_parameter((out_features, in_features), bound, dtype, device)
        self.bias = uniform_parameter((out_features,), bound, dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        x = validation.check_input(x, "Linear", self.weight.dtype)
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"Linear expects inputs of shape (..., {self.in_features}), got {x.shape}")
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Row lookup: y = W[indices]; repeated indices accumulate their gradients. Init N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: Any = float32, device: str | None = None):
        num_embeddings = validation.check_size(num_embeddings, "num_embeddings", "Embedding")
        embedding_dim = validation.check_size(embedding_dim, "embedding_dim", "Embedding")
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(randn(num_embeddings, embedding_dim, dtype=dtype, device=device))

    def forward(self, indices: Any) -> Tensor:
        indices = indices if isinstance(indices, Tensor) else Tensor(indices, device=self.weight.device)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"Embedding takes integer indices, got dtype {indices.dtype}")
        if indices.size:
            low, high = int(indices.data.min()), int(indices.data.max())
            if low < 0 or high >= self.num_embeddings:
                raise IndexError(
                    f"Embedding index {low if low < 0 else high} is out of range for {self.num_embeddings} rows"
                )
        return self.weight[indices]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Zero elements with probability p in training mode (scaled by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.5):
        p = validation.check_probability(p, "p", "Dropout")
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
