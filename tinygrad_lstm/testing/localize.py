"""Which op is wrong: localising a failed gradcheck to one node of the graph.

A gradient computed by reverse mode is a composition of the VJPs of the ops that ran.
If every op's VJP is right, the composition is right; so when gradcheck says the whole
is wrong, at least one op is wrong *on its own*, or gradient was cut on the way.
:func:`localize_ops` finds out which:

1. It runs ``fn(*inputs)`` once more while recording, for every graph node, the op, a
   copy of the arrays it was given, its keyword arguments and the line of user code
   that made it (through the engine's ``function.record_source`` hook).
2. It re-checks each node alone, on its own inputs: for a random seed ``v`` on the op's
   outputs, ``backward(v)`` must equal the central difference of ``<v, forward(x)>``
   along every input element. This is exact op-level blame: a wrong VJP shows up here
   and nowhere else, however deep in the graph it sits.
3. If no node is wrong, the fault is a *cut*: an op input that does not require grad
   although its value came from the graph (``.detach()``, a NumPy round trip), so the
   forward pass sees a dependence that the backward pass never follows. Those inputs
   are listed with where the value came from.

Points of non-differentiability (relu at 0, a clip boundary) are recognised by the
two one-sided differences disagreeing; there any value between them is accepted.

Recording wraps every ``Function`` subclass's ``forward`` and ``Tensor.detach`` for the
duration of one forward pass and sets the engine's ``record_source`` hook (see
:func:`recording`); nothing is added to the engine's hot path.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tensor import Tensor, backend
from ..tensor import function as function_module
from ..tensor.autograd import sum_to
from ..tensor.function import Context, Function

DEFAULT_MAX_NODES = 200  # gradcheck localises automatically below this graph size

_ENGINE_DIR = os.path.dirname(os.path.abspath(function_module.__file__)) + os.sep
_TESTING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Frames in these files are machinery between user code and the op, never "user code".
_MACHINERY = (_TESTING_DIR + "localize.py", _TESTING_DIR + "gradcheck.py")
_internal_cache: dict[str, bool] = {}


def _is_machinery(filename: str) -> bool:
    internal = _internal_cache.get(filename)
    if internal is None:
        path = os.path.abspath(filename)
        internal = path.startswith(_ENGINE_DIR) or path in _MACHINERY
        _internal_cache[filename] = internal
    return internal


@dataclass(frozen=True)
class SourceLine:
    """A line of user code: ``str()`` gives ``"file:line: code"``."""

    filename: str
    lineno: int
    function: str

    @property
    def code(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    @property
    def short_filename(self) -> str:
        try:
            relative = os.path.relpath(self.filename)
        except ValueError:  # another drive on Windows
            return self.filename
        return self.filename if relative.startswith(".." + os.sep + "..") else relative

    def __str__(self) -> str:
        code = self.code
        return f"{self.short_filename}:{self.lineno}: {code}" if code else f"{self.short_filename}:{self.lineno}"


def caller_source() -> SourceLine | None:
    """The innermost frame outside the engine (``tinygrad_lstm/tensor/``) and this machinery.

    Used as ``function.record_source``: a node made by ``h @ w`` inside a cell's
    ``step`` points at that line, not at ``Tensor.__matmul__``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if not _is_machinery(code.co_filename):
            return SourceLine(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def _called_from_engine() -> bool:
    """True when the code calling the wrapped method (two frames up) is the engine's own."""
    frame = sys._getframe(2)
    return frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_ENGINE_DIR)


# ----------------------------------------------------------------------------- recording


@dataclass
class NodeRecord:
    """One recorded application of an op, with copies of what it was given."""

    index: int  # position in forward order, from 0
    function: type
    args: tuple  # Tensor arguments as host NumPy copies, the rest as given
    kwargs: dict
    tensor_positions: tuple[int, ...]
    needs_input_grad: tuple[bool, ...]
    source: SourceLine | None

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(self.args[p].shape) for p in self.tensor_positions)

    def describe(self) -> str:
        shapes = ", ".join(str(s) for s in self.input_shapes)
        where = f" at {self.source}" if self.source is not None else ""
        return f"{self.name} (op #{self.index}, inputs {shapes}){where}"


