"""Recurrent cells, and the one sequence runner that turns any cell into a layer.

The cell protocol
-----------------
A cell is a Module (subclass ``RecurrentCell``) with ``input_size`` and ``hidden_size``
and three methods:

* ``initial_state(batch, dtype, device)`` -> the state for a batch: a Tensor, or a tuple
  of Tensors, each shaped (batch, hidden_size) — zeros for the built-in cells;
* ``step(x_t, state)`` -> the next state, for one time step's input x_t;
* ``output(state)`` -> this step's output h_t, shaped (batch, hidden_size).

Optionally ``project_input(x)``: the part of a step that depends on the input only,
applied by the runner to all time steps at once (one big matmul instead of T small
ones); ``step`` then receives the projected x_t. The default is the identity.

A cell that overrides ``forward(x, state)`` instead (the PyTorch habit) is run through
that ``forward``, step by step on the unprojected x_t: the runner runs what you wrote.

``Recurrent(make_cell, input_size, hidden_size, ...)`` runs such cells over time and
gives any of them multi-layer stacking, bidirectionality, ``batch_first``, variable
lengths and an initial state. ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` are exactly that.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

from ..tensor import Tensor, arange, float32, linear, no_grad, scan, stack, where, zeros
from ..tensor import cat as concatenate
from . import functional as F
from . import validation
from .layers import uniform_parameter
from .module import Module, Parameter

State = Any  # a Tensor or a tuple of Tensors, each (batch, hidden_size)


class RecurrentCell(Module):
    """Base class for cells following the cell protocol (see the module docstring)."""

    input_size: int
    hidden_size: int

    def project_input(self, x: Tensor) -> Tensor:
        """The input-only part of a step, for inputs of any leading shape. Default: x."""
        return x

    def step(self, x_t: Tensor, state: State) -> State:
        raise NotImplementedError(f"{type(self).__name__} must define step(x_t, state)")

    def output(self, state: State) -> Tensor:
        """The step's output; by default the state itself (or its first part)."""
        return state[0] if isinstance(state, tuple) else state

    def initial_state(self, batch: int, dtype: Any = float32, device: str | None = None) -> State:
        """Zeros of shape (batch, hidden_size)."""
        return zeros(batch, self.hidden_size, dtype=dtype, device=device)

    def forward(self, x: Tensor, state: State = None) -> State:
        """One step on x of shape (batch, input_size); the state defaults to the initial one."""
        owner = type(self).__name__
        x = validation.check_input(x, owner, validation.module_dtype(self))
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{owner} expects x of shape (batch, {self.input_size}), got {x.shape}")
        initial = self.initial_state(x.shape[0], dtype=x.dtype, device=x.device)
        if state is None:
            state = initial
        else:
            names = validation.state_names(self, len(initial) if isinstance(initial, tuple) else 1)
            state = validation.check_state(state, validation.spec_of(initial), names, owner)
        return self.step(self.project_input(x), state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class _GatedCell(RecurrentCell):
    """Shared parameter layout: W_ih (G·H, in), W_hh (G·H, H), b_ih, b_hh, U(±1/√H)."""

    gates = 1
    state_names = ("h",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = float32,
        device: str | None = None,
        **unexpected: Any,
    ):
        owner = type(self).__name__
        validation.check_no_extra_options(unexpected, owner)
        input_size = validation.check_size(input_size, "input_size", owner)
        hidden_size = validation.check_size(hidden_size, "hidden_size", owner)
        bias = validation.check_flag(bias, "bias", owner)
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        bound = 1.0 / math.sqrt(hidden_size) if hidden_size else 0.0  # PyTorch's init; hidden_size 0 is allowed
        rows = self.gates * hidden_size
        self.weight_ih = uniform_parameter((rows, input_size), bound, dtype, device)
        self.weight_hh = uniform_parameter((rows, hidden_size), bound, dtype, device)
        if bias:
            self.bias_ih = uniform_parameter((rows,), bound, dtype, device)
            self.bias_hh = uniform_parameter((rows,), bound, dtype, device)

    def _summed_biases(self) -> Tensor | None:
        """b_ih + b_hh: both are added to every step's gates, so fold them into the projection."""
        return self.bias_ih + self.bias_hh if self.bias else None


class RNNCell(_GatedCell):
    """h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh), nonlinearity "tanh" or "relu"."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, **kwargs)
        self.nonlinearity = nonlinearity

    def project_input(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self._summed_biases())  # x W_ihᵀ + b_ih + b_hh

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        pre_activation = linear(h, self.weight_hh, x_t)  # x_t + h W_hhᵀ, x_t added like a bias
        return pre_activation.tanh() if self.nonlinearity == "tanh" else pre_activation.relu()


class LSTMCell(_GatedCell):
    """The LSTM step, gate order (input, forget, cell, output) as in PyTorch::

        i, f, g, o = σ(·), σ(·), tanh(·), σ(·)  of  W_ih x + b_ih + W_hh h + b_hh
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    The state is the pair (h, c); calling the cell returns (h', c').
    """

    gates = 4
    state_names = ("h", "c")

    def project_input(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self._summed_biases())  # x W_ihᵀ + b_ih + b_hh

    def initial_state(self, batch: int, dtype: Any = float32, device: str | None = None) -> State:
        return (
            zeros(batch, self.hidden_size, dtype=dtype, device=device),
            zeros(batch, self.hidden_size, dtype=dtype, device=device),
        )

    def step(self, x_t: Tensor, state: State) -> State:
        h, c = state
        gates = linear(h, self.weight_hh, x_t)  # x_t + h W_hhᵀ, x_t added like a bias
        i, f, g, o = gates.chunk(4, axis=1)
        input_gate, forget_gate, candidate, output_gate = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = forget_gate * c + input_gate * candidate
        h = output_gate * c.tanh()
        return h, c


class GRUCell(_GatedCell):
    """The GRU step, gate order (reset, update, new) as in PyTorch::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    gates = 3

    def project_input(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih if self.bias else None)  # b_hh stays inside: r gates it

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        hidden = linear(h, self.weight_hh, self.bias_hh if self.bias else None)
        x_r, x_z, x_n = x_t.chunk(3, axis=1)
        h_r, h_z, h_n = hidden.chunk(3, axis=1)
        reset = (x_r + h_r).sigmoid()
        update = (x_z + h_z).sigmoid()
        new = (x_n + reset * h_n).tanh()
        return new + update * (h - new)  # = (1 - z) n + z h, with one multiply fewer


# --------------------------------------------------------------------------- runner


def _map_state(function: Callable, state: State) -> State:
    return tuple(function(part) for part in state) if isinstance(state, tuple) else function(state)


def _zip_state(function: Callable, first: State, second: State) -> State:
    if isinstance(first, tuple):
        return tuple(function(a, b) for a, b in zip(first, second))
    return function(first, second)


_written_out = 0  # > 0 inside ``written_out_loops()``


@contextlib.contextmanager
def written_out_loops():
    """Inside this block every ``Recurrent`` layer runs as if built with ``compile=False``.

    For tools that need every op of every step as a node of the graph: second
    derivatives (the compiled loop's backward runs on raw arrays and cannot be
    recorded), per-op localisation, probes per step.
    """
    global _written_out
    _written_out += 1
    try:
        yield
    finally:
        _written_out -= 1


def detach_state(state: State) -> State:
    """The state cut from the graph: carry it into the next chunk for truncated BPTT."""
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(part) for part in state)
    return state.detach()


