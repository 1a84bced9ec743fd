"""``check_cell``: a recurrent cell through gradient and contract checks, in one call.

Write a cell following the cell protocol (``nn.RecurrentCell``: ``project_input``,
``step``, ``output``, ``initial_state``) and check it from your own test::

    def test_my_cell():
        check_cell(lambda input_size, hidden_size: MyCell(input_size, hidden_size))

``check_cell`` runs the cell through the shared runner ``nn.Recurrent`` — so through
everything a layer does with it: stacking, both directions, ``batch_first``, an initial
state — on a fixed first example and then on configurations Hypothesis draws, and for
each one checks:

* **gradients (BPTT)**: gradcheck of ``(output, final state)`` with respect to the
  input, the initial state and every parameter, in float64;
* **contracts**: ``step`` keeps the state's structure, shapes and dtype;
  ``initial_state`` makes (batch, hidden) tensors of the asked dtype; a float32 run
  stays float32 (outputs, states, gradients: no float64 constant leaks in); the same
  input gives the same output twice (no hidden state between calls); under
  ``no_grad()`` no graph is built.

On the first failing example it stops, works out *where* the fault is — which op's VJP
(``testing.localize``), which gate and which time step (``testing.recurrent_report``) —
and raises :class:`CellCheckError`, whose ``.report`` (a :class:`CellCheckReport`)
holds it all as data. Failures are not shrunk (each example costs a gradcheck); the
fixed first example is already small, and most bugs show there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from ..nn.flow import state_names, state_parts
from ..nn.recurrent import Recurrent, RecurrentCell
from ..tensor import Tensor, float32, float64, no_grad
from ..tensor.creation import host_generator, manual_seed
from .gradcheck import GradcheckReport, check_gradients
from .localize import localize_ops
from .recurrent_report import ProjectionLoss, RecurrentReport, recurrent_report
from .strategies import RecurrentConfig, away_from_zero

FIRST_EXAMPLE = RecurrentConfig(seq_len=4, batch=2, input_size=2, hidden_size=3, num_layers=1, with_initial_state=True)


@st.composite
def default_configs(draw) -> RecurrentConfig:
    """The configurations ``check_cell`` draws: small, and smaller when there are 4 cells."""
    num_layers = draw(st.integers(1, 2))
    bidirectional = draw(st.booleans())
    many = num_layers * (2 if bidirectional else 1) > 2  # 4 cells: keep each small
    return RecurrentConfig(
        seq_len=draw(st.integers(1, 3 if many else 4)),
        batch=draw(st.integers(1, 2)),
        input_size=draw(st.integers(1, 2 if many else 3)),
        hidden_size=draw(st.integers(1, 2 if many else 3)),
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=draw(st.booleans()),
        with_initial_state=draw(st.booleans()),
    )


class CellCheckError(AssertionError):
    """Raised by :func:`check_cell` on a failure; ``.report`` is the :class:`CellCheckReport`."""

    def __init__(self, report: CellCheckReport):
        super().__init__(str(report))
        self.report = report


@dataclass
class CellCheckReport:
    """What :func:`check_cell` found. ``str(report)`` for a person; fields for tests.

    On failure: ``config`` and ``seed`` reproduce the failing example; ``contract``
    lists broken contracts; ``gradcheck`` is the BPTT gradcheck's report, with
    ``gradcheck.localization`` naming the op whose VJP is wrong (or the cut);
    ``recurrent`` breaks the gradient errors down by time step and gate; ``error`` is
    set when the cell raised.
    """

    cell: str
    passed: bool
    examples: int
    config: RecurrentConfig | None = None
    seed: int | None = None
    contract: list[str] = field(default_factory=list)
    gradcheck: GradcheckReport | None = None
    recurrent: RecurrentReport | None = None
    error: str | None = None
    output_names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def localization(self) -> Any:
        return self.gradcheck.localization if self.gradcheck is not None else None

    @property
    def culprit(self) -> Any:
        """The first node whose VJP is wrong (a ``localize.NodeCheck``), or None."""
        localization = self.localization
        return localization.culprit if localization is not None else None

    @property
    def findings(self) -> list[str]:
        """The headlines: the op at fault, the gate and time step, broken contracts."""
        lines = []
        if self.error is not None:
            lines.append(f"the cell raised: {self.error}")
        lines += [f"contract: {problem}" for problem in self.contract]
        localization = self.localization
        if localization is not None:
            if localization.culprit is not None:
                lines.append(f"wrong VJP: {localization.culprit.record.describe()}")
            elif localization.cuts:
                cut = localization.cuts[0]
                lines.append(
                    f"gradient cut: input {cut.position} of {cut.consumer.describe()} has no gradient ({cut.via})"
                )
        if self.recurrent is not None:
            lines += self.recurrent.findings
        return lines

    def __str__(self) -> str:
        if self.passed:
            return (
                f"check_cell({self.cell}): {self.examples} example(s) passed — BPTT gradcheck through "
                "nn.Recurrent (input, initial state, every parameter) and the cell contracts"
            )
        config = self.config
        lines = [
            f"check_cell({self.cell}) failed on example {self.examples} "
            f"({'the fixed first example' if self.examples == 1 else 'drawn by Hypothesis'}):",
            f"  {config.describe()}; seed={self.seed}",
        ]
        lines.append("what is wrong:")
        lines += [f"  * {finding}" for finding in self.findings] or ["  * see below"]
        if self.gradcheck is not None and not self.gradcheck.passed:
            legend = ", ".join(f"{k} = {name}" for k, name in enumerate(self.output_names))
            lines.append(f"BPTT gradcheck (outputs: {legend}):")
            lines += ["  " + line for line in _shortened(self.gradcheck).splitlines()]
        if self.recurrent is not None and not self.recurrent.passed:
            lines += ["  " + line for line in str(self.recurrent).splitlines()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _shortened(report: GradcheckReport, shown: int = 4) -> str:
    """The gradcheck report with only its first few mismatches (all are in ``.mismatches``)."""
    if len(report.mismatches) <= shown + 1:
        return str(report)
    lines = str(report).splitlines()
    head, rest = lines[: 1 + shown], lines[1 + len(report.mismatches) :]
    return "\n".join([*head, f"  - ... and {len(report.mismatches) - shown} more pair(s)", *rest])


@dataclass
class _Example:
    """One example's pieces, kept so a failure can be diagnosed without rebuilding."""

    config: RecurrentConfig
    seed: int
    layer: Recurrent | None = None
    x: Tensor | None = None
    state: Any = None
    fn: Callable | None = None
    inputs: tuple = ()
    output_names: tuple[str, ...] = ()
    contract: list[str] = field(default_factory=list)
    gradcheck: GradcheckReport | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return (
            bool(self.contract) or self.error is not None or (self.gradcheck is not None and not self.gradcheck.passed)
        )


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _pack(parts: tuple, like: Any) -> Any:
    return tuple(parts) if isinstance(like, (tuple, list)) else parts[0]


