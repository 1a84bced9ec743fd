"""Finite-difference gradient checking: reverse mode against central differences.

For every input x_i that requires grad and every output y_k, the check builds two
Jacobians of shape (y_k.size, x_i.size):

* analytical, from reverse mode: row j is the VJP with the one-hot vector e_j, i.e. one
  ``backward`` per output element;
* numerical, by central differences: column m is
  (f(x + eps·e_m) - f(x - eps·e_m)) / (2·eps).

They agree when |analytical - numerical| <= atol + rtol·|numerical| everywhere. In
float64 the central difference has error O(eps²) + O(machine-eps / eps), about 1e-10
at eps = 1e-6, far below the default tolerances. In float32 that round-off term is
about 1e-1, which is why float32 inputs get a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tensor import Tensor, grad, no_grad


class GradcheckError(AssertionError):
    """Raised when reverse-mode and finite-difference gradients disagree.

    ``.report`` holds the full :class:`GradcheckReport`.
    """

    def __init__(self, report: GradcheckReport):
        super().__init__(str(report))
        self.report = report


@dataclass
class Mismatch:
    """The worst disagreeing element for one (input, output) pair."""

    input_index: int
    input_name: str
    output_index: int
    input_element: tuple[int, ...]
    output_element: tuple[int, ...]
    analytical: float
    numerical: float
    count: int  # how many Jacobian entries of this pair are out of tolerance
    output_name: str = ""  # how the report names the output (default "output k")

    @property
    def abs_error(self) -> float:
        return abs(self.analytical - self.numerical)

    def __str__(self) -> str:
        return (
            f"d({self.output_name or f'output {self.output_index}'}){list(self.output_element)} / "
            f"d({self.input_name}){list(self.input_element)}: reverse mode gives "
            f"{self.analytical:.10g}, finite differences give {self.numerical:.10g} "
            f"(|difference| {self.abs_error:.3g}; {self.count} entries of this Jacobian out of tolerance)"
        )


@dataclass
class GradcheckReport:
    """Everything a gradcheck found, as data (for tools) and as text (``str(report)``)."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    mismatches: list[Mismatch] = field(default_factory=list)
    eps: float = 1e-6
    atol: float = 1e-5
    rtol: float = 1e-3
    notes: list[str] = field(default_factory=list)
    # On failure: which op is to blame (see testing.localize); None when not localised.
    localization: Any = None
    check: str = "gradcheck"  # which check made the report ("gradgradcheck" for second order)

    def __str__(self) -> str:
        if self.passed:
            return (
                f"{self.check} passed: max |analytical - numerical| = {self.max_abs_error:.3g}, "
                f"max relative error = {self.max_rel_error:.3g}"
            )
        lines = [
            f"{self.check} failed: reverse-mode gradients disagree with central differences "
            f"(eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g}) for "
            f"{len(self.mismatches)} (input, output) pair(s):"
        ]
        lines += [f"  - {mismatch}" for mismatch in self.mismatches]
        lines += self.notes
        if self.localization is not None:
            lines.append(str(self.localization))
        return "\n".join(lines)


def _as_outputs(result: Any) -> tuple[Tensor, ...]:
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    for output in outputs:
        if not isinstance(output, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(output).__name__}")
    return tuple(outputs)


def analytical_jacobians(outputs: Sequence[Tensor], inputs: Sequence[Tensor]) -> list[list[np.ndarray]]:
    """J[k][i] of shape (outputs[k].size, inputs[i].size), one backward per output element."""
    jacobians = [[np.zeros((out.size, x.size)) for x in inputs] for out in outputs]
    for k, out in enumerate(outputs):
        if not out.requires_grad or out.size == 0:
            continue  # nothing flows back: its Jacobian rows stay zero
        seed = np.zeros(out.size, dtype=out.dtype)
        for j in range(out.size):
            seed[:] = 0
            seed[j] = 1
            seed_tensor = Tensor(seed.reshape(out.shape), device=out.device)
            grads = grad([out], list(inputs), [seed_tensor], retain_graph=True)
            for i, g in enumerate(grads):
                jacobians[k][i][j] = g.numpy().reshape(-1)
    return jacobians


