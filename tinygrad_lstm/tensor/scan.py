"""``tl.scan`` and ``tl.compile``: trace a function once, replay it as one node of the graph.

``carry, ys = tl.scan(fn, init, xs)`` means exactly this loop (JAX's ``lax.scan``)::

    carry, ys = init, []
    for t in range(len(xs)):            # along axis 0 of xs
        carry, y = fn(carry, xs[t])
        ys.append(y)
    ys = tl.stack(ys)

Written out, that loop records every op of every step: T × (ops per step) graph nodes,
each with its Python bookkeeping. ``scan`` records one node for the whole loop:

1. **trace**: ``fn`` runs once, on the first step's values, while the engine writes
   each primitive it applies (which ``Function``, which inputs, its keyword
   configuration, which outputs) on a *tape*. Tensors ``fn`` reads without receiving
   them (a module's parameters, closed-over tensors) become implicit inputs of the tape.
   Ops that read only those (``b_ih + b_hh``) are taken out of the step and applied
   once, before the loop.
2. **replay forward**: the tape runs on raw arrays for the other T - 1 steps (tracing
   ran the first: its results and Contexts are that step's), calling each op's own
   ``forward``; each step keeps what the op's ``backward`` will need: the op's
   ``Context``, or for most built-ins just the tuple it saved (``checkpoint=k`` keeps
   only every k-th carry instead; backward then recomputes each segment of k steps,
   running the ops that need no earlier step for many steps at once: ``mark_batched``).
3. **replay backward**: the tape's VJPs run in reverse, over time in reverse; the
   carry's gradient flows from step t to step t-1. A loop-invariant weight of a
   ``Linear`` or ``MatMul`` gets its gradient from one VJP call on the stacked steps:
   ``Σ_t g_tᵀ x_t = Gᵀ X``, one large matmul instead of T skinny ones.

The tape holds the very primitives of eager mode and calls their very VJPs: there is
one derivative rule per op, so every gradient check of a primitive covers compiled code.
``tl.compile(fn)`` is the same tracer for a function called once per call: one node per
call, the trace cached per input signature.

Tracing runs ``fn`` on real values, but records only what goes through ``Function``:
reading a value into Python (``.item()``, ``bool(t)``, ``.numpy()``) or drawing random
numbers inside ``fn`` would freeze one step's value into the tape, so it raises
:class:`TraceError` instead.
"""

from __future__ import annotations

import builtins
import collections
import functools
import math
import operator
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import autograd, backend, function, ops
from .autograd import fit_gradient
from .function import Context, Function, TraceError, is_grad_enabled
from .graph_backward import declared_roles
from .tensor import Tensor

# --------------------------------------------------------------------------- the tape


@dataclass
class TapeOp:
    """One primitive application on the tape.

    ``slots[i]`` is the value slot of positional argument i, or -1 for a constant
    (then ``constants[i]`` holds it); ``outputs`` are the slots the op writes.
    ``needs[i]``: input i wants a gradient. ``step_needs``: the same, less the inputs
    whose gradient is summed over all steps at once (``deferred``).
    """

    function: type[Function]
    device: str
    slots: tuple[int, ...]
    constants: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[int, ...]
    multi_output: bool
    needs: tuple[bool, ...]
    wrap_scalars: bool  # forward returned a scalar (NumPy's 0-d reductions): make it an array
    grad_enabled: bool = True  # grad mode when it was recorded (off: its outputs never require grad)
    step_needs: tuple[bool, ...] = ()
    deferred: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.records = any(self.needs)  # the op's Context is kept for backward
        self.all_slots = all(slot >= 0 for slot in self.slots)  # no constant among the arguments
        self.invariant_weight = -1  # a Linear's loop-invariant weight slot: its transpose is made once per loop
        # A built-in op whose forward wrote nothing to its Context but saved_tensors: in a
        # loop, its Context is one scratch object for all steps (see forward_loop_source).
        self.saves_only = False
        # For each array a built-in op saved when traced: the index of the output it is, or -1 (an input, say).
        self.saved_as_output: tuple[int, ...] = ()
        self.batched = False  # a loop recomputing steps runs it for many steps at once (see mark_batched)


@dataclass
class Tape:
    """A traced function: its ops, and where its inputs and outputs live among the slots.

    Every value the function computes or reads has a slot; ``meta[slot]`` is its
    (shape, dtype). Slots of the explicit inputs come first, then the implicit ones
    (``captured``: the Tensors themselves, read afresh at every replay).
    """

    device: str
    xp: Any
    meta: list[tuple[tuple[int, ...], Any]]
    requires: list[bool]
    input_slots: list[int]
    captured: list[Tensor]
    captured_slots: list[int]
    ops: list[TapeOp]
    output_slots: list[int] = field(default_factory=list)

    replays: dict[str, Callable] = field(default_factory=dict)
    # Per thread and replay kind: the Contexts the replay shares between its calls (see shared_contexts).
    per_thread: threading.local = field(default_factory=threading.local)

    def replay(self, kind: str) -> Callable:
        """The generated replay function "forward", "forward_keep" or "backward" (made once)."""
        function = self.replays.get(kind)
        if function is None:
            function = self.replays[kind] = build_replay(self, kind)
        return function

    def shared_contexts(self, kind: str) -> list[Context]:
        """This thread's Contexts for the ops the replay ``kind`` runs on one Context every call (made once).

        Per thread, so that two threads replaying the same tape never write into one Context.
        """
        contexts = getattr(self.per_thread, kind, None)
        if contexts is None:
            contexts = [
                object.__new__(replay_context(self.ops[index].function, self.xp, self.ops[index].device,
                                              self.ops[index].step_needs))
                for index in shared_indices(self, kind)
            ]  # fmt: skip
            for ctx in contexts:
                ctx.saved_tensors = ()
            setattr(self.per_thread, kind, contexts)
        return contexts

    def source(self) -> str:
        """The Python the replay runs per step: forward (keeping what backward needs), then backward."""
        return forward_source(self, keep=True) + "\n\n" + backward_source(self)


def traced_ops(node: Context) -> list[TapeOp]:
    """The tape ops inside a ``Scan`` or ``Compiled`` graph node (for tools that list ops); [] otherwise."""
    holder = getattr(node, "loop", None) or getattr(node, "program", None)
    return list(holder.tape.ops) if holder is not None else []


# ------------------------------------------------------------------------- the tracer


class Tracer:
    """Writes the tape while a function runs: ``Function.apply`` calls :meth:`record`.

    Values are known by the identity of the Tensors that hold them; every Tensor seen is
    kept alive until tracing ends, so no identity is reused meanwhile.
    """

    def __init__(self, name: str):
        self.name = name  # what is being traced, for error messages
        self.slot_of: dict[int, int] = {}
        self.alive: list[Tensor] = []
        self.meta: list[tuple[tuple[int, ...], Any]] = []
        self.requires: list[bool] = []
        self.devices: set[str] = set()
        self.captured: list[Tensor] = []
        self.captured_slots: list[int] = []
        self.input_slots: set[int] = set()
        self.ops: list[TapeOp] = []
        self.contexts: dict[int, Context] = {}  # id(op) -> the Context its forward filled while tracing

    def _new_slot(self, tensor: Tensor, requires: bool) -> int:
        slot = len(self.meta)
        self.slot_of[id(tensor)] = slot
        self.alive.append(tensor)
        self.meta.append((tensor.shape, tensor.dtype))
        self.requires.append(requires)
        self.devices.add(tensor.device)
        return slot

    def input(self, value: Tensor, requires: bool | None = None) -> Tensor:
        """A stand-in for an explicit input: same values, no graph, its own slot.

        It wants a gradient if ``value`` does, or if ``requires`` says so (a carry
        that starts constant but depends on what requires grad after one step).
        """
        requires = (value.requires_grad if requires is None else requires) and is_grad_enabled()
        stand_in = Tensor._make(value.data, value.device, requires_grad=requires)
        self.input_slots.add(self._new_slot(stand_in, requires))
        return stand_in

    def slot(self, tensor: Tensor) -> int:
        """The slot of a tensor; one never seen before is an implicit input."""
        slot = self.slot_of.get(id(tensor))
        if slot is None:
            slot = self._new_slot(tensor, tensor.requires_grad and is_grad_enabled())
            self.captured.append(tensor)
            self.captured_slots.append(slot)
        return slot

    def rebind(self, tensor: Tensor, result: Tensor, spelling: str) -> None:
        """An in-place op while tracing: ``tensor`` holds ``result``'s value from now on.

        Only a value the function computed may change in place: a write into an input
        or a captured tensor (a parameter) would happen once, at trace time, and never
        at a replay.
        """
        slot = self.slot_of.get(id(tensor))
        if slot is None or slot in self.captured_slots or slot in self.input_slots:
            function.check_not_tracing(f"in-place {spelling} on an input or a tensor the function reads")
        self.slot_of[id(tensor)] = self.slot_of[id(result)]

    def is_traced_value(self, tensor: Tensor) -> bool:
        """True for a value computed from the inputs while tracing (not a constant)."""
        slot = self.slot_of.get(id(tensor))
        return slot is not None and slot not in self.captured_slots

    def record(self, cls: type[Function], args: tuple, kwargs: dict) -> Any:
        """Apply ``cls`` as ``Function.apply`` would, and write the application on the tape."""
        slots, constants, arrays, needs = [], [], [], []
        device = None
        grad_enabled = is_grad_enabled()
        for arg in args:
            if isinstance(arg, Tensor):
                if device is None:
                    device = arg.device
                elif arg.device != device:
                    raise backend.DeviceError(
                        f"{cls.__name__}: inputs are on different devices, {device!r} and {arg.device!r}"
                    )
                slot = self.slot(arg)
                slots.append(slot)
                constants.append(None)
                arrays.append(arg.data)
                needs.append(grad_enabled and self.requires[slot])
            else:
                slots.append(-1)
                constants.append(arg)
                arrays.append(arg)
                needs.append(False)
        target = backend.get_device(device or backend.default_device())
        ctx = Context(cls, target.xp, target.name)
        output = cls.forward(ctx, *arrays, **kwargs)
        multi_output = type(output) is tuple
        requires = any(needs)
        results, output_slots, wrap_scalars = [], [], False
        output_device = backend.get_device(ctx.output_device)
        for array in output if multi_output else (output,):
            if not isinstance(array, output_device.array_type):
                array, wrap_scalars = output_device.xp.asarray(array), True
            tensor = Tensor._make(array, output_device.name, requires_grad=requires)
            output_slots.append(self._new_slot(tensor, requires))
            results.append(tensor)
        needs_tuple = tuple(needs)
        op = TapeOp(
            cls, target.name, tuple(slots), tuple(constants), dict(kwargs), tuple(output_slots),
            multi_output, needs_tuple, wrap_scalars, grad_enabled, step_needs=needs_tuple,
        )  # fmt: skip
        op.saves_only = cls.__module__ == ops.__name__ and not ctx.__dict__ and ctx.output_device == ctx.device
        if cls.__module__ == ops.__name__ and ctx.saved_tensors:
            op.saved_as_output = saved_as_output(ctx.saved_tensors, results)
        self.ops.append(op)
        self.contexts[id(op)] = ctx
        return tuple(results) if multi_output else results[0]

    def tape(self, input_slots: list[int], output_slots: list[int]) -> Tape:
        if len(self.devices) > 1:
            raise TraceError(
                f"{self.name}: the traced function uses tensors on several devices "
                f"({sorted(self.devices)}); move them to one device first"
            )
        device = next(iter(self.devices)) if self.devices else backend.default_device()
        return Tape(
            device, backend.get_array_module(device), self.meta, self.requires, input_slots,
            self.captured, self.captured_slots, self.ops, output_slots,
        )  # fmt: skip