def _run_example(make_cell, config, seed, dtype, eps, atol, rtol) -> _Example:
    example = _Example(config, seed)
    manual_seed(seed)  # the cell's initial weights
    rng = np.random.default_rng(seed)
    try:
        layer = Recurrent(make_cell, config.input_size, config.hidden_size, **config.layer_kwargs()).astype(dtype)
        template = layer.cells[0].initial_state(1, dtype=dtype)
        names = state_names(layer.cells[0], len(state_parts(template)))
        x = Tensor(away_from_zero(rng, config.x_shape), dtype=dtype, requires_grad=True)
        initial = ()
        if config.with_initial_state:
            initial = tuple(
                Tensor(away_from_zero(rng, config.state_shape), dtype=dtype, requires_grad=True) for _ in names
            )
        state = _pack(initial, template) if initial else None
        example.layer, example.x, example.state = layer, x, state
        example.contract = _contract_checks(make_cell, layer, config, x, state, rng)
        parameters = list(layer.named_parameters())

        def fn(x: Tensor, *rest: Tensor) -> tuple:
            given = _pack(rest[: len(initial)], template) if initial else None
            output, final = layer(x, given)
            return (output, *state_parts(final))

        example.fn = fn
        example.inputs = (x, *initial, *(p for _, p in parameters))
        example.output_names = ("output", *(f"{name}_n" for name in names))
        input_names = ["x", *[f"{name}_0" for name in names][: len(initial)], *(name for name, _ in parameters)]
        example.gradcheck = check_gradients(
            fn, example.inputs, eps=eps, atol=atol, rtol=rtol, names=input_names, localize=False
        )
    except Exception as error:
        example.error = _describe_error(error)
    return example