@dataclass
class GradientCut:
    """An op input that holds a value computed from the graph but carries no gradient."""

    consumer: NodeRecord
    position: int  # which argument of the consuming op
    origin: str  # where the value came from
    via: str  # how the link was lost: "detach() at ...", "copying its values", ...

    def __str__(self) -> str:
        return (
            f"input {self.position} of {self.consumer.describe()}\n"
            f"      holds a value from {self.origin},\n      cut from the graph by {self.via}"
        )


class Recording:
    """What one forward pass under :func:`recording` made: ``records`` (the graph's nodes,
    in forward order) and ``cuts``, filled in when the ``with`` block ends."""

    def __init__(self) -> None:
        self.records: list[NodeRecord] = []
        self.cuts: list[GradientCut] = []
        self._events: list[tuple] = []  # ("forward", ctx, args, kwargs, outputs) | ("detach", ...)
        self._copies: dict[int, tuple] = {}  # id(ctx) -> host copies of its arguments

    # during the forward pass: note what happens, keep references so ids stay unique
    def note_forward(self, ctx: Context, args: tuple, kwargs: dict, output: Any) -> None:
        outputs = output if type(output) is tuple else (output,)
        self._copies[id(ctx)] = tuple(
            np.array(backend.to_host(arg, ctx.device), copy=True) if _is_array(arg) else arg for arg in args
        )
        self._events.append(("forward", ctx, args, dict(kwargs), outputs))

    def note_detach(self, tensor: Tensor, by_engine: bool) -> None:
        if tensor.requires_grad:
            where = caller_source()
            via = f"detach() at {where}" if where is not None else "detach()"
            self._events.append(
                ("detach", tensor.data, tensor.device, tensor.shape, tensor._node is None, via, by_engine)
            )

    # afterwards: replay the events in order
    def finish(self) -> None:
        graph: dict[int, tuple[Any, str]] = {}  # id(array) -> (array, where it came from)
        by_value: dict[tuple, tuple[np.ndarray, str]] = {}
        detached: dict[int, tuple[Any, str, bool]] = {}  # id -> (array, how, by the engine)
        derived: dict[int, tuple[Any, str, str]] = {}  # no-grad values computed from graph values

        def remember(array: Any, device: str, origin: str) -> None:
            graph[id(array)] = (array, origin)
            key = _value_key(array, device)
            if key is not None:
                by_value.setdefault(key, (_host(array, device), origin))

        def taint(array: Any) -> tuple[str, str] | None:
            """(how the link was lost, where the value came from) for a graph value without gradient."""
            entry = detached.get(id(array))
            if entry is not None and entry[0] is array:
                if entry[2]:
                    return None  # the engine's own detach (logsumexp's shift): by design
                return entry[1], graph.get(id(array), (None, "a graph value"))[1]
            entry = derived.get(id(array))
            if entry is not None and entry[0] is array:
                return entry[1], entry[2]
            entry = graph.get(id(array))
            if entry is not None and entry[0] is array:
                return "re-wrapping its array without gradient", entry[1]
            return None

        last = {id(event[1]): index for index, event in enumerate(self._events) if event[0] == "forward"}
        for index, event in enumerate(self._events):
            if event[0] == "detach":
                _, array, device, shape, is_leaf, via, by_engine = event
                if id(array) not in graph:
                    if not is_leaf:
                        continue  # made before this recording: not ours to judge
                    remember(array, device, f"a leaf tensor of shape {shape} that requires grad")
                detached[id(array)] = (array, via, by_engine)
                continue
            _, ctx, args, kwargs, outputs = event
            if last[id(ctx)] != index:
                continue  # a forward calling another op's forward: keep the outer call
            edges = _edges(ctx)
            if edges is None:  # not a graph node: follow graph values through it
                for arg in args:
                    found = taint(arg) if _is_array(arg) else None
                    if found is not None:
                        how = (
                            found[0] if found[0].startswith("ops run") else f"ops run without gradient after {found[0]}"
                        )
                        for output in outputs:
                            derived[id(output)] = (output, how, found[1])
                        break
                continue
            record = NodeRecord(
                index=len(self.records),
                function=ctx.function,
                args=self._copies[id(ctx)],
                kwargs=kwargs,
                tensor_positions=tuple(p for p, arg in enumerate(args) if _is_array(arg)),
                needs_input_grad=tuple(ctx.needs_input_grad),
                source=ctx.source,
            )
            self.records.append(record)
            for position, (arg, edge) in enumerate(zip(args, edges)):
                if isinstance(edge, Tensor) and id(arg) not in graph:
                    remember(arg, ctx.device, f"a leaf tensor of shape {tuple(arg.shape)} that requires grad")
                elif edge is None and _is_array(arg) and arg.dtype.kind == "f":
                    found = taint(arg)
                    if found is not None:
                        self.cuts.append(GradientCut(record, position, found[1], found[0]))
                        continue
                    key = _value_key(arg, ctx.device)
                    if key is not None and key in by_value:
                        stored, origin = by_value[key]
                        if stored.tobytes() == _host(arg, ctx.device).tobytes():
                            self.cuts.append(
                                GradientCut(record, position, origin, "copying its values (a NumPy round trip?)")
                            )
            single = len(outputs) == 1
            for k, output in enumerate(outputs):
                label = "the output" if single else f"output {k}"
                remember(output, ctx.output_device, f"{label} of {record.describe()}")
        self._events.clear()
        self._copies.clear()


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic)