def numerical_jacobians(
    fn: Callable, inputs: Sequence[Tensor], all_inputs: Sequence[Any], eps: float
) -> list[list[np.ndarray]]:
    """J[k][i] by central differences, perturbing each input element in place."""
    with no_grad():
        outputs = _as_outputs(fn(*all_inputs))
    jacobians = [[np.zeros((out.size, x.size)) for x in inputs] for out in outputs]
    for i, x in enumerate(inputs):
        original = x.data
        work = original.copy()  # contiguous, ours to perturb
        flat = work.reshape(-1)
        x.data = work
        try:
            for m in range(flat.size):
                saved = flat[m].item()
                flat[m] = saved + eps
                with no_grad():
                    plus = [out.numpy().astype(np.float64) for out in _as_outputs(fn(*all_inputs))]
                flat[m] = saved - eps
                with no_grad():
                    minus = [out.numpy().astype(np.float64) for out in _as_outputs(fn(*all_inputs))]
                flat[m] = saved
                for k in range(len(outputs)):
                    jacobians[k][i][:, m] = ((plus[k] - minus[k]) / (2 * eps)).reshape(-1)
        finally:
            x.data = original
    return jacobians


def check_gradients(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    names: Sequence[str] | None = None,
    localize: bool | None = None,
    output_names: Sequence[str] | None = None,
) -> GradcheckReport:
    """Run the comparison and return a :class:`GradcheckReport` (never raises on mismatch).

    On a mismatch, ``localize`` re-checks every op of the graph on its own and puts the
    first wrong one in ``report.localization`` (see :mod:`tinygrad_lstm.testing.localize`):
    True always, False never, None (default) when the graph has at most 200 nodes.
    ``output_names`` optionally labels the outputs in the report.
    """
    all_inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    positions = [p for p, x in enumerate(all_inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not positions:
        raise ValueError("gradcheck: no input Tensor requires grad, so there is nothing to check")
    checked = [all_inputs[p] for p in positions]
    for p, x in zip(positions, checked):
        if x.dtype != np.float64:
            warnings.warn(
                f"gradcheck: input {p} is {x.dtype}, not float64; finite differences in low "
                "precision are too noisy to trust (cast with .astype(tl.float64))",
                stacklevel=3,
            )
    labels = [names[p] if names is not None else f"input {p}" for p in positions]

    outputs = _as_outputs(fn(*all_inputs))
    analytical = analytical_jacobians(outputs, checked)
    numerical = numerical_jacobians(fn, checked, all_inputs, eps)

    mismatches, max_abs, max_rel = [], 0.0, 0.0
    for k, out in enumerate(outputs):
        for i, x in enumerate(checked):
            a, n = analytical[k][i], numerical[k][i]
            if a.size == 0:
                continue
            difference = np.abs(a - n)
            max_abs = max(max_abs, float(difference.max()))
            max_rel = max(max_rel, float((difference / np.maximum(np.abs(n), 1e-12)).max()))
            bad = difference > atol + rtol * np.abs(n)
            if bad.any():
                row, col = np.unravel_index(int(np.argmax(np.where(bad, difference, -1))), a.shape)
                mismatches.append(
                    Mismatch(
                        input_index=positions[i],
                        input_name=labels[i],
                        output_index=k,
                        input_element=tuple(int(v) for v in np.unravel_index(col, x.shape)),
                        output_element=tuple(int(v) for v in np.unravel_index(row, out.shape)),
                        analytical=float(a[row, col]),
                        numerical=float(n[row, col]),
                        count=int(bad.sum()),
                        output_name=output_names[k] if output_names is not None else "",
                    )
                )
    report = GradcheckReport(
        passed=not mismatches,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        mismatches=mismatches,
        eps=eps,
        atol=atol,
        rtol=rtol,
    )
    if mismatches and localize is not False:
        from .localize import DEFAULT_MAX_NODES, localize_ops

        report.localization = localize_ops(
            fn, all_inputs, eps=eps, atol=atol, rtol=rtol, max_nodes=None if localize else DEFAULT_MAX_NODES
        )
    return report


def gradcheck(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    names: Sequence[str] | None = None,
    localize: bool | None = None,
) -> bool:
    """True if reverse-mode gradients of ``fn(*inputs)`` match central differences.

    Checks every input Tensor that requires grad (float64 expected) against every
    output. On a mismatch raises :class:`GradcheckError` naming the input, the output,
    the element indices and both values, or returns False if ``raise_exception=False``.
    ``names`` optionally labels the inputs in the report. ``localize`` (default: when
    the graph has at most 200 nodes) adds which op's VJP is wrong, and the line of your
    code that made it, to the report (see :func:`check_gradients`).
    """
    report = check_gradients(fn, inputs, eps=eps, atol=atol, rtol=rtol, names=names, localize=localize)
    if report.passed:
        return True
    if raise_exception:
        raise GradcheckError(report)
    return False