def _contract_checks(make_cell, layer, config, x, state, rng) -> list[str]:
    """The cell protocol's promises, each checked on its own; returns what is broken."""
    problems: list[str] = []
    cell = layer.cells[0]
    batch, hidden = config.batch, config.hidden_size

    def check(name: str, test: Callable[[], None]) -> None:
        try:
            test()
        except _Broken as broken:
            problems.append(f"{name}: {broken}")
        except Exception as error:
            problems.append(f"{name}: raised {_describe_error(error)}")

    def initial_state() -> None:
        for dtype in (float64, float32):
            parts = state_parts(cell.initial_state(batch, dtype=dtype, device=x.device))
            for name, part in zip(state_names(cell, len(parts)), parts):
                if part.shape != (batch, hidden) or part.dtype != dtype:
                    raise _Broken(
                        f"initial_state(batch={batch}, dtype={dtype}) gave {name} of shape {part.shape} and "
                        f"dtype {part.dtype}, expected ({batch}, {hidden}) and {dtype}"
                    )

    def step_keeps_state() -> None:
        template = cell.initial_state(batch, dtype=x.dtype, device=x.device)
        before = tuple(Tensor(away_from_zero(rng, part.shape), dtype=x.dtype) for part in state_parts(template))
        x_t = Tensor(away_from_zero(rng, (batch, cell.input_size)), dtype=x.dtype)
        after = cell.step(cell.project_input(x_t), _pack(before, template))
        if isinstance(after, (tuple, list)) != isinstance(template, (tuple, list)) or len(state_parts(after)) != len(
            before
        ):
            raise _Broken(f"step returned a state of {len(state_parts(after))} part(s), it was given {len(before)}")
        names = state_names(cell, len(before))
        for name, old, new in zip(names, before, state_parts(after)):
            if new.shape != old.shape or new.dtype != old.dtype:
                raise _Broken(
                    f"step turned {name} of shape {old.shape}, {old.dtype} into shape {new.shape}, {new.dtype}"
                )
        output = cell.output(after)
        if output.shape != (batch, hidden):
            raise _Broken(f"output(state) has shape {output.shape}, expected ({batch}, {hidden})")

    def float32_stays_float32() -> None:
        layer32 = Recurrent(make_cell, config.input_size, config.hidden_size, **config.layer_kwargs()).astype(float32)
        x32 = Tensor(x.numpy(), dtype=float32, requires_grad=True)
        state32 = (
            None if state is None else _pack(tuple(Tensor(p.numpy(), dtype=float32) for p in state_parts(state)), state)
        )
        try:
            output, final = layer32(x32, state32)
        except TypeError as error:  # the compiled loop refuses a carry whose dtype changes
            if "carry" not in str(error):
                raise
            raise _Broken(f"in a float32 run, a float64 value leaks into the cell's state ({error})") from None
        for name, tensor in [
            ("output", output),
            *((f"final state part {k}", p) for k, p in enumerate(state_parts(final))),
        ]:
            if tensor.dtype != float32:
                raise _Broken(f"in a float32 run, {name} is {tensor.dtype}: a float64 value leaks into the cell")
        loss = ProjectionLoss(0)((output, final))
        loss.backward()
        grads = [("x", x32.grad)] + [(name, p.grad) for name, p in layer32.named_parameters()]
        for name, gradient in grads:
            if gradient is not None and gradient.dtype != float32:
                raise _Broken(f"in a float32 run, the gradient of {name} is {gradient.dtype}")

    def deterministic() -> None:
        with no_grad():
            first = layer(x, state)
            second = layer(x, state)
        for a, b in zip(_flatten(first), _flatten(second)):
            if not np.array_equal(a.numpy(), b.numpy()):
                raise _Broken(
                    "two runs on the same input differ (max difference "
                    f"{float(np.abs(a.numpy() - b.numpy()).max()):.3g}): the cell keeps state between calls "
                    "or draws random numbers"
                )

    def no_graph_under_no_grad() -> None:
        template = cell.initial_state(batch, dtype=x.dtype, device=x.device)
        given = tuple(
            Tensor(away_from_zero(rng, part.shape), dtype=x.dtype, requires_grad=True) for part in state_parts(template)
        )
        x_t = Tensor(away_from_zero(rng, (batch, cell.input_size)), dtype=x.dtype, requires_grad=True)
        with no_grad():
            stepped = cell.step(cell.project_input(x_t), _pack(given, template))
            result = layer(x, state)
        for where, tensors in [("step", _flatten(stepped)), ("the layer", _flatten(result))]:
            for tensor in tensors:
                if tensor.grad_fn is not None or tensor.requires_grad:
                    node = tensor.grad_fn.name if tensor.grad_fn is not None else "requires_grad=True"
                    raise _Broken(f"under no_grad() an output of {where} still has a graph ({node})")

    def compiled_equals_eager() -> None:
        results = []
        for compiled in (True, False):
            layer.compile = compiled
            for parameter in layer.parameters():
                parameter.grad = None
            x_copy = Tensor(x.numpy(), dtype=x.dtype, requires_grad=True)
            output, final = layer(x_copy, state)
            ProjectionLoss(0)((output, final)).backward()
            values = [output, *state_parts(final), x_copy.grad, *(p.grad for p in layer.parameters())]
            results.append([None if v is None else v.numpy() for v in values])
        layer.compile = True
        for parameter in layer.parameters():
            parameter.grad = None
        for index, (compiled, eager) in enumerate(zip(*results)):
            if (compiled is None) != (eager is None) or (
                compiled is not None and not np.allclose(compiled, eager, rtol=1e-9, atol=1e-12)
            ):
                difference = "missing" if compiled is None or eager is None else np.abs(compiled - eager).max()
                raise _Broken(
                    f"the compiled layer (tl.scan, the default) and compile=False differ in value {index} "
                    f"(max difference {difference}): the step does something a trace cannot see, such as "
                    "reading .data or keeping Python state between steps"
                )

    check("initial_state", initial_state)
    check("compiled", compiled_equals_eager)
    check("step", step_keeps_state)
    check("float32", float32_stays_float32)
    check("determinism", deterministic)
    check("no_grad", no_graph_under_no_grad)
    return problems


