"""Which time step and which gate: gradient checks of a recurrent cell, broken down.

A plain gradcheck of a recurrent layer says *that* dLoss/dW_hh is wrong. This module
says where, in the two coordinates a recurrent bug lives in:

* **time**: dLoss/dh_t (and dLoss/dc_t) at every step t, from reverse mode and from
  finite differences: the gradient of the state that step t hands on to step t+1 (and
  to the output and the final state). Reverse mode computes these one step at a time, from t = T-1
  down to 0, so a wrong VJP inside the step function shows up as "right for t ≥ 4,
  wrong from t = 3 back": backpropagating through step 4 is where it first goes wrong.
  The state at step t is reached with ``nn.flow.StateProbe``: a zero tensor added to
  the state each step returns, whose gradient is dLoss/d(state_t), and whose value can
  be shifted by ±eps for the finite differences.
* **gate**: parameters stack their gates' rows, ``(G·H, ...)`` with G = 4 (i, f, g, o)
  for an LSTM, 3 (r, z, n) for a GRU, 1 for an RNN (for other cells G = rows / H, named
  by the cell's ``gate_names`` attribute if it has one). One step of the cell, checked
  alone on a random state, gives each gate's block of rows its own error. Over a whole
  sequence every gate would look wrong, because a wrong state gradient at step t feeds
  every gate at earlier steps; one step alone blames only the gate at fault. When the
  step's input is gate pre-activations (built-in cells project x_t to G·H columns
  first), its gradient is split by gate too.

``recurrent_report(model, x)`` returns a :class:`RecurrentReport`: data for tools, and
``str()`` for a person, with headlines like ``weight_hh_l0: gate f rows wrong, from
t=3 back``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..nn.flow import probed, state_names, state_parts
from ..nn.recurrent import GRUCell, LSTMCell, RecurrentCell
from ..tensor import Tensor, float64, grad, no_grad

LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")


def gate_names(cell: RecurrentCell, count: int) -> tuple[str, ...]:
    """Names of ``count`` stacked gate blocks: ``cell.gate_names``, the built-ins', or "block k"."""
    names = getattr(cell, "gate_names", None)
    if names is not None and len(names) == count:
        return tuple(names)
    if isinstance(cell, LSTMCell) and count == 4:
        return LSTM_GATES
    if isinstance(cell, GRUCell) and count == 3:
        return GRU_GATES
    if count == 1:
        return ("all",)
    return tuple(f"block {k}" for k in range(count))


# ------------------------------------------------------------------------------ the data


@dataclass
class StepTimeline:
    """dLoss/d(one state part) at every time step, reverse mode against finite differences.

    ``errors[t]`` = ‖reverse − numerical‖, ``norms[t]`` = ‖numerical‖, ``wrong[t]`` when
    some entry is out of tolerance. A reverse-direction cell runs t = T-1 → 0, so its
    backward pass goes forward in time.
    """

    cell: str  # "cell", or "l0", "l0_reverse", ... as in parameter names
    part: str  # "h", "c", "x" (the input), ...
    reverse: bool
    errors: np.ndarray
    norms: np.ndarray
    wrong: np.ndarray

    @property
    def wrong_steps(self) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.wrong)]

    @property
    def first_wrong(self) -> int | None:
        """The step at which the backward pass first goes wrong (the latest t, forward cells)."""
        steps = self.wrong_steps
        if not steps:
            return None
        return min(steps) if self.reverse else max(steps)

    def span(self) -> str:
        """'from t=3 back' (or 'forward', for a reverse cell), 'at every step', 'at t=1, 3', or ''."""
        steps, count = self.wrong_steps, len(self.wrong)
        if not steps:
            return ""
        if len(steps) == count:
            return "at every step"
        contiguous = steps == list(range(steps[0], steps[-1] + 1))
        if contiguous and not self.reverse and steps[0] == 0:
            return f"from t={steps[-1]} back"
        if contiguous and self.reverse and steps[-1] == count - 1:
            return f"from t={steps[0]} forward"
        return "at t=" + ", ".join(str(t) for t in steps)

    def __str__(self) -> str:
        name = f"dLoss/d{self.part}_t" + ("" if self.cell == "cell" else f" ({self.cell})")
        values = " ".join(f"{error:8.2g}{'!' if bad else ' '}" for error, bad in zip(self.errors, self.wrong))
        return f"{name:<24} |error| per t: {values}"


