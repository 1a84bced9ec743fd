"""A strict stand-in for CuPy that runs on the CPU, to catch host-array leaks without a GPU.

CuPy refuses to mix its arrays with NumPy arrays and refuses implicit conversion to
NumPy (``np.asarray(gpu_array)`` raises). An op that calls ``np.zeros(...)`` instead of
``xp.zeros(...)`` therefore works on ``"cpu"`` and breaks only on a GPU. This module
registers a device (``"strict"`` by default) whose arrays wrap NumPy arrays and enforce
the same two rules, so the CPU test suite can run every op "as if on a GPU":

    from tinygrad_lstm.testing.strict_backend import register_strict_device
    register_strict_device()
    x = tl.randn(3, device="strict")

A leak raises ``HostArrayLeak`` naming the function that received the host array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import register_device


class HostArrayLeak(RuntimeError):
    """A host NumPy array met a device array, or a device array was converted implicitly."""


def _unwrap(value: Any, where: str, allow_host: bool = False) -> Any:
    if isinstance(value, StrictArray):
        return value._array
    if isinstance(value, np.ndarray) and not allow_host:
        raise HostArrayLeak(
            f"{where}: got a host NumPy array of shape {value.shape} where a device array "
            "was expected (create arrays with the device's array module xp, not numpy)"
        )
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v, where, allow_host) for v in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return StrictArray(value)
    if isinstance(value, np.generic):
        return StrictArray(np.asarray(value))  # CuPy returns 0-d arrays, not scalars
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class StrictArray:
    """A NumPy array that behaves like a CuPy array towards NumPy: no implicit mixing."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        raise HostArrayLeak(
            "implicit conversion of a device array to NumPy (as CuPy forbids); copy it to the host explicitly"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _unwrap(out, where)
        result = getattr(ufunc, method)(*_unwrap(inputs, where), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        where = f"numpy.{func.__name__}"
        return _wrap(func(*_unwrap(args, where), **_unwrap(kwargs, where)))

    # attributes and methods behave as NumPy's, on the wrapped array
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    T = property(lambda self: StrictArray(self._array.T))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__ & co: NumPy must not see through
            raise AttributeError(name)
        attribute = getattr(self._array, name)
        if not callable(attribute):
            return _wrap(attribute)

        def method(*args, **kwargs):
            where = f"ndarray.{name}"
            return _wrap(attribute(*_unwrap(args, where), **_unwrap(kwargs, where)))

        return method

    def __getitem__(self, index):
        return _wrap(self._array[_unwrap(index, "indexing")])

    def __setitem__(self, index, value):
        self._array[_unwrap(index, "indexing")] = _unwrap(value, "item assignment")

    def __len__(self):
        return len(self._array)

    def __repr__(self):
        return f"StrictArray({self._array!r})"

    def __float__(self):
        return float(self._array)

    def __int__(self):
        return int(self._array)

    def __bool__(self):
        return bool(self._array)

    def __index__(self):
        return self._array.__index__()

    __hash__ = None


def _binary(ufunc):
    return lambda self, other: ufunc(self, other)


def _reflected(ufunc):
    return lambda self, other: ufunc(other, self)


def _in_place(ufunc):
    def method(self, other):
        ufunc(self, other, out=(self,))
        return self

    return method


for _name, _ufunc in {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "truediv": np.true_divide,
    "floordiv": np.floor_divide,
    "mod": np.remainder,
    "pow": np.power,
    "matmul": np.matmul,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
}.items():
    setattr(StrictArray, f"__{_name}__", _binary(_ufunc))
    setattr(StrictArray, f"__r{_name}__", _reflected(_ufunc))
    setattr(StrictArray, f"__i{_name}__", _in_place(_ufunc))
for _name, _ufunc in {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}.items():
    setattr(StrictArray, f"__{_name}__", _binary(_ufunc))
StrictArray.__neg__ = lambda self: np.negative(self)
StrictArray.__abs__ = lambda self: np.absolute(self)
StrictArray.__invert__ = lambda self: np.invert(self)


class _StrictUfunc:
    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return self._ufunc(*args, **kwargs)  # dispatches through StrictArray.__array_ufunc__

    def __getattr__(self, method):
        function = getattr(self._ufunc, method)
        where = f"xp.{self._ufunc.__name__}.{method}"
        return lambda *args, **kwargs: _wrap(function(*_unwrap(args, where), **_unwrap(kwargs, where)))


class StrictModule:
    """The array module of the strict device: NumPy's functions, returning StrictArrays.

    ``asarray``/``array`` accept host arrays (an explicit transfer, as in CuPy); every
    other function refuses them.
    """

    ndarray = StrictArray
    _TRANSFERS = {"asarray", "array", "ascontiguousarray"}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(np, name)
        if isinstance(attribute, np.ufunc):
            return _StrictUfunc(attribute)
        if isinstance(attribute, type) or not callable(attribute):
            return attribute
        allow_host = name in self._TRANSFERS
        where = f"xp.{name}"

        def function(*args, **kwargs):
            return _wrap(attribute(*_unwrap(args, where, allow_host), **_unwrap(kwargs, where, allow_host)))

        return function


strict_module = StrictModule()


def register_strict_device(name: str = "strict") -> str:
    """Register the strict stand-in device under ``name`` and return the name."""
    register_device(
        name,
        strict_module,
        StrictArray,
        from_host=lambda array: StrictArray(np.array(array)),
        to_host=lambda array: array._array.copy(),
    )
    return name
