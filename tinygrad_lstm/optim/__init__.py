"""Optimizers (SGD, Adam, AdamW) with PyTorch's update rules and parameter groups, and
learning-rate schedulers (``optim.lr_scheduler``), as ``torch.optim``."""

from . import lr_scheduler
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