@dataclass
class BlockError:
    """One gate's block of rows of a gradient: ‖reverse − numerical‖ and ‖numerical‖ there."""

    parameter: str
    gate: str
    rows: tuple[int, int]
    error: float
    norm: float
    wrong: bool


@dataclass
class GradientError:
    """The gradient with respect to one tensor, as a whole and (when stacked by gate) per gate."""

    name: str
    error: float
    norm: float
    wrong: bool
    blocks: list[BlockError] = field(default_factory=list)

    @property
    def wrong_gates(self) -> list[str]:
        return [block.gate for block in self.blocks if block.wrong]


@dataclass
class StepCheck:
    """One step of one cell, checked alone: ``new_state = step(project_input(x), state)``.

    ``parameters`` use the layer's names (``weight_hh_l0``); ``preactivations`` is the
    gradient with respect to the projected input, split by gate, when it has G·H columns.
    """

    cell: str
    input: GradientError
    state: list[GradientError]
    parameters: list[GradientError]
    preactivations: GradientError | None = None

    @property
    def wrong_gates(self) -> list[str]:
        """Gates with a wrong block in any parameter or in the pre-activations, in gate order."""
        found: list[str] = []
        for gradient in [*self.parameters, *([self.preactivations] if self.preactivations else [])]:
            for gate in gradient.wrong_gates:
                if gate not in found:
                    found.append(gate)
        return found

    @property
    def passed(self) -> bool:
        gradients = [self.input, *self.state, *self.parameters]
        return not any(gradient.wrong for gradient in gradients) and not self.wrong_gates


