"""Optimizers: SGD and Adam with PyTorch's update rules, applied in place on raw arrays.

The update itself is not part of any graph: it works on ``parameter.data`` directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .tensor import Tensor, get_array_module, int64


class Optimizer:
    """Holds the parameters; ``zero_grad()`` clears their gradients."""

    def __init__(self, params: Iterable[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__} optimizes tensors that require grad, got {p!r:.60}")
        if lr < 0:
            raise ValueError(f"learning rate must be non-negative, got {lr}")
        self.lr = lr
        self.state: dict[int, dict[str, Any]] = {}

    slots: tuple[str, ...] = ()  # the names of the per-parameter state a subclass keeps

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """Per-parameter state as host arrays, keyed ``"{position}.{slot}"`` (position in params).

        Save it with ``tl.save`` beside the model's state_dict to resume training exactly.
        """
        state = {}
        for position, p in enumerate(self.params):
            for slot, value in self.state.get(id(p), {}).items():
                state[f"{position}.{slot}"] = Tensor(value, device=p.device).numpy()
        return state

    def load_state_dict(self, mapping: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave; everything is checked before anything changes."""
        staged: dict[int, dict[str, Any]] = {}
        for key, value in mapping.items():
            position_text, _, slot = str(key).partition(".")
            if not position_text.isdigit() or int(position_text) >= len(self.params) or slot not in self.slots:
                raise KeyError(
                    f"{type(self).__name__}.load_state_dict: unexpected key {key!r} (expected "
                    f"'<position < {len(self.params)}>.<one of {', '.join(self.slots)}>')"
                )
            p = self.params[int(position_text)]
            if slot == "step":
                staged.setdefault(id(p), {})[slot] = int(Tensor(value, dtype=int64).item())
                continue
            array = Tensor(value, dtype=p.dtype, device=p.device).data
            if tuple(array.shape) != p.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has shape {tuple(array.shape)}, "
                    f"the parameter has shape {p.shape}"
                )
            staged.setdefault(id(p), {})[slot] = array
        for slots in staged.values():
            missing = [slot for slot in self.slots if slot not in slots]
            if missing:
                raise KeyError(f"{type(self).__name__}.load_state_dict: a parameter lacks {', '.join(missing)}")
        self.state = staged

    def step(self) -> None:
        raise NotImplementedError

    def _gradients(self, weight_decay: float):
        """(parameter, gradient array with weight decay added) for parameters with a gradient."""
        for p in self.params:
            if p.grad is None:
                continue
            grad = p.grad.data
            if grad.dtype != p.data.dtype:
                raise TypeError(f"gradient dtype {grad.dtype} differs from parameter dtype {p.data.dtype}")
            if weight_decay:
                grad = grad + weight_decay * p.data
            yield p, grad


class SGD(Optimizer):
    """p ← p - lr · v with v ← momentum · v + g (v = g on the first step); g += wd · p."""

    slots = ("velocity",)

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight_decay must be non-negative")
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self) -> None:
        for p, grad in self._gradients(self.weight_decay):
            if self.momentum:
                state = self.state.get(id(p))
                if state is None:
                    velocity = grad.copy()
                    self.state[id(p)] = {"velocity": velocity}
                else:
                    velocity = state["velocity"]
                    velocity *= self.momentum
                    velocity += grad
                grad = velocity
            p.data -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as PyTorch's (L2 weight decay, not AdamW)::

    m ← β1 m + (1 - β1) g;  v ← β2 v + (1 - β2) g²
    p ← p - lr · (m / (1 - β1ᵗ)) / (√(v / (1 - β2ᵗ)) + eps)
    """

    slots = ("step", "m", "v")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError("eps and weight_decay must be non-negative")
        self.betas, self.eps, self.weight_decay = (beta1, beta2), eps, weight_decay

    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, grad in self._gradients(self.weight_decay):
            xp = get_array_module(p.device)
            state = self.state.get(id(p))
            if state is None:
                state = self.state[id(p)] = {"step": 0, "m": xp.zeros_like(p.data), "v": xp.zeros_like(p.data)}
            state["step"] += 1
            m, v, t = state["m"], state["v"], state["step"]
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * (grad * grad)
            denominator = xp.sqrt(v / (1 - beta2**t))
            denominator += self.eps
            p.data -= (self.lr / (1 - beta1**t)) * (m / denominator)
