"""Tools to verify gradients: ``gradcheck`` and (with hypothesis installed) ``strategies``."""

import importlib

from .gradcheck import GradcheckError, GradcheckReport, Mismatch, check_gradients, gradcheck

__all__ = ["GradcheckError", "GradcheckReport", "Mismatch", "check_gradients", "gradcheck", "strategies"]


def __getattr__(name: str):
    if name == "strategies":  # imported on demand: it needs hypothesis (the test extra)
        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module 'tinygrad_lstm.testing' has no attribute {name!r}")
