"""Time and measure one training step of our LSTM/RNN/GRU against a hand-written NumPy floor.

    python benchmarks/run.py                        # every workload, 5 rounds, 1 thread
    python benchmarks/run.py --quick                # a fast smoke run (skips large, long)
    python benchmarks/run.py --workloads mid gru-mid --rounds 9 --json /tmp/r.json

A train step is forward, backward of an MSE loss, and an SGD update, in float32:

* ``ours``      tinygrad_lstm.nn.{LSTM,RNN,GRU} + tinygrad_lstm.optim.SGD;
* ``numpy-ref`` the hand-derived forward + BPTT of benchmarks/numpy_reference.py plus an
  in-place SGD update: the floor an autodiff engine on NumPy is measured against;
* ``torch``     torch.nn.{LSTM,RNN,GRU} + torch.optim.SGD, when PyTorch is installed;
* ``ours-eager`` the same layer with ``compile=False`` (every op of every step a node);
  ``ours-checkpoint`` (long only) with ``checkpoint=√T``; ``ours-fused`` the opt-in
  ``nn.FusedLSTMCell``; ``ours-compiled`` (overhead only) the op chain through ``tl.compile``.

All contenders start from the same parameters and data, and the first step's losses are
compared as a sanity check. The ``overhead`` workload instead runs a chain of 2,000
tiny ops on a shape-(4,) tensor, forward and backward, against a plain NumPy loop doing
the same forward and backward arithmetic: it measures the engine's per-op cost.

Method: one warm-up call per contender (the first call of a compiled contender traces),
then one timed call that picks how many calls one timed sample makes, so that a sample
lasts at least --min-sample-ms, then --rounds rounds in which every contender is timed
once, the order rotating between rounds; the figure reported is the median, and the
target verdicts use the ratio of medians. The table also gives the lowest and highest
ratio of one round's two samples ("rounds × ref"): on a shared or throttled machine it
shows how far a verdict can be trusted. Peak memory is measured afterwards, on fresh
instances, one step each under tracemalloc (which sees NumPy's allocations but not
PyTorch's; on CUDA, CuPy's pool and torch.cuda are asked instead). BLAS thread counts
are fixed (--threads, default 1) through the environment before NumPy loads: the script
re-executes itself once if they were not already set.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks import numpy_reference as ref
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import numpy_reference as ref

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
LEARNING_RATE = 0.01
MIB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    """A recurrent layer size, or (kind "chain") the op-overhead chain."""

    name: str
    kind: str  # "lstm", "rnn", "gru" or "chain"
    steps: int  # T, or the number of ops in the chain
    batch: int
    input_size: int
    hidden_size: int  # for "chain": the tensor's length


WORKLOADS = {
    w.name: w
    for w in [
        Workload("small", "lstm", 200, 1, 8, 16),
        Workload("mid", "lstm", 64, 32, 32, 128),
        Workload("large", "lstm", 64, 64, 256, 512),
        Workload("long", "lstm", 1000, 16, 32, 128),
        Workload("rnn-mid", "rnn", 64, 32, 32, 128),
        Workload("gru-mid", "gru", 64, 32, 32, 128),
        Workload("overhead", "chain", 2000, 1, 4, 4),
    ]
}
QUICK_SKIPS = ("large", "long")

OURS, REFERENCE, TORCH, OURS_FUSED = "ours", "numpy-ref", "torch", "ours-fused"
OURS_EAGER, OURS_CHECKPOINT, OURS_COMPILED = "ours-eager", "ours-checkpoint", "ours-compiled"

# (workload, metric, contender) -> the most contender / numpy-ref may be. "ours" is the
# default path (nn layers run their loop compiled, tl.scan); "ours-eager" the same
# layer with compile=False; "ours-checkpoint" with checkpoint=√T; "ours-compiled" the
# op chain through tl.compile.
TARGETS = {
    ("large", "time", OURS): 1.10,
    ("long", "time", OURS): 1.20,
    ("long", "memory", OURS): 1.3,
    ("long", "time", OURS_CHECKPOINT): 1.5,
    ("long", "memory", OURS_CHECKPOINT): 0.5,
    ("mid", "time", OURS): 1.30,
    ("rnn-mid", "time", OURS): 1.30,
    ("gru-mid", "time", OURS): 1.40,
    ("small", "time", OURS): 2.5,
    ("overhead", "time", OURS): 4.0,
    ("overhead", "time", OURS_COMPILED): 1.5,
}
LAYER_CLASS = {"lstm": "LSTM", "rnn": "RNN", "gru": "GRU"}


class Skip(Exception):
    """A contender that cannot run here (a missing package or layer); the reason says why."""


# --------------------------------------------------------------------- devices


@dataclass
class Device:
    """Where the contenders run: the array module, how to wait for it, how to measure memory."""

    name: str  # "cpu" or "cuda"
    xp: Any

    def sync(self) -> None:
        if self.name == "cuda":
            self.xp.cuda.Device().synchronize()

    def to_device(self, array: np.ndarray) -> Any:
        return self.xp.asarray(array)


def make_device(name: str) -> Device:
    if name == "cpu":
        return Device("cpu", np)
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # ImportError, or CuPy's own error when no GPU is reachable
        raise SystemExit(f"--device cuda needs CuPy and a GPU for the NumPy reference: {error}") from error
    return Device("cuda", cupy)


# ------------------------------------------------------------------------ data


def make_data(workload: Workload, device: Device) -> dict[str, Any]:
    """Inputs, targets and initial parameters shared by every contender (host float32)."""
    rng = np.random.default_rng(1234)
    if workload.kind == "chain":
        size = workload.hidden_size
        return {
            "x": rng.uniform(-1, 1, size).astype(np.float32),
            "w": rng.uniform(0.5, 1.5, size).astype(np.float32),
            "b": rng.uniform(-0.5, 0.5, size).astype(np.float32),
        }
    T, B, I, H = workload.steps, workload.batch, workload.input_size, workload.hidden_size
    return {
        "x": rng.standard_normal((T, B, I)).astype(np.float32),
        "target": (0.5 * rng.standard_normal((T, B, H))).astype(np.float32),
        "params": ref.init_params(workload.kind, I, H, np.float32, seed=99),
    }


# ------------------------------------------------------------------ contenders
#
# Each factory builds fresh state (parameters, optimizer) and returns ``step``, one train
# step returning its loss. Building is not timed.

StepFactory = Callable[[Workload, dict, Device], Callable[[], Any]]


def reference_recurrent(workload: Workload, data: dict, device: Device) -> Callable[[], Any]:
    xp = device.xp
    params = {name: device.to_device(value.copy()) for name, value in data["params"].items()}
    x, target = device.to_device(data["x"]), device.to_device(data["target"])
    if workload.kind == "lstm":

        def forward_backward(scale):
            output, _, _, cache = ref.lstm_forward(x, None, None, params)
            grad_output = output - target
            loss = xp.vdot(grad_output, grad_output) / grad_output.size
            grad_output *= scale  # d mean((out - target)²) / d out = 2 (out - target) / N
            return loss, ref.lstm_backward(grad_output, cache, need_input_grad=False)

    else:
        forward = ref.rnn_forward if workload.kind == "rnn" else ref.gru_forward
        backward = ref.rnn_backward if workload.kind == "rnn" else ref.gru_backward

        def forward_backward(scale):
            output, _, cache = forward(x, None, params)
            grad_output = output - target
            loss = xp.vdot(grad_output, grad_output) / grad_output.size
            grad_output *= scale
            return loss, backward(grad_output, cache, need_input_grad=False)

    scale = 2.0 / target.size

    def step():
        loss, grads = forward_backward(scale)
        ref.sgd_step(params, grads, LEARNING_RATE)
        return loss

    return step


def _import_ours(layer_name: str | None = None) -> Any:
    """The package under test, from this checkout; Skip if a needed piece is not written yet."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import tinygrad_lstm as tl

    if layer_name is None:
        return tl
    try:
        from tinygrad_lstm import nn, optim
    except ImportError as error:
        raise Skip(f"tinygrad_lstm.nn.{layer_name} not available yet ({error})") from error
    if not hasattr(nn, layer_name):
        raise Skip(f"tinygrad_lstm.nn.{layer_name} not available yet")
    if not hasattr(optim, "SGD"):
        raise Skip("tinygrad_lstm.optim.SGD not available yet")
    return tl


