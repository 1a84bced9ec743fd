"""Gradient utilities."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..tensor import Tensor
from .flow import gradient_flow
from .module import Parameter
from .recurrent import detach_state

__all__ = ["clip_grad_norm_", "detach_state", "gradient_flow"]


def clip_grad_norm_(parameters: Iterable[Parameter] | Parameter, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients by min(1, max_norm / (total + eps)), as PyTorch does.

    ``total`` is the 2-norm of all gradients together (as if concatenated); it is
    returned as a float, measured before clipping.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return 0.0
    total = math.sqrt(sum(float((p.grad.data * p.grad.data).sum()) for p in with_grad))
    scale = max_norm / (total + eps)
    if scale < 1.0:
        for p in with_grad:
            p.grad = Tensor._make(p.grad.data * scale, p.grad.device)
    return total