@dataclass
class RecurrentReport:
    """Where a recurrent model's gradients go wrong, in time and by gate.

    ``timelines``: dLoss/d(state part) per step for every cell and part; ``inputs``:
    dLoss/dx_t per step; ``parameters``: each parameter's gradient over the whole
    sequence (per gate too, though there an early wrong step spreads to every gate);
    ``steps``: one step of each cell alone, the per-gate verdict. ``findings`` are the
    headlines.
    """

    timelines: list[StepTimeline]
    inputs: StepTimeline
    parameters: list[GradientError]
    steps: list[StepCheck]
    atol: float = 1e-5
    rtol: float = 1e-3

    @property
    def passed(self) -> bool:
        return (
            not any(timeline.wrong.any() for timeline in [*self.timelines, self.inputs])
            and not any(parameter.wrong for parameter in self.parameters)
            and all(step.passed for step in self.steps)
        )

    def timeline(self, part: str = "h", cell: str | None = None) -> StepTimeline:
        """The timeline of one state part (of the first cell, unless ``cell`` names one)."""
        for timeline in self.timelines:
            if timeline.part == part and (cell is None or timeline.cell == cell):
                return timeline
        raise KeyError(f"no timeline for part {part!r} of cell {cell!r}")

    def step(self, cell: str | None = None) -> StepCheck:
        for step in self.steps:
            if cell is None or step.cell == cell:
                return step
        raise KeyError(f"no step check for cell {cell!r}")

    def parameter(self, name: str) -> GradientError:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"no parameter {name!r}")

    @property
    def wrong_gates(self) -> list[str]:
        found: list[str] = []
        for step in self.steps:
            found += [gate for gate in step.wrong_gates if gate not in found]
        return found

    @property
    def first_wrong_step(self) -> int | None:
        """The step where backpropagation through time first goes wrong (forward cells)."""
        steps = [t.first_wrong for t in self.timelines if not t.reverse and t.first_wrong is not None]
        return max(steps) if steps else None

    def _span(self, cell: str) -> str:
        """When (in time) this cell's state gradients go wrong, from its earliest-failing part."""
        timelines = [t for t in self.timelines if t.cell == cell and t.first_wrong is not None]
        if not timelines:
            return ""
        pick = min if timelines[0].reverse else max
        return pick(timelines, key=lambda t: t.first_wrong).span()

    @property
    def findings(self) -> list[str]:
        """One line per problem, most specific first."""
        lines = []
        for step in self.steps:
            span = self._span(step.cell)
            suffix = f", {span}" if span else ""
            groups: dict[str, list[str]] = {}  # verdict -> parameters with it, e.g. "gate f rows wrong"
            for parameter in step.parameters:
                gates = parameter.wrong_gates
                if gates and len(gates) < len(parameter.blocks):
                    verdict = f"gate {', '.join(gates)} rows wrong"
                elif parameter.wrong:
                    verdict = "gradient wrong in every row"
                else:
                    continue
                groups.setdefault(verdict, []).append(parameter.name)
            lines += [f"{', '.join(names)}: {verdict}{suffix}" for verdict, names in groups.items()]
            if (
                step.preactivations is not None
                and step.preactivations.wrong_gates
                and not any(p.wrong for p in step.parameters)
            ):
                gates = ", ".join(step.preactivations.wrong_gates)
                lines.append(f"{step.cell}: gradient of gate {gates} pre-activations wrong{suffix}")
            wrong_state = [part.name for part in step.state if part.wrong]
            if wrong_state and not step.wrong_gates:
                names = " and ".join(f"dLoss/d{name}_(t-1)" for name in wrong_state)
                lines.append(
                    f"{step.cell}: one step alone passes gradient back to the previous state wrongly "
                    f"({names}), though its parameters' gradients are right{suffix}"
                )
            if step.input.wrong and not step.wrong_gates:
                lines.append(f"{step.cell}: one step alone gives a wrong dLoss/dx_t{suffix}")
        if not lines:
            for timeline in self.timelines:
                if timeline.wrong.any():
                    lines.append(
                        f"dLoss/d{timeline.part}_t ({timeline.cell}) wrong {timeline.span()}, "
                        "though one step of the cell alone is right"
                    )
            wrong_parameters = [p.name for p in self.parameters if p.wrong]
            if wrong_parameters and not lines:
                lines.append(f"gradients of {', '.join(wrong_parameters)} wrong over the sequence")
            if self.inputs.wrong.any() and not lines:
                lines.append(f"dLoss/dx_t wrong {self.inputs.span()}")
        return lines

    def __str__(self) -> str:
        if self.passed:
            return "recurrent report: every per-step state gradient, input gradient and gate block agrees"
        lines = ["recurrent report (reverse mode against finite differences):"]
        lines += [f"  * {finding}" for finding in self.findings]
        lines.append("  through time ('!' = out of tolerance):")
        lines += [f"    {timeline}" for timeline in [*self.timelines, self.inputs]]
        for step in self.steps:
            if step.passed:
                continue
            lines.append(f"  one step of {step.cell} alone, ‖error‖ / ‖gradient‖ per gate block:")
            gradients = [*step.parameters, *([step.preactivations] if step.preactivations else [])]
            for gradient in gradients:
                cells = "  ".join(
                    f"{block.gate}: {block.error:.2g}/{block.norm:.2g}{'!' if block.wrong else ''}"
                    for block in gradient.blocks
                )
                lines.append(f"    {gradient.name:<22} {cells}")
            for gradient in [step.input, *step.state]:
                if gradient.wrong:
                    lines.append(f"    {gradient.name:<22} {gradient.error:.2g}/{gradient.norm:.2g}!")
        return "\n".join(lines)