def ours_recurrent(
    workload: Workload, data: dict, device: Device, fused: bool = False, **options: Any
) -> Callable[[], Any]:
    """Our layer's train step; ``options`` go to the layer (``compile=False``, ``checkpoint=k``)."""
    layer_name = LAYER_CLASS[workload.kind]
    tl = _import_ours(layer_name)
    from tinygrad_lstm import nn, optim

    if fused:  # the opt-in fused LSTM step (one node per step), same weights
        layer = nn.Recurrent(nn.FusedLSTMCell, workload.input_size, workload.hidden_size, **options)
    else:
        layer = getattr(nn, layer_name)(workload.input_size, workload.hidden_size, **options)
    layer.load_state_dict(data["params"])
    layer = layer.to(device.name)
    optimizer = optim.SGD(layer.parameters(), lr=LEARNING_RATE)
    x = tl.Tensor(data["x"], device=device.name)
    target = tl.Tensor(data["target"], device=device.name)

    def step():
        optimizer.zero_grad()
        output, _ = layer(x)
        diff = output - target
        loss = (diff * diff).mean()
        loss.backward()
        optimizer.step()
        return loss

    return step


def _import_torch(threads: int) -> Any:
    try:
        import torch
    except ImportError as error:
        raise Skip("PyTorch is not installed") from error
    if threads > 0:
        torch.set_num_threads(threads)
    return torch