# Time steps whose input projection is computed together: one matmul per block. Blocks
# bound the memory of projected inputs that are still waiting for their step.
PROJECTION_BLOCK = 32


def overrides_forward(cell: RecurrentCell) -> bool:
    """Whether the cell's class defines its own ``forward`` (then the runner steps with it)."""
    return type(cell).forward is not RecurrentCell.forward


def run_cell(
    cell: RecurrentCell,
    x: Tensor,
    state: State,
    mask: Tensor | None = None,
    reverse: bool = False,
    compile: bool = True,  # noqa: A002  (the layers' compile= flag)
    checkpoint: int | None = None,
) -> tuple[Tensor, State]:
    """Run one cell over x of shape (T, batch, input) from ``state``.

    With a ``mask`` (T, batch, 1) of booleans, a sequence's state is carried unchanged
    past its end and its outputs there are zero. Returns the outputs (T, batch, hidden)
    and the final state. ``compile=True`` runs the whole loop as one ``tl.scan`` node
    (``checkpoint`` passed on); ``compile=False`` records every op of every step.
    """
    if compile:
        return _scan_cell(cell, x, state, mask, reverse, checkpoint)
    return _record_every_step(cell, x, state, mask, reverse)


def _scan_cell(
    cell: RecurrentCell, x: Tensor, state: State, mask: Tensor | None, reverse: bool, checkpoint: int | None
) -> tuple[Tensor, State]:
    """The loop over time as ``tl.scan``: the step is traced once and replayed T times.

    The input projection of all steps is one matmul before the loop (``hoisted``),
    unless it would be large, the cell steps through its own ``forward``, or
    ``checkpoint`` asks for memory over speed: then each step projects its own x_t.
    """
    own_forward = overrides_forward(cell)
    hoisted = not own_forward and checkpoint is None and _small_projection(cell, x)
    inputs = cell.project_input(x) if hoisted else x

    def advance(state: State, x_t: Tensor) -> State:
        if own_forward:
            return cell(x_t, state)
        return cell.step(x_t if hoisted else cell.project_input(x_t), state)

    def step(state: State, step_inputs: Any) -> tuple[State, Tensor]:
        if mask is None:
            new_state = advance(state, step_inputs)
            return new_state, cell.output(new_state)
        x_t, alive = step_inputs
        new_state = _zip_state(lambda new, old: where(alive, new, old), advance(state, x_t), state)
        return new_state, where(alive, cell.output(new_state), 0.0)

    final, outputs = scan(
        step, state, inputs if mask is None else (inputs, mask), reverse=reverse, checkpoint=checkpoint
    )
    return outputs, final


