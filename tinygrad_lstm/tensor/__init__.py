"""The autodiff engine: Tensor, primitive ops with their VJPs, the backward pass, devices.

This package imports nothing else of tinygrad_lstm.
"""

from __future__ import annotations

from typing import Any

from . import ops
from .autograd import backward, grad, sum_to
from .backend import DeviceError, get_array_module, register_device, set_default_device
from .backend import default_device as get_default_device
from .creation import arange, full, manual_seed, ones, ones_like, rand, randn, zeros, zeros_like
from .function import Context, Function, is_grad_enabled, no_grad, set_grad_enabled
from .graph_backward import DoubleBackwardError
from .tensor import Tensor, as_dtype, bool_, cat, float32, float64, int64, linear, matmul, maximum, stack, where
from .transforms import hessian, hvp, jacobian, jvp, vjp


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

__all__ = [
    "Context",
    "DeviceError",
    "DoubleBackwardError",
    "Function",
    "Tensor",
    "abs",
    "arange",
    "as_dtype",
    "backward",
    "bool_",
    "cat",
    "chunk",
    "clip",
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
    "rand",
    "randn",
    "register_device",
    "relu",
    "reshape",
    "set_default_device",
    "set_grad_enabled",
    "sigmoid",
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