def torch_recurrent(workload: Workload, data: dict, device: Device, threads: int = 1) -> Callable[[], Any]:
    torch = _import_torch(threads)
    torch_device = _torch_device(torch, device)
    layer = getattr(torch.nn, LAYER_CLASS[workload.kind])(workload.input_size, workload.hidden_size)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            parameter.copy_(torch.from_numpy(data["params"][name]))
    layer = layer.to(torch_device)
    optimizer = torch.optim.SGD(layer.parameters(), lr=LEARNING_RATE)
    x = torch.from_numpy(data["x"]).to(torch_device)
    target = torch.from_numpy(data["target"]).to(torch_device)

    def step():
        optimizer.zero_grad()
        output, _ = layer(x)
        loss = torch.nn.functional.mse_loss(output, target)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _torch_device(torch: Any, device: Device) -> str:
    if device.name == "cuda" and not torch.cuda.is_available():
        raise Skip("this PyTorch build has no CUDA")
    return device.name


# The chain: (y · w + b).tanh() · 0.5, repeated, 4 ops a link; loss = Σ y.
def reference_chain(workload: Workload, data: dict, device: Device) -> Callable[[], Any]:
    xp = device.xp
    x, w, b = (device.to_device(data[k]) for k in ("x", "w", "b"))
    links = workload.steps // 4

    def step():
        inputs, tanhs = [], []
        y = x
        for _ in range(links):  # forward, keeping what backward needs, as an engine would
            inputs.append(y)
            y = xp.tanh(y * w + b)
            tanhs.append(y)
            y = y * 0.5
        loss = y.sum()
        grad_y = xp.ones_like(y)
        grad_w, grad_b = xp.zeros_like(w), xp.zeros_like(b)
        for k in range(links - 1, -1, -1):
            grad_y = grad_y * 0.5
            grad_y = grad_y * (1 - tanhs[k] * tanhs[k])
            grad_b += grad_y
            grad_w += grad_y * inputs[k]
            grad_y = grad_y * w
        return loss, grad_y, grad_w, grad_b

    return step


def ours_chain(workload: Workload, data: dict, device: Device) -> Callable[[], Any]:
    tl = _import_ours()
    x, w, b = (tl.Tensor(data[k], requires_grad=True, device=device.name) for k in ("x", "w", "b"))
    links = workload.steps // 4

    def step():
        x.grad = w.grad = b.grad = None
        y = x
        for _ in range(links):
            y = (y * w + b).tanh() * 0.5
        loss = y.sum()
        loss.backward()
        return loss

    return step


def ours_chain_compiled(workload: Workload, data: dict, device: Device) -> Callable[[], Any]:
    """The same chain through ``tl.compile``: traced once, then one node per call."""
    tl = _import_ours()
    x, w, b = (tl.Tensor(data[k], requires_grad=True, device=device.name) for k in ("x", "w", "b"))
    links = workload.steps // 4

    def chain(y):
        for _ in range(links):
            y = (y * w + b).tanh() * 0.5
        return y.sum()

    compiled = tl.compile(chain)

    def step():
        x.grad = w.grad = b.grad = None
        loss = compiled(x)
        loss.backward()
        return loss

    return step


def torch_chain(workload: Workload, data: dict, device: Device, threads: int = 1) -> Callable[[], Any]:
    torch = _import_torch(threads)
    torch_device = _torch_device(torch, device)
    x, w, b = (torch.tensor(data[k], requires_grad=True, device=torch_device) for k in ("x", "w", "b"))
    links = workload.steps // 4

    def step():
        x.grad = w.grad = b.grad = None
        y = x
        for _ in range(links):
            y = (y * w + b).tanh() * 0.5
        loss = y.sum()
        loss.backward()
        return loss

    return step


