"""The one module that knows about NumPy and CuPy.

Every other part of the engine asks this module for the array module (``xp``) of a
device and never touches ``numpy`` or ``cupy`` on tensor data directly. That is what
lets the same op code run on the host and on a GPU.

Devices: ``"cpu"`` computes with NumPy, ``"cuda"`` with CuPy. More can be registered
with :func:`register_device` (the test suite registers a strict stand-in for CuPy).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np


class DeviceError(RuntimeError):
    """A device is unknown or unavailable, or one op mixes tensors of two devices."""


class _Device:
    """An array module plus how arrays get to and from the host."""

    __slots__ = ("name", "xp", "array_type", "from_host", "to_host")

    def __init__(self, name, xp, array_type, from_host, to_host):
        self.name = name
        self.xp = xp
        self.array_type = array_type
        self.from_host = from_host
        self.to_host = to_host


_devices: dict[str, _Device] = {
    "cpu": _Device("cpu", np, np.ndarray, lambda a: a, lambda a: a),
}
_device_of_type: dict[type, str] = {np.ndarray: "cpu"}
_default_device: str | None = None


def register_device(name: str, xp: Any, array_type: type, from_host, to_host) -> None:
    """Make ``name`` usable as a device whose arrays are ``array_type`` made by ``xp``."""
    _devices[name] = _Device(name, xp, array_type, from_host, to_host)
    _device_of_type[array_type] = name


def _load_cuda() -> None:
    """Register the ``"cuda"`` device, or say exactly which piece is missing."""
    try:
        import cupy
    except ImportError as error:
        raise DeviceError(
            "device 'cuda' needs CuPy, which is not installed. Install the cuda extra: "
            "pip install 'tinygrad_lstm[cuda]' (or use device='cpu')."
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDARuntimeError without a GPU
        raise DeviceError(
            f"device 'cuda' needs a CUDA GPU, but CuPy could not reach one ({error}). Use device='cpu' on this machine."
        ) from error
    if count == 0:
        raise DeviceError("device 'cuda' needs a CUDA GPU, but none was found. Use device='cpu'.")
    register_device("cuda", cupy, cupy.ndarray, cupy.asarray, cupy.asnumpy)


def get_device(name: str) -> _Device:
    """The registered device called ``name``; ``"cuda"`` is loaded on first request."""
    device = _devices.get(name)
    if device is not None:
        return device
    if name == "cuda":
        _load_cuda()
        return _devices["cuda"]
    known = ", ".join(sorted(set(_devices) | {"cuda"}))
    raise DeviceError(f"unknown device {name!r}; known devices: {known}")


def get_array_module(device: str) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) that computes on ``device``."""
    return get_device(device).xp


def device_of_array(array: Any) -> str | None:
    """The device an array lives on, or None for something that is not a device array."""
    name = _device_of_type.get(type(array))
    if name is not None:
        return name
    for array_type, device_name in _device_of_type.items():
        if isinstance(array, array_type):
            return device_name
    module = type(array).__module__
    if module.startswith("cupy"):
        get_device("cuda")  # registers CuPy's array type, or explains why it cannot
        return "cuda"
    return None


def to_device(array: Any, source: str, target: str) -> Any:
    """Copy ``array`` from device ``source`` to device ``target`` (via the host)."""
    if source == target:
        return array
    host = get_device(source).to_host(array)
    return get_device(target).from_host(np.asarray(host))


def to_host(array: Any, device: str) -> np.ndarray:
    """A host NumPy array with the contents of a device array."""
    return np.asarray(get_device(device).to_host(array))


def set_default_device(name: str) -> None:
    """Choose the device new tensors go to when no ``device=`` is given."""
    global _default_device
    get_device(name)  # fail here, at the call that asks, if the device cannot work
    _default_device = name


def default_device() -> str:
    """The default device: set_default_device, else $TINYGRAD_LSTM_DEVICE, else "cpu"."""
    global _default_device
    if _default_device is None:
        name = os.environ.get("TINYGRAD_LSTM_DEVICE", "cpu").strip() or "cpu"
        get_device(name)
        _default_device = name
    return _default_device