class _Broken(Exception):
    """A contract the cell does not keep (the message says which and how)."""


def _flatten(result: Any) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    return [tensor for item in result for tensor in _flatten(item)]


def _diagnose(example: _Example, report: CellCheckReport, eps, atol, rtol, seed) -> None:
    report.gradcheck = example.gradcheck
    if example.gradcheck is None or example.gradcheck.passed:
        return
    if any(problem.startswith("determinism") for problem in example.contract):
        report.notes.append(
            "gradient errors not localised: the forward pass is not deterministic, so finite "
            "differences measure the noise; fix the determinism contract first"
        )
        return
    # The check ran the layer as users run it (compiled: one node per loop). To name the
    # op, gate and step, the same layer, same weights, records every op of every step.
    compiled, example.layer.compile = example.layer.compile, False
    try:
        try:
            example.gradcheck.localization = localize_ops(example.fn, example.inputs, eps=eps, atol=atol, rtol=rtol)
        except Exception as error:
            report.notes.append(f"could not localise the op: {_describe_error(error)}")
        try:
            report.recurrent = recurrent_report(
                example.layer, example.x, example.state, eps=eps, atol=atol, rtol=rtol, seed=seed
            )
        except Exception as error:
            report.notes.append(f"could not break the error down by time step and gate: {_describe_error(error)}")
    finally:
        example.layer.compile = compiled


