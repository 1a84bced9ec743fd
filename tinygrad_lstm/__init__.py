"""tinygrad_lstm: a small, readable reverse-mode autodiff engine with RNN/LSTM/GRU layers.

import tinygrad_lstm as tl
x = tl.Tensor([1.0, 2.0], requires_grad=True)
(x * x).sum().backward()
x.grad  # Tensor([2., 4.])

``tl.nn``, ``tl.optim`` and ``tl.testing`` are there as ``torch.nn`` is, imported on first
use (they would add about a quarter to the import time of every ``import tinygrad_lstm``).
"""

from .serialization import load, save  # noqa: E402
from .tensor import *  # noqa: F403
from .tensor import __all__ as _tensor_all
from .tensor import double, float, long  # noqa: A004, F401  (PyTorch's dtype names, kept out of __all__)

__version__ = "0.1.0"
__all__ = [*_tensor_all, "load", "save"]

_SUBPACKAGES = ("nn", "optim", "testing")


def __getattr__(name: str):
    # Only reached for names not defined above. import_module, not ``from . import``,
    # which would look the name up here again and recurse.
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'tinygrad_lstm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