# ----------------------------------------------------------------------- the machinery


class ProjectionLoss:
    """Σ_k ⟨W_k, result_k⟩ over every tensor the model returns, with fixed random W_k.

    Every output element and the final state then carry gradient, with weights that
    are neither symmetric nor round (an all-ones seed hides transposes).
    """

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.weights: dict[int, np.ndarray] = {}

    def __call__(self, result: Any) -> Tensor:
        total = None
        for k, tensor in enumerate(_tensors(result)):
            weight = self.weights.get(k)
            if weight is None or weight.shape != tensor.shape:
                weight = self.weights[k] = self.rng.standard_normal(tensor.shape)
            term = (tensor * Tensor(weight, dtype=tensor.dtype, device=tensor.device)).sum()
            total = term if total is None else total + term
        if total is None:
            raise ValueError("the model returned no tensor")
        return total


def _tensors(result: Any) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [tensor for item in result for tensor in _tensors(item)]
    return []


def numerical_gradient(value: Callable[[], float], tensor: Tensor, eps: float) -> np.ndarray:
    """d value / d tensor by central differences, nudging ``tensor``'s data in place."""
    original = tensor.data
    work = original.copy()
    flat = work.reshape(-1)
    tensor.data = work
    result = np.zeros(flat.size)
    try:
        for m in range(flat.size):
            saved = flat[m].item()
            flat[m] = saved + eps
            plus = value()
            flat[m] = saved - eps
            minus = value()
            flat[m] = saved
            result[m] = (plus - minus) / (2 * eps)
    finally:
        tensor.data = original
    return result.reshape(tensor.shape)


