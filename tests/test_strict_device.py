"""The op suite "as if on a GPU": the strict stand-in device refuses host arrays as CuPy does.

An op that calls ``numpy.zeros`` where it should call ``xp.zeros`` works on ``"cpu"`` and
breaks only on a GPU. On the ``"strict"`` device every array is a wrapper that raises
``HostArrayLeak`` when it meets a host NumPy array or is converted to one implicitly, so
running the whole op table there (forward parity with NumPy, float64 gradcheck, results
and gradients that stay device arrays) catches such leaks on a CPU-only machine.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_ops import OP_SPECS, OpSpec, op_property

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import backend
from tinygrad_lstm.testing import gradcheck
from tinygrad_lstm.testing.strict_backend import HostArrayLeak, StrictArray

ROOT = Path(__file__).resolve().parent.parent
GPU_CHECK = ROOT / "scripts" / "gpu_check.py"


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda spec: spec.name)
def test_op_on_the_strict_device(spec: OpSpec, strict_device: str) -> None:
    op_property(spec, device=strict_device, max_examples=8)()


def test_leaf_gradients_stay_device_arrays(strict_device: str) -> None:
    x = tl.randn(3, 4, dtype=tl.float64, device=strict_device, requires_grad=True)
    w = tl.randn(4, 2, dtype=tl.float64, device=strict_device, requires_grad=True)
    loss = ((x @ w).tanh() * x[[0, 0, 2]].sum(axis=1, keepdims=True)).logsumexp()
    loss.backward()
    for leaf in (x, w):
        assert leaf.grad.device == strict_device and isinstance(leaf.grad.data, StrictArray)
    assert isinstance(loss.data, StrictArray)


def test_moving_between_devices_is_differentiable(strict_device: str) -> None:
    x = tl.Tensor([0.5, -1.0, 2.0], dtype=tl.float64, requires_grad=True)
    moved = x.to(strict_device)
    assert moved.device == strict_device and isinstance(moved.data, StrictArray)
    assert gradcheck(lambda x: (x.to(strict_device).tanh() * 3).to("cpu"), (x,))
    (moved * moved).sum().backward()
    assert x.grad.device == "cpu" and isinstance(x.grad.data, np.ndarray)
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, -2.0, 4.0])


def test_implicit_conversion_to_numpy_is_refused(strict_device: str) -> None:
    t = tl.Tensor([1.0, 2.0], device=strict_device)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])  # the explicit copy works
    with pytest.raises(TypeError, match=r"call \.numpy\(\)"):
        np.asarray(t)
    with pytest.raises(HostArrayLeak):
        np.asarray(t.data)


# ------------------------------------------------------------- leaking ops


class LeakyForward(tl.Function):
    """y = x + 0, with the zeros made on the host: works on "cpu", leaks on a device."""

    @staticmethod
    def forward(ctx, x):
        return x + np.zeros(x.shape, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class LeakyBackward(tl.Function):
    """y = 2x, whose VJP mixes in host zeros."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2 + np.zeros(grad.shape, dtype=grad.dtype)


def test_host_array_leaks_pass_on_cpu() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    assert gradcheck(LeakyForward.apply, (x,)) and gradcheck(LeakyBackward.apply, (x,))


def test_a_forward_that_leaks_a_host_array_raises_on_the_strict_device(strict_device: str) -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True, device=strict_device)
    with pytest.raises(HostArrayLeak, match="host NumPy array"):
        LeakyForward.apply(x)


def test_a_backward_that_leaks_a_host_array_raises_on_the_strict_device(strict_device: str) -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True, device=strict_device)
    y = LeakyBackward.apply(x)  # the forward is clean
    with pytest.raises(HostArrayLeak, match="host NumPy array"):
        y.sum().backward()


# --------------------------------------------------- scripts/gpu_check.py


def _load_gpu_check():
    """scripts/gpu_check.py as a module (scripts/ is not a package)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def test_the_gpu_battery_passes_on_the_strict_device(strict_device: str) -> None:
    gpu_check = _load_gpu_check()
    results = gpu_check.run_battery(strict_device)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) >= 50
    assert "0 failed" in gpu_check.format_table(results, strict_device)


def test_the_gpu_battery_reports_failures(strict_device: str) -> None:
    gpu_check = _load_gpu_check()
    wrong = gpu_check.Check("wrong forward", lambda x: x * 2, lambda x: x * 3, [gpu_check.uniform(2)])
    leaky = gpu_check.Check("leaky backward", LeakyBackward.apply, lambda x: x * 2, [gpu_check.uniform(2)])
    results = gpu_check.run_battery(strict_device, checks=[wrong, leaky])
    assert [(r.forward, r.gradcheck) for r in results] == [(False, None), (True, False)]
    assert "HostArrayLeak" in results[1].detail
    table = gpu_check.format_table(results, strict_device)
    assert "FAIL" in table and "2 failed" in table


def test_the_gpu_check_script_without_a_gpu_exits_cleanly() -> None:
    try:
        backend.get_device("cuda")
    except backend.DeviceError:
        pass
    else:
        pytest.skip("a GPU is available here: this test is about machines without one")
    run = subprocess.run([sys.executable, str(GPU_CHECK)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "no GPU checks ran" in run.stdout and "--device strict" in run.stdout


def test_the_gpu_check_script_runs_the_battery_on_the_strict_device() -> None:
    run = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--device", "strict"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].split() == ["op", "forward", "gradcheck"]
    assert "0 failed" in run.stdout
