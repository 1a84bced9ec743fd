"""Shared test setup: a stable Hypothesis profile and the strict stand-in device.

Profiles (choose with ``TINYGRAD_LSTM_HYPOTHESIS_PROFILE``):

* ``ci`` (default): derandomized, so every run draws the same examples and CI never
  flakes; no deadline, since a gradcheck's running time depends on the drawn shape.
* ``thorough``: random draws and many more examples, for hunting bugs locally.
"""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

from tinygrad_lstm.tensor import backend
from tinygrad_lstm.testing.strict_backend import register_strict_device

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("TINYGRAD_LSTM_HYPOTHESIS_PROFILE", "ci"))

scan_module = importlib.import_module("tinygrad_lstm.tensor.scan")  # (tl.scan, the function, shadows it)

# Registered at import, so test modules can parametrize over it at collection time.
STRICT = register_strict_device()


@pytest.fixture(scope="session")
def strict_device() -> str:
    """The name of the strict stand-in for CuPy (refuses implicit host conversions)."""
    return STRICT


@pytest.fixture(autouse=True)
def _restore_default_device():
    """A test that changes the default device cannot leak it into the next test."""
    device = backend._default_device
    yield
    backend._default_device = device


@pytest.fixture(autouse=True)
def _fresh_generated_loops():
    """Each test generates its scans' loops anew: a test that edits the code generator (a
    canary planting a bug) neither reuses loops made before its edit nor leaves its own."""
    scan_module.generated_loops.clear()
    yield
    scan_module.generated_loops.clear()
