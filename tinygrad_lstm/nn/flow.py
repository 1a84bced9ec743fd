"""How gradient flows back through time: ‖dLoss/dx_t‖ and ‖dLoss/dh_t‖ for every step.

The derivative of the loss with respect to the state *at step t* is not the gradient
of any tensor the layer keeps: h_t is an intermediate value. ``StateProbe`` makes it
one. It wraps a cell and adds a zero tensor that requires grad, δ_t, to the state each
step returns::

    h_t  =  step(x_t, h_{t-1}) + δ_t        (δ_t = 0, so nothing changes)

Then dLoss/dδ_t = dLoss/dh_t: the gradient reaching the state that step t hands on —
to the output at t, to every later step and to the final state. It is the message
backpropagation through time sends across the boundary between steps t and t+1. (For
an LSTM's c_t that leaves out the path through h_t = o_t ⊙ tanh(c_t) *inside* step t,
which the cell computes before handing c_t on.) The same seam lets a test shift one
state entry by ±eps at one step, for finite differences (``shifts``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tensor import Tensor, float32, grad, no_grad, zeros
from .recurrent import Recurrent, RecurrentCell, run_cell

State = Any


def state_parts(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def state_names(cell: RecurrentCell, count: int) -> tuple[str, ...]:
    """Names for the parts of a cell's state: ``cell.state_names`` if set, else h / (h, c)."""
    names = getattr(cell, "state_names", None)
    if names is not None and len(names) == count:
        return tuple(names)
    if count == 1:
        return ("h",)
    if count == 2:
        return ("h", "c")
    return tuple(f"state[{k}]" for k in range(count))


class StateProbe(RecurrentCell):
    """A cell wrapped so that each step's new state gets ``+ δ`` (see the module docstring).

    ``track=True`` makes each δ a zero tensor requiring grad, kept in ``perturbations``
    (one tuple per step call, in call order); ``shifts`` maps ``(call, part)`` to an
    array added to that part at that call (for finite differences). ``reset()`` before
    each forward pass.
    """

    def __init__(self, cell: RecurrentCell, reverse: bool = False):
        super().__init__()
        object.__setattr__(self, "cell", cell)  # not a submodule: its parameters stay the cell's
        self.input_size, self.hidden_size, self.reverse = cell.input_size, cell.hidden_size, reverse
        self.reset()

    def reset(self, track: bool = False, shifts: dict | None = None) -> None:
        object.__setattr__(self, "calls", 0)
        object.__setattr__(self, "track", track)
        object.__setattr__(self, "shifts", shifts or {})
        object.__setattr__(self, "perturbations", [])

    def time_of(self, call: int) -> int:
        """The time index of the ``call``-th step (a reverse cell runs t = T-1, ..., 0)."""
        return self.calls - 1 - call if self.reverse else call

    def project_input(self, x: Tensor) -> Tensor:
        return self.cell.project_input(x)

    def initial_state(self, batch: int, dtype: Any = float32, device: str | None = None) -> State:
        return self.cell.initial_state(batch, dtype=dtype, device=device)

    def output(self, state: State) -> Tensor:
        return self.cell.output(state)

    def step(self, x_t: Tensor, state: State) -> State:
        new_state = self.cell.step(x_t, state)
        call = self.calls
        object.__setattr__(self, "calls", call + 1)
        parts, deltas = [], []
        for index, part in enumerate(state_parts(new_state)):
            if self.track:
                delta = zeros(part.shape, dtype=part.dtype, device=part.device, requires_grad=True)
                deltas.append(delta)
                part = part + delta
            shift = self.shifts.get((call, index))
            if shift is not None:
                part = part + Tensor(shift, dtype=part.dtype, device=part.device)
            parts.append(part)
        if self.track:
            self.perturbations.append(tuple(deltas))
        return tuple(parts) if isinstance(new_state, (tuple, list)) else parts[0]


@dataclass
class Probed:
    """A model with probes installed: run it with ``run(x, state)``."""

    probes: list[StateProbe]
    labels: list[str]  # "cell", or "l0", "l0_reverse", ... as in parameter names
    run: Callable[[Tensor, State], Any]
    time_axis: int

    def reset(self, track: bool = False, shifts: dict | None = None) -> None:
        """Prepare every probe for a forward pass; ``shifts`` maps probe index -> its shifts."""
        for index, probe in enumerate(self.probes):
            probe.reset(track, (shifts or {}).get(index))


@contextlib.contextmanager
def probed(model: Any) -> Iterator[Probed]:
    """Install :class:`StateProbe` s in a cell or a ``Recurrent`` layer (removed afterwards).

    For a cell, ``run(x, state)`` runs it over x (T, batch, input) with ``run_cell`` and
    returns ``(outputs, final_state)``; for a layer, ``run`` is the layer's own forward.
    """
    if isinstance(model, Recurrent):
        cells = model.cells
        directions = model.num_directions
        probes = [StateProbe(cell, reverse=index % directions == 1) for index, cell in enumerate(cells)]
        labels = [f"l{index // directions}" + ("_reverse" if index % directions else "") for index in range(len(cells))]
        # Probes add a tensor per step call: the loop must be written out (compile=False) to have them.
        compiled = model.compile
        object.__setattr__(model, "cells", probes)
        object.__setattr__(model, "compile", False)
        try:
            yield Probed(probes, labels, lambda x, state=None: model(x, state), 1 if model.batch_first else 0)
        finally:
            object.__setattr__(model, "cells", cells)
            object.__setattr__(model, "compile", compiled)
    elif isinstance(model, RecurrentCell):
        probe = StateProbe(model)

        def run(x: Tensor, state: State = None) -> Any:
            if state is None:
                state = probe.initial_state(x.shape[1], dtype=x.dtype, device=x.device)
            return run_cell(probe, x, state, compile=False)  # one probe call per step, as written out

        yield Probed([probe], ["cell"], run, 0)
    else:
        raise TypeError(f"expected a RecurrentCell or a Recurrent layer, got {type(model).__name__}")