def _out_of_tolerance(reverse: np.ndarray, numerical: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    return np.abs(reverse - numerical) > atol + rtol * np.abs(numerical)


def _gradient_error(
    name: str, reverse: np.ndarray, numerical: np.ndarray, hidden_size: int, gates: Callable[[int], tuple], atol, rtol
) -> GradientError:
    bad = _out_of_tolerance(reverse, numerical, atol, rtol)
    result = GradientError(
        name=name,
        error=float(np.linalg.norm(reverse - numerical)),
        norm=float(np.linalg.norm(numerical)),
        wrong=bool(bad.any()),
    )
    rows = reverse.shape[0] if reverse.ndim else 1
    count = rows // hidden_size if reverse.ndim and rows % hidden_size == 0 else 1
    names = gates(count)
    size = rows // count
    for k in range(count):
        block = slice(k * size, (k + 1) * size)
        r, n = (reverse, numerical) if not reverse.ndim else (reverse[block], numerical[block])
        result.blocks.append(
            BlockError(
                parameter=name,
                gate=names[k],
                rows=(k * size, (k + 1) * size),
                error=float(np.linalg.norm(r - n)),
                norm=float(np.linalg.norm(n)),
                wrong=bool(bad[block].any()) if reverse.ndim else bool(bad.any()),
            )
        )
    return result


def away_from_zero(rng: np.random.Generator, shape: Any, low: float = 0.1, high: float = 1.0) -> np.ndarray:
    """float64 values with |v| in [low, high] and random signs.

    Gradient checks want inputs that are neither 0 (a zero input hides every bug in the
    gradient of the weight it multiplies) nor large (tanh and sigmoid saturate, and
    their gradients vanish into the tolerance): ±[0.1, 1] keeps pre-activations of
    default-initialised cells in the responsive middle of the nonlinearities.
    """
    magnitude = rng.uniform(low, high, size=shape)
    return np.where(rng.random(size=shape) < 0.5, -magnitude, magnitude)


def _host(tensor: Tensor) -> np.ndarray:
    return tensor.numpy().astype(np.float64)


def _layer_name(name: str, label: str) -> str:
    """A cell's parameter name as the layer registers it: weight_hh -> weight_hh_l0."""
    return name.replace(".", "_") if label == "cell" else f"{name.replace('.', '_')}_{label}"


def check_step(
    cell: RecurrentCell,
    label: str = "cell",
    batch: int = 2,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> StepCheck:
    """Check one step of ``cell`` alone, on a random input and state, gradient by gate block."""
    rng = np.random.default_rng(seed)
    dtype = next((p.dtype for p in cell.parameters()), float64)
    device = next((p.device for p in cell.parameters()), None)
    initial = cell.initial_state(batch, dtype=dtype, device=device)
    hidden = cell.hidden_size
    x = Tensor(away_from_zero(rng, (batch, cell.input_size)), dtype=dtype, device=device, requires_grad=True)
    state = [
        Tensor(away_from_zero(rng, part.shape), dtype=dtype, device=device, requires_grad=True)
        for part in state_parts(initial)
    ]
    names = state_names(cell, len(state))
    packed = tuple(state) if isinstance(initial, (tuple, list)) else state[0]
    loss = ProjectionLoss(seed + 1)
    parameters = list(cell.named_parameters())

    def run(projected: Tensor | None = None) -> Tensor:
        step_input = cell.project_input(x) if projected is None else projected
        return loss(cell.step(step_input, packed))

    def value(projected: Tensor | None = None) -> float:
        with no_grad():
            return run(projected).item()

    tensors = [x, *state, *(p for _, p in parameters)]
    reverse = [g.numpy().astype(np.float64) for g in grad(run(), tensors)]
    gates = lambda count: gate_names(cell, count)  # noqa: E731
    results = []
    labels = ["x", *names, *(_layer_name(name, label) for name, _ in parameters)]
    for tensor, name, analytical in zip(tensors, labels, reverse):
        numerical = numerical_gradient(value, tensor, eps)
        results.append(_gradient_error(name, analytical, numerical, hidden, gates, atol, rtol))
    step = StepCheck(
        cell=label, input=results[0], state=results[1 : 1 + len(state)], parameters=results[1 + len(state) :]
    )
    with no_grad():
        projected = Tensor(cell.project_input(x).data.copy(), device=device, requires_grad=True)
    width = projected.shape[-1]
    if width % hidden == 0 and width // hidden > 1:
        (analytical,) = grad(run(projected), [projected])
        numerical = numerical_gradient(lambda: value(projected), projected, eps)
        # pre-activations are (batch, G·H): put the gate axis first to split it by rows
        step.preactivations = _gradient_error(
            "pre-activations",
            _host(analytical).T,
            numerical.T,
            hidden,
            gates,
            atol,
            rtol,
        )
    return step


def recurrent_report(
    model: Any,
    x: Any,
    state: Any = None,
    *,
    loss: Callable[[Any], Tensor] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    parameters: bool = True,
) -> RecurrentReport:
    """Check a recurrent cell or layer's gradients per time step and per gate.

    ``model``: a cell following the cell protocol (run over x with ``nn.run_cell``) or a
    ``Recurrent`` layer (``nn.LSTM``, ...); use float64 parameters. ``x``: (T, batch,
    input), (batch, T, input) for a ``batch_first`` layer. ``loss(result)`` defaults to a
    fixed random projection of everything the model returns (:class:`ProjectionLoss`).
    ``parameters=False`` skips the whole-sequence parameter check (the slow part).

    >>> import tinygrad_lstm as tl
    >>> from tinygrad_lstm import nn
    >>> report = recurrent_report(nn.LSTMCell(2, 3).astype(tl.float64), tl.randn(4, 2, 2, dtype=tl.float64))
    >>> report.passed, report.timeline("c").errors.shape
    (True, (4,))
    """
    source = x if isinstance(x, Tensor) else Tensor(x)
    if source.dtype != float64:
        warnings.warn("recurrent_report: x is not float64; finite differences will be noise", stacklevel=2)
    x = Tensor(source, requires_grad=True)
    loss = loss if loss is not None else ProjectionLoss(seed)
    state = _detached(state)
    named = list(model.named_parameters())
    with probed(model) as probes:
        probes.reset(track=True)
        value_tensor = loss(probes.run(x, state))
        deltas = [delta for probe in probes.probes for step in probe.perturbations for delta in step]
        tracked = [x, *deltas, *(p for _, p in named)] if parameters else [x, *deltas]
        reverse = [_host(g) for g in grad(value_tensor, tracked)]
        layout = [(probe.calls, [d.shape for d in probe.perturbations[0]]) for probe in probes.probes]

        def value(shifts: dict | None = None) -> float:
            probes.reset(shifts=shifts)
            with no_grad():
                return loss(probes.run(x, state)).item()

        time_axis = probes.time_axis
        timelines = []
        position = 1
        for index, (probe, label) in enumerate(zip(probes.probes, probes.labels)):
            calls, shapes = layout[index]
            names = state_names(probe.cell, len(shapes))
            errors = np.zeros((len(shapes), calls))
            norms = np.zeros((len(shapes), calls))
            wrong = np.zeros((len(shapes), calls), dtype=bool)
            for call in range(calls):
                t = calls - 1 - call if probe.reverse else call
                for part, shape in enumerate(shapes):
                    analytical = reverse[position]
                    position += 1
                    numerical = _state_numerical(value, index, call, part, shape, eps)
                    errors[part, t] = np.linalg.norm(analytical - numerical)
                    norms[part, t] = np.linalg.norm(numerical)
                    wrong[part, t] = _out_of_tolerance(analytical, numerical, atol, rtol).any()
            for part, name in enumerate(names):
                timelines.append(StepTimeline(label, name, probe.reverse, errors[part], norms[part], wrong[part]))
        x_numerical = numerical_gradient(value, x, eps)
        inputs = _time_profile(reverse[0], x_numerical, time_axis, atol, rtol)
        checked = []
        if parameters:
            first_cell = probes.probes[0].cell
            hidden = first_cell.hidden_size
            for (name, parameter), analytical in zip(named, reverse[position:]):
                numerical = numerical_gradient(value, parameter, eps)
                gates = lambda count, cell=first_cell: gate_names(cell, count)  # noqa: E731
                checked.append(_gradient_error(name, analytical, numerical, hidden, gates, atol, rtol))
        cells = [(probe.cell, label) for probe, label in zip(probes.probes, probes.labels)]
    steps = [
        check_step(cell, label, batch=max(1, x.shape[1 - time_axis]), eps=eps, atol=atol, rtol=rtol, seed=seed)
        for cell, label in cells
    ]
    return RecurrentReport(timelines, inputs, checked, steps, atol=atol, rtol=rtol)


def _detached(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(Tensor(part) for part in state)
    return Tensor(state)


def _state_numerical(value, probe_index, call, part, shape, eps) -> np.ndarray:
    result = np.zeros(shape)
    flat = result.reshape(-1)
    for m in range(flat.size):
        shift = np.zeros(shape)
        shift.reshape(-1)[m] = eps
        plus = value({probe_index: {(call, part): shift}})
        minus = value({probe_index: {(call, part): -shift}})
        flat[m] = (plus - minus) / (2 * eps)
    return result


def _time_profile(reverse: np.ndarray, numerical: np.ndarray, time_axis: int, atol, rtol) -> StepTimeline:
    reverse, numerical = np.moveaxis(reverse, time_axis, 0), np.moveaxis(numerical, time_axis, 0)
    steps = reverse.shape[0]
    bad = _out_of_tolerance(reverse, numerical, atol, rtol).reshape(steps, -1).any(axis=1)
    errors = np.linalg.norm((reverse - numerical).reshape(steps, -1), axis=1)
    norms = np.linalg.norm(numerical.reshape(steps, -1), axis=1)
    return StepTimeline("input", "x", False, errors, norms, bad)
