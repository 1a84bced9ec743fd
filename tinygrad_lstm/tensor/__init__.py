"""The autodiff engine: Tensor, primitive ops with their VJPs, the backward pass, devices.

This package imports nothing else of tinygrad_lstm. It is also callable, for PyTorch's
habit: ``tl.tensor([1.0, 2.0])`` is ``tl.Tensor([1.0, 2.0])`` (see ``_CallablePackage``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from . import ops
from .autograd import backward, grad, sum_to
from .backend import DeviceError, get_array_module, register_device, set_default_device
from .backend import default_device as get_default_device
from .creation import arange, full, manual_seed, ones, ones_like, rand, randn, zeros, zeros_like
from .function import Context, Function, TraceError, is_grad_enabled, no_grad, set_grad_enabled
from .graph_backward import DoubleBackwardError
from .scan import compile, scan  # noqa: A004  (tl.compile, as torch.compile)
from .tensor import (
    ElementCount,
    MaxResult,
    Tensor,
    as_dtype,
    bool_,
    cat,
    float32,
    float64,
    int64,
    linear,
    matmul,
    maximum,
    stack,
    where,
)
from .transforms import hessian, hvp, jacobian, jvp, vjp

# PyTorch's dtype names (``tl.float`` is ``torch.float``, float32; ``tl.long`` is int64).
# Not in __all__: ``from tinygrad_lstm import *`` must not shadow the builtin ``float``.
float = float32  # noqa: A001
double = float64
long = int64


def _method(name: str):
    def function(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(tensor, name)(*args, **kwargs)

    function.__name__ = name
    function.__doc__ = f"``tl.{name}(t, ...)`` is ``t.{name}(...)``: " + (getattr(Tensor, name).__doc__ or "")
    return function


exp = _method("exp")
log = _method("log")
tanh = _method("tanh")
sigmoid = _method("sigmoid")
relu = _method("relu")
sqrt = _method("sqrt")
abs = _method("abs")  # noqa: A001  (tl.abs mirrors numpy.abs)
clip = _method("clip")
sum = _method("sum")  # noqa: A001
mean = _method("mean")
max = _method("max")  # noqa: A001
logsumexp = _method("logsumexp")
reshape = _method("reshape")
transpose = _method("transpose")
expand = _method("expand")
squeeze = _method("squeeze")
unsqueeze = _method("unsqueeze")
split = _method("split")
chunk = _method("chunk")
unbind = _method("unbind")
permute = _method("permute")
clone = _method("clone")
argmax = _method("argmax")
argmin = _method("argmin")
softmax = _method("softmax")
log_softmax = _method("log_softmax")


class _CallablePackage(types.ModuleType):
    """The engine package, callable as PyTorch's ``torch.tensor`` factory.

    ``tl.tensor`` names this subpackage (``tl.tensor.ops``, ``tl.tensor.backend``), and a
    PyTorch user's first line is ``tl.tensor([1.0, 2.0])``; calling the package makes a
    Tensor, with torch.tensor's argument order. ``tl.Tensor(...)`` is the same thing.
    """

    def __call__(self, data: Any, dtype: Any = None, device: str | None = None, requires_grad: bool = False) -> Tensor:
        return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "Context",
    "DeviceError",
    "DoubleBackwardError",
    "ElementCount",
    "Function",
    "MaxResult",
    "Tensor",
    "TraceError",
    "abs",
    "arange",
    "argmax",
    "argmin",
    "as_dtype",
    "backward",
    "bool_",
    "cat",
    "chunk",
    "clip",
    "clone",
    "compile",
    "exp",
    "expand",
    "float32",
    "float64",
    "full",
    "get_array_module",
    "get_default_device",
    "grad",
    "hessian",
    "hvp",
    "int64",
    "is_grad_enabled",
    "jacobian",
    "jvp",
    "linear",
    "log",
    "log_softmax",
    "logsumexp",
    "manual_seed",
    "matmul",
    "max",
    "maximum",
    "mean",
    "no_grad",
    "ones",
    "ones_like",
    "ops",
    "permute",
    "rand",
    "randn",
    "register_device",
    "relu",
    "reshape",
    "scan",
    "set_default_device",
    "set_grad_enabled",
    "sigmoid",
    "softmax",
    "split",
    "sqrt",
    "squeeze",
    "stack",
    "sum",
    "sum_to",
    "tanh",
    "transpose",
    "unbind",
    "unsqueeze",
    "vjp",
    "where",
    "zeros",
    "zeros_like",
]
