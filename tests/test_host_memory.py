"""The heap pad (``backend.keep_freed_memory``): freed host memory is reused, not faulted in again.

A train step frees its arrays at the end of backward and allocates the same sizes in
the next step. Measured in a fresh interpreter (the allocator's state is per process):
with the pad applied on import, the second round of allocations takes no new pages
from the kernel; with ``$TINYGRAD_LSTM_HEAP_PAD_MIB=0`` (glibc's own policy) it takes
them all again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tinygrad_lstm.tensor import backend

PROBE = textwrap.dedent(
    """
    import resource
    import numpy as np
    import tinygrad_lstm  # applies the heap pad on import

    def allocate_and_free():
        arrays = [np.ones(16384, np.float32) for _ in range(600)]  # 600 arrays of 64 KiB, from the heap
        del arrays

    allocate_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    allocate_and_free()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
PAGES_TOUCHED = 600 * 64 // 4  # 4 KiB pages


def page_faults_of_a_second_round(pad: str | None) -> int:
    env = dict(os.environ)
    env.pop("TINYGRAD_LSTM_HEAP_PAD_MIB", None)
    if pad is not None:
        env["TINYGRAD_LSTM_HEAP_PAD_MIB"] = pad
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


glibc_only = pytest.mark.skipif(not backend.keep_freed_memory(backend.heap_pad_mib), reason="needs glibc's mallopt")


@glibc_only
def test_freed_arrays_are_reused_without_new_page_faults_by_default() -> None:
    assert page_faults_of_a_second_round(None) < PAGES_TOUCHED // 10


@glibc_only
def test_without_the_pad_the_same_round_faults_its_pages_in_again() -> None:
    """The control: glibc's default hands the freed heap back, so the test above can fail."""
    assert page_faults_of_a_second_round("0") > PAGES_TOUCHED // 2


def test_the_pad_is_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TINYGRAD_LSTM_HEAP_PAD_MIB", " 16 ")
    assert backend._heap_pad_from_environment() == 16
    monkeypatch.setenv("TINYGRAD_LSTM_HEAP_PAD_MIB", "")
    assert backend._heap_pad_from_environment() == backend.DEFAULT_HEAP_PAD_MIB
    monkeypatch.setenv("TINYGRAD_LSTM_HEAP_PAD_MIB", "lots")
    with pytest.raises(ValueError, match=r"TINYGRAD_LSTM_HEAP_PAD_MIB must be a whole number of MiB.*'lots'"):
        backend._heap_pad_from_environment()


@pytest.mark.parametrize("bad", [-1, 2048, 1.5, True, "64"])
def test_a_bad_pad_is_refused_by_name(bad) -> None:
    with pytest.raises(ValueError, match=r"keep_freed_memory: mebibytes must be an int from 0 to 2047"):
        backend.keep_freed_memory(bad)