# Past this many numbers (1 MiB of float32), the input projection of all steps is not
# computed at once: it and its gradient would be held through the whole backward pass
# (2·T·batch·G·hidden numbers) and stream through memory, where projecting inside each
# step keeps only the raw inputs and works on arrays that stay in cache. Measured on the
# benchmark's workloads: hoisting pays for tiny layers (batch 1, hidden 16: fewer ops per
# step), not from batch 32 × hidden 128 on (slower and more memory).
PROJECTION_LIMIT = 1 << 18


def _small_projection(cell: RecurrentCell, x: Tensor) -> bool:
    """Whether ``cell.project_input`` of all of x stays within ``PROJECTION_LIMIT`` numbers."""
    with no_grad():  # one row's projection (of one step, one sequence), to learn its width
        width = cell.project_input(x[:1, :1]).shape[-1]
    return x.shape[0] * x.shape[1] * width <= PROJECTION_LIMIT


def _record_every_step(
    cell: RecurrentCell, x: Tensor, state: State, mask: Tensor | None, reverse: bool
) -> tuple[Tensor, State]:
    """The loop over time written out: every op of every step is a node of the graph.

    The input-only work (``cell.project_input``) is done for ``PROJECTION_BLOCK`` steps
    at a time and taken apart by time with one ``unbind`` node per block, whose VJP is
    a single stack (so BPTT stays linear in T).
    """
    own_forward = overrides_forward(cell)
    length = x.shape[0]
    blocks = x.split(PROJECTION_BLOCK, axis=0) if length > PROJECTION_BLOCK else (x,)
    alive = mask.unbind(0) if mask is not None else None
    keep = mask.astype(x.dtype).unbind(0) if mask is not None else None  # 1.0 while alive
    outputs: list[Tensor | None] = [None] * length
    for block_index in range(len(blocks) - 1, -1, -1) if reverse else range(len(blocks)):
        first = block_index * PROJECTION_BLOCK
        steps = (blocks[block_index] if own_forward else cell.project_input(blocks[block_index])).unbind(0)
        for offset in range(len(steps) - 1, -1, -1) if reverse else range(len(steps)):
            t = first + offset
            new_state = cell(steps[offset], state) if own_forward else cell.step(steps[offset], state)
            if alive is None:
                state = new_state
                outputs[t] = cell.output(state)
            else:
                state = _zip_state(lambda new, old, a=alive[t]: where(a, new, old), new_state, state)
                outputs[t] = cell.output(state) * keep[t]
    return stack(outputs, 0), state


