"""``save`` and ``load``: parameters as a NumPy ``.npz`` archive, never a pickle."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a module's ``state_dict()`` (or a dict name -> array/Tensor) to exactly ``path`` (.npz).

    Each array becomes the member ``name + ".npy"`` of the zip archive, written here rather
    than by ``numpy.savez(**arrays)``, so that every key round-trips — ``"file"`` and
    ``"allow_pickle"`` included — and no ``.npz`` suffix is appended to ``path``.
    Everything is checked before the file is opened.
    """
    from .nn.module import numeric_host_array  # here, not at import: tl.nn loads on first use

    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"save takes a Module or a dict of arrays, not {type(obj).__name__}")
    arrays = {}
    for name, value in state.items():
        _check_member_name(name)
        arrays[name] = numeric_host_array(value, name, "save")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _check_member_name(name: Any) -> None:
    """A key must be a string that a zip member name can hold unchanged."""
    if not isinstance(name, str):
        raise TypeError(f"save: key {name!r} ({type(name).__name__}) is not a string; name every array with a str")
    if "\0" in name:
        raise ValueError(f"save: key {name!r} holds a NUL character, which a zip member name cannot")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"save: key {name!r} is not valid Unicode text ({error})") from None


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` archive written by ``save``: name -> NumPy array. Never unpickles.

    Each member ``name.npy`` is read as the array ``name`` (any ``name``, even one that
    itself ends in ``.npy``), by NumPy's ``.npy`` reader with pickles refused.
    """
    where = repr(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no file at {where}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load: {where} is not a .npz archive (tl.save writes NumPy .npz files)")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:  # refuses a pickle before the zip
            for member in archive.zip.namelist():
                name = member[: -len(".npy")] if member.endswith(".npy") else member
                if not member.endswith(".npy"):
                    raise _NotAnArray(name)
                with archive.zip.open(member) as file:
                    try:
                        arrays[name] = np.lib.format.read_array(file, allow_pickle=False)
                    except ValueError as error:
                        if "allow_pickle" in str(error):
                            raise
                        raise _NotAnArray(name) from None
    except _NotAnArray as error:
        raise ValueError(
            f"load: {where} is not a .npz archive of arrays: {error.name!r} is not a .npy member"
        ) from None
    except ValueError as error:  # object arrays need pickle: refused, nothing executed
        raise ValueError(f"load: {where} holds pickled data, which is never loaded ({error})") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"load: {where} is not a valid .npz archive ({error})") from None
    return arrays


class _NotAnArray(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name