def saved_as_output(saved: tuple, results: list[Tensor]) -> tuple[int, ...]:
    """For each saved array, the index of the result it is (by identity), or -1."""
    indices = []
    for array in saved:
        index = -1
        for k, result in enumerate(results):
            if result.data is array:
                index = k
                break
        indices.append(index)
    return tuple(indices)


def trace(
    name: str, fn: Callable[..., Any], inputs: Sequence[Tensor], requires: Sequence[bool | None] | None = None
) -> tuple[list[Tensor], Any, Tracer]:
    """Run ``fn(*stand_ins)`` once under a tracer; return the stand-ins, fn's result and the tracer.

    The caller turns the result into output slots (:meth:`Tracer.slot`) and calls
    :meth:`Tracer.tape`. Tracing nests: a ``scan`` inside a compiled function is traced
    on its own, then recorded as one op of the outer tape.
    """
    tracer = Tracer(name)
    requires = requires or [None] * len(inputs)
    stand_ins = [tracer.input(value, wants) for value, wants in zip(inputs, requires)]
    outer = function.set_tracer(tracer)
    try:
        result = fn(*stand_ins)
    finally:
        function.set_tracer(outer)
    return stand_ins, result, tracer


# ------------------------------------------------------------------ replay: forward
#
# A replay runs the tape's ops in order on raw arrays. It runs once per op per step, so
# the tape is turned into straight-line Python, one line per op (``print(tape.source())``
# shows it), instead of interpreting a list of ops: no loop, no lookups, no Tensor.


def forward_source(tape: Tape, keep: bool) -> str:
    """The source of ``forward(values, transposed, shared)``: every op once, in tape order.

    It reads its inputs from ``values`` (a list indexed by slot), writes the tape's
    outputs back there, and with ``keep`` returns the record of every op backward will
    visit (in tape order): its Context, or for a ``saves_only`` op the tuple it saved.
    A Context is an instance of the op's :func:`replay_context` class, made without
    calling ``__init__``: a fresh one per call for a user's op (``cK = new(contextK)``),
    and for a built-in one that writes only ``saved_tensors`` one of ``shared``, this
    thread's Contexts for this replay (:meth:`Tape.shared_contexts`), reused every call.
    Each op reads its saved tuple back right after its forward (``sK = cK.saved_tensors``),
    and the shared Contexts are emptied at the end, so they keep no array alive.
    """
    shared = shared_indices(tape, "forward_keep" if keep else "forward")
    lines = ["def forward(values, transposed, shared):"]
    for slot in sorted(set(tape.input_slots + tape.captured_slots)):
        lines.append(f"    v{slot} = values[{slot}]")
    if shared:
        lines.append(f"    {_names('c', shared)} = shared")
    lines.extend(forward_body(tape, "    ", shared, read_saved=keep))
    if shared:
        lines.append(f"    {' = '.join(f'c{index}.saved_tensors' for index in shared)} = ()")
    for slot in dict.fromkeys(tape.output_slots):  # a slot that is both carry and y once
        lines.append(f"    values[{slot}] = v{slot}")
    lines.append(f"    return [{', '.join(record_names(tape))}]" if keep else "    return None")
    return "\n".join(lines)


def forward_body(
    tape: Tape, indent: str, scratch: Collection[int] = (), read_saved: bool = False, in_blocks: bool = False
) -> list[str]:
    """One line per op (and the line making its Context): ``vN = forwardK(cK, ...)``, in tape order.

    The ops of ``scratch`` (indices) use a Context made before these lines (one for every
    step of a loop, or for every call): they only reset its ``saved_tensors`` (not even
    that where the op's ``saves`` is not empty: its forward then always saves, and
    overwrites the last step's), and with ``read_saved`` those that record read it back
    into ``sK`` right after their forward.
    A value the ops compute is let go (``del vN``) right after its last reader, unless
    it is one of the tape's outputs (read after these lines): see :func:`last_readers`.
    With ``in_blocks`` (a loop recomputing steps), a ``batched`` op is not called: its
    Context gets the arrays its forward would have saved (see :func:`mark_batched`), and
    where the step needs its result, the step reads its row ``t - base`` of the op's
    result for the block (``blockK``, see :func:`rows_read`).
    """
    dead_after = last_readers(tape)
    read = rows_read(tape) if in_blocks else set()
    unread = {op.outputs[0] for index, op in enumerate(tape.ops) if skipped(op, in_blocks) and index not in read}
    lines = []
    for index, op in enumerate(tape.ops):
        dead = ", ".join(f"v{slot}" for slot in dead_after[index] if slot not in unread)
        if skipped(op, in_blocks):
            if index in read:
                lines.append(f"{indent}v{op.outputs[0]} = block{index}[t - base]  # {op.function.__name__}, batched")
            saved = "".join(f"{name}, " for name in saved_values(index, op))
            lines.append(f"{indent}c{index}.saved_tensors = ({saved})")
            if dead:
                lines.append(f"{indent}del {dead}")
            continue
        arguments = [f"v{slot}" if slot >= 0 else f"const{index}_{i}" for i, slot in enumerate(op.slots)]
        if op.kwargs:
            arguments.append(f"**kwargs{index}")
        if op.invariant_weight >= 0:
            arguments.append(f"weight_t=transposed[{op.invariant_weight}]")
        results = ", ".join(f"v{slot}" for slot in op.outputs) + (
            "," if op.multi_output and len(op.outputs) == 1 else ""
        )
        if index not in scratch:
            lines.append(f"{indent}c{index} = new(context{index}); c{index}.saved_tensors = ()")
        elif not op.function.saves:  # (a built-in that saves something always does, in full: no reset needed)
            lines.append(f"{indent}c{index}.saved_tensors = ()")
        lines.append(f"{indent}{results} = forward{index}(c{index}, {', '.join(arguments)})  # {op.function.__name__}")
        if op.wrap_scalars:
            lines.extend(f"{indent}v{slot} = xp.asarray(v{slot})" for slot in op.outputs)
        if read_saved and index in scratch and op.records:
            lines.append(f"{indent}s{index} = c{index}.saved_tensors")
        if dead:
            lines.append(f"{indent}del {dead}")
    return lines


def skipped(op: TapeOp, in_blocks: bool) -> bool:
    """Whether the steps of a recomputation leave ``op`` out: a ``saves_only`` op run for the whole block."""
    return in_blocks and op.batched and op.saves_only


def rows_read(tape: Tape) -> set[int]:
    """The batched ops whose row the steps of a recomputation read: an op of the step reads it, or a record keeps it.

    A result that only other batched ops read (an LSTM's x_t W_ihᵀ + b, added into the
    gates for the whole block) is not read at all, and is freed once the block's results are made.
    """
    reads = set(tape.output_slots)
    for op in tape.ops:
        if skipped(op, True):  # not called at a step: only what it saves is read there
            reads.update(slot for slot, _ in saved_slots(op))
        else:
            reads.update(op.slots)
    return {index for index, op in enumerate(tape.ops) if skipped(op, True) and op.outputs[0] in reads}


def last_readers(tape: Tape) -> list[list[int]]:
    """For each op, the values computed by the tape whose last reader it is (or its unread outputs).

    Held in a local of the replay until the function returns (or the next step of a
    loop rebinds it), a temporary would keep its memory from the next op's arrays: an
    op's output that later ops only read, not save (an LSTM step's ``x_t W_ihᵀ`` once it
    is added into the gates, a gate before its sigmoid), is freed at once and its memory
    reused while still in cache. What is saved for backward stays alive through its
    record; the tape's outputs (for a loop's step: its carry and y) are read after the ops.
    """
    last: dict[int, int] = {}
    for index, op in enumerate(tape.ops):
        for slot in op.slots:
            if slot in last:
                last[slot] = index
        for slot in op.outputs:
            last[slot] = index
    dead_after: list[list[int]] = [[] for _ in tape.ops]
    outputs = set(tape.output_slots)
    for slot, index in last.items():
        if slot not in outputs:
            dead_after[index].append(slot)
    return dead_after


def record_names(tape: Tape) -> list[str]:
    """What one call of a compiled tape keeps of each op that records, in tape order: ``sK`` or ``cK``.

    ``sK``, the saved tuple, for a ``saves_only`` op (its Context is shared), else ``cK``,
    the op's own Context. The reverse replay unpacks the record into the same names.
    """
    return [f"s{index}" if op.saves_only else f"c{index}" for index, op in enumerate(tape.ops) if op.records]


def scratch_contexts(tape: Tape, keep: bool) -> set[int]:
    """The ops whose Context a loop makes once, for all its steps: built-ins it need not keep per step.

    That is a built-in op backward does not need (``keep`` off, or an op that does not
    record), or one whose forward writes nothing to its Context but ``saved_tensors``
    (``saves_only``): of that one a step keeps just the saved tuple.
    """
    return {
        index
        for index, op in enumerate(tape.ops)
        if op.saves_only or (op.function.__module__ == ops.__name__ and not (keep and op.records))
    }


def shared_indices(tape: Tape, kind: str) -> list[int]:
    """The ``saves_only`` ops: those a tape's replay ``kind`` runs on a Context made once per thread.

    Their forward writes nothing to the Context but ``saved_tensors``, which the replay
    reads back and empties, so reusing the Context keeps nothing from one call to the
    next. The reverse replay needs only those that record (the others have no VJP). (A
    loop over steps also uses this for its reverse replay: there, one Context per loop.)
    """
    return [index for index, op in enumerate(tape.ops) if op.saves_only and (kind != "backward" or op.records)]


def kept_records(tape: Tape) -> list[str]:
    """What a loop's step keeps of each op that records, in tape order: its Context, or its saved tuple.

    The same expressions are the targets the reverse replay unpacks a step's record into.
    """
    recording = [(index, op) for index, op in enumerate(tape.ops) if op.records]
    return [f"c{index}.saved_tensors" if op.saves_only else f"c{index}" for index, op in recording]


def run_forward(
    tape: Tape, values: list[Any], keep: bool, transposed: dict[int, Any] | None = None
) -> list[Any] | None:
    """Run every op of the tape once on the arrays in ``values``; with ``keep``, return its records.

    A record per op that records, in tape order: its Context, or the tuple it saved (see
    :func:`forward_source`). ``transposed`` maps the slot of a loop-invariant Linear
    weight to its contiguous transpose (see ``ops.Linear``).
    """
    kind = "forward_keep" if keep else "forward"
    return tape.replay(kind)(values, transposed, tape.shared_contexts(kind))


# ----------------------------------------------------------------- replay: backward