class Recurrent(Module):
    """Any cell, run over sequences: stacked layers, both directions, variable lengths.

    ``Recurrent(make_cell, input_size, hidden_size, num_layers=1, bidirectional=False,
    batch_first=False, dropout=0.0, compile=True, checkpoint=None)``:
    ``make_cell(in_size, hidden_size)`` builds one cell following the cell protocol.
    Each cell's parameters are registered on this layer as ``{name}_l{k}`` (and
    ``{name}_l{k}_reverse``), PyTorch's naming. ``compile=True`` runs each layer and
    direction over time as one ``tl.scan`` node (the step traced once, replayed T
    times); ``compile=False`` records every op of every step (for teaching, and for
    tools that look at single ops). ``checkpoint=k`` (compiled only) keeps every k-th
    state for backward and recomputes the steps between: memory for time.

    ``layer(x, state=None, lengths=None)``: x is (T, batch, input) — (batch, T, input)
    with ``batch_first`` — and ``state`` the initial state with a leading
    num_layers·num_directions axis (zeros if None). Returns ``(output, final_state)``:
    output (T, batch, num_directions·hidden) with the directions concatenated, and the
    final state shaped like ``state``. ``lengths`` (one per sequence, 1..T) gives packed
    sequence semantics: outputs past a sequence's end are zero and its final state is
    the one at its last step (the reverse direction starts at that last step).
    """

    def __init__(
        self,
        make_cell: Callable[[int, int], RecurrentCell],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        compile: bool = True,  # noqa: A002  (as torch.compile: run the loop compiled)
        checkpoint: int | None = None,
    ):
        owner = type(self).__name__
        input_size = validation.check_size(input_size, "input_size", owner, minimum=1)
        hidden_size = validation.check_size(hidden_size, "hidden_size", owner, minimum=1)
        num_layers = validation.check_size(num_layers, "num_layers", owner, minimum=1)
        bidirectional = validation.check_flag(bidirectional, "bidirectional", owner)
        batch_first = validation.check_flag(batch_first, "batch_first", owner)
        dropout = validation.check_probability(dropout, "dropout", owner)
        validation.warn_if_dropout_unused(dropout, num_layers, owner)
        super().__init__()
        compile = validation.check_flag(compile, "compile", owner)  # noqa: A001
        if checkpoint is not None:
            if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1:
                raise ValueError(
                    f"{owner}: checkpoint must be a positive int (steps between kept states), got {checkpoint!r}"
                )
            if not compile:
                raise ValueError(f"{owner}: checkpoint needs compile=True (it recomputes steps of the compiled loop)")
        self.compile, self.checkpoint = compile, checkpoint
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first, self.dropout = bidirectional, batch_first, dropout
        directions = 2 if bidirectional else 1
        cells = []
        owners = {}  # layer-level name -> (the module inside a cell that holds it, its name there)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                cell = make_cell(layer_input, hidden_size)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for name, parameter in cell.named_parameters():
                    path, _, attribute = name.rpartition(".")
                    owner = cell
                    for part in path.split(".") if path else ():
                        owner = getattr(owner, part)
                    owners[name.replace(".", "_") + suffix] = (owner, attribute)
                    setattr(self, name.replace(".", "_") + suffix, parameter)
                cells.append(cell)
        object.__setattr__(self, "cells", cells)  # not submodules: their weights are named above
        object.__setattr__(self, "_owners", owners)

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning a new Parameter to ``weight_hh_l0`` & co. also gives it to the cell that computes with it."""
        owner = self.__dict__.get("_owners", {}).get(name)
        if owner is not None:
            if not isinstance(value, Parameter):
                raise TypeError(f"{name} must stay an nn.Parameter, got {type(value).__name__}")
            setattr(*owner, value)
        super().__setattr__(name, value)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def train(self, mode: bool = True) -> Recurrent:
        super().train(mode)
        for cell in self.cells:
            cell.train(mode)
        return self

    def forward(self, x: Tensor, state: State = None, lengths: Any = None) -> tuple[Tensor, State]:
        x = validation.check_input(x, type(self).__name__, validation.module_dtype(self))
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "(batch, seq, input)" if self.batch_first else "(seq, batch, input)"
            raise ValueError(
                f"{type(self).__name__} expects x shaped {layout} with input={self.input_size}, got {x.shape}"
            )
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{type(self).__name__} expects a sequence of at least one step, got length 0")
        mask = self._mask(lengths, steps, batch, x.device)
        if mask is not None:  # padded steps compute from zeros, so whatever padding holds never reaches a gradient
            x = where(mask, x, 0.0)
        initial = self._initial_states(state, batch, x)
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                compiled = self.compile and not _written_out
                output, final = run_cell(
                    self.cells[index], layer_input, initial[index], mask, direction == 1, compiled,
                    self.checkpoint if compiled else None,
                )  # fmt: skip
                outputs.append(output)
                finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else concatenate(outputs, axis=2)
        output = layer_input.transpose(1, 0, 2) if self.batch_first else layer_input
        if isinstance(finals[0], tuple):
            final_state = tuple(stack([final[k] for final in finals], 0) for k in range(len(finals[0])))
        else:
            final_state = stack(finals, 0)
        return output, final_state

    def _mask(self, lengths: Any, steps: int, batch: int, device: str) -> Tensor | None:
        if lengths is None:
            return None
        given = lengths
        lengths = lengths if isinstance(lengths, Tensor) else Tensor(lengths, device=device)
        lengths = lengths.to(device)
        if lengths.dtype.kind not in "iu" or lengths.shape != (batch,):
            raise ValueError(
                f"lengths must be {batch} integers (one per sequence), got {lengths.dtype} of shape {lengths.shape}"
            )
        # Python lengths are checked as given (inside tl.compile they are constants of the trace)
        values = given.tolist() if isinstance(given, Tensor) else [int(length) for length in given]
        bad = [length for length in values if not 1 <= length <= steps]
        if bad:
            raise ValueError(f"every length must be between 1 and the sequence length {steps}, got {bad[0]}")
        time = arange(steps, device=device).reshape(steps, 1, 1)
        return time < lengths.reshape(1, batch, 1)

    def _initial_states(self, state: State, batch: int, x: Tensor) -> list[State]:
        count = self.num_layers * self.num_directions
        if state is None:
            return [cell.initial_state(batch, dtype=x.dtype, device=x.device) for cell in self.cells]
        template = self.cells[0].initial_state(batch, dtype=x.dtype, device=x.device)
        names = validation.layer_state_names(self.cells[0], len(template) if isinstance(template, tuple) else 1)
        spec = validation.spec_of(template, leading=(count,))  # (layers·directions, batch, hidden) each
        state = validation.check_state(state, spec, names, type(self).__name__)
        parts = state if isinstance(state, tuple) else (state,)
        per_part = [part.unbind(0) for part in parts]
        if isinstance(state, tuple):
            return [tuple(pieces[i] for pieces in per_part) for i in range(count)]
        return list(per_part[0])

    def extra_repr(self) -> str:
        extras = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            extras.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            extras.append("bidirectional=True")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        if not self.compile:
            extras.append("compile=False")
        if self.checkpoint is not None:
            extras.append(f"checkpoint={self.checkpoint}")
        return ", ".join(extras)


class _BuiltinLayer(Recurrent):
    """PyTorch's layer signature around one of the built-in cells (``cell_class``)."""

    cell_class: type[_GatedCell]
    cell_option_names: tuple[str, ...] = ()  # the keyword arguments passed on to the cell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        compile: bool = True,  # noqa: A002
        checkpoint: int | None = None,
        dtype: Any = float32,
        device: str | None = None,
        **cell_options: Any,
    ):
        validation.check_no_extra_options(
            {name: value for name, value in cell_options.items() if name not in self.cell_option_names},
            type(self).__name__,
        )
        bias = validation.check_flag(bias, "bias", type(self).__name__)

        def make_cell(cell_input: int, cell_hidden: int) -> _GatedCell:
            return self.cell_class(cell_input, cell_hidden, bias, **cell_options, dtype=dtype, device=device)

        super().__init__(
            make_cell, input_size, hidden_size, num_layers, bidirectional, batch_first, dropout, compile, checkpoint
        )


class RNN(_BuiltinLayer):
    """Elman RNN layer: ``RNNCell`` run by ``Recurrent``; returns (output, h_n).

    Arguments as PyTorch's, with ``nonlinearity`` ("tanh" or "relu") fourth.
    """

    cell_class = RNNCell
    cell_option_names = ("nonlinearity",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **factory: Any,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            nonlinearity=nonlinearity, **factory,
        )  # fmt: skip
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        return extra if self.nonlinearity == "tanh" else f"{extra}, nonlinearity={self.nonlinearity!r}"


class LSTM(_BuiltinLayer):
    """LSTM layer: ``LSTMCell`` run by ``Recurrent``; returns (output, (h_n, c_n))."""

    cell_class = LSTMCell


class GRU(_BuiltinLayer):
    """GRU layer: ``GRUCell`` run by ``Recurrent``; returns (output, h_n)."""

    cell_class = GRUCell
