"""Factories: tensors made from a shape, a value, a range or random numbers.

Random numbers come from one host generator (``manual_seed`` resets it) and are then
moved to the device, so a seed gives the same numbers on every device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend
from .function import check_not_tracing
from .tensor import Tensor, as_dtype, float32, int64

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make ``randn``, ``rand`` and everything built on them reproducible."""
    global _generator
    _generator = np.random.default_rng(seed)


def host_generator() -> np.random.Generator:
    """The generator behind ``randn``/``rand`` (layers draw their initial weights from it)."""
    return _generator


def _shape(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative size in shape {shape}")
    return shape


def _from_host(array: np.ndarray, device: str | None, requires_grad: bool) -> Tensor:
    device = device or backend.default_device()
    tensor = Tensor._make(backend.get_device(device).from_host(array), device)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def _on_device(make, shape, dtype, device, requires_grad) -> Tensor:
    """Build directly with the device's array module (no host round trip)."""
    device = device or backend.default_device()
    xp = backend.get_array_module(device)
    tensor = Tensor._make(make(xp, shape, dtype), device)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def zeros(*shape: Any, dtype: Any = float32, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return _on_device(lambda xp, s, d: xp.zeros(s, dtype=d), _shape(shape), as_dtype(dtype), device, requires_grad)


def ones(*shape: Any, dtype: Any = float32, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return _on_device(lambda xp, s, d: xp.ones(s, dtype=d), _shape(shape), as_dtype(dtype), device, requires_grad)


def full(shape: Any, value: Any, dtype: Any = None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``value``; dtype from the value (int → int64, float → float32)."""
    if dtype is None:
        dtype = int64 if isinstance(value, (bool, int, np.integer)) and not isinstance(value, bool) else float32
        if isinstance(value, bool):
            dtype = np.dtype(bool)
    shape = _shape((shape,) if isinstance(shape, (int, np.integer)) else (shape,))
    return _on_device(lambda xp, s, d: xp.full(s, value, dtype=d), shape, as_dtype(dtype), device, requires_grad)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn(*shape: Any, dtype: Any = float32, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    check_not_tracing("tl.randn (random numbers)")
    array = _generator.standard_normal(_shape(shape)).astype(as_dtype(dtype))
    return _from_host(array, device, requires_grad)


def rand(*shape: Any, dtype: Any = float32, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples from [0, 1)."""
    check_not_tracing("tl.rand (random numbers)")
    array = _generator.random(_shape(shape)).astype(as_dtype(dtype))
    return _from_host(array, device, requires_grad)


def arange(
    start: Any,
    stop: Any = None,
    step: Any = 1,
    dtype: Any = None,
    device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``[start, stop)`` by ``step``; int64 for integer arguments, float32 otherwise."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = int64 if integral else float32
    array = np.arange(start, stop, step).astype(as_dtype(dtype))
    return _from_host(array, device, requires_grad)