def backward_source(tape: Tape) -> str:
    """The source of ``backward(records, grads, on_deferred, shared)``: the VJPs in reverse tape order.

    ``records`` is what the forward replay returned; a saved tuple goes back into its
    op's shared Context (one of ``shared``, this thread's) right before the op's VJP.
    ``grads`` holds a gradient (or None) per slot, seeded at the tape's outputs; on
    return it holds the gradient of every input slot. After each VJP, an input's
    gradient is summed back to the input's shape and dtype (``fit``: broadcasting is
    undone here, once, as in eager mode) and added to what the input has so far.
    ``on_deferred(op_index, ctx, grad)`` receives the output gradient of each op with
    deferred inputs (their gradient is summed over steps later).
    """
    lines = ["def backward(records, grads, on_deferred, shared):"]
    kept = record_names(tape)
    if kept:
        lines.append(f"    {', '.join(kept)}, = records")
    shared = shared_indices(tape, "backward")
    if shared:
        lines.append(f"    {_names('c', shared)} = shared")
    seeded = set(tape.output_slots)
    for slot in gradient_slots(tape):
        lines.append(f"    g{slot} = grads[{slot}]" if slot in seeded else f"    g{slot} = None")

    def on_deferred(index: int, given: str) -> list[str]:
        return [f"if on_deferred is not None: on_deferred({index}, c{index}, {given})"]

    lines.extend(vjp_body(tape, "    ", on_deferred, seeded, restore=shared))
    if shared:
        lines.append(f"    {' = '.join(f'c{index}.saved_tensors' for index in shared)} = ()")
    for slot in sorted(set(tape.input_slots + tape.captured_slots)):
        lines.append(f"    grads[{slot}] = g{slot}")
    return "\n".join(lines)


def gradient_slots(tape: Tape) -> list[int]:
    """The slots a reverse replay holds a gradient variable ``gN`` for (each starts a step as None or a seed)."""
    used = {slot for op in tape.ops if op.records for slot in (*op.slots, *op.outputs) if slot >= 0}
    return sorted(used | set(tape.output_slots) | set(tape.input_slots + tape.captured_slots))


def replay_order(tape: Tape) -> list[tuple[int, TapeOp]]:
    """The ops whose VJPs a reverse replay runs, in the order it runs them: last recorded op first."""
    return [(index, op) for index, op in reversed(list(enumerate(tape.ops))) if op.records]


def vjp_body(
    tape: Tape, indent: str, on_deferred: Callable[[int, str], list[str]], seeded: set[int],
    restore: Collection[int] = (),
) -> list[str]:  # fmt: skip
    """The VJP of every recording op in :func:`replay_order`, each input's gradient summed into its ``gN``.

    ``on_deferred(index, given)`` gives the lines that hand op ``index``, one with
    deferred inputs, its output gradient (the expression ``given``). ``seeded``: the slots whose ``gN``
    may hold a gradient before the first VJP (the outputs'). A slot that no seed and
    only one VJP input reaches takes that gradient as it is, without the test for a sum.
    The ops of ``restore`` (indices) first put their saved tuple ``sK`` back into ``cK``.
    After its VJP an op's output gradients are let go (``gN = None``): no other line reads them.
    """
    recording = replay_order(tape)
    reached = collections.Counter(
        slot for _, op in recording for slot, need in zip(op.slots, op.step_needs) if need and slot >= 0
    )
    lines = []
    for index, op in recording:
        name = op.function.__name__
        if op.multi_output:
            condition = " or ".join(f"g{slot} is not None" for slot in op.outputs)
            given = ", ".join(f"g{slot} if g{slot} is not None else zeros(*meta[{slot}])" for slot in op.outputs)
        else:
            condition, given = f"g{op.outputs[0]} is not None", f"g{op.outputs[0]}"
        lines.append(f"{indent}if {condition}:  # {name}")
        if index in restore:
            lines.append(f"{indent}    c{index}.saved_tensors = s{index}")
        if op.deferred:
            lines.extend(f"{indent}    {line}" for line in on_deferred(index, given))
        count = len(op.slots)
        primitive = op.function.__module__ == ops.__name__
        if primitive and count == 1:  # its VJP returns the one gradient (or a 1-tuple)
            lines.append(f"{indent}    a = backward{index}(c{index}, {given})")
            lines.append(f"{indent}    if type(a) is tuple: a = a[0]")
        else:
            lines.append(f"{indent}    r = backward{index}(c{index}, {given})")
            if count == 1:
                lines.append(f"{indent}    if type(r) is not tuple: r = (r,)")
        if not primitive:  # (a primitive's VJP returns one gradient per input: ops.py is tested for it)
            lines.append(
                f"{indent}    if type(r) is not tuple or len(r) != {count}: r = check_arity(r, {count}, {name!r})"
            )
        for position, (slot, need) in enumerate(zip(op.slots, op.step_needs)):
            if not need:
                continue
            if not (primitive and count == 1):
                lines.append(f"{indent}    a = r[{position}]")
            lines.append(f"{indent}    if a is not None:")
            if not (primitive and gradient_matches_input(tape, op, position)):
                # "is not": a dtype equal to the input's but another object only takes the way through fit
                lines.append(f"{indent}        if a.shape != shape{slot} or a.dtype is not dtype{slot}:")
                lines.append(f"{indent}            a = fit(a, shape{slot}, dtype{slot}, {name!r})")
            if reached[slot] == 1 and slot not in seeded:
                lines.append(f"{indent}        g{slot} = a")
            else:
                lines.append(f"{indent}        g{slot} = a if g{slot} is None else g{slot} + a")
        lines.append(f"{indent}{' = '.join(f'g{slot}' for slot in op.outputs)} = None  # read by this VJP only")
    return lines


def gradient_matches_input(tape: Tape, op: TapeOp, position: int) -> bool:
    """Whether a primitive's VJP surely returns input ``position``'s gradient in the input's shape and dtype.

    A primitive's VJP gives each input a gradient shaped like that input or, for an
    elementwise op that broadcasts, like its output; its dtype is the one its arrays
    share. So when the input looks exactly like the (single) output and the op mixes no
    dtypes, the gradient fits the input as it is, at every step, and the replay can skip
    checking it (the check and ``fit`` stay wherever a gradient might not fit).
    """
    if op.multi_output or op.slots[position] < 0:
        return False
    output = tape.meta[op.outputs[0]]
    dtypes = {tape.meta[slot][1] for slot in op.slots if slot >= 0}
    return tape.meta[op.slots[position]] == output and dtypes == {output[1]}


def run_backward(tape: Tape, records: list[Any], grads: list[Any], on_deferred: Callable | None = None) -> None:
    """Run the VJPs of one replayed call in reverse tape order, on its ``records`` (see :func:`backward_source`)."""
    tape.replay("backward")(records, grads, on_deferred, tape.shared_contexts("backward"))


def check_arity(input_grads: Any, count: int, name: str) -> tuple:
    """A VJP's result as a tuple of one gradient per forward input, or a clear error."""
    if type(input_grads) is not tuple:
        input_grads = (input_grads,)
    if len(input_grads) != count:
        raise RuntimeError(
            f"{name}.backward returned {len(input_grads)} gradients for {count} inputs; "
            "return one per forward input (None for no gradient)"
        )
    return input_grads


@functools.lru_cache(maxsize=256)
def _code(source: str, kind: str) -> Any:
    """The compiled source (tapes of other structures may write the same source: it compiles once)."""
    return builtins.compile(source, f"<tl.scan replay: {kind}>", "exec")


def build_replay(tape: Tape, kind: str) -> Callable:
    """The replay function of ``kind`` ("forward", "forward_keep", "backward") for this tape."""
    source = backward_source(tape) if kind == "backward" else forward_source(tape, keep=kind == "forward_keep")
    return compile_replay(tape, source, kind)


def compile_replay(tape: Tape, source: str, kind: str) -> Callable:
    """The function ``source`` defines (named as ``kind`` up to its first "_"), run among the tape's ops."""
    code = _code(source, kind)
    namespace: dict[str, Any] = {
        "new": object.__new__, "xp": tape.xp, "zeros": tape.xp.zeros, "meta": tape.meta,
        "fit": fit_gradient, "check_arity": check_arity,
    }  # fmt: skip
    for index, op in enumerate(tape.ops):
        namespace[f"context{index}"] = replay_context(op.function, tape.xp, op.device, op.step_needs)
        namespace[f"forward{index}"] = op.function.forward
        namespace[f"backward{index}"] = op.function.backward
        namespace[f"kwargs{index}"] = op.kwargs
        for i, constant in enumerate(op.constants):
            namespace[f"const{index}_{i}"] = constant
    for slot, (shape, dtype) in enumerate(tape.meta):
        namespace[f"shape{slot}"], namespace[f"dtype{slot}"] = shape, dtype
    exec(code, namespace)
    return namespace.pop(kind.split("_")[0])  # popped: the function must not hold itself (a reference cycle)


@functools.lru_cache(maxsize=1024)
def replay_context(function: type[Function], xp: Any, device: str, needs: tuple[bool, ...]) -> type[Context]:
    """The Context class of one op in a replay: what every step's Context shares, as class attributes.

    A replayed op gets a fresh Context per step (it holds that step's saved arrays),
    made by ``object.__new__(cls)``: the op, array module, device and which inputs
    want a gradient are read from the class, so nothing but the saved arrays is
    written per step.
    """
    fields = {"function": function, "xp": xp, "device": device, "output_device": device}
    fields.update(needs_input_grad=needs, clock=0, freed=False, __slots__=())
    return type(f"{function.__name__}ReplayContext", (Context,), fields)


class Accumulator:
    """Gradients summed over steps into one buffer, added in place once the buffer is ours."""

    def __init__(self, count: int):
        self.grads: list[Any] = [None] * count
        self.owned = [False] * count

    def add(self, index: int, grad: Any) -> None:
        if grad is None:
            return
        current = self.grads[index]
        if current is None:
            self.grads[index] = grad
        elif self.owned[index]:
            current += grad
        else:
            self.grads[index] = current + grad
            self.owned[index] = True


# ------------------------------------------------------------- loop-invariant ops


def hoist_invariant_ops(tape: Tape) -> None:
    """Apply once, before the loop, every op of the step that reads only loop-invariant values.

    An op whose Tensor inputs are all implicit inputs of the step (parameters: the same
    at every step), or results of such ops, computes the same value at every step:
    ``b_ih + b_hh`` in an LSTM step, ``W * mask`` in a user's cell. It is applied here
    once, as an ordinary op of the graph outside the loop (or of the tape of a compiled
    function that runs this scan), and its results become implicit inputs of the step.
    Backward then sums the loop's gradients for those results over the steps and runs
    the op's VJP once: the same as summing the VJP over the steps, as a VJP is linear in
    its output gradient. An implicit input that only hoisted ops read leaves the step.
    """
    invariant = dict(zip(tape.captured_slots, tape.captured))  # slot -> the Tensor that holds it
    kept = []
    for op in tape.ops:
        inputs = [slot for slot in op.slots if slot >= 0]
        if not inputs or any(slot not in invariant for slot in inputs):
            kept.append(op)
            continue
        args = [invariant[slot] if slot >= 0 else constant for slot, constant in zip(op.slots, op.constants)]
        results = op.function.apply(*args, **op.kwargs)
        for slot, result in zip(op.outputs, results if op.multi_output else (results,)):
            invariant[slot] = result
    if len(kept) == len(tape.ops):
        return
    read = {slot for op in kept for slot in op.slots} | set(tape.output_slots)
    tape.ops = kept
    tape.captured_slots = [slot for slot in invariant if slot in read]
    tape.captured = [invariant[slot] for slot in tape.captured_slots]


# ------------------------------------------------------ deferred weight gradients