def _edges(ctx: Context) -> tuple | None:
    """The node's edges if the engine recorded it (it needed a gradient), else None."""
    try:
        edges = ctx.edges
    except AttributeError:  # never recorded: the slot was not filled
        return None
    return edges if edges else None


def _host(array: Any, device: str) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else np.asarray(backend.to_host(array, device))


def _value_key(array: Any, device: str) -> tuple | None:
    """A key for finding equal arrays; None for ones too plain to match meaningfully."""
    if array.dtype.kind != "f" or array.size < 2 or array.size > 100_000:
        return None
    host = _host(array, device)
    if np.all(host == host.reshape(-1)[0]):
        return None  # constant arrays (zeros, ones) match far too much
    return (host.shape, host.dtype.str, hash(host.tobytes()))


def _function_classes() -> list[type]:
    """Function and every subclass of it defined so far (the engine's ops and users')."""
    found, stack = [Function], [Function]
    while stack:
        for subclass in stack.pop().__subclasses__():
            if subclass not in found:
                found.append(subclass)
                stack.append(subclass)
    return found


def _recording_forward(forward: Callable, rec: Recording) -> staticmethod:
    def wrapper(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        output = forward(ctx, *args, **kwargs)
        rec.note_forward(ctx, args, kwargs, output)
        return output

    return staticmethod(wrapper)


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Record every op applied inside the ``with`` block (one thread at a time)::

        with recording() as rec:
            loss = fn(x)
        for record in rec.records:
            print(record.describe())

    Every ``Function`` subclass's ``forward`` and ``Tensor.detach`` are wrapped for the
    duration, and the engine's ``record_source`` hook stores each node's source line;
    all three are put back on exit. Which calls became graph nodes (and so what to
    check) is read off the engine's own nodes when the block ends.
    """
    rec = Recording()
    original_detach = Tensor.__dict__["detach"]
    previous_hook = function_module.record_source
    patched = []

    def detach(self: Tensor) -> Tensor:
        rec.note_detach(self, _called_from_engine())
        return original_detach(self)

    try:
        for cls in _function_classes():
            raw = cls.__dict__.get("forward")
            if raw is not None:
                function = raw.__func__ if isinstance(raw, staticmethod) else raw
                cls.forward = _recording_forward(function, rec)
                patched.append((cls, raw))
        Tensor.detach = detach
        function_module.record_source = caller_source
        yield rec
    finally:
        for cls, raw in patched:
            cls.forward = raw
        Tensor.detach = original_detach
        function_module.record_source = previous_hook
    rec.finish()


# ------------------------------------------------------------------- checking one node


@dataclass
class InputCheck:
    """How one input's gradient from a node's VJP compares with finite differences."""

    position: int
    shape: tuple[int, ...]
    max_abs_error: float
    count: int  # entries out of tolerance
    element: tuple[int, ...]  # the worst one
    analytical: float
    numerical: float
    returned_none: bool = False

    def __str__(self) -> str:
        if self.returned_none:
            return (
                f"input {self.position} {self.shape}: backward returned None (no gradient), but it requires "
                f"grad and finite differences give {self.numerical:.6g} at {list(self.element)}"
            )
        return (
            f"input {self.position} {self.shape}: backward gives {self.analytical:.6g} at {list(self.element)}, "
            f"finite differences give {self.numerical:.6g} ({self.count} of {int(np.prod(self.shape))} entries wrong)"
        )


@dataclass
class NodeCheck:
    """A node whose VJP disagrees with finite differences of that op alone."""

    record: NodeRecord
    inputs: list[InputCheck]  # only the wrong ones

    @property
    def op(self) -> str:
        return self.record.name

    @property
    def index(self) -> int:
        return self.record.index

    @property
    def source(self) -> SourceLine | None:
        return self.record.source

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return self.record.input_shapes

    def __str__(self) -> str:
        lines = [self.record.describe()]
        lines += [f"  {check}" for check in self.inputs]
        return "\n".join(lines)


class _NodeFailedToRun(Exception):
    pass


def check_node(record: NodeRecord, rng: np.random.Generator, eps: float, atol: float, rtol: float) -> NodeCheck | None:
    """Check one recorded node's VJP against finite differences; None when it agrees."""
    args = [_as_float64(arg) if p in record.tensor_positions else arg for p, arg in enumerate(record.args)]

    def forward(arguments: list) -> tuple[Context, tuple]:
        ctx = Context(record.function, np, "cpu")
        ctx.needs_input_grad = record.needs_input_grad
        try:
            output = record.function.forward(ctx, *arguments, **record.kwargs)
        except Exception as error:  # pragma: no cover - an op that cannot be replayed
            raise _NodeFailedToRun(f"{record.name}.forward failed on replay: {error}") from error
        outputs = output if type(output) is tuple else (output,)
        return ctx, tuple(np.asarray(out) for out in outputs)

    ctx, outputs = forward(args)
    seeds = [
        rng.standard_normal(out.shape).astype(out.dtype if out.dtype.kind == "f" else np.float64) for out in outputs
    ]

    def projection(arguments: list) -> float:
        _, outs = forward(arguments)
        return float(sum(float((seed * out).sum()) for seed, out in zip(seeds, outs)))

    grads = record.function.backward(ctx, *seeds)
    if type(grads) is not tuple:
        grads = (grads,)
    center = projection(args)
    precision = max((np.finfo(out.dtype).eps for out in outputs if out.dtype.kind == "f"), default=0.0)
    if precision > 1e-10:  # an op computing in float32 (a Cast, say): differences in float32 are noisy
        eps = precision ** (1 / 3)
        atol, rtol = max(atol, 1e-3 * max(1.0, abs(center))), max(rtol, 1e-2)
    wrong = []
    for position in record.tensor_positions:
        if position >= len(record.needs_input_grad) or not record.needs_input_grad[position]:
            continue
        shape = tuple(args[position].shape)
        given = grads[position] if position < len(grads) else None
        returned_none = given is None
        analytical = np.zeros(shape) if returned_none else sum_to(np.asarray(given, dtype=np.float64), shape)
        check = _compare_input(args, position, analytical, projection, center, eps, atol, rtol)
        if check is not None:
            check.returned_none = returned_none
            wrong.append(check)
    return NodeCheck(record, wrong) if wrong else None


def _as_float64(array: Any) -> Any:
    array = np.asarray(array)
    return array.astype(np.float64) if array.dtype.kind == "f" and array.dtype != np.float64 else array.copy()


def _compare_input(args, position, analytical, projection, center, eps, atol, rtol) -> InputCheck | None:
    work = args[position]
    flat = work.reshape(-1)  # a view: perturbing it perturbs the argument
    grad_flat = analytical.reshape(-1)
    errors = np.zeros(flat.size)
    numerical = np.zeros(flat.size)
    for m in range(flat.size):
        saved = flat[m].item()
        flat[m] = saved + eps
        plus = projection(args)
        flat[m] = saved - eps
        minus = projection(args)
        flat[m] = saved
        central = (plus - minus) / (2 * eps)
        numerical[m] = central
        error = abs(grad_flat[m] - central)
        if error <= atol + rtol * abs(central):
            continue
        right, left = (plus - center) / eps, (center - minus) / eps
        if abs(right - left) > atol + rtol * max(abs(right), abs(left)):  # a kink: any subgradient will do
            low, high = min(left, right), max(left, right)
            slack = atol + rtol * max(abs(low), abs(high))
            if low - slack <= grad_flat[m] <= high + slack:
                continue
        errors[m] = error
    if not errors.any():
        return None
    worst = int(np.argmax(errors))
    return InputCheck(
        position=position,
        shape=tuple(work.shape),
        max_abs_error=float(errors[worst]),
        count=int(np.count_nonzero(errors)),
        element=tuple(int(i) for i in np.unravel_index(worst, work.shape)) if work.ndim else (),
        analytical=float(grad_flat[worst]),
        numerical=float(numerical[worst]),
    )


# ---------------------------------------------------------------------------- the search


@dataclass
class Localization:
    """Which ops a failed gradcheck comes from (``str()`` for a person, fields for tools).

    ``wrong`` lists every node whose VJP disagrees with finite differences of that op
    alone, in forward order; ``culprit`` is the first of them. ``cuts`` lists op inputs
    that hold graph values without carrying gradient (reported when no VJP is wrong).
    """

    nodes: int
    checked: int
    wrong: list[NodeCheck] = field(default_factory=list)
    cuts: list[GradientCut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def culprit(self) -> NodeCheck | None:
        return self.wrong[0] if self.wrong else None

    @property
    def found(self) -> bool:
        return bool(self.wrong or self.cuts)

    def __str__(self) -> str:
        if self.checked == 0:
            return "\n".join(["localisation: no op re-checked", *[f"  {note}" for note in self.notes]])
        lines = [
            f"localisation: re-checked the VJP of each of the {self.checked} op{'s' if self.checked != 1 else ''} "
            "of the graph on its own inputs, against finite differences of that op alone:"
        ]
        culprit = self.culprit
        if culprit is not None:
            lines.append(f"  first wrong VJP: {culprit.record.describe()}")
            lines += [f"    {check}" for check in culprit.inputs]
            others = self.wrong[1:]
            if others:
                same = sum(1 for node in others if node.source == culprit.source)
                text = f"  {len(others)} later node(s) also wrong"
                if same:
                    text += f" ({same} made by the same line)"
                lines.append(text + ": " + ", ".join(f"{node.op} #{node.index}" for node in others[:8]))
                if len(others) > 8:
                    lines[-1] += ", ..."
        else:
            lines.append("  every op's VJP is right on its own inputs")
            if self.cuts:
                lines.append("  but gradient is cut where the forward pass reads a graph value without its gradient:")
                lines += [f"    {cut}" for cut in self.cuts[:5]]
                if len(self.cuts) > 5:
                    lines.append(f"    ... and {len(self.cuts) - 5} more")
            else:
                lines.append("  and no cut was found: look for state kept between calls, or randomness in fn")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def _dedupe_cuts(cuts: Sequence[GradientCut]) -> list[GradientCut]:
    seen, kept = set(), []
    for cut in cuts:
        key = (cut.consumer.source, cut.position, cut.via)
        if key not in seen:
            seen.add(key)
            kept.append(cut)
    return kept


def localize_ops(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    max_nodes: int | None = None,
    seed: int = 0,
) -> Localization:
    """Re-run ``fn(*inputs)`` recording its graph, and check every node's VJP on its own.

    Returns a :class:`Localization`. ``max_nodes`` skips the per-node checks (with a
    note) for larger graphs; None checks every node. Each node costs two evaluations of
    that one op per input element, so this is cheap next to the gradcheck it explains.

    >>> import tinygrad_lstm as tl
    >>> class Twice(tl.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         return 2 * x
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         return grad  # wrong: forgets the factor 2
    >>> x = tl.Tensor([1.0, 2.0], requires_grad=True, dtype=tl.float64)
    >>> localize_ops(lambda x: Twice.apply(x).tanh(), (x,)).culprit.op
    'Twice'
    """
    all_inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    with recording() as rec:
        fn(*all_inputs)
    result = Localization(nodes=len(rec.records), checked=0, cuts=_dedupe_cuts(rec.cuts))
    if max_nodes is not None and len(rec.records) > max_nodes:
        result.notes.append(
            f"the graph has {len(rec.records)} nodes (> {max_nodes}): pass localize=True to re-check each op"
        )
        return result
    rng = np.random.default_rng(seed)
    for record in rec.records:
        try:
            check = check_node(record, rng, eps, atol, rtol)
        except Exception as error:  # an op that cannot be replayed on the host, say
            result.notes.append(f"not checked: {record.describe()}: {type(error).__name__}: {error}")
            continue
        result.checked += 1
        if check is not None:
            result.wrong.append(check)
    return result