def check_cell(
    make_cell: Callable[[int, int], RecurrentCell],
    *,
    max_examples: int = 10,
    dtype: Any = float64,
    seed: int = 0,
    configs: st.SearchStrategy | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_on_failure: bool = True,
) -> CellCheckReport:
    """Check a recurrent cell's gradients and contracts; raise :class:`CellCheckError` if wrong.

    ``make_cell(input_size, hidden_size)`` builds one cell (a cell class often does).
    The first example is fixed (:data:`FIRST_EXAMPLE`: 4 steps, batch 2, input 2,
    hidden 3, one layer, an initial state); up to ``max_examples - 1`` more are drawn
    from ``configs`` (default :func:`default_configs`: 1-2 layers, either direction,
    ``batch_first`` or not, with or without an initial state), derandomized so that
    every run checks the same ones. Gradients are checked in ``dtype`` (float64; a
    float32 run is one of the contracts). ``seed`` seeds weights and inputs; the
    generator behind ``tl.randn`` is restored afterwards.

    Returns the :class:`CellCheckReport`; on failure raises :class:`CellCheckError`
    carrying it (or returns it, with ``raise_on_failure=False``)::

        from tinygrad_lstm import nn
        from tinygrad_lstm.testing import check_cell

        def test_lstm_cell():
            check_cell(nn.LSTMCell)
    """
    saved_generator = host_generator().bit_generator.state
    count = 0
    failures: list[_Example] = []

    def fails(case: tuple[RecurrentConfig, int]) -> bool:
        nonlocal count
        if failures:  # Hypothesis replays the failing example once more: no need to rerun it
            return True
        count += 1
        example = _run_example(make_cell, case[0], case[1], dtype, eps, atol, rtol)
        if example.failed:
            failures.append(example)
        return example.failed

    try:
        if not fails((FIRST_EXAMPLE, seed)) and max_examples > 1:
            strategy = st.tuples(configs if configs is not None else default_configs(), st.integers(0, 2**31 - 1))
            search = settings(
                max_examples=max_examples - 1,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.generate],  # no shrinking: each example costs a gradcheck
                suppress_health_check=list(HealthCheck),
            )
            try:
                find(strategy, fails, settings=search)
            except NoSuchExample:
                pass
        name = _cell_name(make_cell)
        if not failures:
            return CellCheckReport(cell=name, passed=True, examples=count)
        example = failures[0]
        report = CellCheckReport(
            cell=name,
            passed=False,
            examples=count,
            config=example.config,
            seed=example.seed,
            contract=example.contract,
            error=example.error,
            output_names=example.output_names,
        )
        manual_seed(example.seed)
        _diagnose(example, report, eps, atol, rtol, example.seed)
    finally:
        manual_seed(0)
        host_generator().bit_generator.state = saved_generator
    if raise_on_failure:
        raise CellCheckError(report)
    return report


def _cell_name(make_cell: Callable) -> str:
    if isinstance(make_cell, type):
        return make_cell.__name__
    try:
        return type(make_cell(1, 1)).__name__
    except Exception:
        return getattr(make_cell, "__name__", repr(make_cell))
