"""``save`` and ``load``: parameters as a NumPy ``.npz`` archive, never a pickle."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from .tensor import Tensor


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a module's ``state_dict()`` (or a dict name -> array/Tensor) to ``path`` (.npz)."""
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, dict):
        raise TypeError(f"save takes a Module or a dict of arrays, not {type(obj).__name__}")
    arrays = {}
    for name, value in state.items():
        array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"save: {name!r} has dtype {array.dtype}; only numeric arrays are saved (no pickles)")
        arrays[str(name)] = array
    with open(path, "wb") as file:  # a file object keeps numpy from appending ".npz"
        np.savez(file, **arrays)


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` archive written by ``save``: name -> NumPy array. Never unpickles."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no file at {os.fspath(path)!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load: {os.fspath(path)!r} is not a .npz archive (tl.save writes NumPy .npz files)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:  # object arrays need pickle: refused, nothing executed
        raise ValueError(f"load: {os.fspath(path)!r} holds pickled data, which is never loaded ({error})") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"load: {os.fspath(path)!r} is not a valid .npz archive ({error})") from None
    # NumPy hands back the raw bytes of a member that is not a .npy file.
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(
                f"load: {os.fspath(path)!r} is not a .npz archive of arrays: {name!r} is not a .npy member"
            )
    return arrays
