"""Run the op battery on a GPU: forward parity with NumPy and float64 gradchecks, per op.

    python scripts/gpu_check.py                  # device "cuda" (needs CuPy and a CUDA GPU)
    python scripts/gpu_check.py --device strict  # the CPU stand-in that refuses host arrays

For every op of the engine (in several shapes: broadcasting, batched matmul, 0-d, repeated
indices) the battery checks, on the device:

* forward: the result equals NumPy's on host copies of the inputs (shape, dtype, values),
  and it is a device array, not a host array that slipped through;
* gradcheck: reverse mode matches central differences in float64, and every gradient
  that lands in ``.grad`` is a device array too.

It prints a table (op, forward, gradcheck) and exits 1 if anything failed. Without CuPy
or a GPU it says so and exits 0: there is nothing to check on such a machine. The battery
is a plain function, ``run_battery(device)``, importable without pytest.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tinygrad_lstm as tl  # noqa: E402
from tinygrad_lstm.tensor import backend  # noqa: E402
from tinygrad_lstm.testing import check_gradients  # noqa: E402

Maker = Callable[[np.random.Generator], np.ndarray]


# ------------------------------------------------------------------ inputs


def uniform(*shape: int, low: float = -2.0, high: float = 2.0) -> Maker:
    return lambda rng: np.asarray(rng.uniform(low, high, shape), dtype=np.float64)


def positive(*shape: int) -> Maker:
    return uniform(*shape, low=0.2, high=2.0)


def off_zero(*shape: int) -> Maker:
    """Magnitudes in [0.2, 2], either sign: away from the kinks of relu and abs."""
    return lambda rng: uniform(*shape, low=0.2, high=2.0)(rng) * rng.choice([-1.0, 1.0], shape)


def distinct(*shape: int, offset: float = 0.0) -> Maker:
    """All values different, from a shuffled grid on [-2, 2] (shifted by ``offset``): no ties."""
    size = math.prod(shape)
    grid = np.linspace(-2.0, 2.0, 2 * size) + offset
    return lambda rng: rng.permutation(grid)[:size].reshape(shape)


def mask(*shape: int) -> Maker:
    return lambda rng: rng.random(shape) < 0.5


@dataclass
class Check:
    """One battery entry: our op on Tensors, NumPy's on arrays, and how to make the inputs."""

    name: str
    ours: Callable[..., Any]
    numpy: Callable[..., Any]
    inputs: Sequence[Maker]
    gradcheck_options: dict[str, float] = field(default_factory=dict)
    output_device: str | None = None  # where the outputs live, if not on the inputs' device


