"""Second-order gradient checking: the VJP of the VJP against finite differences.

A VJP can be right to first order and still wrong when differentiated again: say it
computes a derivative factor from a value cut from the graph. ``gradgradcheck`` finds
that, as ``torch.autograd.gradgradcheck`` does. For ``fn`` with outputs ``y_k`` and
fixed output gradients ``v_k``, the first-order gradient

    G(x, v) = Σ_k v_kᵀ ∂y_k/∂x      (``tl.grad(y, x, v, create_graph=True)``)

is itself a function of the inputs ``x`` and of ``v``; :func:`gradcheck` then compares
its reverse-mode Jacobian (which runs every op's VJP on Tensors, recorded) with
central differences of ``G`` (which run only first-order VJPs). The report names the
input, the gradient (output) and the element, with both values, as gradcheck's does;
on a failure in a small graph every op of ``fn`` is re-checked the same way on its own
inputs, and the first op whose second derivative is wrong is named, with the line of
code that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tensor import Tensor, grad, set_grad_enabled
from .gradcheck import GradcheckError, GradcheckReport, _as_outputs, check_gradients
from .localize import DEFAULT_MAX_NODES, NodeRecord, recording


def _grad_outputs(outputs: tuple[Tensor, ...], grad_outputs: Any, seed: int) -> list[Tensor]:
    """The v_k, as leaves that require grad: given, or drawn from a fixed seed."""
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        return [
            Tensor(rng.standard_normal(out.shape).astype(out.dtype), requires_grad=True, device=out.device)
            for out in outputs
        ]
    given = (
        [grad_outputs]
        if isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple))
        else list(grad_outputs)
    )
    if len(given) != len(outputs):
        raise ValueError(f"gradgradcheck: {len(given)} grad_outputs for {len(outputs)} differentiable outputs of fn")
    vectors = []
    for k, (vector, out) in enumerate(zip(given, outputs)):
        data = vector.data if isinstance(vector, Tensor) else vector
        tensor = Tensor(data, dtype=out.dtype, device=out.device, requires_grad=True)
        if tensor.shape != out.shape:
            raise ValueError(
                f"gradgradcheck: grad_outputs[{k}] has shape {tensor.shape} but output {k} has shape {out.shape}"
            )
        vectors.append(tensor)
    return vectors


def _differentiable(outputs: tuple[Tensor, ...]) -> list[int]:
    return [k for k, out in enumerate(outputs) if out.requires_grad and out.dtype.kind == "f"]


def _first_order_function(fn: Callable, count: int, positions: list[int], kept: list[int]) -> Callable:
    """(inputs..., v...) -> the gradients Σ_k v_kᵀ ∂y_k/∂x_i, recorded (create_graph=True)."""

    def gradients(*args: Any) -> tuple[Tensor, ...]:
        with set_grad_enabled(True):  # finite differences call this under no_grad: G needs a backward
            return _gradients(*args)

    def _gradients(*args: Any) -> tuple[Tensor, ...]:
        inputs, vectors = args[:count], args[count:]
        outputs = _as_outputs(fn(*inputs))
        differentiable = [outputs[k] for k in kept if outputs[k].requires_grad]
        used = [vectors[i] for i, k in enumerate(kept) if outputs[k].requires_grad]
        checked = [inputs[p] for p in positions]
        if not differentiable:
            return tuple(x * 0.0 for x in checked)
        return grad(differentiable, checked, used, create_graph=True)

    return gradients


def check_second_derivatives(
    fn: Callable,
    inputs: Any,
    grad_outputs: Any = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    names: Sequence[str] | None = None,
    localize: bool | None = None,
    seed: int = 0,
) -> GradcheckReport:
    """Run gradgradcheck's comparison and return the report (never raises on a mismatch).

    ``localize`` as in :func:`check_gradients`: on a mismatch, re-check every op of
    ``fn``'s graph on its own inputs (True always, None when it has at most 200 nodes).
    """
    all_inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    positions = [p for p, x in enumerate(all_inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not positions:
        raise ValueError("gradgradcheck: no input Tensor requires grad, so there is nothing to check")
    labels = [names[p] if names is not None else f"input {p}" for p in range(len(all_inputs))]
    outputs = _as_outputs(fn(*all_inputs))
    kept = _differentiable(outputs)
    if not kept:
        raise ValueError("gradgradcheck: no output of fn requires grad, so there is nothing to check")
    vectors = _grad_outputs(tuple(outputs[k] for k in kept), grad_outputs, seed)
    gradients = _first_order_function(fn, len(all_inputs), positions, kept)
    report = check_gradients(
        gradients,
        (*all_inputs, *vectors),
        eps=eps,
        atol=atol,
        rtol=rtol,
        names=[*labels, *(f"grad_output {k}" for k in kept)],
        localize=False,
        output_names=[f"grad of {labels[p]}" for p in positions],
    )
    report.check = "gradgradcheck"
    if not report.passed:
        report.notes.append(
            "  (the checked function is x, v -> Σ_k v_kᵀ ∂output_k/∂x, the first-order gradient recorded "
            "with create_graph=True; 'grad of input i' is its part for input i)"
        )
        if localize is not False:
            report.localization = localize_second_order(
                fn, all_inputs, eps=eps, atol=atol, rtol=rtol, max_nodes=None if localize else DEFAULT_MAX_NODES
            )
    return report


def gradgradcheck(
    fn: Callable,
    inputs: Any,
    grad_outputs: Any = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    names: Sequence[str] | None = None,
    localize: bool | None = None,
) -> bool:
    """True if the second derivatives of ``fn(*inputs)`` match finite differences.

    As ``torch.autograd.gradgradcheck``: checks the VJP of the VJP of ``fn`` for every
    input that requires grad (float64 expected) and for ``grad_outputs`` (the output
    gradients v: Tensors shaped like fn's differentiable outputs; default drawn from a
    fixed seed). On a mismatch raises :class:`GradcheckError` naming the input, the
    gradient, the elements and both values, and (for graphs of at most 200 ops) the
    first op whose second derivative is wrong; returns False if ``raise_exception=False``.
    """
    report = check_second_derivatives(
        fn, inputs, grad_outputs, eps=eps, atol=atol, rtol=rtol, names=names, localize=localize
    )
    if report.passed:
        return True
    if raise_exception:
        raise GradcheckError(report)
    return False


# ------------------------------------------------------------------- localisation


@dataclass
class SecondOrderLocalization:
    """Which op's second derivative is wrong: each node of fn's graph re-checked alone.

    ``wrong`` holds (record, report) for every node whose gradgradcheck on its own
    inputs fails, in forward order; ``culprit`` is the first.
    """

    nodes: int
    checked: int
    wrong: list[tuple[NodeRecord, GradcheckReport]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def culprit(self) -> NodeRecord | None:
        return self.wrong[0][0] if self.wrong else None

    def __str__(self) -> str:
        lines = [
            f"localisation: re-checked the second derivatives of each of the {self.checked} op(s) "
            "of the graph on its own inputs:"
        ]
        if self.wrong:
            record, report = self.wrong[0]
            lines.append(f"  first wrong second derivative: {record.describe()}")
            lines += [f"    {mismatch}" for mismatch in report.mismatches]
            if len(self.wrong) > 1:
                lines.append(
                    "  later node(s) also wrong: " + ", ".join(f"{r.name} #{r.index}" for r, _ in self.wrong[1:9])
                )
        elif self.checked:
            lines.append(
                "  every op's second derivative is right on its own inputs (look for a value cut from the graph)"
            )
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def _node_function(record: NodeRecord) -> tuple[Callable, tuple]:
    """The op alone, as a function of its float64 Tensor inputs (those that needed grad)."""
    args = list(record.args)
    tensors = []
    for position in record.tensor_positions:
        array = np.asarray(args[position])
        if array.dtype.kind == "f":
            array = array.astype(np.float64)
        needs = position < len(record.needs_input_grad) and record.needs_input_grad[position]
        tensors.append(Tensor(array, requires_grad=bool(needs) and array.dtype.kind == "f"))

    def op(*values: Tensor) -> Any:
        call = list(args)
        for position, value in zip(record.tensor_positions, values):
            call[position] = value
        return record.function.apply(*call, **record.kwargs)

    return op, tuple(tensors)


def localize_second_order(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    max_nodes: int | None = None,
) -> SecondOrderLocalization:
    """Re-run ``fn(*inputs)`` recording its graph, and gradgradcheck every node on its own."""
    all_inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    with recording() as rec:
        fn(*all_inputs)
    result = SecondOrderLocalization(nodes=len(rec.records), checked=0)
    if max_nodes is not None and len(rec.records) > max_nodes:
        result.notes.append(
            f"the graph has {len(rec.records)} nodes (> {max_nodes}): pass localize=True to re-check each op"
        )
        return result
    for record in rec.records:
        try:
            op, tensors = _node_function(record)
            if not any(t.requires_grad for t in tensors):
                continue
            outputs = _as_outputs(op(*tensors))
            if any(out.dtype != np.float64 for out in outputs):
                result.notes.append(f"not checked: {record.describe()} computes in {outputs[0].dtype}")
                continue
            report = check_second_derivatives(op, tensors, eps=eps, atol=atol, rtol=rtol, localize=False)
        except Exception as error:  # an op that cannot be replayed alone, say
            result.notes.append(f"not checked: {record.describe()}: {type(error).__name__}: {error}")
            continue
        result.checked += 1
        if not report.passed:
            result.wrong.append((record, report))
    return result