def contenders_for(workload: Workload, threads: int) -> dict[str, StepFactory]:
    def with_threads(factory):
        return lambda workload, data, device: factory(workload, data, device, threads)

    if workload.kind == "chain":
        return {
            OURS: ours_chain,
            OURS_COMPILED: ours_chain_compiled,
            REFERENCE: reference_chain,
            TORCH: with_threads(torch_chain),
        }
    contenders = {
        OURS: ours_recurrent,
        OURS_EAGER: lambda workload, data, device: ours_recurrent(workload, data, device, compile=False),
        REFERENCE: reference_recurrent,
        TORCH: with_threads(torch_recurrent),
    }
    if workload.name == "long":  # memory for time: keep every √T-th state, recompute the rest
        every = max(1, round(math.sqrt(workload.steps)))
        contenders[OURS_CHECKPOINT] = lambda workload, data, device: ours_recurrent(
            workload, data, device, checkpoint=every
        )
    if workload.kind == "lstm":  # shown for information: the hand-derived fused step of nn.FusedLSTMCell
        contenders[OURS_FUSED] = lambda workload, data, device: ours_recurrent(workload, data, device, fused=True)
    return contenders


# ------------------------------------------------------------------- measuring


def time_sample(step: Callable[[], Any], device: Device, number: int) -> float:
    """Seconds per call, over ``number`` back-to-back calls (garbage collected before)."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(number):
        step()
    device.sync()
    return (time.perf_counter() - start) / number


def loss_value(loss: Any) -> float:
    if isinstance(loss, tuple):
        loss = loss[0]
    if hasattr(loss, "item"):
        return float(loss.item())
    return float(np.asarray(loss))


def peak_memory_mib(factory: StepFactory, workload: Workload, data: dict, device: Device, contender: str):
    """Peak extra memory (MiB) of one train step on a fresh instance, or (None, why not)."""
    step = factory(workload, data, device)
    gc.collect()
    if device.name == "cpu":
        if contender == TORCH:
            return None, "tracemalloc does not see PyTorch's allocator"
        tracemalloc.start()
        try:
            step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak / MIB, None
    if contender == TORCH:
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / MIB, None
    return _cupy_peak_mib(step, device)


def _cupy_peak_mib(step: Callable[[], Any], device: Device):
    try:
        from cupy.cuda.memory_hook import MemoryHook
    except ImportError as error:
        return None, f"CuPy memory hooks unavailable: {error}"

    class PeakHook(MemoryHook):
        name = "PeakHook"

        def __init__(self):
            self.current = self.peak = 0

        def malloc_postprocess(self, **kwargs):
            self.current += kwargs["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kwargs):
            self.current -= kwargs["mem_size"]

    hook = PeakHook()
    with hook:
        step()
        device.sync()
    return hook.peak / MIB, None


def run_workload(workload: Workload, args: argparse.Namespace, device: Device) -> list[dict]:
    data = make_data(workload, device)
    factories = contenders_for(workload, args.threads)
    rows = {name: {"workload": workload.name, "contender": name, "status": "ok"} for name in factories}
    steps: dict[str, Callable[[], Any]] = {}
    numbers: dict[str, int] = {}
    for name, factory in factories.items():
        try:
            step = factory(workload, data, device)
            rows[name]["first_loss"] = loss_value(step())  # warm-up (a compiled contender traces here)
            device.sync()
            start = time.perf_counter()
            step()  # a second call, timed, picks how many calls make a sample
            device.sync()
            seconds = time.perf_counter() - start
        except Skip as why:
            rows[name].update(status="skipped", reason=str(why))
            continue
        except Exception as error:  # report and carry on with the other contenders
            rows[name].update(status="error", reason=f"{type(error).__name__}: {error}")
            continue
        steps[name] = step
        numbers[name] = max(1, math.ceil(args.min_sample_ms / 1000 / max(seconds, 1e-9)))

    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for round_index in range(args.rounds):
        shift = round_index % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            try:
                times[name].append(time_sample(steps[name], device, numbers[name]))
            except Exception as error:
                rows[name].update(status="error", reason=f"{type(error).__name__}: {error}")
    steps.clear()  # free the timing instances before measuring memory
    gc.collect()

    for name in times:
        if rows[name]["status"] != "ok":
            continue
        rows[name].update(
            calls_per_sample=numbers[name],
            times_ms=[round(t * 1000, 4) for t in times[name]],
            median_ms=statistics.median(times[name]) * 1000,
        )
        try:
            peak, why = peak_memory_mib(factories[name], workload, data, device, name)
        except Exception as error:
            peak, why = None, f"{type(error).__name__}: {error}"
        rows[name]["peak_mib"] = peak
        if why:
            rows[name]["memory_note"] = why
        gc.collect()

    reference = rows.get(REFERENCE, {})
    for row in rows.values():
        row["time_ratio"] = _ratio(row.get("median_ms"), reference.get("median_ms"))
        row["memory_ratio"] = _ratio(row.get("peak_mib"), reference.get("peak_mib"))
        row["round_ratios"] = _round_ratios(row.get("times_ms"), reference.get("times_ms"))
    _check_losses(workload, rows)
    return list(rows.values())


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def _round_ratios(times: list[float] | None, reference: list[float] | None) -> list[float] | None:
    """The contender's sample over the reference's, round by round: how much the ratio moves between rounds."""
    if not times or not reference or len(times) != len(reference):
        return None
    return [round(mine / theirs, 4) for mine, theirs in zip(times, reference)]


def _check_losses(workload: Workload, rows: dict[str, dict]) -> None:
    """The contenders start from identical parameters: their first losses must agree."""
    base = rows.get(REFERENCE, {}).get("first_loss")
    for row in rows.values():
        loss = row.get("first_loss")
        if base is None or loss is None:
            continue
        agrees = abs(loss - base) <= 1e-4 * max(1.0, abs(base))
        row["loss_agrees_with_reference"] = agrees
        if not agrees:
            print(
                f"warning: {workload.name}/{row['contender']}: first loss {loss!r} differs from "
                f"the reference's {base!r}",
                file=sys.stderr,
            )


def evaluate_targets(results: list[dict]) -> list[dict]:
    by_key = {(row["workload"], row["contender"]): row for row in results}
    verdicts = []
    for (workload, metric, contender), limit in TARGETS.items():
        if not any(row["workload"] == workload for row in results):
            continue
        row = by_key.get((workload, contender), {})
        value = row.get("time_ratio" if metric == "time" else "memory_ratio")
        status = "n/a" if value is None else ("PASS" if value <= limit else "MISS")
        verdicts.append(
            {
                "workload": workload, "metric": metric, "contender": contender, "limit": limit,
                "ratio": value, "status": status,
            }
        )  # fmt: skip
    return verdicts


# -------------------------------------------------------------------- reporting


def blas_summary() -> str:
    """Which BLAS NumPy calls, and with how many threads."""
    try:
        from threadpoolctl import threadpool_info

        parts = [
            f"{info.get('internal_api')} {info.get('version')} ({info.get('num_threads')} threads, "
            f"{info.get('architecture')}, {info.get('threading_layer')})"
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ]
        return "; ".join(parts) + " [threadpoolctl]"
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        configuration = blas.get("openblas configuration", "").strip()
        detail = f" ({configuration})" if configuration else ""
        return f"{blas.get('name')} {blas.get('version')}{detail} [np.show_config; threadpoolctl not installed]"
    except Exception as error:  # an old NumPy without mode="dicts"
        return f"unknown ({error})"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_meta(args: argparse.Namespace, device: Device) -> dict:
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_summary(),
        "threads": args.threads,
        "thread_env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "device": device.name,
        "rounds": args.rounds,
        "min_sample_ms": args.min_sample_ms,
        "quick": args.quick,
        "dtype": "float32",
        "learning_rate": LEARNING_RATE,
    }
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    except ImportError:
        meta["torch"] = None
    try:
        import tinygrad_lstm

        meta["tinygrad_lstm"] = getattr(tinygrad_lstm, "__version__", "?")
    except ImportError:
        meta["tinygrad_lstm"] = None
    return meta


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _spread(ratios: list[float] | None) -> str:
    """The lowest and highest per-round time ratio, ``0.95–1.41``."""
    return "—" if not ratios else f"{min(ratios):.2f}–{max(ratios):.2f}"


def _target_cell(verdicts: dict, workload: str, metric: str, contender: str) -> str:
    verdict = verdicts.get((workload, metric, contender))
    if verdict is None:
        return ""
    return f"≤ {verdict['limit']:.2f}× {verdict['status']}"


def markdown_report(meta: dict, results: list[dict], verdicts: list[dict]) -> str:
    lines = [
        f"Python {meta['python']}, NumPy {meta['numpy']}, PyTorch {meta['torch'] or 'not installed'} "
        f"({meta.get('torch_threads', '-')} threads), device {meta['device']}, float32",
        f"CPU: {meta['cpu']} ({meta['cpu_count']} logical cores); threads {meta['threads']}; "
        f"OPENBLAS_CORETYPE={meta['OPENBLAS_CORETYPE'] or '(unset)'}",
        f"BLAS: {meta['blas']}",
        f"{meta['rounds']} rounds, median; samples of at least {meta['min_sample_ms']} ms; "
        "ratios are contender / numpy-ref (median over median; 'rounds × ref': the lowest and highest "
        "ratio of one round's samples); peak = extra memory of one step (tracemalloc)",
        "",
        "| workload | T×B×I×H | contender | median ms | × ref | rounds × ref | time target | peak MiB | × ref "
        "| memory target |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    by_target = {(v["workload"], v["metric"], v["contender"]): v for v in verdicts}
    for row in results:
        workload = WORKLOADS[row["workload"]]
        shape = (
            f"{workload.steps} ops on ({workload.hidden_size},)"
            if workload.kind == "chain"
            else f"{workload.steps}×{workload.batch}×{workload.input_size}×{workload.hidden_size}"
        )
        name = row["workload"]
        if row["status"] != "ok":
            status = f"{row['status']}: {row.get('reason', '')}".replace("|", "/")
            lines.append(f"| {name} | {shape} | {row['contender']} | {status} | | | | | | |")
            continue
        time_ratio = row.get("time_ratio")
        memory_ratio = row.get("memory_ratio")
        lines.append(
            f"| {name} | {shape} | {row['contender']} | {_number(row['median_ms'])} | "
            f"{_number(time_ratio)}{'×' if time_ratio is not None else ''} | "
            f"{_spread(row.get('round_ratios'))} | "
            f"{_target_cell(by_target, name, 'time', row['contender'])} | "
            f"{_number(row.get('peak_mib'))} | "
            f"{_number(memory_ratio)}{'×' if memory_ratio is not None else ''} | "
            f"{_target_cell(by_target, name, 'memory', row['contender'])} |"
        )
    notes = sorted({f"{row['contender']}: {row['memory_note']}" for row in results if row.get("memory_note")})
    if notes:
        lines.append("")
        lines.extend(f"Peak memory not measured for {note}." for note in notes)
    passed = sum(v["status"] == "PASS" for v in verdicts)
    missed = [f"{v['workload']} {v['metric']} ({v['contender']})" for v in verdicts if v["status"] == "MISS"]
    unknown = [f"{v['workload']} {v['metric']} ({v['contender']})" for v in verdicts if v["status"] == "n/a"]
    lines.append("")
    lines.append(
        f"Targets: {passed} PASS, {len(missed)} MISS"
        + (f" ({', '.join(missed)})" if missed else "")
        + (f", {len(unknown)} n/a ({', '.join(unknown)})" if unknown else "")
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), metavar="NAME", help=", ".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds after the warm-up (default 5; 2 quick)")
    parser.add_argument("--min-sample-ms", type=float, default=None, help="shortest timed sample (default 50; 5 quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads; 0 leaves them alone")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results.json", help="where to write figures"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few rounds, no large or long")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.min_sample_ms is None:
        args.min_sample_ms = 5.0 if args.quick else 50.0
    if args.workloads is None:
        args.workloads = [name for name in WORKLOADS if not (args.quick and name in QUICK_SKIPS)]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def limit_threads(threads: int) -> None:
    """Put the thread counts in the environment; re-exec so that NumPy's BLAS reads them at load."""
    if threads <= 0:
        return
    wanted = str(threads)
    if all(os.environ.get(name) == wanted for name in THREAD_VARIABLES):
        return
    os.environ.update({name: wanted for name in THREAD_VARIABLES})
    if __name__ == "__main__":  # NumPy is already loaded: start again with the new environment
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.argv])
    print("warning: NumPy was loaded before the thread limits were set; they may not apply", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    device = make_device(args.device)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.threads > 0:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    results = []
    for name in args.workloads:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.extend(run_workload(WORKLOADS[name], args, device))
    meta = collect_meta(args, device)
    verdicts = evaluate_targets(results)
    print(markdown_report(meta, results, verdicts))
    workloads = {name: vars(WORKLOADS[name]) for name in args.workloads}
    report = {"meta": meta, "workloads": workloads, "results": results, "targets": verdicts}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
