"""tinygrad_lstm: a small, readable reverse-mode autodiff engine with RNN/LSTM/GRU layers.

import tinygrad_lstm as tl
x = tl.Tensor([1.0, 2.0], requires_grad=True)
(x * x).sum().backward()
x.grad  # Tensor([2., 4.])
"""

from .serialization import load, save  # noqa: E402
from .tensor import *  # noqa: F403
from .tensor import __all__ as _tensor_all

__version__ = "0.1.0"
__all__ = [*_tensor_all, "load", "save"]