def _np_split(x, sizes, axis=0):
    return tuple(np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


REPEATED = np.array([0, 2, 0, -1, 0])


def battery() -> list[Check]:
    """Every op of the engine, in the shapes that tend to break device code."""
    return [
        # operators, with broadcasting and Python scalars on either side
        Check("add (broadcast)", lambda a, b: a + b, lambda a, b: a + b, [uniform(2, 3), uniform(3)]),
        Check("add scalar, 2 + x", lambda x: 1.5 + x + 2, lambda x: 1.5 + x + 2, [uniform(2, 3)]),
        Check("sub (broadcast)", lambda a, b: a - b, lambda a, b: a - b, [uniform(2, 1, 3), uniform(4, 3)]),
        Check("rsub, 1 - x", lambda x: 1.0 - x, lambda x: 1.0 - x, [uniform(3)]),
        Check("mul (outer broadcast)", lambda a, b: a * b, lambda a, b: a * b, [uniform(3, 1), uniform(1, 4)]),
        Check("mul 0-d", lambda a, b: a * b, lambda a, b: a * b, [uniform(), uniform()]),
        Check("div", lambda a, b: a / b, lambda a, b: a / b, [uniform(2, 3), off_zero(2, 3)]),
        Check("rdiv, 1 / x", lambda x: 1 / x, lambda x: 1 / x, [off_zero(4)]),
        Check("pow a ** b", lambda a, b: a**b, lambda a, b: a**b, [positive(2, 3), uniform(3)]),
        Check("pow x ** 3", lambda x: x**3, lambda x: x**3, [uniform(2, 2)]),
        Check("rpow 2 ** x", lambda x: 2.0**x, lambda x: 2.0**x, [uniform(3)]),
        Check("neg", lambda x: -x, lambda x: -x, [uniform(2, 3)]),
        Check("matmul 2-D", lambda a, b: a @ b, np.matmul, [uniform(2, 3), uniform(3, 4)]),
        Check("matmul batched", lambda a, b: a @ b, np.matmul, [uniform(2, 1, 3, 4), uniform(3, 4, 2)]),
        Check("matmul 1-D @ 1-D", lambda a, b: a @ b, np.matmul, [uniform(3), uniform(3)]),
        Check("matmul 1-D @ 3-D", tl.matmul, np.matmul, [uniform(3), uniform(2, 3, 4)]),
        Check("matmul 3-D @ 1-D", tl.matmul, np.matmul, [uniform(2, 4, 3), uniform(3)]),
        Check("linear", tl.linear, lambda x, w, b: x @ w.T + b, [uniform(2, 3, 4), uniform(5, 4), uniform(5)]),
        # elementwise
        Check("exp", tl.exp, np.exp, [uniform(2, 3)]),
        Check("log", tl.log, np.log, [positive(2, 3)]),
        Check("tanh", tl.tanh, np.tanh, [uniform(2, 3)]),
        Check("sigmoid", tl.sigmoid, _sigmoid, [uniform(2, 3)]),
        Check("relu", tl.relu, lambda x: np.maximum(x, 0), [off_zero(2, 3)]),
        Check("sqrt", tl.sqrt, np.sqrt, [positive(2, 3)]),
        Check("abs", tl.abs, np.abs, [off_zero(2, 3)]),
        # the two grids never meet (at least 0.02 apart): no ties between a and b
        Check("maximum (broadcast)", tl.maximum, np.maximum, [distinct(2, 3), distinct(3, offset=0.05)]),
        Check("maximum with a scalar", lambda x: tl.maximum(x, 0.05), lambda x: np.maximum(x, 0.05), [distinct(2, 3)]),
        Check("clip(lo, hi)", lambda x: x.clip(-0.55, 0.65), lambda x: np.clip(x, -0.55, 0.65), [distinct(3, 3)]),
        Check("clip(lo only)", lambda x: x.clip(lo=0.05), lambda x: np.clip(x, 0.05, None), [distinct(5)]),
        # reductions
        Check("sum", tl.sum, np.sum, [uniform(2, 3)]),
        Check(
            "sum axis=(0, 2) keepdims",
            lambda x: x.sum(axis=(0, 2), keepdims=True),
            lambda x: x.sum(axis=(0, 2), keepdims=True),
            [uniform(2, 3, 2)],
        ),
        Check("mean axis=-1", lambda x: x.mean(axis=-1), lambda x: x.mean(axis=-1), [uniform(2, 3)]),
        Check("max axis=1", lambda x: x.max(axis=1), lambda x: x.max(axis=1), [distinct(3, 4)]),
        Check("max (all)", tl.max, np.max, [distinct(2, 3)]),
        Check(
            "logsumexp axis=0", lambda x: x.logsumexp(axis=0), lambda x: np.log(np.exp(x).sum(axis=0)), [uniform(3, 2)]
        ),
        # shape
        Check("reshape(-1, 2)", lambda x: x.reshape(-1, 2), lambda x: x.reshape(-1, 2), [uniform(2, 3)]),
        Check("transpose(1, 2, 0)", lambda x: x.transpose(1, 2, 0), lambda x: x.transpose(1, 2, 0), [uniform(2, 3, 4)]),
        Check("transpose()", lambda x: x.transpose(), lambda x: x.transpose(), [uniform(2, 3, 4)]),
        Check(".T", lambda x: x.T, lambda x: x.T, [uniform(2, 3)]),
        Check(
            "expand", lambda x: x.expand(2, 3, 5, -1), lambda x: np.broadcast_to(x, (2, 3, 5, 4)), [uniform(3, 1, 4)]
        ),
        Check("squeeze", lambda x: x.squeeze(1), lambda x: x.squeeze(1), [uniform(2, 1, 3)]),
        Check("unsqueeze", lambda x: x.unsqueeze(-1), lambda x: x[..., None], [uniform(2, 3)]),
        Check("getitem slices, step -1", lambda x: x[::-1, 1:], lambda x: x[::-1, 1:], [uniform(3, 4)]),
        Check("getitem repeated indices", lambda x: x[REPEATED], lambda x: x[REPEATED], [uniform(3, 2)]),
        Check("getitem array + slice", lambda x: x[REPEATED, ::-2], lambda x: x[REPEATED, ::-2], [uniform(3, 4)]),
        Check(
            "getitem Tensor index",
            lambda x: x[:, tl.Tensor(REPEATED, device=x.device)],
            lambda x: x[:, REPEATED],
            [uniform(2, 3)],
        ),
        Check(
            "cat",
            lambda a, b: tl.cat([a, b], axis=1),
            lambda a, b: np.concatenate([a, b], axis=1),
            [uniform(2, 1), uniform(2, 3)],
        ),
        Check(
            "stack",
            lambda a, b: tl.stack([a, b], axis=-1),
            lambda a, b: np.stack([a, b], axis=-1),
            [uniform(2, 3), uniform(2, 3)],
        ),
        Check("split(2)", lambda x: x.split(2, axis=1), lambda x: _np_split(x, [2, 2, 1], axis=1), [uniform(2, 5)]),
        Check("split([1, 0, 2])", lambda x: x.split([1, 0, 2]), lambda x: _np_split(x, [1, 0, 2]), [uniform(3, 2)]),
        Check(
            "chunk(4, axis=1)",
            lambda x: x.chunk(4, axis=1),
            lambda x: _np_split(x, [2, 2, 2, 1], axis=1),
            [uniform(2, 7)],
        ),
        Check("unbind(1)", lambda x: x.unbind(1), lambda x: tuple(np.moveaxis(x, 1, 0)), [uniform(2, 3)]),
        Check("where", lambda c, a, b: tl.where(c, a, b), np.where, [mask(2, 3), uniform(2, 3), uniform(3)]),
        Check(
            "where with a scalar",
            lambda c, a: tl.where(c, a, 0.5),
            lambda c, a: np.where(c, a, 0.5),
            [mask(3), uniform(2, 3)],
        ),
        Check(
            "astype float32",
            lambda x: x.astype(tl.float32),
            lambda x: x.astype(np.float32),
            [uniform(2, 3)],
            gradcheck_options=dict(eps=1e-3),  # float32 rounding needs a wider step
        ),
        Check("to('cpu')", lambda x: x.to("cpu") * 2, lambda x: x * 2, [uniform(3)], output_device="cpu"),
        # compiled code: the tape replayed on the device's arrays, forward and backward
        Check(
            "tl.scan (RNN step, checkpoint=2)",
            lambda h0, xs, w: tl.scan(lambda h, x: _rnn_step(h, x, w), h0, xs, checkpoint=2),
            lambda h0, xs, w: _np_scan_rnn(h0, xs, w),
            [uniform(2, 3), uniform(4, 2, 3), uniform(3, 3)],
        ),
        Check(  # y is the carry: the recomputed segments run their steps in blocks (scan.mark_batched)
            "tl.scan (RNN step, y = h, checkpoint=2)",
            lambda h0, xs, w: tl.scan(lambda h, x: _rnn_step(h, x, w, scale=1.0), h0, xs, checkpoint=2),
            lambda h0, xs, w: _np_scan_rnn(h0, xs, w, scale=1.0),
            [uniform(2, 3), uniform(4, 2, 3), uniform(3, 3)],
        ),
        Check(
            "tl.compile (where, comparison, logsumexp)",
            tl.compile(lambda x: tl.where(x > 0, x * x, x * 0.5).logsumexp(axis=1)),
            lambda x: np.log(np.exp(np.where(x > 0, x * x, x * 0.5)).sum(axis=1)),
            [distinct(3, 4)],
        ),
    ]


def _rnn_step(h, x, weight, scale=2.0):
    h = tl.linear(h, weight, x).tanh()
    return h, h if scale == 1.0 else h * scale


def _np_scan_rnn(h, xs, weight, scale=2.0):
    ys = []
    for x in xs:
        h = np.tanh(h @ weight.T + x)
        ys.append(h * scale)
    return h, np.stack(ys)


# ------------------------------------------------------------------ running


@dataclass
class Result:
    name: str
    forward: bool | None = None  # None: not run (an earlier step failed)
    gradcheck: bool | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.forward and self.gradcheck)