def mark_deferred(tape: Tape, x_in: Collection[int] = ()) -> None:
    """Find the inputs whose gradient over many steps is one VJP on the stacked steps.

    ``Linear(x, W, b)``'s VJP gives ``W`` the gradient ``gᵀ x`` and ``b`` the gradient
    ``g``; summed over the steps of a loop that is ``Gᵀ X`` and ``Σ G``, with G and X the
    per-step g and x stacked: the same VJP, called once on stacked arrays. The same holds
    for ``MatMul(a, B)`` with 2-D a. So when W (or b, or B) is an implicit input of the
    loop, the per-step VJP skips it and :func:`deferred_gradients` does it afterwards.
    And when x is x_t itself (of ``x_in``, the slots of the loop's xs) and W is the same
    at every step, x_t's gradient ``g_t W`` at every step is ``G W``, one product too
    (a stacked layer's input, which wants a gradient): the rows of xs's gradient.
    """
    captured = set(tape.captured_slots)
    for op in tape.ops:
        if op.function is ops.Linear and op.slots[1] in captured and "weight_t" not in op.kwargs:
            op.invariant_weight = op.slots[1]
        if not op.records:
            continue
        if op.function is ops.Linear:
            candidates = [i for i in (1, 2) if i < len(op.slots) and op.slots[i] in captured]
            if op.slots[0] in x_in and op.slots[1] in captured:
                candidates.insert(0, 0)
        elif op.function is ops.MatMul and len(tape.meta[op.slots[0]][0]) == 2 and len(tape.meta[op.slots[1]][0]) == 2:
            candidates = [1] if op.slots[1] in captured else []
        else:
            continue
        deferred = tuple(i for i in candidates if op.needs[i])
        if deferred:
            op.deferred = deferred
            op.step_needs = tuple(need and i not in deferred for i, need in enumerate(op.needs))


# ------------------------------------------ recomputed steps: ops run for many steps at once

# A recomputed segment runs its batched ops on this many numbers' worth of steps at once
# (per op's result: 1 MiB of float32), so their results are still in cache when the
# steps read their rows, and a long segment holds no large arrays.
BATCH_NUMBERS = 1 << 18


def mark_batched(loop: Loop) -> None:
    """Find the ops a checkpointed loop runs for a whole block of steps at once when it recomputes them.

    Backward recomputes each segment of steps from its kept carry. By then the loop
    knows more than the first forward did: every x_t, and every carry that the step
    also returns as y (an RNN's or LSTM's h, held in the y buffer: h_{t-1} of step t is
    a row of it). An op whose inputs are such rows, results of other such ops, or the
    same at every step (parameters, constants) needs nothing from the steps before it,
    so it can run for all the steps of a block in one call, if its Function is
    ``row_wise`` in the inputs that change: in an LSTM, ``x_t W_ihᵀ + b``, then
    ``h_{t-1} W_hhᵀ + (x_t W_ihᵀ + b)``, its split into gates and their sigmoids and tanh
    become one call each per block of k steps instead of k. The other ops (those
    reading c_{t-1}) still run step by step, reading their row of those results.

    Backward needs each step's record as before. A ``saves_only`` batched op is not
    run at a step: the step reads its row of the op's result and keeps the rows (or
    the same arrays) its forward would have saved (:func:`saved_values`); any other
    batched op (``Split``: its Context holds the axis) still runs at each step as well.
    """
    tape = loop.tape
    captured = set(tape.captured_slots)
    known = set(loop.x_in) | set(loop.carries_in_ys())  # values whose rows are known before a recomputation
    for index, op in enumerate(tape.ops):
        varying = [i for i, slot in enumerate(op.slots) if slot >= 0 and slot not in captured]
        ndim = len(tape.meta[op.outputs[0]][0])
        op.batched = (
            bool(varying)
            and all(i in row_wise_inputs(op.function) and op.slots[i] in known for i in varying)
            and all(len(tape.meta[op.slots[i]][0]) == ndim for i in varying)  # stacked, they still broadcast
            and all(op.kwargs.get(name) is not None for name in op.function.axis_arguments)  # (given, an int)
            and not op.wrap_scalars
            and (not op.saves_only or (not op.multi_output and saved_values(index, op) is not None))  # (see skipped)
        )
        if op.batched:
            known.update(op.outputs)
    loop.batched = [index for index, op in enumerate(tape.ops) if op.batched]
    loop.read_blocks = rows_read(tape)


def row_wise_inputs(function: type[Function]) -> tuple[int, ...]:
    """``function.row_wise``, as declared by the class whose ``forward`` runs (a new forward promises nothing)."""
    owner = next(klass for klass in function.__mro__ if "forward" in vars(klass))
    return vars(owner).get("row_wise", ())


def saved_slots(op: TapeOp) -> list[tuple[int, int]] | None:
    """What a built-in op's forward saves, as (slot, input position); position -1 for its output.

    The slot is -1 for a constant argument. None where ``saves`` does not say, or names
    a keyword argument.
    """
    if op.function.saves is None:
        return None
    saved = []
    for kind, position in declared_roles(op.function):
        if kind == "output":
            saved.append((op.outputs[position], -1))
        elif position < len(op.slots):
            saved.append((op.slots[position], position))
        else:
            return None  # (a keyword argument)
    return saved


def saved_values(index: int, op: TapeOp) -> list[str] | None:
    """What built-in op ``index``'s forward saves, as the replay names those values (:func:`saved_slots`)."""
    saved = saved_slots(op)
    if saved is None:
        return None
    return [f"v{slot}" if slot >= 0 else f"const{index}_{position}" for slot, position in saved]


def deferred_gradients(
    tape: Tape,
    op_index: int,
    saved: list[tuple[Any, ...]],
    stacked_grad: Any,
    first_input: Any = None,
) -> list[tuple[int, Any]]:
    """Gradients of one op's deferred inputs over some steps, from what it saved and its output gradient at each.

    Calls the op's own VJP once, on the first input and the output gradient of every
    step stacked along a new leading axis (rows of one matrix for ``MatMul``).
    ``saved`` holds the op's ``saved_tensors`` at each step; ``stacked_grad`` is the
    output gradients, stacked in the same order; ``first_input``, when the caller has
    it, is the first inputs of these steps already stacked (a slice of xs or ys);
    otherwise they are stacked from ``saved``. A loop-invariant input's gradient is
    summed over the steps; a deferred first input's (x_t) is that of every step, stacked.
    """
    op = tape.ops[op_index]
    if first_input is None:
        first_input = stack_steps(tape.xp, [arrays[0] for arrays in saved])
    if op.function is ops.MatMul:  # 2-D rows of every step, one below the other
        first_input = first_input.reshape(-1, first_input.shape[-1])
        stacked_grad = stacked_grad.reshape(-1, stacked_grad.shape[-1])
    ctx = Context(op.function, tape.xp, op.device)
    ctx.saved_tensors = (first_input, *saved[0][1:])
    ctx.needs_input_grad = tuple(i in op.deferred for i in range(len(op.slots)))
    input_grads = op.function.backward(ctx, stacked_grad)
    result = []
    for i in op.deferred:
        shape, dtype = tape.meta[op.slots[i]]
        if i == 0:  # x_t of every step: the stacked shape
            shape = first_input.shape
        result.append((op.slots[i], fit_gradient(input_grads[i], shape, dtype, op.function.__name__)))
    return result


class DeferredSums:
    """The deferred gradients of a loop's backward (weights, x_t): collected per step, one VJP per block.

    The reverse replay visits the steps block by block (:func:`defer_block` steps, see
    :meth:`start_block`). At each step, the generated loop copies the output gradient
    of each op with deferred inputs into its row ``t - first`` of the op's block buffer
    (:meth:`new_buffer`, made at the block's first copy), while it is still in cache
    (stacking the block's arrays at its end would read them back from memory), and
    appends ``(t, what the op saved, that buffer)`` to the op's :meth:`entries`. An
    array that two ops share (Linear's bias gradient is its output gradient, passed on
    unchanged) is copied once: the second op's entry names the first one's buffer. At
    the end of the block :meth:`flush` calls :func:`deferred_gradients` once per op and
    adds the results into ``captured``, or an x_t's into its rows of xs's gradient
    (``xs_grads``). An op input that is a row of an array the loop already holds is
    taken as a slice of it instead of being stacked: x_t is row t of xs, and a carry the
    step also returns as y (an RNN's h) is a row of that y's buffer (``carry_rows``, see
    :meth:`Loop.y_buffers`).
    """

    def __init__(
        self, loop: Loop, xs: Sequence[Any], carry_rows: dict[int, tuple[Any, int]], captured: Accumulator,
        xs_grads: Sequence[Any],
    ):  # fmt: skip
        self.tape, self.captured = loop.tape, captured
        self.xs_grads = {slot: grad for slot, grad in zip(loop.x_in, xs_grads) if grad is not None}
        # slot -> (array, shift): the slot's value at step t is array[t + shift]
        self.rows: dict[int, tuple[Any, int]] = {slot: (array, 0) for slot, array in zip(loop.x_in, xs)}
        self.rows.update(carry_rows)
        self.position_of = {slot: index for index, slot in enumerate(loop.tape.captured_slots)}
        self.first, self.count = 0, 0  # the block: steps first .. first + count - 1
        self.pending: dict[int, list[tuple[int, tuple, Any]]] = {}  # op -> (t, its saved arrays, its buffer)

    def start_block(self, times: range) -> None:
        """The next steps collected are those of ``times`` (in any order): rows t - min(times) of the buffers."""
        self.first, self.count = min(times), len(times)

    def new_buffer(self, grad: Any) -> Any:
        """A block buffer for gradients like ``grad``: one row per step of the block."""
        return self.tape.xp.empty((self.count, *grad.shape), dtype=grad.dtype)

    def entries(self, op_index: int) -> list[tuple[int, tuple, Any]]:
        """The list of op ``op_index``'s ``(t, saved, buffer)`` of this block: the loop appends one per step."""
        return self.pending.setdefault(op_index, [])

    def flush(self) -> None:
        for op_index, entries in self.pending.items():
            if not entries:  # (no gradient reached the op in this block)
                continue
            if entries[0][0] > entries[-1][0]:  # collected in visiting order, backward: ascending time, as rows of xs
                entries.reverse()
            first_input = self._rows_slice(op_index, entries)
            saved = [arrays for _, arrays, _ in entries]
            for slot, grad in deferred_gradients(self.tape, op_index, saved, self._grads(entries), first_input):
                if slot in self.xs_grads:
                    self._add_rows(self.xs_grads[slot], entries, grad)
                else:
                    self.captured.add(self.position_of[slot], grad)
        self.pending.clear()

    @staticmethod
    def _add_rows(xs_grad: Any, entries: list[tuple[int, tuple, Any]], grad: Any) -> None:
        """Add x_t's gradient at these steps (``grad``, stacked) into row t of xs's gradient (written by the steps)."""
        first, last = entries[0][0], entries[-1][0]
        if last - first + 1 == len(entries):
            xs_grad[first : last + 1] += grad
        else:  # (a step without one)
            for row, (t, _, _) in zip(grad, entries):
                xs_grad[t] += row

    def _grads(self, entries: list[tuple[int, tuple, Any]]) -> Any:
        """The output gradients of these steps (ascending time), stacked: a slice of one buffer, if they share it."""
        buffer = entries[0][2]
        start = entries[0][0] - self.first
        if len(entries) == entries[-1][0] - entries[0][0] + 1 and all(entry[2] is buffer for entry in entries):
            return buffer[start : start + len(entries)]
        return stack_steps(self.tape.xp, [entry[2][entry[0] - self.first] for entry in entries])  # (a step without one)

    def _rows_slice(self, op_index: int, entries: list[tuple[int, tuple, Any]]) -> Any:
        """The op's first inputs over these steps, stacked, from an array the loop holds; else None.

        That is ``array[first + shift : last + shift + 1]`` when the first input is a row
        of ``array`` (see ``rows``) and the steps are consecutive.
        """
        rows = self.rows.get(self.tape.ops[op_index].slots[0])
        if rows is None:
            return None
        array, shift = rows
        first, last = entries[0][0] + shift, entries[-1][0] + shift
        if last - first + 1 != len(entries):
            return None
        return array[first : last + 1]