def scatter_add(xp: Any, target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` where repeated indices accumulate (in place)."""
    if hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:  # older CuPy versions keep it in cupyx
        import cupyx

        cupyx.scatter_add(target, index, values)


# Rows of the source a host transpose copies at a time (see contiguous_transpose).
TRANSPOSE_TILE_ROWS = 64


def contiguous_transpose(xp: Any, matrix: Any) -> Any:
    """``matrix.T`` of a 2-D ``matrix`` as a C-contiguous array: a copy, or the view where it already is one.

    On the host a copy is made 64 source rows at a time: NumPy's copy of a transposed
    view walks the source down its columns, a cache miss per element once the matrix
    outgrows the cache (a 2048 × 512 float32 weight: 7.1 ms, against 0.79 ms in tiles
    of rows, measured on the benchmark machine). A GPU copies the view in one kernel.
    """
    rows = matrix.shape[0]
    if xp is not np or rows <= TRANSPOSE_TILE_ROWS:
        return xp.ascontiguousarray(matrix.T)
    result = np.empty(matrix.shape[::-1], dtype=matrix.dtype)
    for start in range(0, rows, TRANSPOSE_TILE_ROWS):
        result[:, start : start + TRANSPOSE_TILE_ROWS] = matrix[start : start + TRANSPOSE_TILE_ROWS].T
    return result


# Numbers a host sum over leading axes adds per stage (see sum_leading_axes).
ROW_SUM_SPAN = 4096


def sum_leading_axes(array: Any, count: int) -> Any:
    """``array.sum(axis=(0, .., count - 1))``: on the host, for a C-contiguous array, in two stages.

    That is the sum over the rows of a matrix (rows: the leading axes, width: the rest).
    NumPy sums a matrix along axis 0 one row at a time, an inner loop as long as a
    row: for a layer's bias gradient, thousands of rows of 128 numbers, the loop's
    start-up costs more than its adds. Viewing each group of ``k`` rows as one long row
    (``k`` × width about ``ROW_SUM_SPAN`` numbers), the first stage adds long rows and
    the second the ``k`` partial rows: Σ_r m[r] = Σ_j Σ_i m[i·k + j]. The same numbers
    are added, in another order, so results differ from NumPy's by rounding only (for
    2048 rows of 128 float32, the largest relative error against an exact sum fell from
    1.4e-6 to 3.3e-7). Time for those rows: 47 → 25 µs, measured on the benchmark
    machine. A GPU sums the whole array in one kernel.
    """
    axes = tuple(range(count))
    if type(array) is not np.ndarray or not array.flags.c_contiguous or array.size == 0:
        return array.sum(axis=axes)
    width = math.prod(array.shape[count:])
    matrix = array.reshape(-1, width)
    rows, group = matrix.shape[0], ROW_SUM_SPAN // width
    if group < 2 or rows < 2 * group:  # rows as long as the span already, or too few of them
        return matrix.sum(axis=0).reshape(array.shape[count:])
    body = rows - rows % group
    total = matrix[:body].reshape(body // group, group * width).sum(axis=0).reshape(group, width).sum(axis=0)
    if body < rows:
        total += matrix[body:].sum(axis=0)
    return total.reshape(array.shape[count:])


# ------------------------------------------------------------------ host memory

# How much freed memory the C allocator keeps for reuse (see keep_freed_memory), unless
# $TINYGRAD_LSTM_HEAP_PAD_MIB says otherwise (0: leave the allocator as it is).
DEFAULT_HEAP_PAD_MIB = 64
_M_TOP_PAD = -2  # glibc's mallopt parameter number for M_TOP_PAD (malloc.h)


def keep_freed_memory(mebibytes: int) -> bool:
    """Let glibc's allocator keep up to ``mebibytes`` of freed heap memory for the next arrays.

    A train step allocates its arrays, frees them all at the end of backward, and
    allocates the same sizes again in the next step. By default glibc hands the freed
    top of the heap back to the operating system (above 128 KiB), so every step takes
    fresh pages from the kernel, each zeroed and page-faulted in on first touch:
    thousands of page faults per step of an LSTM with batch 32 × hidden 128, a
    quarter of its time. Keeping that memory (``M_TOP_PAD``, the padding glibc adds
    when the heap grows and leaves when it shrinks) turns those faults into reuse, as
    CuPy's memory pool does on the GPU. The cost: up to ``mebibytes`` of memory the
    process holds on to after it is freed.

    Called once on import with :data:`DEFAULT_HEAP_PAD_MIB` or
    ``$TINYGRAD_LSTM_HEAP_PAD_MIB``. Process-wide; returns False where there is no
    glibc (macOS, Windows, musl), which then keeps its own policy.
    """
    if isinstance(mebibytes, bool) or not isinstance(mebibytes, int) or not 0 <= mebibytes < 2048:
        raise ValueError(f"keep_freed_memory: mebibytes must be an int from 0 to 2047, got {mebibytes!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):  # glibc only
        return False
    return bool(libc.mallopt(_M_TOP_PAD, ctypes.c_int(mebibytes * 1024 * 1024)))


def _heap_pad_from_environment() -> int:
    text = os.environ.get("TINYGRAD_LSTM_HEAP_PAD_MIB", "").strip()
    if not text:
        return DEFAULT_HEAP_PAD_MIB
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"$TINYGRAD_LSTM_HEAP_PAD_MIB must be a whole number of MiB (0 to leave the allocator alone), got {text!r}"
        ) from None


heap_pad_mib = _heap_pad_from_environment()
if heap_pad_mib:
    keep_freed_memory(heap_pad_mib)
