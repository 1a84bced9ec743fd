"""Argument checks for the layers: one function per concept, PyTorch's rules, clear messages.

Every constructor and every ``forward`` of ``nn`` asks here, so a size, a probability, a
flag, an input or a recurrent state is judged by one rule wherever it appears, and the
error names the argument, what was expected and what was given — before anything is
built or computed.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, NamedTuple

from ..tensor import Tensor


def check_size(value: Any, name: str, owner: str, minimum: int = 0) -> int:
    """A size is an int (not a bool, not a float) of at least ``minimum``; returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        bound = "greater than zero" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{owner}: {name} must be {bound}, got {value}")
    return int(value)


def check_probability(value: Any, name: str, owner: str) -> float:
    """A probability is a real number (not a bool, not NaN) in [0, 1]; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number in [0, 1], got {value!r} ({type(value).__name__})")
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {value}")
    return float(value)


def check_flag(value: Any, name: str, owner: str) -> bool:
    """A flag is a bool (as PyTorch checks ``batch_first``, ``bidirectional``, ``bias``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool (True or False), got {value!r} ({type(value).__name__})")
    return value


def check_no_extra_options(options: dict[str, Any], owner: str) -> None:
    """Keyword arguments nobody consumed: name them, and the public class, not an internal one."""
    if options:
        names = ", ".join(repr(name) for name in options)
        raise TypeError(f"{owner} got unexpected keyword argument(s) {names}")


def warn_if_dropout_unused(dropout: float, num_layers: int, owner: str) -> None:
    """Dropout acts between stacked layers only: with one layer it does nothing (PyTorch warns too)."""
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"{owner}: dropout={dropout} has no effect with num_layers=1 (dropout is applied "
            "between stacked layers, after every layer but the last)",
            UserWarning,
            stacklevel=4,
        )


# ------------------------------------------------------------------- inputs


def module_dtype(module: Any) -> Any:
    """The dtype of a module's first parameter (None for a module without parameters)."""
    for parameter in module.parameters():
        return parameter.dtype
    return None


def check_input(x: Any, owner: str, dtype: Any) -> Tensor:
    """A layer's input: a Tensor of the layer's dtype (PyTorch's rule; nothing is cast silently)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner} expects a Tensor as input, got {type(x).__name__}; wrap the data with tl.Tensor(...)")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: the input has dtype {x.dtype} but the layer's parameters are {dtype}; "
            f"cast the input (x.astype({_dtype_name(dtype)})) or the model (model.astype({_dtype_name(x.dtype)}))"
        )
    return x


def _dtype_name(dtype: Any) -> str:
    return f"tl.{dtype}" if str(dtype) in ("float32", "float64", "int64") else repr(str(dtype))


# ------------------------------------------------------------------- states


def state_names(cell: Any, count: int) -> tuple[str, ...]:
    """How to call the parts of a cell's state in messages: the cell's ``state_names`` or state[i]."""
    names = getattr(cell, "state_names", None)
    if names is not None and len(names) == count:
        return tuple(names)
    return ("state",) if count == 1 else tuple(f"state[{i}]" for i in range(count))


def layer_state_names(cell: Any, count: int) -> tuple[str, ...]:
    """A layer's initial state as PyTorch's documentation names it: h_0, c_0 (or state[i])."""
    names = state_names(cell, count)
    return tuple(f"{name}_0" for name in names) if getattr(cell, "state_names", None) else names


class PartSpec(NamedTuple):
    """What one part of a state must be: its exact shape and dtype."""

    shape: tuple[int, ...]
    dtype: Any


def spec_of(state: Any, leading: tuple[int, ...] = ()) -> Any:
    """The spec of a state (a Tensor or a tuple of them), each shape prefixed by ``leading``."""
    if isinstance(state, tuple):
        return tuple(PartSpec(leading + part.shape, part.dtype) for part in state)
    return PartSpec(leading + state.shape, state.dtype)


def check_state(state: Any, spec: Any, names: tuple[str, ...], owner: str) -> Any:
    """A recurrent state matching ``spec`` (a PartSpec, or a tuple of them for a tuple state).

    A list is taken as the tuple it spells (PyTorch accepts ``[h0, c0]``). Every part must
    have exactly the spec's shape (nothing is broadcast) and dtype. Returns the state,
    a tuple where the spec is one.
    """
    if isinstance(state, list):
        state = tuple(state)
    if not isinstance(spec, PartSpec):  # a tuple of parts (a PartSpec is a tuple too)
        if not isinstance(state, tuple) or len(state) != len(spec):
            raise ValueError(
                f"{owner} expects a state of {len(spec)} tensors ({', '.join(names)}), got {_describe(state)}"
            )
        parts, specs = state, spec
    else:
        if isinstance(state, tuple):
            raise ValueError(f"{owner} expects a state of 1 tensor ({names[0]}), got {_describe(state)}")
        parts, specs = (state,), (spec,)
    for part, expected, name in zip(parts, specs, names):
        if not isinstance(part, Tensor):
            raise TypeError(f"{owner}: {name} must be a Tensor shaped {expected.shape}, got {_describe(part)}")
        if part.shape != expected.shape:
            raise ValueError(f"{owner}: {name} must be shaped {expected.shape}, got {part.shape}")
    for part, expected, name in zip(parts, specs, names):
        if part.dtype != expected.dtype:
            raise TypeError(
                f"{owner}: {name} has dtype {part.dtype}, but the input and the layer have {expected.dtype}"
            )
    return state


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a Tensor of shape {value.shape}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    return type(value).__name__