def stack_steps(xp: Any, arrays: list[Any]) -> Any:
    """``xp.stack(arrays)`` of equal-shaped arrays, as one concatenate (stack pays per array in Python)."""
    if arrays[0].ndim == 0:
        return xp.stack(arrays)
    return xp.concatenate(arrays).reshape(len(arrays), *arrays[0].shape)


# Steps whose deferred weight gradients are summed by one VJP call: at most DEFER_BLOCK;
# fewer where a block's output gradients would take more than DEFER_BYTES (the block
# buffers are made as backward starts, when memory is at its peak), but never fewer than
# give DEFER_ROWS rows to each matmul (below that, the sums over time lose their speed).
DEFER_BLOCK = 64
DEFER_BYTES = 2 << 20
DEFER_ROWS = 512


def defer_block(tape: Tape) -> int:
    """The number of steps per block of deferred sums for this tape (see DEFER_BLOCK)."""
    steps = DEFER_BLOCK
    for op in tape.ops:
        if op.deferred:
            shape, dtype = tape.meta[op.outputs[0]]
            rows = math.prod(shape[:-1])  # per step, of the matmul over the block
            row_bytes = math.prod(shape) * tape.xp.dtype(dtype).itemsize
            fitting = DEFER_BYTES // max(row_bytes, 1)
            steps = min(steps, max(fitting, -(-DEFER_ROWS // max(rows, 1)), 1))
    return steps


# ------------------------------------------------------------------------------ scan


@dataclass(eq=False)
class Loop:
    """What ``Scan`` needs besides arrays: the step's tape and where carry, x and y live in it."""

    tape: Tape
    carry_in: list[int]
    x_in: list[int]
    carry_out: list[int]
    y_out: list[int]
    length: int
    reverse: bool
    checkpoint: int | None
    keep: bool  # some input wants a gradient: keep what backward needs
    replays: dict[str, Callable] = field(default_factory=dict)
    # The first step as tracing computed it, (its record, carry, y): the next forward
    # starts from there instead of running that step again (see traced_first_step).
    first_step: tuple[tuple[Any, ...], list[Any], list[Any]] | None = None
    structure: LoopStructure | None = None  # made by replay (see loop_structure)
    # Set by mark_batched: the ops a recomputation runs for a block of steps, and those whose rows the steps read.
    batched: list[int] = field(default_factory=list)
    read_blocks: set[int] = field(default_factory=set)

    @property
    def order(self) -> range:
        """Time indices in the order the steps run."""
        return range(self.length - 1, -1, -1) if self.reverse else range(self.length)

    @property
    def segments(self) -> list[tuple[int, int]]:
        """Runs of steps (in visiting order) replayed together in backward: one, or one per checkpoint."""
        size = self.checkpoint or self.length
        return [(start, min(start + size, self.length)) for start in range(0, self.length, size)]

    def fresh_values(self, captured: Sequence[Any]) -> list[Any]:
        values: list[Any] = [None] * len(self.tape.meta)
        for slot, array in zip(self.tape.captured_slots, captured):
            values[slot] = array
        return values

    def transposed_weights(self, values: list[Any]) -> dict[int, Any]:
        """Contiguous transposes of the loop-invariant Linear weights, made once per loop."""
        slots = {op.invariant_weight for op in self.tape.ops if op.invariant_weight >= 0}
        return {slot: backend.contiguous_transpose(self.tape.xp, values[slot]) for slot in slots}

    def y_buffers(self, init: Sequence[Any], with_initial: bool) -> tuple[list[Any], dict[int, tuple[Any, int]]]:
        """The ys buffers the steps write, and the carry parts whose every value is a row of one of them.

        A carry the step also returns as y (an RNN's h) is h_{t-1} at step t: ys[t-1],
        or the initial carry at the first step. ``with_initial`` gives such a y a buffer
        one row longer, the initial carry in its extra row (first, or last for
        ``reverse``), so that the values of that carry over any run of steps are one
        slice: ``carry_rows[slot] = (buffer, shift)``, the value at step t being
        ``buffer[t + shift]``. ys itself is the buffer less that row.
        """
        meta, xp, steps = self.tape.meta, self.tape.xp, self.length
        carry_of_y = {k: slot_in for slot_in, k in self.carries_in_ys().items()}
        ys: list[Any] = []
        carry_rows: dict[int, tuple[Any, int]] = {}
        for k, slot in enumerate(self.y_out):
            shape, dtype = meta[slot]
            if not with_initial or k not in carry_of_y:
                ys.append(xp.empty((steps, *shape), dtype=dtype))
                continue
            slot_in = carry_of_y[k]
            part = self.carry_in.index(slot_in)
            buffer = xp.empty((steps + 1, *shape), dtype=dtype)
            if self.reverse:
                buffer[steps] = init[part]
                ys.append(buffer[:steps])
                carry_rows[slot_in] = (buffer, 1)
            else:
                buffer[0] = init[part]
                ys.append(buffer[1:])
                carry_rows[slot_in] = (buffer, 0)
        return ys, carry_rows

    def carries_in_ys(self) -> dict[int, int]:
        """The carry parts the step also returns as y: {slot of the carry part: index of that y} (its first y)."""
        carried = {slot_out: slot_in for slot_in, slot_out in zip(self.carry_in, self.carry_out)}
        found: dict[int, int] = {}
        for k, slot in enumerate(self.y_out):
            if slot in carried and carried[slot] not in found:
                found[carried[slot]] = k
        return found

    def batch_steps(self) -> int:
        """Steps per block of a recomputation: as many as keep each batched op's result within ``BATCH_NUMBERS``."""
        steps = self.length
        for index in self.batched:
            numbers = math.prod(self.tape.meta[self.tape.ops[index].outputs[0]][0])
            steps = min(steps, max(1, BATCH_NUMBERS // max(numbers, 1)))
        return steps

    def batched_results(
        self, values: list[Any], xs: Sequence[Any], rows: dict[int, tuple[Any, int]], transposed: dict[int, Any],
        times: range,
    ) -> list[Any]:  # fmt: skip
        """Each batched op run once for the steps of ``times`` (consecutive); row k of a result is step min(times) + k.

        Its inputs that vary by step are the rows of those steps: of xs, of the y buffer
        that holds a carry (``rows``, see :meth:`y_buffers`), or of another batched op's
        result. Returns the results whose rows the steps read (:func:`rows_read`).
        """
        first, stop = min(times[0], times[-1]), max(times[0], times[-1]) + 1
        known = {slot: x[first:stop] for slot, x in zip(self.x_in, xs)}
        known.update({slot: buffer[first + shift : stop + shift] for slot, (buffer, shift) in rows.items()})
        results = []
        for index in self.batched:
            op = self.tape.ops[index]
            args = [
                known.get(slot, values[slot]) if slot >= 0 else constant
                for slot, constant in zip(op.slots, op.constants)
            ]
            kwargs = dict(op.kwargs)
            for name in op.function.axis_arguments:  # an axis of one step's arrays is one further on in the stack
                if kwargs[name] >= 0:
                    kwargs[name] += 1
            if op.invariant_weight >= 0:
                kwargs["weight_t"] = transposed[op.invariant_weight]
            result = op.function.forward(Context(op.function, self.tape.xp, op.device), *args, **kwargs)
            known.update(zip(op.outputs, result if op.multi_output else (result,)))
            if index in self.read_blocks:
                results.append(result)
        return results

    def take_first_step(self, carry: list[Any], y: list[Any], ys: list[Any]) -> list[Any]:
        """Write the traced first step's y parts into their rows of ``ys``; return the carry after it.

        As in a replayed step, the carry goes on with the buffer's row where it is also a y.
        """
        t = self.order[0]
        value_of = dict(zip(self.carry_out, carry))
        for buffer, slot, value in zip(ys, self.y_out, y):
            buffer[t] = value
            value_of[slot] = buffer[t]
        return [value_of[slot] for slot in self.carry_out]

    def first_record_with_rows(self, record: tuple, ys: list[Any]) -> tuple:
        """The traced first step's record, holding its y's rows of ``ys`` where an op saved a y.

        What :func:`saved_ys_as_rows` does for every replayed step, for the step that
        tracing computed (after :meth:`take_first_step` wrote its rows).
        """
        t = self.order[0]
        row_of = {slot: buffer[t] for buffer, slot in zip(ys, self.y_out)}
        kept = []
        for op, entry in zip([op for op in self.tape.ops if op.records], record):  # as kept_records
            slots = saved_y_slots(op, row_of)
            if any(slot >= 0 for slot in slots):
                saved = entry if op.saves_only else entry.saved_tensors
                saved = tuple(array if slot < 0 else row_of[slot] for array, slot in zip(saved, slots))
                if op.saves_only:
                    entry = saved
                else:
                    entry.saved_tensors = saved
            kept.append(entry)
        return tuple(kept)

    def per_step_captured(self) -> list[tuple[int, int]]:
        """(position, slot) of each implicit input that gets a gradient from every step (not deferred).

        That is one a step's VJP reaches, or one the step returns as it is (as y or carry).
        """
        reached = {slot for op in self.tape.ops for slot, need in zip(op.slots, op.step_needs) if need}
        reached.update(self.carry_out, self.y_out)
        return [(index, slot) for index, slot in enumerate(self.tape.captured_slots) if slot in reached]

    def replay(self, kind: str) -> Callable:
        """The generated loop "forward", "forward_keep", "forward_recompute" or "backward" over this loop's steps.

        Made once per loop structure (:data:`generated_loops`): the next call of the same
        layer traces a new tape, but of the same structure, and runs the same code.
        """
        function = self.replays.get(kind)
        if function is None:
            if self.structure is None:
                self.structure = loop_structure(self)
            function = self.replays[kind] = generated_loops.get(self.structure, kind, lambda: self.generate(kind))
        return function

    def generate(self, kind: str) -> Callable:
        """Write and compile the loop ``kind`` (see :func:`forward_loop_source`, :func:`backward_loop_source`)."""
        if kind == "backward":
            source = backward_loop_source(self)
        else:
            source = forward_loop_source(self, keep=kind != "forward", in_blocks=kind == "forward_recompute")
        return compile_replay(self.tape, source, kind + "_loop")

    def run(
        self,
        values: list[Any],
        carry: list[Any],
        xs: Sequence[Any],
        visits: range,
        keep: bool,
        ys: list[Any] | None = None,
        rows: dict[int, tuple[Any, int]] | None = None,
        transposed: dict[int, Any] | None = None,
    ) -> tuple[list[Any], list[tuple[Any, ...]], list[list[Any]]]:
        """Replay the steps of ``visits`` from ``carry``: (final carry, each step's record, each kept carry).

        ``values`` holds the implicit inputs in their slots; y parts are written into the
        ``ys`` buffers (see :func:`forward_loop_source`). Records are kept when ``keep``;
        with checkpointing, the carry at every k-th visit is kept instead: the steps run
        one segment at a time, each from its kept carry. ``rows`` (when backward
        recomputes steps) holds the carries' values as rows of the y buffers: then the
        batched ops run once per block of steps (:meth:`batched_results`).
        ``transposed``: the weights' transposes, if the caller made them already.
        """
        recompute = rows is not None and bool(self.batched)
        forward = self.replay("forward_recompute" if recompute else "forward_keep" if keep else "forward")
        if transposed is None:
            transposed = self.transposed_weights(values)
        order, checkpoint = self.order, self.checkpoint if self.keep else None
        steps: list[tuple[Any, ...]] = []
        checkpoints = []
        size = checkpoint or len(visits)
        block = self.batch_steps() if recompute else size
        for start in range(visits.start, visits.stop, size):
            if checkpoint is not None:
                checkpoints.append(carry)
            stop = min(start + size, visits.stop)
            for block_start in range(start, stop, block):
                times = order[block_start : min(block_start + block, stop)]
                blocks = self.batched_results(values, xs, rows, transposed, times) if recompute else ()
                carry = forward(values, carry, xs, ys, transposed, times, steps, blocks, min(times[0], times[-1]))
        return carry, steps, checkpoints


# ------------------------------------------------------- replay: the loop over time
#
# A Scan replays its step T times. The loop over the steps is generated too, around the
# step's lines: the carry passes from one step to the next in local variables, x_t is
# read as a row of xs, y_t written into its row of ys, and what backward needs of the
# step kept as one tuple, with no call, list or slot lookup per step between the ops.
# Most built-in ops write nothing to their Context but ``saved_tensors``: such an op gets
# one Context for all the steps, and a step keeps only its saved tuple (no Python
# object per op and step, which also spares the garbage collector T·ops objects to scan).


def forward_loop_source(loop: Loop, keep: bool, in_blocks: bool = False) -> str:
    """The source of ``forward(values, carry, xs, ys, transposed, times, steps, blocks, base)``: the steps of ``times``.

    ``values`` holds the implicit inputs in their slots, ``carry`` the carry before the
    first step. Each step's y parts go into their rows of the ``ys`` buffers (unless
    ``ys`` is None), and the step goes on with the buffer's row in place of its own
    array, so a y that is also the carry, or saved by the next step, is kept once. With
    ``keep``, each step's record is appended to ``steps``: a tuple holding, for each op
    that records, its Context or (``saves_only``) its saved tuple (:func:`kept_records`).
    With ``in_blocks`` (recomputing steps), ``blocks`` holds the result of each batched
    op whose rows the steps read (:func:`rows_read`) for the steps of ``times``, whose
    row 0 is step ``base`` (:meth:`Loop.batched_results`). Returns the carry.
    """
    tape = loop.tape
    lines = ["def forward(values, carry, xs, ys, transposed, times, steps, blocks, base):"]
    lines.extend(f"    v{slot} = values[{slot}]" for slot in tape.captured_slots)
    lines.append(f"    {_names('v', loop.carry_in)} = carry")
    if loop.x_in:
        lines.append(f"    {_names('xs', range(len(loop.x_in)))} = xs")
    if in_blocks and loop.read_blocks:
        lines.append(f"    {_names('block', sorted(loop.read_blocks))} = blocks")
    if loop.y_out:
        lines.append(
            f"    {_names('ys', range(len(loop.y_out)))} = ys if ys is not None else {(None,) * len(loop.y_out)}"
        )
    scratch = scratch_contexts(tape, keep)
    lines.extend(f"    c{index} = new(context{index})  # one for every step" for index in sorted(scratch))
    lines.append("    for t in times:")
    lines.extend(f"        v{slot} = xs{k}[t]" for k, slot in enumerate(loop.x_in))
    lines.extend(forward_body(tape, "        ", scratch, in_blocks=in_blocks))
    if loop.y_out:
        lines.append("        if ys is not None:")
        for k, slot in enumerate(loop.y_out):
            lines.append(f"            ys{k}[t] = v{slot}; v{slot} = ys{k}[t]")
        if keep:
            lines.extend(f"            {line}" for line in saved_ys_as_rows(tape, set(loop.y_out)))
    if keep:
        lines.append(f"        steps.append(({''.join(f'{record}, ' for record in kept_records(tape))}))")
    lines.append(f"        {_names('v', loop.carry_in)} = {_names('v', loop.carry_out)}")
    lines.append(f"    return [{', '.join(f'v{slot}' for slot in loop.carry_in)}]")
    return "\n".join(lines)


def saved_y_slots(op: TapeOp, y_slots: Collection[int]) -> list[int]:
    """For each array ``op`` saves: the slot of the step's y it is (its row of ys can stand in), or -1."""
    return [op.outputs[k] if k >= 0 and op.outputs[k] in y_slots else -1 for k in op.saved_as_output]


def saved_ys_as_rows(tape: Tape, y_slots: set[int]) -> list[str]:
    """Lines that hand each op which saved a y of the step that y's row of its buffer, in place of its own array.

    Run right after the step wrote its y parts into the ys buffers (``vN`` is then the
    row). An op that saves its output (Tanh, Sigmoid: VJPs from y), when that output is
    a y of the step (an RNN's h = tanh(·)), would otherwise keep the array it made
    until backward, next to the row holding the same numbers: each step's y twice in
    memory. Holding the row, the record frees that array at once, and the next step's
    output takes its memory while it is still in cache.
    """
    lines = []
    for index, op in enumerate(tape.ops):
        rows = saved_y_slots(op, y_slots)
        if not op.records or all(slot < 0 for slot in rows):
            continue
        saved = "".join(
            f"v{slot}, " if slot >= 0 else f"c{index}.saved_tensors[{position}], " for position, slot in enumerate(rows)
        )
        lines.append(f"c{index}.saved_tensors = ({saved})")
    return lines


def backward_loop_source(loop: Loop) -> str:
    """The source of ``backward(steps, offset, visits, order, carry_grads, ys_grads, xs_grads, deferred, add,
    release)``.

    For each visit of ``visits`` (in the order given: last step first), the VJPs of
    step ``t = order[visit]`` run on its record ``steps[visit - offset]`` (each saved
    tuple put back into its op's one Context first), seeded with
    the carry's gradient from the step after it and ``ys_grads[k][t]``. Then x_t's
    gradient is written at row t of its ``xs_grads`` buffer (zero where none reached
    it), an implicit input's gradient from this step goes to ``add(position, grad)``,
    and an op with deferred inputs hands ``deferred`` (:class:`DeferredSums`, at the
    start of a block) what it saved and its output gradient (:func:`collect_lines`).
    ``release`` drops each step's record once used.
    Returns the carry's gradient.
    """
    tape = loop.tape
    kept = kept_records(tape)
    lines = ["def backward(steps, offset, visits, order, carry_grads, ys_grads, xs_grads, deferred, add, release):"]
    lines.extend(
        f"    c{index} = new(context{index})  # one for every step" for index in shared_indices(tape, "backward")
    )
    collecting = [index for index, op in replay_order(tape) if op.deferred]
    if collecting:
        lines.append("    first = deferred.first")
        lines.extend(f"    b{index}, p{index} = None, deferred.entries({index})" for index in collecting)
    lines.append(f"    {_names('k', range(len(loop.carry_in)))} = carry_grads")
    if loop.y_out:
        lines.append(f"    {_names('yg', range(len(loop.y_out)))} = ys_grads")
    if loop.x_in:
        lines.append(f"    {_names('xg', range(len(loop.x_in)))} = xs_grads")
    lines.append("    for visit in visits:")
    lines.append("        t = order[visit]")
    if kept:
        lines.append(f"        {', '.join(kept)}, = steps[visit - offset]")
    lines.append("        if release: steps[visit - offset] = None  # free this step's saved arrays now")
    if len(collecting) > 1:
        lines.append("        last = None  # the gradient an op with deferred inputs copied last at this step")
    first_seeds = dict.fromkeys(loop.carry_out)  # (a carry may return one value twice: the seeds add up)
    lines.extend(f"        g{slot} = None" for slot in gradient_slots(tape) if slot not in first_seeds)
    seeded = set()
    for k, slot in enumerate(loop.carry_out):
        if slot not in seeded:
            lines.append(f"        g{slot} = k{k}")
            seeded.add(slot)
        else:
            lines.append(f"        if k{k} is not None: g{slot} = k{k} if g{slot} is None else g{slot} + k{k}")
    for k, slot in enumerate(loop.y_out):
        lines.append(f"        if yg{k} is not None:")
        lines.append(f"            a = yg{k}[t]; g{slot} = a if g{slot} is None else g{slot} + a")

    def collect(index: int, given: str) -> list[str]:
        return collect_lines(index, given, shared=collecting.index(index) > 0, final=index == collecting[-1])

    lines.extend(vjp_body(tape, "        ", collect, set(loop.carry_out + loop.y_out)))
    for k, slot in enumerate(loop.x_in):
        lines.append(f"        if xg{k} is not None: xg{k}[t] = 0 if g{slot} is None else g{slot}")
    for position, slot in loop.per_step_captured():
        lines.append(f"        add({position}, g{slot})")
    lines.append(f"        {_names('k', range(len(loop.carry_in)))} = {_names('g', loop.carry_in)}")
    lines.append(f"    return [{', '.join(f'k{k}' for k in range(len(loop.carry_in)))}]")
    return "\n".join(lines)


def collect_lines(index: int, given: str, shared: bool, final: bool) -> list[str]:
    """Lines that hand op ``index`` (one with deferred inputs) its output gradient at step t (see DeferredSums).

    The gradient is copied into row ``t - first`` of the op's block buffer ``bK`` and
    the step's entry appended to ``pK``. ``shared``: an op visited before it at this
    step may have copied a gradient; when that was this very array (the generated
    code's ``last``), the entry names that op's buffer instead of copying again.
    ``final``: no op after it compares, so it need not note what it copied.
    """
    lines, d = ([], given) if given.isidentifier() else ([f"d = {given}"], "d")  # (evaluated once)
    copy = [
        f"if b{index} is None: b{index} = deferred.new_buffer({d})",
        f"b{index}[t - first] = {d}; p{index}.append((t, c{index}.saved_tensors, b{index}))",
    ]
    if not final:
        copy.append(f"last, last_buffer = {d}, b{index}")
    if not shared:
        return lines + copy
    lines.append(f"if {d} is last: p{index}.append((t, c{index}.saved_tensors, last_buffer))  # copied already")
    lines.append("else:")
    return lines + [f"    {line}" for line in copy]


def _names(prefix: str, numbers: Sequence[int]) -> str:
    """``"p0, p3,"``: the targets (or values) of a tuple assignment, one per number."""
    return "".join(f"{prefix}{number}, " for number in numbers).rstrip()


# --------------------------------------------------- generated loops, kept by structure
#
# A layer calls tl.scan at every forward, so its step is traced at every call: a new
# tape each time, but call after call the same ops on the same slots, with the same
# shapes and configuration. The loops generated for it would be the same code, and
# writing and compiling them again costs as much as several steps of a small layer
# (about 0.2 ms of an RNN's 2.8 ms train step at 64×32×128), so they are kept by the
# loop's structure: everything that goes into their source and their namespace.


@dataclass(frozen=True)
class LoopStructure:
    """What a loop's generated code is made from (``key``), and the objects ``key`` knows by identity.

    ``held`` keeps those objects alive as long as the key, so that no other object can
    take over their identity meanwhile.
    """

    key: tuple
    held: tuple[Any, ...]


def loop_structure(loop: Loop) -> LoopStructure:
    """A key equal for two loops exactly when their generated loops would be the same code.

    It holds every attribute of every op on the tape (:data:`OP_SHAPE` and
    :data:`OP_VALUES`), the op's ``forward`` and ``backward`` as they are now (a VJP
    replaced at run time makes a new key), the (shape, dtype) of every slot, and where
    the inputs, carry, x and y live. An op's constants and keyword arguments count by
    type and exact value (``0.0`` and ``-0.0`` differ, so do ``1`` and ``1.0``), or for
    any other object, such as an array a step uses as a constant, by identity.
    """
    tape, held = loop.tape, []
    ops_key = tuple(
        (
            op_shape(op),
            op.function.forward,
            op.function.backward,
            _by_value(op.constants, held),
            _by_value(op.kwargs, held),
        )
        for op in tape.ops
    )
    key = (
        tape.device, tape.xp, tuple(tape.meta), tuple(tape.requires), tuple(tape.input_slots),
        tuple(tape.captured_slots), tuple(tape.output_slots), ops_key,
        tuple(loop.carry_in), tuple(loop.x_in), tuple(loop.carry_out), tuple(loop.y_out),
    )  # fmt: skip
    return LoopStructure(key, tuple(held))


# The attributes of a TapeOp, as the key of its loop reads them: those that hold the
# op's place on the tape (a class, strings, ints, bools and tuples of them, compared as
# they are), and those that hold values of the user's (compared by _by_value). A test
# checks that these name every attribute a TapeOp has.
OP_SHAPE = (
    "function", "device", "slots", "outputs", "multi_output", "needs", "wrap_scalars", "grad_enabled",
    "step_needs", "deferred", "records", "all_slots", "invariant_weight", "saves_only", "saved_as_output",
    "batched",
)  # fmt: skip
OP_VALUES = ("constants", "kwargs")
op_shape = operator.attrgetter(*OP_SHAPE)


_PLAIN = (bool, int, str, bytes)  # (None is handled first)


def _by_value(value: Any, held: list[Any]) -> Any:
    """``value`` as part of a key: plain values by type and exact value, others by identity (put in ``held``)."""
    if value is None:  # (most constants: the slot of a Tensor argument)
        return None
    kind = type(value)
    if kind in _PLAIN or isinstance(value, (type, np.dtype)):
        return (kind, value)
    if kind is float:
        return (float, value.hex())  # exact, and -0.0 is not 0.0
    if kind is complex:
        return (complex, value.real.hex(), value.imag.hex())
    if isinstance(value, np.generic):
        return (kind, value.tobytes())
    if kind is tuple or kind is list:
        return (kind, *[_by_value(item, held) for item in value])
    if kind is dict:
        return (dict, *[(name, _by_value(item, held)) for name, item in value.items()])
    if kind is slice:
        return (slice, _by_value(value.start, held), _by_value(value.stop, held), _by_value(value.step, held))
    held.append(value)
    return (object, id(value))


class GeneratedLoops:
    """The generated loops of the loop structures used last, at most ``size`` of them (least recently used go)."""

    def __init__(self, size: int):
        self.size = size
        self.entries: collections.OrderedDict[tuple, tuple[Callable, LoopStructure]] = collections.OrderedDict()
        self.lock = threading.Lock()  # (two threads may run layers at once)

    def get(self, structure: LoopStructure, kind: str, generate: Callable[[], Callable]) -> Callable:
        """The loop ``kind`` of this structure: the one made before, or ``generate()``'s."""
        key = (kind, structure.key)
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry[0]
        function = generate()
        with self.lock:
            self.entries[key] = (function, structure)  # (the structure keeps its held objects alive)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return function

    def clear(self) -> None:
        """Forget every generated loop (for code that changes how loops are generated, such as a test's edit)."""
        with self.lock:
            self.entries.clear()


generated_loops = GeneratedLoops(size=128)


class Scan(Function):
    """The whole loop of ``tl.scan`` as one node: forward replays the tape over time, backward its VJPs."""

    # Its backward replays VJPs on raw arrays: not recordable, so no derivatives of derivatives.
    differentiable_backward = False
    create_graph_advice = (
        "write the loop out for second derivatives: build nn layers with compile=False (or run them inside "
        "`with nn.written_out_loops():`), and use a Python loop instead of tl.scan"
    )

    @staticmethod
    def forward(ctx, *arrays, loop: Loop):
        carry_count, x_count = len(loop.carry_in), len(loop.x_in)
        xs = arrays[carry_count : carry_count + x_count]
        values = loop.fresh_values(arrays[carry_count + x_count :])
        keep_steps = loop.keep and loop.checkpoint is None
        # (with checkpoints too: a segment's recomputed steps reproduce those rows)
        ys, carry_rows = loop.y_buffers(arrays[:carry_count], with_initial=loop.keep)
        carry, visits, first = list(arrays[:carry_count]), range(loop.length), []
        traced, loop.first_step = loop.first_step, None  # (used once: a later call has other inputs)
        if traced is not None:  # tracing ran the first step already: go on from its results
            record, traced_carry, traced_y = traced
            carry, visits = loop.take_first_step(traced_carry, traced_y, ys), range(1, loop.length)
            first = [loop.first_record_with_rows(record, ys)] if keep_steps else []
        steps, checkpoints = [], []
        if visits:
            carry, steps, checkpoints = loop.run(values, carry, xs, visits, keep_steps, ys)
        steps = first + steps
        if loop.keep:
            ctx.loop, ctx.steps, ctx.checkpoints, ctx.carry_rows = loop, steps, checkpoints, carry_rows
            if loop.checkpoint is not None:
                ctx.inputs = arrays  # recomputation replays from them
            # The steps' records hold these arrays (or views of them): declared, so that
            # backward refuses to run if one is changed in place in the meantime.
            ctx.save_for_backward(*arrays, *ys)
        return (*carry, *ys)

    @staticmethod
    def backward(ctx, *grads):
        loop: Loop = ctx.loop
        tape, xp, order = loop.tape, loop.tape.xp, loop.order
        carry_count, x_count = len(loop.carry_in), len(loop.x_in)
        carry_grads = list(grads[:carry_count])
        ys_grads = grads[carry_count:]
        x_needs = ctx.needs_input_grad[carry_count : carry_count + x_count]
        xs_grads = [
            xp.empty((loop.length, *tape.meta[slot][0]), dtype=tape.meta[slot][1]) if need else None
            for slot, need in zip(loop.x_in, x_needs)
        ]  # every step writes its row: a zero row where no gradient reached x_t
        captured = Accumulator(len(tape.captured_slots))
        release = not autograd.retaining_graph()
        backward = loop.replay("backward")
        inputs = ctx.inputs if loop.checkpoint is not None else ctx.saved_tensors
        xs_inputs = inputs[carry_count : carry_count + x_count]
        deferred = DeferredSums(loop, xs_inputs, ctx.carry_rows, captured, xs_grads)
        block = defer_block(tape)
        if loop.checkpoint is not None:  # what every recomputed segment reads
            values = loop.fresh_values(ctx.inputs[carry_count + x_count :])
            transposed = loop.transposed_weights(values)

        for segment, (start, stop) in reversed(list(enumerate(loop.segments))):
            if loop.checkpoint is None:
                records = ctx.steps
            else:  # replay this segment's steps again from its kept carry, keeping their records
                _, records, _ = loop.run(
                    values, ctx.checkpoints[segment], xs_inputs, range(start, stop), keep=True,
                    rows=ctx.carry_rows, transposed=transposed,
                )  # fmt: skip
            offset = 0 if loop.checkpoint is None else start  # records[visit - offset] is visit's
            for block_stop in range(stop, start, -block):  # the deferred sums are flushed per block
                block_start = max(block_stop - block, start)
                deferred.start_block(order[block_start:block_stop])  # the times of these visits
                visits = range(block_stop - 1, block_start - 1, -1)
                carry_grads = backward(
                    records, offset, visits, order, carry_grads, ys_grads, xs_grads, deferred,
                    captured.add, release,
                )  # fmt: skip
                deferred.flush()
        return (*carry_grads, *xs_grads, *captured.grads)


def _seed(slot_grads: list[Any], slot: int, grad: Any) -> None:
    """Add an output's gradient at its slot (two outputs may share one slot)."""
    if grad is not None:
        current = slot_grads[slot]
        slot_grads[slot] = grad if current is None else current + grad


def _parts(value: Any, what: str, allow_none: bool = False) -> tuple[list[Tensor] | None, bool]:
    """A Tensor or a tuple/list of Tensors as a list of parts, and whether it was a tuple."""
    if value is None and allow_none:
        return None, False
    if isinstance(value, Tensor):
        return [value], False
    if isinstance(value, (tuple, list)) and value and all(isinstance(part, Tensor) for part in value):
        return list(value), True
    kind = type(value).__name__
    raise TypeError(f"tl.scan: {what} must be a Tensor or a tuple of Tensors, got {kind}")


def _rebuild(parts: Sequence[Tensor], is_tuple: bool) -> Any:
    return tuple(parts) if is_tuple else parts[0]


def scan(
    fn: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    reverse: bool = False,
    checkpoint: int | None = None,
) -> tuple[Any, Any]:
    """``carry, ys = scan(fn, init, xs)``: the loop ``carry, y = fn(carry, xs[t])``, as one graph node.

    Equal to the written-out loop (see the module docstring) in values and gradients.
    ``init``/``carry``: a Tensor or a tuple of Tensors, the same shapes and dtypes every
    step. ``xs``: a Tensor, a tuple of Tensors sharing T along axis 0, or None with
    ``length=T`` (``fn`` then gets None). ``y``: a Tensor, a tuple of Tensors or None
    (then ``ys`` is None); ``ys`` stacks them along a new axis 0. ``reverse=True`` visits
    t = T-1 .. 0, still storing y_t at index t. ``checkpoint=k`` keeps every k-th carry
    instead of every step's saved arrays, and recomputes k steps at a time in backward.
    Gradients reach ``init``, ``xs`` and every Tensor ``fn`` reads without receiving it.
    """
    init_parts, carry_is_tuple = _parts(init, "init")
    x_parts, x_is_tuple = _parts(xs, "xs", allow_none=True)
    steps = _scan_length(x_parts, length)
    if checkpoint is not None and (isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1):
        raise ValueError(f"tl.scan: checkpoint must be a positive int (steps between kept carries), got {checkpoint!r}")
    first = steps - 1 if reverse else 0
    x_first = [Tensor._make(x.data[first], x.device, requires_grad=x.requires_grad) for x in x_parts or ()]
    x_first_none = [None] * len(x_first)

    def step(*stand_ins: Tensor) -> Any:
        carry = _rebuild(stand_ins[: len(init_parts)], carry_is_tuple)
        x = _rebuild(stand_ins[len(init_parts) :], x_is_tuple) if x_parts is not None else None
        return fn(carry, x)

    def trace_step(carry_requires: list[bool]) -> tuple[list[Tensor], Tracer, list[Tensor], list[int], Any]:
        stand_ins, result, tracer = trace("tl.scan", step, [*init_parts, *x_first], [*carry_requires, *x_first_none])
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"tl.scan: fn must return a pair (carry, y), got {type(result).__name__}")
        new_carry, y = result
        carry_parts = _check_carry(init_parts, carry_is_tuple, new_carry)
        return stand_ins, tracer, carry_parts, [tracer.slot(part) for part in carry_parts], y

    # A carry part needs a gradient from step 1 on if the step makes it depend on anything
    # that requires grad (in a layer, always: the step reads the parameters). Trace once as
    # if every part did, and read off the tape which really do (carry_requires_needed);
    # where some part does not, trace again without it, and again while parts turn out to
    # need one after all, until nothing changes.
    surely = [part.requires_grad for part in init_parts]
    carry_requires = [True] * len(init_parts) if is_grad_enabled() else surely
    stand_ins, tracer, carry_parts, carry_out, y = trace_step(carry_requires)
    carry_in = [tracer.slot(stand_in) for stand_in in stand_ins[: len(init_parts)]]
    needed = carry_requires_needed(tracer, carry_in, carry_out, surely)
    while needed != carry_requires:
        carry_requires = needed
        stand_ins, tracer, carry_parts, carry_out, y = trace_step(carry_requires)
        needed = [before or tracer.requires[slot] for before, slot in zip(carry_requires, carry_out)]
    y_parts, y_is_tuple = _parts(y, "y (fn's second result)", allow_none=True)
    y_out = [tracer.slot(part) for part in y_parts or ()]
    tape = tracer.tape([tracer.slot(stand_in) for stand_in in stand_ins], carry_out + y_out)
    hoist_invariant_ops(tape)
    mark_deferred(tape, tape.input_slots[len(init_parts) :])
    inputs = [*init_parts, *(x_parts or ()), *tape.captured]
    keep = is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)
    loop = Loop(
        tape, tape.input_slots[: len(init_parts)], tape.input_slots[len(init_parts) :], carry_out, y_out,
        steps, reverse, checkpoint, keep,
    )  # fmt: skip
    if checkpoint is None:  # (with checkpoints, steps are kept by segment: the first is run again)
        loop.first_step = traced_first_step(tracer, tape, carry_parts, y_parts or [])
    else:
        mark_batched(loop)
    outputs = Scan.apply(*inputs, loop=loop)
    final = _rebuild(outputs[: len(init_parts)], carry_is_tuple)
    ys = _rebuild(outputs[len(init_parts) :], y_is_tuple) if y_parts is not None else None
    return final, ys


def carry_requires_needed(tracer: Tracer, carry_in: list[int], carry_out: list[int], surely: list[bool]) -> list[bool]:
    """Which carry parts need a gradient, read off a traced tape: those the step makes depend on one that does.

    From ``surely`` (the parts whose init requires grad), a value requires grad where an
    op recorded with grad on reads one that does (as :meth:`Tracer.record` decides);
    a carry part does when its value after the step does, step after step until
    nothing changes. The other inputs keep the flags they were traced with.
    """
    carry = list(surely)
    while True:
        requires = list(tracer.requires)
        for slot, needs in zip(carry_in, carry):
            requires[slot] = needs
        for op in tracer.ops:
            reads = op.grad_enabled and any(requires[slot] for slot in op.slots if slot >= 0)
            for slot in op.outputs:
                requires[slot] = reads
        grown = [before or requires[slot] for before, slot in zip(carry, carry_out)]
        if grown == carry:
            return carry
        carry = grown


def traced_first_step(
    tracer: Tracer, tape: Tape, carry: list[Tensor], y: list[Tensor]
) -> tuple[tuple[Any, ...], list[Any], list[Any]]:
    """The first step of the loop as tracing computed it: the record backward will need, the carry, y.

    Tracing runs ``fn`` on the first step's real values, through each op's own
    ``forward``: its Contexts hold what a replayed first step would keep, and its
    results are that step's. So the forward replay starts at the second step. Each
    Context gets the op's ``step_needs`` (deferred inputs left out), as a replay's would,
    and the step's record holds it as a replayed step's would (:func:`kept_records`).
    """
    records = []
    for op in tape.ops:
        if op.records:
            ctx = tracer.contexts[id(op)]
            ctx.needs_input_grad = op.step_needs
            records.append(ctx.saved_tensors if op.saves_only else ctx)  # as kept_records
    return tuple(records), [part.data for part in carry], [part.data for part in y]


def _scan_length(x_parts: list[Tensor] | None, length: int | None) -> int:
    if x_parts is None:
        if length is None:
            raise ValueError("tl.scan: with xs=None, give the number of steps as length=")
        steps = length
    else:
        lengths = [x.shape[0] if x.ndim else None for x in x_parts]
        if None in lengths:
            raise ValueError("tl.scan: every xs tensor needs an axis 0 to scan along (got a 0-d tensor)")
        if len(set(lengths)) != 1:
            raise ValueError(f"tl.scan: the xs tensors have different lengths along axis 0: {lengths}")
        steps = lengths[0]
        if length is not None and length != steps:
            raise ValueError(f"tl.scan: length={length} but xs has {steps} steps along axis 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"tl.scan: needs at least one step, got length {steps!r}")
    return steps


def _check_carry(init_parts: list[Tensor], is_tuple: bool, new_carry: Any) -> list[Tensor]:
    """The carry fn returned, checked against init: same structure, shapes and dtypes."""
    parts, new_is_tuple = _parts(new_carry, "the carry fn returns")
    if new_is_tuple != is_tuple or len(parts) != len(init_parts):
        raise TypeError(
            f"tl.scan: fn returned a carry of {len(parts)} tensor(s){' in a tuple' if new_is_tuple else ''} "
            f"for an init of {len(init_parts)}; the carry must keep its structure"
        )
    for index, (old, new) in enumerate(zip(init_parts, parts)):
        if old.shape != new.shape or old.dtype != new.dtype:
            raise TypeError(
                f"tl.scan: carry part {index} changed from shape {old.shape} {old.dtype} to "
                f"{new.shape} {new.dtype} in one step; the carry must keep its shape and dtype"
            )
    return parts


# --------------------------------------------------------------------------- compile


@dataclass(eq=False)
class Program:
    """One trace of a compiled function: its tape, and how to rebuild its result's structure."""

    tape: Tape
    structure: Any  # the result with each Tensor replaced by its index among the outputs
    keep: bool
    captured_requires: tuple[bool, ...]

    def is_stale(self) -> bool:
        """A captured tensor's ``requires_grad`` changed since tracing (it was frozen or unfrozen)."""
        return tuple(tensor.requires_grad for tensor in self.tape.captured) != self.captured_requires


class Compiled(Function):
    """One call of a compiled function as one node: the tape replayed forward, its VJPs in reverse."""

    differentiable_backward = False  # as Scan: the replayed VJPs run on raw arrays
    create_graph_advice = "call the function itself, not its tl.compile version, for second derivatives"

    @staticmethod
    def forward(ctx, *arrays, program: Program):
        tape = program.tape
        values: list[Any] = [None] * len(tape.meta)
        for slot, array in zip(tape.input_slots + tape.captured_slots, arrays):
            values[slot] = array
        records = run_forward(tape, values, program.keep)
        outputs = tuple(values[slot] for slot in tape.output_slots)
        if program.keep:
            ctx.program, ctx.records = program, records
            ctx.save_for_backward(*arrays, *outputs)  # what the Contexts may hold: checked before backward
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        tape = ctx.program.tape
        slot_grads: list[Any] = [None] * len(tape.meta)
        for slot, grad in zip(tape.output_slots, grads):
            _seed(slot_grads, slot, grad)
        run_backward(tape, ctx.records, slot_grads)
        return tuple(slot_grads[slot] for slot in tape.input_slots + tape.captured_slots)


def _flatten_result(result: Any, tensors: list[Tensor]) -> Any:
    """The result's structure with each Tensor replaced by its index in ``tensors`` (appended)."""
    if isinstance(result, Tensor):
        tensors.append(result)
        return len(tensors) - 1
    if isinstance(result, (tuple, list)):
        return type(result)(_flatten_result(part, tensors) for part in result)
    if result is None:
        return None
    raise TypeError(
        f"tl.compile: the function must return Tensors (or tuples/lists of them), got {type(result).__name__}"
    )


def _unflatten_result(structure: Any, outputs: Sequence[Tensor]) -> Any:
    if isinstance(structure, int):
        return outputs[structure]
    if isinstance(structure, (tuple, list)):
        return type(structure)(_unflatten_result(part, outputs) for part in structure)
    return None


class CompiledFunction:
    """``tl.compile(fn)``: a callable equal to ``fn`` that records one graph node per call.

    ``fn`` (a function of Tensors, or a Module) is traced on its first call for each
    input signature: the shapes, dtypes and devices of its Tensor arguments, which of
    them require grad, whether grad mode is on, and the values of its other arguments
    (Python numbers and strings: constants of the trace). For a Module also its
    parameters (by identity and ``requires_grad``) and every submodule's ``training``
    flag. Later calls replay the trace; values and parameters are read afresh each time.
    """

    def __init__(self, fn: Callable[..., Any]):
        if not callable(fn):
            raise TypeError(f"tl.compile needs a function or a Module, got {type(fn).__name__}")
        self.fn = fn
        self.traces: dict[Any, Program] = {}
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any) -> Any:
        signature = self._signature(args)
        program = self.traces.get(signature)
        if program is None or program.is_stale():
            program = self._trace(args)
            self.traces[signature] = program
        tensors = [arg for arg in args if isinstance(arg, Tensor)]
        outputs = Compiled.apply(*tensors, *program.tape.captured, program=program)
        return _unflatten_result(program.structure, outputs)

    def _signature(self, args: tuple) -> tuple:
        parts: list[Any] = [is_grad_enabled()]
        for index, arg in enumerate(args):
            if isinstance(arg, Tensor):
                parts.append((arg.shape, arg.dtype, arg.device, arg.requires_grad))
            else:
                try:
                    hash(arg)
                except TypeError:
                    raise TypeError(
                        f"tl.compile: argument {index} is a {type(arg).__name__}, which cannot be part of a "
                        "trace's signature; pass Tensors, or Python numbers and strings (constants of the trace)"
                    ) from None
                parts.append(("constant", type(arg), arg))
        modules = getattr(self.fn, "modules", None)
        if callable(modules):  # a Module: its parameters and modes belong to the trace too
            parts.append(tuple((id(p), p.requires_grad) for p in self.fn.parameters()))
            parts.append(tuple(module.training for module in modules()))
        return tuple(parts)

    def _trace(self, args: tuple) -> Program:
        positions = [index for index, arg in enumerate(args) if isinstance(arg, Tensor)]

        def call(*stand_ins: Tensor) -> Any:
            arguments = list(args)
            for position, stand_in in zip(positions, stand_ins):
                arguments[position] = stand_in
            return self.fn(*arguments)

        stand_ins, result, tracer = trace("tl.compile", call, [args[index] for index in positions])
        tensors: list[Tensor] = []
        structure = _flatten_result(result, tensors)
        if not tensors:
            raise TypeError("tl.compile: the function returned no Tensor")
        output_slots = [tracer.slot(tensor) for tensor in tensors]
        tape = tracer.tape([tracer.slot(stand_in) for stand_in in stand_ins], output_slots)
        inputs = [args[index] for index in positions] + tape.captured
        keep = is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)
        return Program(tape, structure, keep, tuple(tensor.requires_grad for tensor in tape.captured))


def compile(fn: Callable[..., Any]) -> CompiledFunction:  # noqa: A001  (tl.compile, as torch.compile)
    """``tl.compile(fn)``: trace ``fn`` once per input signature and replay it as one graph node per call.

    Equal to calling ``fn`` (values and gradients); see :class:`CompiledFunction` for
    what makes a signature. Python numbers ``fn`` closes over are constants of a trace.
    """
    return CompiledFunction(fn)