def _outputs(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def _check_forward(check: Check, host_inputs: list[np.ndarray], device: str) -> str:
    """An empty string if the forward matches NumPy on the device, else what is wrong."""
    tensors = [tl.Tensor(a, requires_grad=a.dtype.kind == "f", device=device) for a in host_inputs]
    got, expected = _outputs(check.ours(*tensors)), _outputs(check.numpy(*host_inputs))
    if len(got) != len(expected):
        return f"{len(got)} outputs, NumPy gives {len(expected)}"
    for i, (out, want) in enumerate(zip(got, expected)):
        want = np.asarray(want)
        expected_device = check.output_device or device
        if backend.device_of_array(out.data) != expected_device:
            kind = f"{type(out.data).__module__}.{type(out.data).__name__}"
            return f"output {i} holds a {kind}, not a {expected_device} array"
        host = out.numpy()
        if host.shape != want.shape or host.dtype != want.dtype:
            return f"output {i}: {host.dtype}{list(host.shape)}, NumPy gives {want.dtype}{list(want.shape)}"
        if not np.allclose(host, want, rtol=1e-10, atol=1e-12):
            return f"output {i}: max |ours - NumPy| = {np.max(np.abs(host - want)):.3g}"
    return ""


def _check_gradients(check: Check, host_inputs: list[np.ndarray], device: str) -> str:
    """An empty string if gradcheck passes and .grad lands on the device, else what is wrong."""
    tensors = [tl.Tensor(a, requires_grad=a.dtype.kind == "f", device=device) for a in host_inputs]
    report = check_gradients(check.ours, tensors, **check.gradcheck_options)
    if not report.passed:
        return str(report.mismatches[0])
    total = sum(out.sum().astype(tl.float64) for out in _outputs(check.ours(*tensors)))
    total.backward()
    for i, t in enumerate(tensors):
        if t.requires_grad and t.grad is not None and backend.device_of_array(t.grad.data) != device:
            return f"input {i}'s .grad holds a {type(t.grad.data).__name__}, not a {device} array"
    return ""


def run_battery(
    device: str = "cuda", seed: int = 0, checks: Sequence[Check] | None = None, tracebacks: bool = False
) -> list[Result]:
    """Run every check on ``device`` and return one Result per check (never raises)."""
    rng = np.random.default_rng(seed)
    results = []
    for check in battery() if checks is None else checks:
        result = Result(check.name)
        results.append(result)
        host_inputs = [np.asarray(make(rng)) for make in check.inputs]
        for step, run in (("forward", _check_forward), ("gradcheck", _check_gradients)):
            try:
                problem = run(check, host_inputs, device)
            except Exception as error:  # a crash is a failure of this op, not of the battery
                problem = f"{type(error).__name__}: {error}"
                if tracebacks:
                    traceback.print_exc()
            setattr(result, step, not problem)
            if problem:
                result.detail = f"{step}: {problem}"
                break
    return results


def format_table(results: Sequence[Result], device: str) -> str:
    def mark(value: bool | None) -> str:
        return "-" if value is None else ("pass" if value else "FAIL")

    width = max(len("op"), *(len(r.name) for r in results))
    lines = [f"{'op':<{width}}  forward  gradcheck", f"{'-' * width}  -------  ---------"]
    for r in results:
        line = f"{r.name:<{width}}  {mark(r.forward):<7}  {mark(r.gradcheck):<9}"
        lines.append(f"{line}  {r.detail}".rstrip() if r.detail else line.rstrip())
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results)} checks on device {device!r}: {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward parity and float64 gradchecks of every op on a device.")
    parser.add_argument("--device", default="cuda", help='"cuda" (default) or "strict", the CPU stand-in for CuPy')
    parser.add_argument("--seed", type=int, default=0, help="seed of the input values")
    parser.add_argument("--traceback", action="store_true", help="print the traceback of ops that crash")
    args = parser.parse_args(argv)
    if args.device == "strict":
        from tinygrad_lstm.testing.strict_backend import register_strict_device

        register_strict_device()
    try:
        backend.get_device(args.device)
    except backend.DeviceError as error:
        if args.device != "cuda":
            print(f"gpu_check: {error}", file=sys.stderr)
            return 2
        print(f"gpu_check: no GPU checks ran. {error}")
        print(
            "Note: this is not a failure; run it where CuPy and a CUDA GPU are available, or pass "
            "--device strict to run the same battery on the CPU stand-in for CuPy."
        )
        return 0
    results = run_battery(args.device, seed=args.seed, tracebacks=args.traceback)
    print(format_table(results, args.device))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