# ------------------------------------------------------------------------- gradient_flow


@dataclass
class GradientFlow:
    """Per-step gradient norms (NumPy arrays of length T, index t = time step).

    ``input[t]`` = ‖dLoss/dx_t‖; ``hidden[t]`` = ‖dLoss/dh_t‖ and ``cell[t]`` =
    ‖dLoss/dc_t‖ for the top layer's forward cell (``cell`` only for an LSTM-like state
    of two parts; both None for a plain function). ``states`` has every cell:
    ``states["l0_reverse"]["h"]``. Norms are over batch and features together. The
    state gradients are those of the state each step hands on (see the module
    docstring): with the default loss, ``cell[-1]`` is 0, since c_{T-1} reaches the last
    output only inside the last step.
    """

    input: np.ndarray
    hidden: np.ndarray | None = None
    cell: np.ndarray | None = None
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    loss: float = 0.0

    def __str__(self) -> str:
        rows = [("‖dL/dx_t‖", self.input), ("‖dL/dh_t‖", self.hidden), ("‖dL/dc_t‖", self.cell)]
        lines = ["t          " + " ".join(f"{t:>9d}" for t in range(len(self.input)))]
        lines += [f"{name:<11}" + " ".join(f"{v:9.3g}" for v in values) for name, values in rows if values is not None]
        return "\n".join(lines)


def _norm(tensor: Tensor, time_axis: int) -> list[float]:
    """‖tensor[t]‖ for each t along ``time_axis``, in float64 on the host.

    (Vanishing gradients get tiny: squared in float32, values below ~1e-19 would be 0.)
    """
    values = np.moveaxis(tensor.numpy().astype(np.float64), time_axis, 0)
    return np.sqrt((values * values).reshape(values.shape[0], -1).sum(axis=1)).tolist()


def _total_norm(tensor: Tensor) -> float:
    values = tensor.numpy().astype(np.float64)
    return float(np.sqrt((values * values).sum()))


def _last_step_sum(result: Any, time_axis: int) -> Tensor:
    output = result[0] if isinstance(result, tuple) else result
    return output[(slice(None),) * time_axis + (-1,)].sum()


def gradient_flow(
    model: Any,
    x: Any,
    state: State = None,
    loss: Callable[[Any], Tensor] | None = None,
    time_axis: int | None = None,
) -> GradientFlow:
    """How much gradient reaches each time step: ‖dLoss/dx_t‖ and ‖dLoss/dh_t‖ for every t.

    ``model`` is a cell (run over x with ``run_cell``), a ``Recurrent`` layer
    (``nn.LSTM``, ...), or any function ``fn(x)``; x is (T, batch, input), or
    (batch, T, input) for a ``batch_first`` layer. The loss defaults to the sum of the
    last step's output, ``output[-1].sum()``: how strongly does step t still influence
    the end of the sequence? Pass ``loss(result)`` for another, where ``result`` is what
    the model returns (``(output, final_state)`` for cells and layers). For a plain
    function only ``input`` is measured (its states are not visible).

    >>> import tinygrad_lstm as tl
    >>> from tinygrad_lstm import nn
    >>> flow = gradient_flow(nn.RNN(2, 4), tl.randn(6, 1, 2))
    >>> flow.hidden.shape, bool(flow.hidden[0] <= flow.hidden[-1])
    ((6,), True)
    """
    source = x if isinstance(x, Tensor) else Tensor(x)
    x = Tensor(source, requires_grad=True)  # a leaf copy, so the gradient is ours to read
    if time_axis is None:
        time_axis = 1 if getattr(model, "batch_first", False) else 0
    loss = loss if loss is not None else (lambda result: _last_step_sum(result, time_axis))
    if not isinstance(model, (Recurrent, RecurrentCell)):
        value = loss(model(x))
        (dx,) = grad(value, [x])
        with no_grad():
            return GradientFlow(input=np.array(_norm(dx, time_axis)), loss=value.item())
    with probed(model) as probe_set:
        probe_set.reset(track=True)
        value = loss(probe_set.run(x, state))
        deltas = [delta for probe in probe_set.probes for step in probe.perturbations for delta in step]
        grads = grad(value, [x, *deltas])
    flow = GradientFlow(input=np.array([]), loss=value.item())
    with no_grad():
        flow.input = np.array(_norm(grads[0], time_axis))
        position = 1
        for probe, label in zip(probe_set.probes, probe_set.labels):
            count = len(probe.perturbations[0]) if probe.perturbations else 0
            names = state_names(probe.cell, count)
            norms = np.zeros((count, probe.calls))
            for call in range(probe.calls):
                for part in range(count):
                    norms[part, probe.time_of(call)] = _total_norm(grads[position])
                    position += 1
            flow.states[label] = {name: norms[k] for k, name in enumerate(names)}
    forward_labels = [label for label in probe_set.labels if not label.endswith("_reverse")]
    parts = list(flow.states[forward_labels[-1]].values())  # the top layer's forward cell
    flow.hidden = parts[0] if parts else None
    flow.cell = parts[1] if len(parts) == 2 else None
    return flow
