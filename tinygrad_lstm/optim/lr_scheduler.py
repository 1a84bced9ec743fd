"""Learning-rate schedulers with PyTorch's rules: call ``scheduler.step()`` once per epoch.

Each scheduler sets ``group["lr"]`` of every parameter group of its optimizer, starting
from the group's ``"initial_lr"`` (its lr when the scheduler was made). Building one
applies epoch 0; each ``step()`` moves one epoch on. The updates are PyTorch's
step-by-step (chainable) forms, so the numbers equal ``torch.optim.lr_scheduler``'s and
a change a user makes to ``group["lr"]`` between steps carries on, as there.

    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    for epoch in range(100):
        train_one_epoch(model, optimizer)
        scheduler.step()
"""

from __future__ import annotations

import math

from .optimizers import Optimizer, _check_number

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "StepLR"]


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and writes the new lr into each group."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def next_lr(self, lr: float, base_lr: float) -> float:
        """The lr at epoch ``last_epoch`` given the lr of the epoch before."""
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr if self.last_epoch == 0 else self.next_lr(group["lr"], base_lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The lr of every group, as the last ``step()`` set it."""
        return list(self._last_lr)


class StepLR(LRScheduler):
    """lr = initial_lr · gamma^⌊epoch / step_size⌋: multiplied by gamma every step_size epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, _check_number("StepLR", "gamma", gamma)
        super().__init__(optimizer)

    def next_lr(self, lr: float, base_lr: float) -> float:
        return lr * self.gamma if self.last_epoch % self.step_size == 0 else lr


class ExponentialLR(LRScheduler):
    """lr = initial_lr · gamma^epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = _check_number("ExponentialLR", "gamma", gamma)
        super().__init__(optimizer)

    def next_lr(self, lr: float, base_lr: float) -> float:
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) · (1 + cos(π · epoch / T_max)) / 2.

    From initial_lr down to eta_min over T_max epochs (and back up over the next T_max,
    as PyTorch's). Computed, as there, by the ratio of successive cosine factors.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 (PyTorch's name)
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        self.T_max, self.eta_min = T_max, _check_number("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer)

    def next_lr(self, lr: float, base_lr: float) -> float:
        epoch, period, low = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - period) % (2 * period) == 0:  # the lowest point: the ratio below would be 0/0
            return lr + (base_lr - low) * (1 - math.cos(math.pi / period)) / 2
        ratio = (1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * (epoch - 1) / period))
        return ratio * (lr - low) + low
