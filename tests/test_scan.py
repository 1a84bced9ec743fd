"""``tl.scan`` and ``tl.compile`` against the eager code they stand for.

A compiled loop is documented by the loop it equals, so that is what is tested: every
property below runs the same step twice, once through the tracer (one graph node) and
once written out in Python (a node per op), and asks for the same values and the same
gradient of every input — init, xs and the tensors the step reads without receiving
them — to 1e-12 in float64. Then the canaries break the reverse replay on purpose (a
skipped step, a wrong VJP on the tape, two ops trading their saved arrays, the ops
replayed in forward order, a dropped or truncated deferred weight GEMM, a checkpoint
recompute from a wrong carry, recomputed blocks one step off) and check that these very
properties go red.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import re
import sys
import threading
import tracemalloc
import types
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim
from tinygrad_lstm.tensor import function, ops
from tinygrad_lstm.testing import CellCheckError, GradcheckError, check_cell, gradcheck
from tinygrad_lstm.testing import strategies as tst

# ``tinygrad_lstm.tensor.scan`` is also the name of the function tl.scan: reach the module itself.
scan_module = importlib.import_module("tinygrad_lstm.tensor.scan")

TOLERANCE = dict(rtol=1e-12, atol=1e-12)
# Hypothesis budgets: the whole file runs in well under 40 s on a loaded 2-core machine.
FEW = settings(max_examples=25)
SOME = settings(max_examples=60)
# The canaries stop at the first failing example: no shrinking, one bug reported.
RED = settings(max_examples=40, phases=[Phase.generate], database=None, report_multiple_bugs=False)


def tensor(rng: np.random.Generator, *shape: int, requires_grad: bool = True) -> tl.Tensor:
    """A float64 tensor of U(-1, 1) values."""
    return tl.Tensor(rng.uniform(-1.0, 1.0, shape), dtype=tl.float64, requires_grad=requires_grad)


def flatten(value: Any) -> list[tl.Tensor]:
    """The Tensors of a (nested) result, in order; None contributes nothing."""
    if value is None:
        return []
    if isinstance(value, tl.Tensor):
        return [value]
    return [part for item in value for part in flatten(item)]


def projection_loss(outputs: list[tl.Tensor], seed: int = 7) -> tl.Tensor:
    """Σ_k ⟨w_k, out_k⟩ with fixed random weights: every output element gets its own gradient."""
    rng = np.random.default_rng(seed)
    total = None
    for out in outputs:
        weight = tl.Tensor(rng.uniform(0.5, 1.5, out.shape), dtype=out.dtype, device=out.device)
        term = (out * weight).sum()
        total = term if total is None else total + term
    return total


def values_and_gradients(run, leaves: list[tl.Tensor]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Run ``run()`` (returns the outputs), backpropagate the projection loss; values and leaf gradients."""
    for leaf in leaves:
        leaf.grad = None
    outputs = flatten(run())
    projection_loss(outputs).backward()
    values = [out.numpy() for out in outputs]
    grads = [None if leaf.grad is None else leaf.grad.numpy() for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    return values, grads


def written_out_loop(step, init: Any, xs: tl.Tensor) -> tuple[Any, tl.Tensor]:
    """``tl.scan(step, init, xs)`` written out in Python: the final carry and the stacked ys."""
    carry, ys = init, []
    for t in range(xs.shape[0]):
        carry, y = step(carry, xs[t])
        ys.append(y)
    return carry, tl.stack(ys)


def assert_same(compiled: tuple, eager: tuple, names: list[str]) -> None:
    """Compiled and eager agree to 1e-12, values and every gradient (a missing one is a failure)."""
    compiled_values, compiled_grads = compiled
    eager_values, eager_grads = eager
    assert len(compiled_values) == len(eager_values), "the results have different numbers of tensors"
    for index, (a, b) in enumerate(zip(compiled_values, eager_values)):
        assert a.shape == b.shape, f"output {index}: shape {a.shape} compiled, {b.shape} eager"
        np.testing.assert_allclose(a, b, **TOLERANCE, err_msg=f"value of output {index}")
    for name, a, b in zip(names, compiled_grads, eager_grads):
        assert (a is None) == (b is None), f"gradient of {name}: {'missing' if a is None else 'extra'} when compiled"
        if a is not None:
            np.testing.assert_allclose(a, b, **TOLERANCE, err_msg=f"gradient of {name}")


# ============================================================== tl.scan vs its loop


@dataclass
class ScanCase:
    """One drawn scan problem: the step below, over T steps, in every structural variant."""

    steps: int
    batch: int
    hidden: int
    features: int
    tuple_carry: bool
    xs_kind: str  # "tensor", "tuple" or "none"
    y_kind: str  # "tensor", "tuple", "none" or "carry" (y is the new carry's h itself)
    reverse: bool
    checkpoint: int | None
    init_requires_grad: bool
    seed: int
    loss_on: str = "all"  # which results the loss reads: "all", "carry" or "ys"


@st.composite
def scan_cases(draw) -> ScanCase:
    steps = draw(st.integers(1, 6))
    return ScanCase(
        steps=steps,
        batch=draw(st.integers(1, 3)),
        hidden=draw(st.integers(1, 4)),
        features=draw(st.integers(1, 3)),
        tuple_carry=draw(st.booleans()),
        xs_kind=draw(st.sampled_from(["tensor", "tuple", "none"])),
        y_kind=draw(st.sampled_from(["tensor", "tuple", "none", "carry"])),
        reverse=draw(st.booleans()),
        checkpoint=draw(st.none() | st.integers(1, steps + 2)),  # k from 1 to beyond T
        init_requires_grad=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        loss_on=draw(st.sampled_from(["all", "all", "carry", "ys"])),
    )


class ScanProblem:
    """The tensors of a :class:`ScanCase` and its step function, both ways of running it."""

    def __init__(self, case: ScanCase):
        self.case = case
        rng = np.random.default_rng(case.seed)
        batch, hidden, features, steps = case.batch, case.hidden, case.features, case.steps
        # read by the step without being passed: implicit inputs of the tape
        self.weight = tensor(rng, hidden, hidden)  # Linear: deferred, one GEMM over time
        self.bias = tensor(rng, hidden)  # Linear's bias: deferred too
        self.projection = tensor(rng, features, hidden)  # MatMul with a 2-D x_t: deferred
        self.gain = tensor(rng, hidden)  # read through a non-leaf made before the loop, gain · 1.5
        self.scaled_gain = None
        h0 = tensor(rng, batch, hidden, requires_grad=case.init_requires_grad)
        c0 = tensor(rng, batch, hidden, requires_grad=case.init_requires_grad)
        self.init = (h0, c0) if case.tuple_carry else h0
        self.xs: Any = None
        if case.xs_kind != "none":
            x_main = tensor(rng, steps, batch, features)
            self.xs = (x_main, tensor(rng, steps, batch, hidden)) if case.xs_kind == "tuple" else x_main
        self.leaves = [*flatten(self.init), *flatten(self.xs), self.weight, self.bias, self.projection, self.gain]
        self.names = [
            *(["h0", "c0"] if case.tuple_carry else ["init"]),
            *(["xs[0]", "xs[1]"] if case.xs_kind == "tuple" else ["xs"] if case.xs_kind == "tensor" else []),
            "weight", "bias", "projection", "gain",
        ]  # fmt: skip

    def step(self, carry: Any, x: Any) -> tuple[Any, Any]:
        case = self.case
        h, c = carry if case.tuple_carry else (carry, None)
        pre = tl.linear(h, self.weight, self.bias) + self.weight[0] * 0.25  # weight: deferred and per step
        if case.xs_kind == "tensor":
            pre = pre + x @ self.projection
        elif case.xs_kind == "tuple":
            x_main, x_gate = x
            pre = (pre + x_main @ self.projection) * x_gate.sigmoid()
        if c is None:
            h = (pre * self.scaled_gain).tanh()
            carry = h
        else:
            c = c * pre.sigmoid() + (pre * self.scaled_gain).tanh() * 0.5  # 0.5: a constant of the trace
            h = c.tanh() * pre.sigmoid()
            carry = (h, c)
        if case.y_kind == "tensor":
            y = h * 2.0
        elif case.y_kind == "tuple":
            y = (h.exp(), (h * h).sum(axis=1))
        elif case.y_kind == "carry":
            y = h
        else:
            y = None
        return carry, y

    def chosen(self, result: tuple[Any, Any]) -> list[tl.Tensor]:
        """The results the loss reads (all of them when ys is None)."""
        carry, ys = result
        if self.case.loss_on == "carry":
            return flatten(carry)
        if self.case.loss_on == "ys" and ys is not None:
            return flatten(ys)
        return flatten(result)

    def compiled(self) -> tuple[Any, Any]:
        case = self.case
        self.scaled_gain = self.gain * 1.5
        return tl.scan(
            self.step, self.init, self.xs, length=case.steps if self.xs is None else None,
            reverse=case.reverse, checkpoint=case.checkpoint,
        )  # fmt: skip

    def written_out(self) -> tuple[Any, Any]:
        """The loop ``tl.scan`` stands for, in Python."""
        case = self.case
        self.scaled_gain = self.gain * 1.5
        carry, ys = self.init, [None] * case.steps
        for t in reversed(range(case.steps)) if case.reverse else range(case.steps):
            if self.xs is None:
                x_t = None
            elif isinstance(self.xs, tuple):
                x_t = tuple(part[t] for part in self.xs)
            else:
                x_t = self.xs[t]
            carry, ys[t] = self.step(carry, x_t)
        if case.y_kind == "none":
            return carry, None
        if case.y_kind == "tuple":
            return carry, tuple(tl.stack([y[k] for y in ys]) for k in range(2))
        return carry, tl.stack(ys)


def check_scan_equals_loop(case: ScanCase) -> None:
    problem = ScanProblem(case)
    compiled = values_and_gradients(lambda: problem.chosen(problem.compiled()), problem.leaves)
    eager = values_and_gradients(lambda: problem.chosen(problem.written_out()), problem.leaves)
    assert_same(compiled, eager, problem.names)


@SOME
@given(scan_cases())
def test_scan_equals_the_written_out_loop(case: ScanCase) -> None:
    check_scan_equals_loop(case)


def test_scan_equals_the_written_out_loop_on_every_structure() -> None:
    """Every combination of xs, y and checkpoint kinds once (Hypothesis draws favour a few)."""
    combinations = itertools.product(["tensor", "tuple", "none"], ["tensor", "tuple", "none", "carry"], range(5))
    for index, (xs_kind, y_kind, which) in enumerate(combinations):
        steps = 2 + index % 4
        checkpoint = [None, 1, 2, steps, steps + 3][which]
        tuple_carry, reverse = index % 2 == 0, index % 3 == 0
        loss_on = ["all", "carry", "ys"][index % 3]
        case = ScanCase(
            steps, 2, 3, 2, tuple_carry, xs_kind, y_kind, reverse, checkpoint, index % 5 != 1, index, loss_on
        )
        check_scan_equals_loop(case)


def test_scan_results_have_the_loops_structure() -> None:
    problem = ScanProblem(ScanCase(3, 2, 3, 2, True, "tuple", "tuple", False, None, True, 0))
    (h, c), (exp_h, norms) = problem.compiled()
    assert h.shape == c.shape == (2, 3) and exp_h.shape == (3, 2, 3) and norms.shape == (3, 2)
    assert h.grad_fn is not None and h.grad_fn.name == "Scan"  # the whole loop: one node
    problem = ScanProblem(ScanCase(4, 1, 2, 1, False, "none", "none", True, 2, False, 1))
    carry, ys = problem.compiled()
    assert ys is None and carry.shape == (1, 2)


def test_scan_with_nothing_requiring_grad_keeps_no_graph() -> None:
    problem = ScanProblem(ScanCase(3, 2, 2, 2, True, "tensor", "tensor", False, None, False, 3))
    for leaf in problem.leaves:
        leaf.requires_grad = False
    (h, _), ys = problem.compiled()
    assert h.grad_fn is None and not h.requires_grad and not ys.requires_grad
    with tl.no_grad():
        problem = ScanProblem(ScanCase(3, 2, 2, 2, False, "tensor", "tensor", False, 2, True, 4))
        carry, ys = problem.compiled()
    assert carry.grad_fn is None and ys.grad_fn is None


@pytest.mark.parametrize("checkpoint", [None, 2])
def test_a_scan_can_be_backpropagated_twice_with_retain_graph(checkpoint: int | None) -> None:
    problem = ScanProblem(ScanCase(5, 2, 3, 2, True, "tensor", "tensor", False, checkpoint, True, 5))
    carry, ys = problem.compiled()
    loss = projection_loss(flatten((carry, ys)))
    loss.backward(retain_graph=True)
    first = [leaf.grad.numpy().copy() for leaf in problem.leaves]
    loss.backward()
    for leaf, once in zip(problem.leaves, first):
        np.testing.assert_allclose(leaf.grad.numpy(), 2 * once, **TOLERANCE)


STEPS_RETURNING_A_CAPTURED_TENSOR = {
    "y is a tensor read nowhere else": lambda problem: lambda h, x: ((h + x).tanh(), problem.bias),
    "y is a Linear's weight": lambda problem: lambda h, x: ((tl.linear(h, problem.weight) + x).tanh(), problem.weight),
    "the carry is a captured tensor": lambda problem: lambda h, x: (problem.square, h * x.sum()),
}


@pytest.mark.parametrize("checkpoint", [None, 2])
@pytest.mark.parametrize("kind", list(STEPS_RETURNING_A_CAPTURED_TENSOR))
def test_a_captured_tensor_returned_by_the_step_gets_its_gradient(kind: str, checkpoint: int | None) -> None:
    """A step may hand back a tensor it reads (a parameter as y, or as the new carry):
    that tensor then receives the gradient of those results, as in the written-out loop."""
    rng = np.random.default_rng(14)
    problem = types.SimpleNamespace(weight=tensor(rng, 3, 3), bias=tensor(rng, 3), square=tensor(rng, 3, 3))
    step = STEPS_RETURNING_A_CAPTURED_TENSOR[kind](problem)
    square = kind.startswith("the carry")
    h0, xs = (
        tensor(rng, 3, 3) if square else tensor(rng, 2, 3),
        tensor(rng, 4, 3, 3) if square else tensor(rng, 4, 2, 3),
    )
    leaves = [h0, xs, problem.weight, problem.bias, problem.square]

    got = values_and_gradients(lambda: tl.scan(step, h0, xs, checkpoint=checkpoint), leaves)
    want = values_and_gradients(lambda: written_out_loop(step, h0, xs), leaves)
    assert_same(got, want, ["h0", "xs", "weight", "bias", "square"])


@pytest.mark.parametrize("checkpoint", [None, 7, scan_module.DEFER_BLOCK + 1])
def test_a_long_scan_equals_the_loop(checkpoint: int | None) -> None:
    """T beyond DEFER_BLOCK: the deferred weight gradients are summed block by block."""
    steps = 2 * scan_module.DEFER_BLOCK + 11
    for reverse in (False, True):
        check_scan_equals_loop(ScanCase(steps, 2, 3, 2, True, "tuple", "tensor", reverse, checkpoint, True, 6))


def test_a_long_layer_compiled_equals_compile_false() -> None:
    """T beyond the eager runner's PROJECTION_BLOCK, with lengths, two layers, both directions."""
    config = tst.RecurrentConfig(70, 2, 2, 3, num_layers=2, bidirectional=True, with_initial_state=True)
    check_layer_compiled_equals_eager(LayerCase("LSTM", config, (70, 33), 9, "tanh", 1))
    config = tst.RecurrentConfig(70, 2, 2, 3, batch_first=True)
    check_layer_compiled_equals_eager(LayerCase("GRU", config, None, None, "tanh", 2))


# ============================================= nn layers: compile=True vs compile=False


@dataclass
class LayerCase:
    kind: str
    config: tst.RecurrentConfig
    lengths: tuple[int, ...] | None
    checkpoint: int | None
    nonlinearity: str
    seed: int


@st.composite
def layer_cases(draw) -> LayerCase:
    config = draw(tst.recurrent_configs(max_seq_len=5, max_batch=3, max_input_size=3, max_hidden_size=3, max_layers=3))
    lengths = None
    if draw(st.booleans()):
        lengths = tuple(draw(st.lists(st.integers(1, config.seq_len), min_size=config.batch, max_size=config.batch)))
    return LayerCase(
        kind=draw(st.sampled_from(["LSTM", "GRU", "RNN"])),
        config=config,
        lengths=lengths,
        checkpoint=draw(st.none() | st.integers(1, config.seq_len + 1)),
        nonlinearity=draw(st.sampled_from(["tanh", "relu"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def build_layer(case: LayerCase, compile: bool, checkpoint: int | None) -> nn.Module:  # noqa: A002
    config = case.config
    options = dict(config.layer_kwargs(), compile=compile, checkpoint=checkpoint, dtype=tl.float64)
    if case.kind == "RNN":
        options["nonlinearity"] = case.nonlinearity
    tl.manual_seed(case.seed)  # the same weights for both layers
    return getattr(nn, case.kind)(config.input_size, config.hidden_size, **options)


def run_layer_both_ways(case: LayerCase, make_compiled=None, make_eager=None) -> tuple[tuple, tuple, list[str]]:
    """(compiled, eager, names) of one layer case: values and gradients of x, state and parameters."""
    make_compiled = make_compiled or (lambda: build_layer(case, True, case.checkpoint))
    make_eager = make_eager or (lambda: build_layer(case, False, None))
    rng = np.random.default_rng(case.seed)
    config = case.config
    x = tensor(rng, *config.x_shape)
    state = None
    if config.with_initial_state:
        parts = tuple(tensor(rng, *config.state_shape) for _ in range(2 if case.kind == "LSTM" else 1))
        state = parts if case.kind == "LSTM" else parts[0]
    results = []
    for make in (make_compiled, make_eager):
        layer = make()
        leaves = [x, *flatten(state), *layer.parameters()]
        results.append(values_and_gradients(lambda layer=layer: layer(x, state, lengths=case.lengths), leaves))
    names = ["x", *(f"state[{k}]" for k in range(len(flatten(state)))), *(n for n, _ in layer.named_parameters())]
    return results[0], results[1], names


def check_layer_compiled_equals_eager(case: LayerCase) -> None:
    compiled, eager, names = run_layer_both_ways(case)
    assert_same(compiled, eager, names)


@SOME
@given(layer_cases())
def test_layers_compiled_equal_compile_false(case: LayerCase) -> None:
    check_layer_compiled_equals_eager(case)


def test_the_default_layer_is_compiled_and_compile_false_records_every_op() -> None:
    layer = nn.LSTM(2, 3, dtype=tl.float64)
    assert layer.compile is True and layer.checkpoint is None
    x = tl.Tensor(np.ones((4, 1, 2)), dtype=tl.float64, requires_grad=True)
    output, _ = layer(x)
    names = set()
    stack, seen = [output.grad_fn], set()
    while stack:  # every node of the graph
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.name)
        stack += [edge[0] for edge in node.edges if isinstance(edge, tuple)]
    assert "Scan" in names and "Sigmoid" not in names  # the step's ops live inside the Scan node
    eager = nn.LSTM(2, 3, dtype=tl.float64, compile=False)
    assert eager(x)[0].grad_fn.name != "Scan" and "compile=False" in repr(eager)
    assert "checkpoint=2" in repr(nn.GRU(2, 3, checkpoint=2))


# =============================================================== the docs' peephole cell


class PeepholeLSTMCell(nn.RecurrentCell):
    """docs/custom_cells.md's peephole LSTM, as written there (gate order i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1.0 / math.sqrt(hidden_size)

        def uniform(*shape):
            return nn.Parameter((tl.rand(*shape) * 2.0 - 1.0) * bound)

        self.weight_ih = uniform(4 * hidden_size, input_size)
        self.weight_hh = uniform(4 * hidden_size, hidden_size)
        self.bias = uniform(4 * hidden_size)
        self.peephole_input = uniform(hidden_size)
        self.peephole_forget = uniform(hidden_size)
        self.peephole_output = uniform(hidden_size)

    def project_input(self, x):
        flat = x.reshape(-1, self.input_size) @ self.weight_ih.T + self.bias
        return flat.reshape(*x.shape[:-1], 4 * self.hidden_size)

    def initial_state(self, batch, dtype=tl.float32, device=None):
        zeros = tl.zeros(batch, self.hidden_size, dtype=dtype, device=device)
        return zeros, zeros  # one tensor as both parts: the tracer must give each its own slot

    def step(self, x_t, state):
        h, c = state
        i, f, g, o = (x_t + h @ self.weight_hh.T).chunk(4, axis=1)
        input_gate = (i + self.peephole_input * c).sigmoid()
        forget_gate = (f + self.peephole_forget * c).sigmoid()
        c = forget_gate * c + input_gate * g.tanh()
        output_gate = (o + self.peephole_output * c).sigmoid()
        h = output_gate * c.tanh()
        return h, c

    def output(self, state):
        h, _ = state
        return h


def peephole_layer(config: tst.RecurrentConfig, compile: bool, checkpoint: int | None, seed: int):  # noqa: A002
    tl.manual_seed(seed)
    layer = nn.Recurrent(
        PeepholeLSTMCell, config.input_size, config.hidden_size, **config.layer_kwargs(),
        compile=compile, checkpoint=checkpoint,
    )  # fmt: skip
    return layer.astype(tl.float64)


@FEW
@given(layer_cases())
def test_the_peephole_cell_compiled_equals_compile_false(case: LayerCase) -> None:
    case = dataclasses.replace(case, kind="LSTM")  # a state of two parts, like the peephole cell's
    compiled, eager, names = run_layer_both_ways(
        case,
        make_compiled=lambda: peephole_layer(case.config, True, case.checkpoint, case.seed),
        make_eager=lambda: peephole_layer(case.config, False, None, case.seed),
    )
    assert_same(compiled, eager, names)


def test_gradcheck_passes_through_the_compiled_peephole_layer() -> None:
    config = tst.RecurrentConfig(seq_len=3, batch=2, input_size=2, hidden_size=2, bidirectional=True)
    layer = peephole_layer(config, True, 2, seed=3)
    x = tensor(np.random.default_rng(3), *config.x_shape)
    lengths = [3, 2]
    assert gradcheck(lambda x, *params: layer(x, lengths=lengths)[0], (x, *layer.parameters()))


# ============================================================================ tl.compile


class Tanh(nn.Module):
    def forward(self, x):
        return x.tanh()


def compile_function_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = tensor(rng, 3, 4)  # closed over: an implicit input of the trace

    def fn(x, y, scale):
        hidden = (x @ weight).tanh()
        return hidden * y.sigmoid() * scale, (hidden.sum(axis=0), (y * y).mean())

    return fn, weight, rng


def test_compile_of_a_function_equals_calling_it() -> None:
    fn, weight, rng = compile_function_problem()
    compiled = tl.compile(fn)
    for _call in range(3):  # the first call traces, the others replay
        x, y = tensor(rng, 2, 3), tensor(rng, 2, 4)
        leaves = [x, y, weight]
        got = values_and_gradients(lambda x=x, y=y: compiled(x, y, 1.5), leaves)
        want = values_and_gradients(lambda x=x, y=y: fn(x, y, 1.5), leaves)
        assert_same(got, want, ["x", "y", "weight"])
    assert len(compiled.traces) == 1
    result = compiled(x, y, 1.5)
    assert isinstance(result, tuple) and isinstance(result[1], tuple) and result[0].grad_fn.name == "Compiled"


def test_compile_traces_again_on_a_new_signature() -> None:
    fn, weight, rng = compile_function_problem(1)
    compiled = tl.compile(fn)

    def agrees(x, y, scale):
        got = values_and_gradients(lambda: compiled(x, y, scale), [x, y, weight])
        want = values_and_gradients(lambda: fn(x, y, scale), [x, y, weight])
        assert_same(got, want, ["x", "y", "weight"])

    agrees(tensor(rng, 2, 3), tensor(rng, 2, 4), 1.0)
    agrees(tensor(rng, 5, 3), tensor(rng, 5, 4), 1.0)  # new shapes
    assert len(compiled.traces) == 2
    agrees(tensor(rng, 5, 3), tensor(rng, 5, 4), 2.0)  # a new constant: a new trace, not a stale 1.0
    assert len(compiled.traces) == 3
    frozen = tensor(rng, 5, 3, requires_grad=False)  # which inputs require grad
    agrees(frozen, tensor(rng, 5, 4), 2.0)
    assert len(compiled.traces) == 4 and frozen.grad is None
    x32, y32 = (tl.Tensor(rng.uniform(-1, 1, shape), dtype=tl.float32) for shape in ((2, 3), (2, 4)))
    got, want = compiled(x32, y32, 2.0), fn(x32, y32, 2.0)  # a new dtype: whatever eager mode does with it
    assert len(compiled.traces) == 5
    for a, b in zip(flatten(got), flatten(want)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOLERANCE)


def test_compile_traces_again_on_a_new_dtype() -> None:
    compiled = tl.compile(lambda x: (x * x).tanh().sum(axis=1))
    rng = np.random.default_rng(2)
    for dtype in (tl.float64, tl.float32, tl.float64):
        x = tl.Tensor(rng.uniform(-1, 1, (2, 3)), dtype=dtype, requires_grad=True)
        result = compiled(x)
        assert result.dtype == dtype
        result.sum().backward()
        expected = (1 - np.tanh(x.numpy() ** 2) ** 2) * 2 * x.numpy()
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5 if dtype == tl.float32 else 1e-12)
    assert len(compiled.traces) == 2


def make_model(seed: int) -> nn.Module:
    tl.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), Tanh(), nn.Linear(5, 2)).astype(tl.float64)


def test_compile_of_a_module_equals_the_module_and_reads_parameters_afresh() -> None:
    model = make_model(0)
    compiled = tl.compile(model)
    rng = np.random.default_rng(0)
    parameters = list(model.parameters())
    names = ["x", *(name for name, _ in model.named_parameters())]

    def agrees() -> None:
        x = tensor(rng, 4, 3)
        got = values_and_gradients(lambda: compiled(x), [x, *parameters])
        want = values_and_gradients(lambda: model(x), [x, *parameters])
        assert_same(got, want, names)

    agrees()
    model[0].weight.data[...] = rng.uniform(-1, 1, (5, 3))  # an in-place write: the same Tensor, new values
    agrees()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    x = tensor(rng, 4, 3)
    compiled(x).sum().backward()
    optimizer.step()  # whatever the optimizer does to .data, the next call must see it
    agrees()
    assert len(compiled.traces) == 1
    model[2].bias = nn.Parameter(tl.Tensor(rng.uniform(-1, 1, 2), dtype=tl.float64))  # a new Parameter object
    parameters = list(model.parameters())
    agrees()  # the signature holds the parameters' identities: traced again, the new one read
    assert len(compiled.traces) == 2


class DoubledWhileTraining(nn.Module):
    """x · 2 in training mode, x in eval mode: a module whose trace depends on its mode."""

    def forward(self, x):
        return x * (2.0 if self.training else 1.0)


def test_compile_of_a_module_sees_freezing_and_the_training_flag() -> None:
    model = make_model(1)
    compiled = tl.compile(model)
    x = tensor(np.random.default_rng(1), 4, 3)
    compiled(x).sum().backward()
    model[0].weight.requires_grad = False  # frozen after the first trace
    model[0].weight.grad = None
    compiled(x).sum().backward()
    assert model[0].weight.grad is None and model[2].weight.grad is not None
    assert len(compiled.traces) == 2  # which parameters require grad is part of the signature

    tl.manual_seed(1)
    moded = nn.Sequential(nn.Linear(3, 2), DoubledWhileTraining()).astype(tl.float64)
    compiled = tl.compile(moded)
    for training in (True, False, True):
        moded.train(training)
        np.testing.assert_allclose(compiled(x).numpy(), moded(x).numpy(), **TOLERANCE)
    assert len(compiled.traces) == 2


def test_compile_under_no_grad_builds_no_graph() -> None:
    model = make_model(2)
    compiled = tl.compile(model)
    with tl.no_grad():
        result = compiled(tensor(np.random.default_rng(2), 4, 3))
    assert result.grad_fn is None and not result.requires_grad


def test_a_scan_nested_inside_compile_equals_eager() -> None:
    problem = ScanProblem(ScanCase(4, 2, 3, 2, True, "tensor", "tensor", True, 3, True, 11))

    def loss_of_scan(h0, c0, xs):
        problem.init, problem.xs = (h0, c0), xs
        carry, ys = problem.compiled()
        return ys.sum(axis=0) + carry[1]

    def loss_of_loop(h0, c0, xs):
        problem.init, problem.xs = (h0, c0), xs
        carry, ys = problem.written_out()
        return ys.sum(axis=0) + carry[1]

    compiled = tl.compile(loss_of_scan)
    leaves = problem.leaves
    for _ in range(2):
        got = values_and_gradients(lambda: compiled(*leaves[:3]), leaves)
        want = values_and_gradients(lambda: loss_of_loop(*leaves[:3]), leaves)
        assert_same(got, want, problem.names)
    assert [op.function.__name__ for op in compiled.traces[next(iter(compiled.traces))].tape.ops].count("Scan") == 1


def compiled_and_eager_layer_runs(lengths: Any) -> tuple[tuple, tuple, list[str]]:
    tl.manual_seed(13)
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=tl.float64, checkpoint=2)
    compiled = tl.compile(layer)
    x = tensor(np.random.default_rng(13), 5, 2, 3)
    leaves = [x, *layer.parameters()]
    got = values_and_gradients(lambda: compiled(x, None, lengths), leaves)
    want = values_and_gradients(lambda: layer(x, None, lengths), leaves)
    return got, want, ["x", *(name for name, _ in layer.named_parameters())]


def test_compile_of_a_whole_lstm_layer_equals_the_layer() -> None:
    """Its scans (one per layer and direction) become ops of the compiled function's tape."""
    assert_same(*compiled_and_eager_layer_runs(None))


def test_compile_of_an_lstm_layer_with_constant_lengths_equals_the_layer() -> None:
    """Lengths given as a tuple are a constant of the trace (part of its signature), as a
    Python number is: the layer may read them. (Lengths given as a Tensor are an input
    whose values change from call to call: reading them while tracing is a TraceError.)"""
    assert_same(*compiled_and_eager_layer_runs((5, 3)))


def test_a_scan_nested_inside_a_scan_equals_the_nested_loops() -> None:
    rng = np.random.default_rng(12)
    weight, h0, xs = tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 4, 5, 2, 3)  # xs: (outer T, inner T, ...)

    def inner(h, x):
        h = (tl.linear(h, weight) + x).tanh()
        return h, h * h

    def outer_with_scan(h, x_sequence):
        h, ys = tl.scan(inner, h, x_sequence, checkpoint=2)
        return h * 0.5, ys.sum(axis=0)

    def outer_written_out(h, x_sequence):
        ys = []
        for t in range(x_sequence.shape[0]):
            h, y = inner(h, x_sequence[t])
            ys.append(y)
        return h * 0.5, tl.stack(ys).sum(axis=0)

    def nested_loops(reverse: bool):
        h, ys = h0, [None] * xs.shape[0]
        for t in reversed(range(xs.shape[0])) if reverse else range(xs.shape[0]):
            h, ys[t] = outer_written_out(h, xs[t])
        return h, tl.stack(ys)

    leaves = [weight, h0, xs]
    for reverse in (False, True):
        got = values_and_gradients(lambda reverse=reverse: tl.scan(outer_with_scan, h0, xs, reverse=reverse), leaves)
        want = values_and_gradients(lambda reverse=reverse: nested_loops(reverse), leaves)
        assert_same(got, want, ["weight", "h0", "xs"])


# ================================================================ gradcheck through them


def test_gradcheck_passes_through_scan() -> None:
    problem = ScanProblem(ScanCase(4, 2, 2, 2, True, "tuple", "tuple", True, 3, True, 21))

    def fn(h0, c0, x_main, x_gate, *_):
        problem.init, problem.xs = (h0, c0), (x_main, x_gate)
        carry, ys = problem.compiled()
        return (*carry, *ys)

    assert gradcheck(fn, problem.leaves)


def test_gradcheck_passes_through_compile() -> None:
    model = make_model(3)
    compiled = tl.compile(lambda x, *parameters: (model(x) * x[:, :2]).tanh())  # the parameters: read by model
    x = tensor(np.random.default_rng(3), 3, 3)
    assert gradcheck(compiled, (x, *model.parameters()))
    assert gradcheck(compiled, (x, *model.parameters()))  # replayed, not traced again


def test_a_compiled_replay_leaves_its_shared_contexts_empty() -> None:
    """The Contexts a compiled function's replays reuse from call to call hold no array once a
    replay is done, so nothing of one call stays alive until the next."""
    fn, weight, rng = compile_function_problem(4)
    compiled = tl.compile(fn)
    x, y = tensor(rng, 2, 3), tensor(rng, 2, 4)
    for _call in range(2):
        hidden, (total, mean) = compiled(x, y, 2.0)
        (hidden.sum() + total.sum() + mean).backward()
    with tl.no_grad():
        compiled(x, y, 2.0)  # a trace of its own, without a graph: its replay keeps nothing
    training, inference = compiled.traces.values()
    assert training.keep and not inference.keep
    kinds = {"forward_keep": training.tape, "backward": training.tape, "forward": inference.tape}
    for kind, its_tape in kinds.items():
        shared = its_tape.shared_contexts(kind)
        assert shared, kind  # the ops of this function are built-ins that save only
        assert all(ctx.saved_tensors == () for ctx in shared), kind


def test_threads_calling_one_compiled_function_at_once_get_their_own_gradients() -> None:
    """Two threads replay the same trace at once, switching threads every few bytecodes: each
    gets its own shared Contexts, so no VJP runs on the other thread's saved arrays."""
    fn, weight, rng = compile_function_problem(5)
    compiled = tl.compile(fn)
    compiled(tensor(rng, 2, 3), tensor(rng, 2, 4), 1.5)  # traced here, replayed in the threads
    inputs = [(tensor(rng, 2, 3), tensor(rng, 2, 4)) for _thread in range(2)]
    wanted = [values_and_gradients(lambda x=x, y=y: fn(x, y, 1.5), [x, y]) for x, y in inputs]
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run(x: tl.Tensor, y: tl.Tensor, want: tuple) -> None:
        start.wait()
        try:
            for _call in range(30):
                assert_same(values_and_gradients(lambda: compiled(x, y, 1.5), [x, y]), want, ["x", "y"])
        except BaseException as failure:  # noqa: BLE001  (reported by the main thread)
            failures.append(failure)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(*xy, want)) for xy, want in zip(inputs, wanted)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[0]
    assert len(compiled.traces) == 1


def test_a_users_function_may_call_the_compiled_function_it_is_part_of() -> None:
    """A user's op inside a compiled function calls that very function from its forward and
    its backward: the inner replays reuse the shared Contexts the outer one is using, which
    must not change what the outer one saved."""
    rng = np.random.default_rng(6)
    weight = tensor(rng, 4)
    depth, calls = [], []

    def fn(x):
        return ((x * weight).tanh() * Reentering.apply(x.sigmoid())).sigmoid() * x

    class Reentering(tl.Function):
        """y = 3x, calling ``fn`` once more in forward and in backward (at the outer call only)."""

        @staticmethod
        def forward(ctx, x):
            call_again(x * 0.5)
            return 3 * x

        @staticmethod
        def backward(ctx, g):
            call_again(g + 0.25)
            return 3 * g

    def call_again(array) -> None:
        """A whole forward and backward of the compiled function, from within one of its replays."""
        if depth or function.active_tracer() is not None:  # (not while tracing it, nor from the inner call)
            return
        depth.append(1)
        with tl.set_grad_enabled(True):  # (backward runs VJPs with grad mode off)
            inner = tl.Tensor(array, requires_grad=True)
            compiled_fn(inner).sum().backward()
        depth.pop()
        calls.append(inner.grad is not None)

    compiled_fn = tl.compile(fn)
    for _call in range(3):
        x = tensor(rng, 4)
        got = values_and_gradients(lambda x=x: compiled_fn(x), [x, weight])
        want = values_and_gradients(lambda x=x: fn(x), [x, weight])
        assert_same(got, want, ["x", "weight"])
    assert len(calls) >= 8 and all(calls)  # it did call itself, from forward and from backward


# =========================================================== loops kept by structure
#
# A layer traces its step at every call; the loops generated for the first call are
# kept by the loop's structure and run again. Each test below asks for the loops of one
# structure after those of another that differs in one thing only, so that a key which
# missed that thing would hand the second loop the first one's code.


def tanh_cell(weight: tl.Tensor, scale: float = 1.0, axis: int | None = None):
    """A step ``h' = tanh(scale·h W + x [+ Σ_axis x])``: each call a new function, as a layer's."""

    def step(h, x):
        pre = h @ weight * scale + x
        if axis is not None:
            pre = pre + x.sum(axis=axis)  # (for a square x: the same shape for either axis)
        h = pre.tanh()
        return h, h

    return step


def scan_against_loop(step, init: tl.Tensor, xs: tl.Tensor, leaves: list[tl.Tensor], reverse: bool = False) -> None:
    """tl.scan(step) equals the loop written out, values and gradients (see assert_same)."""
    names = [f"leaf {index}" for index in range(len(leaves))]

    def written_out():
        if not reverse:
            return written_out_loop(step, init, xs)
        carry, ys = init, [None] * xs.shape[0]
        for t in reversed(range(xs.shape[0])):
            carry, ys[t] = step(carry, xs[t])
        return carry, tl.stack(ys)

    compiled = values_and_gradients(lambda: tl.scan(step, init, xs, reverse=reverse), leaves)
    assert_same(compiled, values_and_gradients(written_out, leaves), names)


def test_a_scan_called_again_runs_the_loops_generated_for_its_first_call() -> None:
    rng = np.random.default_rng(0)
    weight, h0 = tensor(rng, 3, 3), tensor(rng, 2, 3)
    made = []
    for _ in range(3):
        carry, ys = tl.scan(tanh_cell(weight), h0, tensor(rng, 4, 2, 3))  # traced again: a new tape
        loop = carry.grad_fn.loop
        projection_loss([carry, ys]).backward()
        made.append((loop.replay("forward_keep"), loop.replay("backward")))
    assert made[0][0] is made[1][0] is made[2][0] and made[0][1] is made[1][1] is made[2][1]
    assert len(scan_module.generated_loops.entries) == 2  # one forward and one backward loop in all


def test_a_layer_called_again_generates_no_loop() -> None:
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = tl.Tensor(np.random.default_rng(1).normal(size=(5, 2, 3)), dtype=tl.float32)
    layer(x)[0].sum().backward()
    generated = dict(scan_module.generated_loops.entries)
    layer(x)[0].sum().backward()
    assert scan_module.generated_loops.entries == generated  # the same loops, none more


def test_loops_differing_in_a_constant_keyword_shape_or_direction_each_equal_their_loop() -> None:
    """One after another, without forgetting the loops in between: each gets code of its own
    where its code differs (a constant, a keyword argument, the shapes), the same where it
    does not (the direction: the order of the steps is an argument of the loop)."""
    rng = np.random.default_rng(2)
    weight, h0 = tensor(rng, 3, 3), tensor(rng, 3, 3)
    xs = tensor(rng, 4, 3, 3)
    leaves = [weight, h0, xs]
    for scale in (0.5, 2.0, -1.0):
        scan_against_loop(tanh_cell(weight, scale), h0, xs, leaves)
    for axis in (0, 1):  # x is square: the same shapes, another sum
        scan_against_loop(tanh_cell(weight, axis=axis), h0, xs, leaves)
    for reverse in (False, True):
        scan_against_loop(tanh_cell(weight), h0, xs, leaves, reverse=reverse)
    wide_h0, wide_xs = tensor(rng, 5, 3), tensor(rng, 4, 5, 3)
    scan_against_loop(tanh_cell(weight), wide_h0, wide_xs, [weight, wide_h0, wide_xs])
    # 3 scales, 2 axes, scale 1 (both directions), the wider batch: 7 structures, a forward and a backward loop each
    assert len(scan_module.generated_loops.entries) == 2 * 7


class Doubled(tl.Function):
    """y = 2x, a user's op (one test below replaces its VJP)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_a_users_vjp_replaced_between_two_calls_is_the_one_the_second_call_runs(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    weight, h0, xs = tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 4, 2, 3)

    def step(h, x):
        h = Doubled.apply(h @ weight + x).tanh()
        return h, h

    scan_against_loop(step, h0, xs, [weight, h0, xs])
    monkeypatch.setattr(Doubled, "backward", staticmethod(lambda ctx, g: 3 * g))  # the written-out loop's too
    scan_against_loop(step, h0, xs, [weight, h0, xs])


def test_a_loop_structure_reads_every_attribute_of_its_ops() -> None:
    """A TapeOp attribute the key leaves out could tell two loops apart that share their code."""
    rng = np.random.default_rng(4)
    carry, _ = tl.scan(tanh_cell(tensor(rng, 3, 3), axis=0), tensor(rng, 3, 3), tensor(rng, 2, 3, 3))
    for op in carry.grad_fn.loop.tape.ops:
        assert sorted(vars(op)) == sorted(scan_module.OP_SHAPE + scan_module.OP_VALUES)


def test_a_loop_structure_knows_plain_values_exactly_and_other_objects_by_identity() -> None:
    def key(value):
        held = []
        return scan_module._by_value(value, held), held

    assert key(0.0) != key(-0.0) and key(1) != key(1.0) != key(True)
    assert key(np.float32(1)) != key(np.float64(1)) != key(1.0)
    assert key((1, slice(None, 2))) == key((1, slice(None, 2))) != key((1, slice(None, 3)))
    assert key({"axis": 0})[0] != key({"axis": 1})[0]
    array = np.zeros(3)
    (array_key, held) = key([array])
    assert held == [array] and held[0] is array  # kept alive with the key: its identity stays its own
    assert array_key != key([np.zeros(3)])[0]  # an equal array, another object: another key


# ============================================================= temporaries let go
#
# A replay holds its values in locals; one that no later op reads is let go right after
# its last reader (forward) or its VJP (backward), so its memory serves the next arrays
# while still in cache. Two user ops watch that: one keeps a weak reference to the array
# it is handed, the next one (forward) or the one before it (backward) sees whether it
# is gone.

watched: list[weakref.ref] = []
gone: list[bool] = []


class Watch(tl.Function):
    """y = x + 1, keeping a weak reference to x, and in backward to the gradient it is handed."""

    @staticmethod
    def forward(ctx, x):
        watched.append(weakref.ref(x))
        return x + 1

    @staticmethod
    def backward(ctx, g):
        watched.append(weakref.ref(g))
        return g * 1


class SeeWatchedGone(tl.Function):
    """y = x; forward and backward note whether the array last watched is gone."""

    @staticmethod
    def forward(ctx, x):
        gone.append(watched[-1]() is None)
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        gone.append(watched[-1]() is None)
        return g * 1


def watched_step(h: tl.Tensor, x: tl.Tensor) -> tl.Tensor:
    """A step with one temporary watched in each direction.

    Forward: ``h · 2`` is a temporary once the first Watch has read it. Backward: so is
    the gradient Doubled's VJP hands the second Watch, once that Watch's VJP has run.
    """
    seen = SeeWatchedGone.apply(Watch.apply(h * 2.0))
    return Doubled.apply(Watch.apply(seen + x))


def test_a_compiled_call_lets_each_temporary_go_after_its_last_use() -> None:
    rng = np.random.default_rng(5)
    h, x = tensor(rng, 2, 3), tensor(rng, 2, 3)
    compiled = tl.compile(lambda h, x: watched_step(h, x).sum())
    compiled(h, x).backward()  # traced: the Tensors of the trace hold every value
    gone.clear()
    compiled(h, x).backward()  # replayed
    assert gone == [True, True]  # h · 2 after its reader's forward; Doubled's VJP output after the next VJP


def test_a_scan_step_lets_each_temporary_go_after_its_last_use() -> None:
    rng = np.random.default_rng(6)
    h0, xs = tensor(rng, 2, 3), tensor(rng, 4, 2, 3)
    final, ys = tl.scan(lambda h, x: (watched_step(h, x),) * 2, h0, xs)
    gone.clear()
    (final.sum() + ys.sum()).backward()  # backward: steps 3, 2, 1, 0
    assert gone == [True] * 4
    gone.clear()
    tl.scan(lambda h, x: (watched_step(h, x),) * 2, h0, xs)  # traced step 0, then steps 1-3 replayed
    assert gone == [False, True, True, True]


# ===================================== recomputed segments: ops run a block of steps at once
#
# Backward recomputes a checkpointed segment knowing every x_t and every carry that the
# step also returns as y (h_{t-1} is a row of the y buffer). The ops that need nothing
# else run for a block of steps in one call (``mark_batched``), the others step by step
# reading their rows. Blocks of one step, blocks that cut segments unevenly, reverse
# loops and stacked layers all equal the loop; an op whose inputs would not broadcast
# once stacked stays per step.


def batched_flags(output: tl.Tensor) -> list[tuple[str, bool]]:
    """(op, whether a recomputation runs it for a block of steps) for the loop that made ``output``."""
    return [(op.function.__name__, op.batched) for op in output.grad_fn.loop.tape.ops]


def test_a_checkpointed_lstm_recomputes_all_but_its_cell_state_ops_a_block_at_a_time() -> None:
    layer = nn.LSTM(3, 4, dtype=tl.float64, checkpoint=2)
    output, _ = layer(tl.Tensor(np.ones((5, 2, 3)), dtype=tl.float64))
    assert batched_flags(output) == [
        ("Linear", True), ("Linear", True), ("Split", True),  # x_t W_ihᵀ + b; h_{t-1} W_hhᵀ + that; the gates
        ("Sigmoid", True), ("Sigmoid", True), ("Tanh", True), ("Sigmoid", True), ("Mul", False),  # f ⊙ c_{t-1}
        ("Mul", True), ("Add", False), ("Tanh", False), ("Mul", False),  # i ⊙ g; then c_t, tanh(c_t), h_t
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["RNN", "GRU"])
def test_a_checkpointed_rnn_or_gru_step_is_recomputed_whole_a_block_at_a_time(kind: str) -> None:
    layer = getattr(nn, kind)(3, 4, dtype=tl.float64, checkpoint=2)
    output, _ = layer(tl.Tensor(np.ones((5, 2, 3)), dtype=tl.float64))
    assert all(batched for _, batched in batched_flags(output))


def test_nothing_is_batched_without_checkpoints_and_only_x_only_ops_where_the_carry_is_not_a_y() -> None:
    x = tl.Tensor(np.ones((5, 2, 3)), dtype=tl.float64)
    output, _ = nn.LSTM(3, 4, dtype=tl.float64)(x)  # nothing is recomputed
    assert not any(batched for _, batched in batched_flags(output))
    output, _ = nn.LSTM(3, 4, dtype=tl.float64, checkpoint=2)(x, lengths=[5, 3])  # h' = where(alive, h_new, h)
    assert [name for name, batched in batched_flags(output) if batched] == ["Linear"]  # x_t W_ihᵀ + b only


@pytest.mark.parametrize("batch_numbers", [1, 60, scan_module.BATCH_NUMBERS])
def test_recomputed_blocks_of_any_size_equal_the_loop(monkeypatch, batch_numbers: int) -> None:
    """Blocks of one step; of 2 or 3 steps in segments of 5 (an LSTM's gates are 24 numbers a step); whole segments."""
    monkeypatch.setattr(scan_module, "BATCH_NUMBERS", batch_numbers)
    for seed, kind in enumerate(["LSTM", "GRU", "RNN"]):
        config = tst.RecurrentConfig(11, 2, 2, 3, num_layers=2, bidirectional=True, with_initial_state=True)
        check_layer_compiled_equals_eager(LayerCase(kind, config, None, 5, "tanh", seed))


def test_a_step_input_with_fewer_axes_than_its_result_is_not_stacked_into_a_block(monkeypatch) -> None:
    """A bias x_t of shape (3,) added into h W (3 × 3): stacked over 3 steps it would broadcast along the batch."""
    monkeypatch.setattr(scan_module, "BATCH_NUMBERS", 27)  # blocks of 3 steps, as many as the batch: no error to see
    rng = np.random.default_rng(3)
    weight, init, xs = tensor(rng, 3, 3), tensor(rng, 3, 3), tensor(rng, 6, 3)

    def step(h, x):
        h = tl.linear(h, weight, x).tanh()
        return h, h

    leaves = [weight, init, xs]
    compiled = values_and_gradients(lambda: tl.scan(step, init, xs, checkpoint=3), leaves)
    assert_same(compiled, values_and_gradients(lambda: written_out_loop(step, init, xs), leaves), ["W", "init", "xs"])
    _, ys = tl.scan(step, init, xs, checkpoint=3)
    assert batched_flags(ys) == [("Linear", False), ("Tanh", False)]


class TanhOfCentred(ops.Tanh):
    """tanh(x - mean over axis 0 of x): a forward of its own, not row-wise (stacked, axis 0 is the steps)."""

    @staticmethod
    def forward(ctx, x):
        return ops.Tanh.forward(ctx, x - x.mean(axis=0, keepdims=True))


def test_a_subclass_with_its_own_forward_is_not_batched_as_its_parent_is() -> None:
    rng = np.random.default_rng(4)
    weight, init, xs = tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 6, 2, 3)

    def step(h, x):
        h = TanhOfCentred.apply(tl.linear(h, weight, x)).tanh()
        return h, h

    leaves = [weight, init, xs]
    compiled = values_and_gradients(lambda: tl.scan(step, init, xs, checkpoint=3), leaves)
    assert_same(compiled, values_and_gradients(lambda: written_out_loop(step, init, xs), leaves), ["W", "init", "xs"])
    _, ys = tl.scan(step, init, xs, checkpoint=3)
    assert batched_flags(ys) == [("Linear", True), ("TanhOfCentred", False), ("Tanh", False)]


# ======================================================================== canaries
#
# The reverse replay is gradient code: which VJP sees which gradient, in which order,
# from which saved arrays. Each canary plants one bug in it and runs the properties
# above, which must go red. The bugs are planted at the replay's seams — the source of
# the reverse replay a tape builds (``backward_loop_source``, ``backward_source``) and
# the order it runs the VJPs in (``replay_order``), the tape a trace
# writes (``trace``), the deferred weight gradients (``deferred_gradients``) and the
# carries a checkpointed forward keeps (``ctx.checkpoints``) — not in eager mode, so
# only a comparison against the eager loop (or gradcheck) can see them.


def red(check, cases) -> BaseException:
    """Run a property on drawn cases: with the planted bug it must fail."""

    @RED
    @given(cases)
    def run(case) -> None:
        check(case)

    with pytest.raises((AssertionError, GradcheckError)) as failure:
        run()
    return failure.value


def green(check, cases) -> None:
    """The same run without a failure: the planted change is harmless (a control)."""

    @RED
    @given(cases)
    def run(case) -> None:
        check(case)

    run()


def long_enough(cases: st.SearchStrategy) -> st.SearchStrategy:
    """Cases with enough steps for a mid-loop fault to matter."""
    return cases.filter(lambda case: (case.steps if isinstance(case, ScanCase) else case.config.seq_len) >= 3)


def edit_backward_replays(monkeypatch, edit) -> list[str]:
    """Every reverse replay a tape builds is generated from ``edit(source)``: a scan's loop over
    its steps and a compiled function's step. The bug is planted in the very code that runs.
    Returns the list of sources edited (in the order they were built)."""
    edited = []

    def edited_version(original):
        def generate(*args):
            source = edit(original(*args))
            edited.append(source)
            return source

        return generate

    for name in ("backward_loop_source", "backward_source"):
        monkeypatch.setattr(scan_module, name, edited_version(getattr(scan_module, name)))
    return edited


def test_edited_replays_are_the_replays_that_run(monkeypatch) -> None:
    """The control for the canaries below: an edit that changes nothing keeps every property
    green, and the edits reach both the loops of scans and the steps of compiled functions."""
    edited = edit_backward_replays(monkeypatch, lambda source: source)
    green(check_scan_equals_loop, scan_cases())
    green(check_layer_compiled_equals_eager, layer_cases())
    test_compile_of_a_module_equals_the_module_and_reads_parameters_afresh()
    assert any("for visit in visits:" in source for source in edited)
    assert any(source.startswith("def backward(records, grads, on_deferred, shared):") for source in edited)


def test_canary_a_skipped_backward_step_is_caught(monkeypatch) -> None:
    def skip_every_third_step(source: str) -> str:
        loop_header = "    for visit in visits:\n"
        return source.replace(loop_header, loop_header + "        if visit % 3 == 1: continue  # planted\n")

    edited = edit_backward_replays(monkeypatch, skip_every_third_step)
    red(check_scan_equals_loop, long_enough(scan_cases()))
    red(check_layer_compiled_equals_eager, long_enough(layer_cases()))
    assert any("# planted" in source for source in edited)


class SigmoidWithTanhsVJP(ops.Sigmoid):
    """Sigmoid's forward with Tanh's VJP (g · (1 - y²)): two VJPs swapped."""

    backward = ops.Tanh.backward


def test_canary_a_tape_with_tanhs_vjp_for_sigmoid_is_caught(monkeypatch) -> None:
    original = scan_module.trace

    def trace_with_the_wrong_vjp(*args, **kwargs):
        stand_ins, result, tracer = original(*args, **kwargs)
        for op in tracer.ops:
            if op.function is ops.Sigmoid:
                op.function = SigmoidWithTanhsVJP
        return stand_ins, result, tracer

    monkeypatch.setattr(scan_module, "trace", trace_with_the_wrong_vjp)
    red(check_scan_equals_loop, scan_cases().filter(lambda case: case.tuple_carry or case.xs_kind == "tuple"))
    red(check_layer_compiled_equals_eager, layer_cases().filter(lambda case: case.kind != "RNN"))


def swap_first_two_sigmoid_contexts(source: str) -> str:
    """A loop's replay in which the first two Sigmoid VJPs each run on the other's Context."""
    sigmoids = re.findall(r"# Sigmoid\n\s+[ar] = backward\d+\((c\d+),", source)
    if len(sigmoids) < 2:
        return source
    first, second = sigmoids[-1], sigmoids[-2]  # (the replay runs them last op first)
    names = {first: second, second: first}
    lines = source.split("\n")
    for k, line in enumerate(lines):
        if line.endswith("= steps[visit - offset]"):
            lines[k] = re.sub(r"\bc\d+\b", lambda match: names.get(match.group(0), match.group(0)), line)
    return "\n".join(lines)


def test_canary_two_ops_trading_their_saved_arrays_is_caught(monkeypatch) -> None:
    """The input and forget gates' Sigmoid VJPs each run on the other's saved output."""
    swapped = []

    def swap(source: str) -> str:
        edited = swap_first_two_sigmoid_contexts(source)
        swapped.append(edited != source)
        return edited

    edit_backward_replays(monkeypatch, swap)
    red(check_layer_compiled_equals_eager, layer_cases().filter(lambda case: case.kind != "RNN"))
    assert any(swapped)


def test_canary_vjps_on_the_records_of_the_step_before_are_caught(monkeypatch) -> None:
    """Each step's VJPs run on what the step before it kept (the first step's on its own): an
    off-by-one in time, in the saved tuples a loop keeps for its ops' scratch Contexts."""
    record = "= steps[visit - offset]\n"

    def previous_step(source: str) -> str:
        return source.replace(record, "= steps[max(visit - offset - 1, 0)]  # planted\n")

    edited = edit_backward_replays(monkeypatch, previous_step)
    red(check_scan_equals_loop, long_enough(scan_cases()))
    red(check_layer_compiled_equals_eager, long_enough(layer_cases()))
    assert any("# planted" in source for source in edited)


def test_canary_a_compiled_call_whose_vjps_trade_records_is_caught(monkeypatch) -> None:
    """In a compiled function's reverse replay, the Tanh and the Sigmoid VJP each get the other's
    saved output put back into their shared Context (both are (2, 4))."""

    def swap(source: str) -> str:
        restores = dict(re.findall(r"# (Tanh|Sigmoid)\n\s+c\d+\.saved_tensors = (s\d+)\n", source))
        if set(restores) != {"Tanh", "Sigmoid"}:
            return source
        tanh, sigmoid = restores["Tanh"], restores["Sigmoid"]
        traded = {
            f"saved_tensors = {tanh}\n": f"saved_tensors = {sigmoid}\n",
            f"saved_tensors = {sigmoid}\n": f"saved_tensors = {tanh}\n",
        }
        return (
            re.sub(f"saved_tensors = ({tanh}|{sigmoid})\n", lambda match: traded[match.group(0)], source)
            + "  # planted"
        )

    edited = edit_backward_replays(monkeypatch, swap)
    with pytest.raises(AssertionError):
        test_compile_of_a_function_equals_calling_it()
    assert any(source.endswith("# planted") for source in edited)


def test_canary_a_wrong_primitive_vjp_is_caught_by_gradcheck_through_scan(monkeypatch) -> None:
    """Eager and compiled share each op's VJP, so compiled-vs-eager cannot see this one: gradcheck does."""
    monkeypatch.setattr(ops.Sigmoid, "backward", ops.Tanh.backward)
    with pytest.raises(GradcheckError):
        test_gradcheck_passes_through_scan()


def test_canary_the_ops_replayed_in_forward_order_are_caught(monkeypatch) -> None:
    original = scan_module.replay_order
    monkeypatch.setattr(scan_module, "replay_order", lambda tape: list(reversed(original(tape))))
    red(check_scan_equals_loop, scan_cases())
    red(check_layer_compiled_equals_eager, layer_cases())
    with pytest.raises(AssertionError):  # tl.compile replays the same way
        test_compile_of_a_module_equals_the_module_and_reads_parameters_afresh()


def test_canary_a_dropped_deferred_weight_gemm_is_caught(monkeypatch) -> None:
    monkeypatch.setattr(scan_module, "deferred_gradients", lambda tape, op_index, saved, *rest: [])
    red(check_scan_equals_loop, scan_cases())
    red(check_layer_compiled_equals_eager, layer_cases())


def test_canary_a_deferred_gemm_over_the_wrong_steps_is_caught(monkeypatch) -> None:
    original = scan_module.deferred_gradients

    def first_step_only(tape, op_index, saved, stacked_grad, first_input=None):
        return original(tape, op_index, saved[:1], stacked_grad[:1])  # first_input (all steps) dropped

    monkeypatch.setattr(scan_module, "deferred_gradients", first_step_only)
    red(check_scan_equals_loop, long_enough(scan_cases()))


def corrupt_kept_carries(monkeypatch, corrupt) -> None:
    """After each checkpointed forward, the carries kept for recomputation become ``corrupt(kept)``."""
    original = scan_module.Scan.forward

    def forward(ctx, *arrays, loop):
        result = original(ctx, *arrays, loop=loop)
        kept = getattr(ctx, "checkpoints", None)
        if kept:
            ctx.checkpoints = corrupt(kept)
        return result

    monkeypatch.setattr(scan_module.Scan, "forward", staticmethod(forward))


def checkpointed(cases: st.SearchStrategy, segments: int = 1) -> st.SearchStrategy:
    """Cases with checkpointing, in at least ``segments`` segments."""

    def steps(case) -> int:
        return case.steps if isinstance(case, ScanCase) else case.config.seq_len

    return cases.filter(lambda case: case.checkpoint is not None and -(-steps(case) // case.checkpoint) >= segments)


def test_canary_a_recompute_from_a_wrong_carry_is_caught(monkeypatch) -> None:
    corrupt_kept_carries(monkeypatch, lambda kept: [[part + 0.25 for part in carry] for carry in kept])
    red(check_scan_equals_loop, checkpointed(scan_cases()))
    red(check_layer_compiled_equals_eager, checkpointed(layer_cases()))


def test_canary_a_recompute_from_the_previous_segments_carry_is_caught(monkeypatch) -> None:
    corrupt_kept_carries(monkeypatch, lambda kept: [kept[0], *kept[:-1]])
    red(check_scan_equals_loop, checkpointed(scan_cases(), segments=2))
    red(check_layer_compiled_equals_eager, checkpointed(layer_cases(), segments=2))


def test_canary_recomputed_blocks_one_step_off_are_caught(monkeypatch) -> None:
    original = scan_module.Loop.batched_results

    def one_step_off(self, *args):
        def rolled(result):  # row k holds step k - 1's result (a Split's result: each piece)
            return (
                tuple(np.roll(piece, 1, axis=0) for piece in result)
                if type(result) is tuple
                else np.roll(result, 1, axis=0)
            )

        return [rolled(result) for result in original(self, *args)]

    monkeypatch.setattr(scan_module.Loop, "batched_results", one_step_off)
    cases = checkpointed(long_enough(layer_cases())).filter(lambda case: case.checkpoint >= 2)
    red(check_layer_compiled_equals_eager, cases)


# ==================================================================== trace safety


def read_into_python(name: str):
    """A step function that reads a value into Python in the way ``name`` says."""
    calls = {
        ".item()": lambda t: t.sum().item(),
        ".numpy()": lambda t: t.numpy(),
        ".tolist()": lambda t: t.tolist(),
        "bool(t)": lambda t: bool(t.sum() > 0),
        "float(t)": lambda t: float(t.sum()),
        "tl.randn": lambda t: tl.randn(*t.shape, dtype=t.dtype),
    }
    return calls[name]


UNTRACEABLE = [".item()", ".numpy()", ".tolist()", "bool(t)", "float(t)", "tl.randn"]


@pytest.mark.parametrize("call", UNTRACEABLE)
@pytest.mark.parametrize("where", ["tl.scan", "tl.compile", "nn layer"])
def test_reading_a_value_into_python_while_tracing_raises(call: str, where: str) -> None:
    read = read_into_python(call)
    x = tl.Tensor(np.ones((3, 2, 2)), dtype=tl.float64, requires_grad=True)
    if where == "tl.scan":

        def step(carry, x_t):
            read(x_t)
            return carry + x_t, None

        def run():
            return tl.scan(step, x[0], x)

    elif where == "tl.compile":

        def doubled(t):
            read(t)
            return t * 2

        def run():
            return tl.compile(doubled)(x)

    else:

        class PeekingCell(nn.RNNCell):
            def step(self, x_t, h):
                read(h)
                return super().step(x_t, h)

        layer = nn.Recurrent(PeekingCell, 2, 2).astype(tl.float64)

        def run():
            return layer(x)

    with pytest.raises(tl.TraceError) as failure:
        run()
    message = str(failure.value)
    shown = {"bool(t)": "bool(", "float(t)": "float(", "tl.randn": "tl.randn"}.get(call, call)
    assert shown in message, message
    assert "compile=False" in message and "outside" in message, message
    assert isinstance(failure.value, RuntimeError)
    assert function.active_tracer() is None, "a failed trace left its tracer switched on"
    assert function.tracing_threads == 0
    assert float((x * 2).sum()) == 24.0  # and eager mode works again right away
    if where == "nn layer":  # the way out the message names: compile=False runs the same cell
        layer.compile = False
        output, _ = layer(x)
        assert output.shape == (3, 2, 2)


def test_a_carry_that_changes_shape_raises() -> None:
    xs = tl.Tensor(np.ones((3, 2, 2)), dtype=tl.float64)
    with pytest.raises(TypeError, match=r"carry part 0 changed from shape \(2, 2\).*to \(2, 4\)"):
        tl.scan(lambda carry, x: (tl.cat([carry, x], axis=1), None), xs[0], xs)


def test_a_carry_that_changes_dtype_raises() -> None:
    xs = tl.Tensor(np.ones((3, 2)), dtype=tl.float64)
    init = tl.Tensor(np.ones(2), dtype=tl.float32)
    with pytest.raises(TypeError, match=r"carry.*float32.*float64.*keep its shape and dtype"):
        tl.scan(lambda carry, x: (carry.astype(tl.float64) * x, None), init, xs)


def test_a_carry_that_changes_structure_raises() -> None:
    xs = tl.Tensor(np.ones((3, 2)), dtype=tl.float64)
    with pytest.raises(TypeError, match="structure"):
        tl.scan(lambda carry, x: ((carry, carry), None), xs[0], xs)


def test_xs_of_different_lengths_raise() -> None:
    a, b = tl.Tensor(np.ones((3, 2))), tl.Tensor(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"different lengths.*\[3, 4\]"):
        tl.scan(lambda carry, x: (carry + x[0] + x[1], None), a[0], (a, b))


def test_a_length_that_disagrees_with_xs_raises() -> None:
    xs = tl.Tensor(np.ones((3, 2)))
    with pytest.raises(ValueError, match="length=5 but xs has 3 steps"):
        tl.scan(lambda carry, x: (carry + x, None), xs[0], xs, length=5)
    with pytest.raises(ValueError, match="length="):
        tl.scan(lambda carry, x: (carry, None), xs[0])  # no xs, no length


@pytest.mark.parametrize("checkpoint", [0, -1, 1.5, True])
def test_a_checkpoint_that_is_not_a_positive_int_raises(checkpoint) -> None:
    xs = tl.Tensor(np.ones((3, 2)))
    with pytest.raises(ValueError, match="checkpoint must be a positive int"):
        tl.scan(lambda carry, x: (carry + x, None), xs[0], xs, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="checkpoint must be a positive int"):
        nn.LSTM(2, 2, checkpoint=checkpoint)


def test_checkpoint_without_compile_raises() -> None:
    with pytest.raises(ValueError, match="checkpoint needs compile=True"):
        nn.Recurrent(nn.RNNCell, 2, 3, compile=False, checkpoint=2)
    with pytest.raises(ValueError, match="checkpoint needs compile=True"):
        nn.GRU(2, 3, compile=False, checkpoint=2)


def test_a_step_that_does_not_return_a_pair_raises() -> None:
    xs = tl.Tensor(np.ones((3, 2)))
    with pytest.raises(TypeError, match="pair"):
        tl.scan(lambda carry, x: carry + x, xs[0], xs)


# ==================================================================== threads


def pause_inside_a_trace(step, steps: int = 3):
    """Start a thread that runs ``tl.scan(step)`` and stops inside its trace until released.

    Returns (the thread, the Event that lets it go on, a dict that receives its result).
    """
    inside, release, result = threading.Event(), threading.Event(), {}

    def waiting_step(h, x):
        inside.set()
        assert release.wait(10), "the main thread never released the trace"
        return step(h, x)

    def run():
        rng = np.random.default_rng(1)
        h0, xs = tensor(rng, 2, 3), tensor(rng, steps, 2, 3)
        carry, ys = tl.scan(waiting_step, h0, xs)
        result.update(h0=h0, xs=xs, carry=carry, ys=ys, ops=[op.function for op in carry.grad_fn.loop.tape.ops])
        (carry.sum() + ys.sum()).backward()

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(10), "the thread never started tracing"
    return thread, release, result


def test_eager_work_in_another_thread_is_not_traced() -> None:
    """A trace in one thread leaves the others eager: their ops build their own graph, and
    reading a value (``.item()``) is allowed there."""
    thread, release, result = pause_inside_a_trace(lambda h, x: ((h * x).tanh(), h))
    try:
        w = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
        loss = (w * w).sum()
        assert loss.item() == 5.0
        loss.backward()
        np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])
    finally:
        release.set()
        thread.join()
    assert result["ops"] == [ops.Mul, ops.Tanh]


def test_two_threads_tracing_at_once_keep_their_own_tapes() -> None:
    def step(h, x):
        return (h * x).tanh(), h

    thread, release, result = pause_inside_a_trace(step)
    try:
        rng = np.random.default_rng(2)
        h0, xs = tensor(rng, 2, 3), tensor(rng, 4, 2, 3)
        carry, ys = tl.scan(lambda h, x: (h + x, h * 2.0), h0, xs)
        assert [op.function for op in carry.grad_fn.loop.tape.ops] == [ops.Add, ops.Mul]
        written_out = h0
        for t in range(4):
            written_out = written_out + xs[t]
        np.testing.assert_allclose(carry.numpy(), written_out.numpy(), rtol=1e-12)
    finally:
        release.set()
        thread.join()
    h, h0, xs = result["h0"], result["h0"], result["xs"]
    for t in range(xs.shape[0]):
        h, _ = step(h, xs[t])
    np.testing.assert_allclose(result["carry"].numpy(), h.numpy(), rtol=1e-12)
    assert result["ops"] == [ops.Mul, ops.Tanh]
    assert result["h0"].grad is not None and result["xs"].grad is not None


# ======================================================== the strict stand-in device


def test_an_lstm_layer_runs_compiled_on_the_strict_device(strict_device: str) -> None:
    from tinygrad_lstm.testing.strict_backend import StrictArray

    rng = np.random.default_rng(5)
    results = []
    for device, checkpoint in [("cpu", None), (strict_device, None), (strict_device, 2)]:
        tl.manual_seed(5)
        layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=tl.float64, checkpoint=checkpoint).to(device)
        x = tl.Tensor(rng.uniform(-1, 1, (5, 2, 3)) if not results else results[0][0], device=device)
        x.requires_grad = True
        output, (h, c) = layer(x, lengths=[5, 3])
        assert output.grad_fn.edges is not None
        (output.sum() + (h * c).sum()).backward()
        if device == strict_device:
            assert isinstance(output.data, StrictArray) and isinstance(x.grad.data, StrictArray)
        values = [x.numpy(), output.numpy(), h.numpy(), c.numpy(), x.grad.numpy()]
        results.append(values + [p.grad.numpy() for p in layer.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(b, a, **TOLERANCE)


def test_a_checkpointed_layer_recomputes_in_blocks_on_the_strict_device(strict_device: str) -> None:
    x_values = np.random.default_rng(8).uniform(-1, 1, (7, 2, 3))
    results = []
    for device in ("cpu", strict_device):
        tl.manual_seed(8)
        layer = nn.GRU(3, 4, dtype=tl.float64, checkpoint=3).to(device)
        x = tl.Tensor(x_values, device=device, requires_grad=True)
        output, h = layer(x)
        assert all(batched for _, batched in batched_flags(output))
        (output.sum() + (h * h).sum()).backward()
        results.append([output.numpy(), x.grad.numpy(), *(p.grad.numpy() for p in layer.parameters())])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, **TOLERANCE)


def test_compile_runs_on_the_strict_device(strict_device: str) -> None:
    model = make_model(6).to(strict_device)
    compiled = tl.compile(model)
    x = tl.Tensor(np.random.default_rng(6).uniform(-1, 1, (4, 3)), device=strict_device, requires_grad=True)
    got = values_and_gradients(lambda: compiled(x), [x, *model.parameters()])
    want = values_and_gradients(lambda: model(x), [x, *model.parameters()])
    assert_same(got, want, ["x", *(name for name, _ in model.named_parameters())])


# ================================================= a cell that overrides forward


class ScaleBy3(tl.Function):
    """y = 3x;  VJP: 3g."""

    @staticmethod
    def forward(ctx, x):
        return x * 3

    @staticmethod
    def backward(ctx, grad):
        return grad * 3


class ScaleBy3WithWrongVJP(ScaleBy3):
    """y = 3x, with the VJP 2g: the bug a hand-written backward brings in."""

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


def lstm_cell_whose_forward_applies(scale: type[tl.Function]) -> type[nn.LSTMCell]:
    class OverridingCell(nn.LSTMCell):
        """The PyTorch habit: the step is what ``forward`` does, here h scaled by 3."""

        def forward(self, x, state=None):
            h, c = super().forward(x, state)
            return scale.apply(h), c

    OverridingCell.__name__ = f"LSTMCellWith{scale.__name__}"
    return OverridingCell


def test_check_cell_fails_for_an_overridden_forward_with_a_wrong_vjp() -> None:
    with pytest.raises(CellCheckError) as failure:
        check_cell(lstm_cell_whose_forward_applies(ScaleBy3WithWrongVJP), max_examples=2)
    assert not failure.value.report.passed
    assert check_cell(lstm_cell_whose_forward_applies(ScaleBy3), max_examples=2).passed


@pytest.mark.parametrize("compile", [True, False])
def test_the_layer_steps_with_the_overridden_forward(compile: bool) -> None:  # noqa: A002
    cell_class = lstm_cell_whose_forward_applies(ScaleBy3)
    tl.manual_seed(8)
    layer = nn.Recurrent(cell_class, 2, 3, compile=compile).astype(tl.float64)
    cell = layer.cells[0]
    x = tl.Tensor(np.random.default_rng(8).uniform(-1, 1, (4, 2, 2)), dtype=tl.float64)
    output, (h, c) = layer(x)
    state, expected = None, []
    for t in range(4):  # the loop the runner must run: the cell called as written
        state = cell(x[t], state)
        expected.append(state[0].numpy())
    np.testing.assert_allclose(output.numpy(), np.stack(expected), **TOLERANCE)
    np.testing.assert_allclose(c.numpy()[0], state[1].numpy(), **TOLERANCE)
    tl.manual_seed(8)
    plain = nn.Recurrent(nn.LSTMCell, 2, 3, compile=compile).astype(tl.float64)  # the same weights, no override
    assert not np.allclose(plain(x)[0].numpy(), output.numpy(), atol=1e-3)


# ================================================== NaN and inf in the padded steps


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("compile", [True, False])
def test_nan_and_inf_in_padded_steps_poison_no_gradient(kind: str, compile: bool) -> None:  # noqa: A002
    rng = np.random.default_rng(9)
    lengths = [5, 2, 3]
    clean = rng.uniform(-1, 1, (5, 3, 2))
    for sequence, length in enumerate(lengths):
        clean[length:, sequence] = 0.0
    dirty = clean.copy()
    dirty[2:, 1] = np.nan
    dirty[3, 2] = np.inf
    dirty[4, 2] = -np.inf
    results = []
    for values in (clean, dirty):
        tl.manual_seed(9)
        layer = getattr(nn, kind)(2, 3, bidirectional=True, dtype=tl.float64, compile=compile)
        x = tl.Tensor(values, dtype=tl.float64, requires_grad=True)
        output, final = layer(x, lengths=lengths)
        projection_loss(flatten((output, final))).backward()
        results.append([output.numpy(), *(p.numpy() for p in flatten(final)), x.grad.numpy()])
        results[-1] += [p.grad.numpy() for p in layer.parameters()]
    for index, (with_zeros, with_nan) in enumerate(zip(*results)):
        assert np.isfinite(with_nan).all(), f"value {index} is not finite"
        np.testing.assert_allclose(with_nan, with_zeros, **TOLERANCE, err_msg=f"value {index}")


# =================================================================== memory sanity


def peak_memory(steps: int, checkpoint: int | None) -> int:
    """tracemalloc's peak (bytes) over an LSTM layer's forward and backward, T=``steps``."""
    tl.manual_seed(0)
    layer = nn.LSTM(16, 32, dtype=tl.float64, checkpoint=checkpoint)
    x = tl.Tensor(np.random.default_rng(0).standard_normal((steps, 8, 16)), requires_grad=True)
    tracemalloc.start()
    try:
        output, (h, c) = layer(x)
        (output.sum() + c.sum()).backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_checkpointing_lowers_peak_memory() -> None:
    steps = 200
    peak_memory(10, None), peak_memory(10, 3)  # first runs make one-time allocations: not part of the figure
    full, checkpointed = peak_memory(steps, None), peak_memory(steps, round(math.sqrt(steps)))
    # Measured here: 5.8 MB without, 1.1 MB with k = 14 (ratio 0.19); the issue asks for ≤ 0.5.
    assert checkpointed < 0.5 * full, (
        f"peak {checkpointed / 1e6:.2f} MB with checkpoint=14, {full / 1e6:.2f} MB without"
    )


@pytest.mark.parametrize("saver", [ops.Tanh, ops.Max])
def test_a_y_its_op_saves_is_kept_once_as_its_row_of_the_ys_buffer(saver) -> None:
    """An RNN's h = tanh(·): Tanh saves its output, which is also the step's y. Each step's
    record (the traced first one's too) holds the row of ys (no second copy of every h until
    backward), and the gradients are still those of the written-out loop. Max saves its
    output too, in a Context of its own per step (it also sets the axis on it)."""
    rng = np.random.default_rng(9)
    weight, h0, xs = tensor(rng, 4, 4), tensor(rng, 2, 4), tensor(rng, 6, 2, 4)

    def step(h, x):
        h = tl.linear(h, weight, x).tanh()
        return h, (h if saver is ops.Tanh else h.max(axis=1, keepdims=True))

    _, ys = tl.scan(step, h0, xs)
    node = ys.grad_fn
    index = next(k for k, op in enumerate(node.loop.tape.ops) if op.function is saver)
    position = [k for k, op in enumerate(node.loop.tape.ops) if op.records].index(index)
    assert len(node.steps) == 6
    for t, record in enumerate(node.steps):
        saved = record[position] if type(record[position]) is tuple else record[position].saved_tensors
        assert np.shares_memory(saved[-1], ys.data) and np.array_equal(saved[-1], ys.data[t])
    compiled = values_and_gradients(lambda: tl.scan(step, h0, xs), [weight, h0, xs])

    def written_out():
        carry, outputs = h0, []
        for t in range(6):
            carry, y = step(carry, xs[t])
            outputs.append(y)
        return carry, tl.stack(outputs)

    assert_same(compiled, values_and_gradients(written_out, [weight, h0, xs]), ["W", "h0", "xs"])


# ------------------------------------------------------------- in-place changes


def test_an_in_place_change_after_the_compiled_forward_makes_backward_raise():
    tl.manual_seed(0)
    layer = nn.LSTM(3, 4)
    x = tl.randn(5, 2, 3)
    output, _ = layer(x)
    loss = output.sum()
    with tl.no_grad():
        layer.weight_hh_l0 -= 0.1  # a weight the loop's steps saved
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()
    output, _ = layer(x)
    with tl.no_grad():
        output += 1.0  # the outputs are saved too: the next step's matmul reads h_t
    with pytest.raises(RuntimeError, match="changed in place"):
        output.sum().backward()


def test_in_place_ops_inside_a_traced_function():
    def bump(a):
        y = a * 2.0
        y += 1.0  # an intermediate: recorded on the tape like y = y + 1
        return y * y

    a = tl.Tensor([1.0, 2.0], requires_grad=True, dtype=tl.float64)
    compiled = tl.compile(bump)(a)
    compiled.sum().backward()
    compiled_grad, a.grad = a.grad.numpy(), None
    bump(a).sum().backward()
    np.testing.assert_allclose(compiled.numpy(), [9.0, 25.0])
    np.testing.assert_allclose(compiled_grad, a.grad.numpy(), rtol=1e-12)
    with pytest.raises(tl.TraceError, match="in-place"):
        tl.compile(lambda t: t.__iadd__(1.0))(tl.Tensor([1.0]))  # an input: the write would happen once
    weight = tl.Tensor([1.0])
    with pytest.raises(tl.TraceError, match="in-place"):
        tl.compile(lambda t: (weight.__imul__(2.0), t * weight)[1])(tl.Tensor([1.0]))


# ----------------------------------------------------------- second derivatives


def test_second_derivatives_through_a_compiled_loop_raise_with_the_way_out():
    tl.manual_seed(0)
    layer = nn.LSTM(2, 3).astype(tl.float64)
    x = tl.Tensor(np.random.default_rng(0).standard_normal((4, 1, 2)), requires_grad=True)
    output, _ = layer(x)
    with pytest.raises(tl.DoubleBackwardError, match="compile=False"):
        tl.grad((output * output).sum(), [x], create_graph=True)
    with pytest.raises(tl.DoubleBackwardError, match="tl.compile"):
        square = tl.compile(lambda t: (t * t).sum())
        tl.grad(square(x), [x], create_graph=True)
    with nn.written_out_loops():  # the same layer, every op recorded: second order works
        output, _ = layer(x)
        (gradient,) = tl.grad((output * output).sum(), [x], create_graph=True)
    (second,) = tl.grad(gradient.sum(), [x])
    layer.compile = False
    output, _ = layer(x)
    (expected_gradient,) = tl.grad((output * output).sum(), [x], create_graph=True)
    (expected,) = tl.grad(expected_gradient.sum(), [x])
    np.testing.assert_allclose(second.numpy(), expected.numpy(), rtol=1e-12)


def test_the_second_order_battery_leaves_out_the_compiled_checks_and_says_why():
    from tinygrad_lstm.testing import battery

    first, second = battery.battery_for(1), battery.battery_for(2)
    compiled = [check for check in first if check.group == "compiled"]
    assert compiled and not [check for check in second if check.group == "compiled"]
    assert all(check.orders == (1,) for check in compiled)
    results = battery.run_battery(checks=compiled)
    assert all(result.passed for result in results)
    assert {"Compare", "Detach", "Scan", "Compiled"} <= set().union(*(result.primitives for result in results))
    assert "Detach" not in battery.primitives_missed([], order=2)
    assert "Detach" in battery.primitives_missed([], order=1)


# ==================================================== what the replay leaves out, and why


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_stack_steps_is_xp_stack(shape: tuple[int, ...]) -> None:
    arrays = [np.random.default_rng(k).standard_normal(shape) for k in range(5)]
    got = scan_module.stack_steps(np, arrays)
    np.testing.assert_array_equal(got, np.stack(arrays))
    assert got.shape == (5, *shape)


def _scan_of(step, rng: np.random.Generator) -> tl.Tensor:
    h0, xs = tensor(rng, 2, 4), tensor(rng, 3, 2, 4)
    _, ys = tl.scan(step, h0, xs)
    return ys


def test_the_replay_checks_a_primitive_gradient_only_where_it_might_not_fit() -> None:
    rng = np.random.default_rng(0)
    bias = tensor(rng, 4)

    def step(h, x):
        h = (h * x + bias).tanh()  # the bias (4,) is broadcast over the batch: its gradient is not
        return h, h

    backward = scan_module.backward_source(_scan_of(step, rng).grad_fn.loop.tape)
    assert backward.count("fit(") == 1  # the bias's: summed over the batch after Add's VJP
    assert "check_arity" not in backward  # primitives return one gradient per input


def test_the_replay_checks_every_gradient_of_a_users_function() -> None:
    def step(h, x):
        h = Doubled.apply(h * x).tanh()
        return h, h

    backward = scan_module.backward_source(_scan_of(step, np.random.default_rng(1)).grad_fn.loop.tape)
    assert "check_arity(r, 1, 'Doubled')" in backward
    assert "fit(a, shape" in backward and "'Doubled')" in backward.split("check_arity(r, 1, 'Doubled')")[1]


def test_the_deferred_weight_gradient_reads_h_from_ys_instead_of_stacking_it(monkeypatch) -> None:
    """An RNN's Linear(h_{t-1}, W_hh): h_{t-1} is row t-1 of ys, and g_t is copied into its block
    buffer as it comes: nothing is stacked at the end of a block."""
    calls = []
    original = scan_module.stack_steps

    def counted(xp, arrays):
        calls.append(len(arrays))
        return original(xp, arrays)

    monkeypatch.setattr(scan_module, "stack_steps", counted)
    rng = np.random.default_rng(2)
    steps = 2 * scan_module.DEFER_BLOCK + 2
    for reverse in (False, True):
        calls.clear()
        weight = tensor(rng, 4, 4)

        def step(h, x, weight=weight):
            h = (tl.linear(h, weight) + x).tanh()
            return h, h

        h0, xs = tensor(rng, 2, 4), tensor(rng, steps, 2, 4)
        _, ys = tl.scan(step, h0, xs, reverse=reverse)
        ys.sum().backward()
        assert calls == []
        want = sum(g.T @ h for g, h in zip(*_rnn_gradients_by_hand(weight, h0, xs, reverse)))
        np.testing.assert_allclose(weight.grad.numpy(), want, **TOLERANCE)


def test_a_gradient_two_deferred_ops_share_is_copied_once_per_step(monkeypatch) -> None:
    """``linear(h, W_hh, linear(x, W_ih, b))``: the inner Linear's output gradient is the outer's
    bias gradient, the very same array. Both ops' weight gradients come from one block buffer."""
    made = []
    original = scan_module.DeferredSums.new_buffer

    def new_buffer(self, grad):
        made.append(grad.shape)
        return original(self, grad)

    monkeypatch.setattr(scan_module.DeferredSums, "new_buffer", new_buffer)
    rng = np.random.default_rng(4)
    w_ih, w_hh, b = tensor(rng, 4, 3), tensor(rng, 4, 4), tensor(rng, 4)

    def step(h, x):
        h = tl.linear(h, w_hh, tl.linear(x, w_ih, b)).tanh()
        return h, h

    h0, xs = tensor(rng, 2, 4), tensor(rng, 5, 2, 3)
    _, ys = tl.scan(step, h0, xs)
    ys.sum().backward()
    assert made == [(2, 4)]  # one buffer for the block: the second op's gradient was the first's array
    got = [w_ih.grad.numpy(), w_hh.grad.numpy(), b.grad.numpy()]
    for tensor_ in (w_ih, w_hh, b, h0, xs):
        tensor_.grad = None
    h = h0
    outputs = []
    for t in range(5):
        h, _ = step(h, xs[t])
        outputs.append(h)
    tl.stack(outputs).sum().backward()
    for have, want in zip(got, [w_ih.grad.numpy(), w_hh.grad.numpy(), b.grad.numpy()]):
        np.testing.assert_allclose(have, want, **TOLERANCE)


def hand_over(deferred, op_index: int, t: int, saved: tuple, grad: np.ndarray) -> None:
    """What the reverse loop does at step t for an op with deferred inputs (see scan.collect_lines)."""
    buffer = deferred.new_buffer(grad)
    buffer[t - deferred.first] = grad
    deferred.entries(op_index).append((t, saved, buffer))


def test_deferred_sums_of_an_op_no_gradient_reached_in_a_block_add_nothing() -> None:
    """The reverse loop asks for every such op's entries as a block starts; one that got no
    gradient at any step of the block leaves its list empty, and flush passes it by."""
    rng = np.random.default_rng(5)
    weight = tensor(rng, 3, 2)
    h0, xs = tensor(rng, 2, 2), tensor(rng, 4, 2, 2)
    _, ys = tl.scan(lambda h, x: ((tl.linear(h, weight) + x[:, :1]).tanh()[:, :2] * 1.0, h), h0, xs)
    loop = ys.grad_fn.loop
    deferred = scan_module.DeferredSums(loop, [xs.data], {}, scan_module.Accumulator(len(loop.tape.captured)), [None])
    deferred.start_block(range(4))
    op_index = next(k for k, op in enumerate(loop.tape.ops) if op.deferred)
    assert deferred.entries(op_index) == []
    deferred.flush()
    assert deferred.captured.grads == [None] * len(loop.tape.captured) and deferred.pending == {}


def test_deferred_sums_stack_the_steps_an_op_got_a_gradient_at_when_they_are_not_consecutive() -> None:
    """The rare way: an op with no output gradient at some step of a block. Its gradients
    and inputs over the steps it had are stacked, in time order."""
    rng = np.random.default_rng(5)
    weight = tensor(rng, 3, 2)
    h0, xs = tensor(rng, 2, 2), tensor(rng, 4, 2, 2)
    _, ys = tl.scan(lambda h, x: ((tl.linear(h, weight) + x[:, :1]).tanh()[:, :2] * 1.0, h), h0, xs)
    loop = ys.grad_fn.loop
    captured = scan_module.Accumulator(len(loop.tape.captured_slots))
    deferred = scan_module.DeferredSums(loop, [xs.data], {}, captured, [None])
    deferred.start_block(range(4))
    op_index = next(k for k, op in enumerate(loop.tape.ops) if op.deferred)
    inputs = {t: rng.standard_normal((2, 2)) for t in (3, 1, 0)}  # step 2 had no gradient
    grads = {t: rng.standard_normal((2, 3)) for t in inputs}
    for t in (3, 1, 0):  # the reverse replay's order; Linear saves (x, W)
        hand_over(deferred, op_index, t, (inputs[t], weight.data), grads[t])
    deferred.flush()
    want = sum(grads[t].T @ inputs[t] for t in inputs)
    position = next(k for k, captured in enumerate(loop.tape.captured) if captured is weight)
    np.testing.assert_allclose(deferred.captured.grads[position], want, rtol=1e-12)


@pytest.mark.parametrize(
    ("batch", "width", "steps"),
    [(1, 64, 64), (16, 512, 64), (32, 512, 32), (64, 2048, 8), (2048, 2048, 1)],
)
def test_a_block_of_deferred_sums_fits_its_bytes_but_keeps_its_rows(batch, width, steps) -> None:
    """At most DEFER_BLOCK steps; fewer where a block's float32 gradients pass DEFER_BYTES;
    never fewer than DEFER_ROWS rows (the batch of 64 of a large LSTM: 8 steps, 512 rows)."""
    rng = np.random.default_rng(6)
    weight = tl.Tensor(rng.standard_normal((width, 4)).astype(np.float32), requires_grad=True)
    h0 = tl.Tensor(rng.standard_normal((batch, 4)).astype(np.float32))
    xs = tl.Tensor(rng.standard_normal((2, batch, width)).astype(np.float32))
    _, ys = tl.scan(lambda h, x: (h, tl.linear(h, weight) * x), h0, xs)
    assert scan_module.defer_block(ys.grad_fn.loop.tape) == steps


def linear_on_x_step(w_x: tl.Tensor, w_h: tl.Tensor):
    """h' = tanh(x_t W_xᵀ + h W_hᵀ + x_t / 2): x_t reaches the step through a Linear and once more."""

    def step(h, x):
        h = (tl.linear(x, w_x) + tl.linear(h, w_h) + x * 0.5).tanh()
        return h, h

    return step


@pytest.mark.parametrize("reverse, checkpoint", [(False, None), (True, None), (False, 2)])
def test_an_x_that_wants_a_gradient_gets_it_from_one_product_over_the_steps(reverse: bool, checkpoint) -> None:
    """A stacked layer's input: x_t W at every step is G W, added into the rows the steps wrote (x_t / 2's part)."""
    rng = np.random.default_rng(6)
    w_x, w_h, h0, xs = tensor(rng, 3, 3), tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 7, 2, 3)
    step = linear_on_x_step(w_x, w_h)
    leaves = [w_x, w_h, h0, xs]
    compiled = values_and_gradients(lambda: tl.scan(step, h0, xs, reverse=reverse, checkpoint=checkpoint), leaves)

    def written_out():
        carry, ys = h0, [None] * 7
        for t in reversed(range(7)) if reverse else range(7):
            carry, ys[t] = step(carry, xs[t])
        return carry, tl.stack(ys)

    assert_same(compiled, values_and_gradients(written_out, leaves), ["W_x", "W_h", "h0", "xs"])
    _, ys = tl.scan(step, h0, xs, reverse=reverse, checkpoint=checkpoint)
    assert [op.deferred for op in ys.grad_fn.loop.tape.ops if op.function is ops.Linear] == [(0, 1), (1,)]


def test_an_x_whose_weight_changes_by_step_keeps_its_gradient_per_step() -> None:
    rng = np.random.default_rng(7)
    w_h, h0, xs, weights = tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 5, 2, 3), tensor(rng, 5, 3, 3)

    def step(h, inputs):
        x, w_t = inputs
        h = (tl.linear(x, w_t) + tl.linear(h, w_h)).tanh()
        return h, h

    leaves = [w_h, h0, xs, weights]
    compiled = values_and_gradients(lambda: tl.scan(step, h0, (xs, weights)), leaves)

    def written_out():
        carry, ys = h0, []
        for t in range(5):
            carry, y = step(carry, (xs[t], weights[t]))
            ys.append(y)
        return carry, tl.stack(ys)

    eager = values_and_gradients(written_out, leaves)
    assert_same(compiled, eager, ["W_h", "h0", "xs", "weights"])
    _, ys = tl.scan(step, h0, (xs, weights))
    assert [op.deferred for op in ys.grad_fn.loop.tape.ops if op.function is ops.Linear] == [(), (1,)]


def test_deferred_x_gradients_of_steps_that_are_not_consecutive_go_to_their_own_rows() -> None:
    rng = np.random.default_rng(8)
    w_x, w_h, h0, xs = tensor(rng, 3, 3), tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 4, 2, 3)
    _, ys = tl.scan(linear_on_x_step(w_x, w_h), h0, xs)
    loop = ys.grad_fn.loop
    xs_grad = rng.standard_normal((4, 2, 3))  # what the steps wrote in their rows
    before = xs_grad.copy()
    deferred = scan_module.DeferredSums(
        loop, [xs.data], {}, scan_module.Accumulator(len(loop.tape.captured_slots)), [xs_grad]
    )
    deferred.start_block(range(4))
    op_index = next(k for k, op in enumerate(loop.tape.ops) if 0 in op.deferred)
    grads = {t: rng.standard_normal((2, 3)) for t in (3, 1, 0)}  # step 2 had no gradient
    for t in (3, 1, 0):  # the reverse replay's order; Linear saves (x, W)
        hand_over(deferred, op_index, t, (xs.data[t], w_x.data), grads[t])
    deferred.flush()
    for t in range(4):
        want = before[t] + (grads[t] @ w_x.data if t in grads else 0.0)
        np.testing.assert_allclose(xs_grad[t], want, **TOLERANCE)


def test_the_traced_first_step_is_not_run_again(monkeypatch) -> None:
    """Tracing runs the step on the first step's values: the forward replay starts at the
    second step, so each op runs T times in all. With checkpoints the first is run again."""
    calls = []
    original = ops.Tanh.forward
    monkeypatch.setattr(ops.Tanh, "forward", staticmethod(lambda ctx, x: calls.append(1) or original(ctx, x)))
    rng = np.random.default_rng(7)
    weight = tensor(rng, 3, 3)
    h0, xs = tensor(rng, 2, 3), tensor(rng, 5, 2, 3)

    def step(h, x):
        return (tl.linear(h, weight) + x).tanh(), h

    for reverse, checkpoint, runs in [(False, None, 5), (True, None, 5), (False, 2, 5 + 1 + 5)]:
        calls.clear()
        carry, ys = tl.scan(step, h0, xs, reverse=reverse, checkpoint=checkpoint)
        (carry.sum() + ys.sum()).backward()
        assert len(calls) == runs  # (with checkpoints: the trace, the forward, and the recomputation)


def test_a_layer_step_is_traced_once_per_call(monkeypatch) -> None:
    """The carry (h, c) starts as zeros that need no gradient, and the inputs need none either
    (with checkpoints, each step projects its raw x_t), but the step makes the carry depend
    on the parameters: read off the one trace, not found by tracing again."""
    traces = count_traces(monkeypatch)
    layer = nn.LSTM(3, 4, dtype=tl.float64, checkpoint=2)
    output, _ = layer(tl.Tensor(np.random.default_rng(8).standard_normal((5, 2, 3))))
    output.sum().backward()
    assert len(traces) == 1
    assert all(parameter.grad is not None for parameter in layer.parameters())


def test_a_carry_part_that_depends_on_nothing_that_requires_grad_is_not_differentiated() -> None:
    """(h, n): h' = tanh(h W + x), n' = 2 n. Only h comes to need a gradient; n's op records
    nothing, and the gradients are the written-out loop's. And a part that needs one only
    through another part (a' = b, b' = b W) is found on the same tape."""
    rng = np.random.default_rng(9)
    weight = tensor(rng, 3, 3)
    h0, n0, xs = tl.Tensor(rng.standard_normal((2, 3))), tl.Tensor(np.ones((2, 3))), tensor(rng, 4, 2, 3)

    def step(carry, x):
        h, n = carry
        return ((tl.linear(h, weight) + x).tanh(), n * 2.0), h

    (h, n), ys = tl.scan(step, (h0, n0), xs)
    ops_of = {op.function: op for op in ys.grad_fn.loop.tape.ops}
    assert not ops_of[ops.Mul].records and ops_of[ops.Tanh].records
    (h.sum() + ys.sum()).backward()
    got = [weight.grad.numpy(), xs.grad.numpy()]
    weight.grad = xs.grad = None
    carry, outputs = (h0, n0), []
    for t in range(4):
        carry, y = step(carry, xs[t])
        outputs.append(y)
    (carry[0].sum() + tl.stack(outputs).sum()).backward()
    np.testing.assert_allclose(got[0], weight.grad.numpy(), **TOLERANCE)
    np.testing.assert_allclose(got[1], xs.grad.numpy(), **TOLERANCE)


def count_traces(monkeypatch) -> list:
    traces = []
    original = scan_module.trace
    monkeypatch.setattr(scan_module, "trace", lambda *args, **kwargs: traces.append(1) or original(*args, **kwargs))
    return traces


def test_which_carry_parts_need_a_gradient_is_read_off_one_trace(monkeypatch) -> None:
    """a' = b, b' = b W: b needs a gradient through W, a only through b, one step later.
    And n' = 0.5 n + h.detach(): what only a detached value feeds needs none."""
    traces = count_traces(monkeypatch)
    rng = np.random.default_rng(10)
    weight = tensor(rng, 3, 3)
    a0, b0 = tl.Tensor(np.ones((2, 3))), tl.Tensor(rng.standard_normal((2, 3)))
    (a, _), _ = tl.scan(lambda carry, x: ((carry[1], tl.linear(carry[1], weight)), None), (a0, b0), length=3)
    assert len(traces) == 1
    a.sum().backward()
    assert weight.grad is not None

    traces.clear()
    h0, n0 = tl.Tensor(rng.standard_normal((2, 3))), tl.Tensor(np.ones((2, 3)))

    def step(carry, x):
        h, n = carry
        return (tl.linear(h, weight).tanh(), n * 0.5 + h.detach()), None

    (h, n), _ = tl.scan(step, (h0, n0), length=3)
    scalings = [op for op in n.grad_fn.loop.tape.ops if op.function is ops.Mul]
    assert scalings and not any(op.records for op in scalings)
    assert len(traces) == 2  # the first, as if n needed a gradient; the second without


def _rnn_gradients_by_hand(weight: tl.Tensor, h0: tl.Tensor, xs: tl.Tensor, reverse: bool):
    """(g_t, h_{t-1}) of every step of h_t = tanh(h_{t-1} Wᵀ + x_t), for the loss Σ ys, in NumPy."""
    w, x = weight.numpy(), xs.numpy()
    order = range(len(x) - 1, -1, -1) if reverse else range(len(x))
    h, inputs, outputs = h0.numpy(), {}, {}
    for t in order:
        inputs[t] = h
        h = outputs[t] = np.tanh(h @ w.T + x[t])
    grads, carry = {}, np.zeros_like(h)
    for t in reversed(list(order)):
        g = (1.0 + carry) * (1 - outputs[t] ** 2)
        grads[t], carry = g, g @ w
    return [grads[t] for t in order], [inputs[t] for t in order]


def test_ops_on_parameters_alone_run_once_before_the_loop() -> None:
    """``W * mask`` and ``b_ih + b_hh`` are the same at every step: hoisted out, values and gradients unchanged."""
    rng = np.random.default_rng(3)
    weight, mask, bias_a, bias_b = tensor(rng, 4, 4), tensor(rng, 4, 4), tensor(rng, 4), tensor(rng, 4)
    h0, xs = tensor(rng, 2, 4), tensor(rng, 5, 2, 4)
    leaves = [weight, mask, bias_a, bias_b, h0, xs]

    def step(h, x):
        masked = weight * mask
        h = (tl.linear(h, masked, bias_a + bias_b) + x * masked.sum(axis=1, keepdims=True).T).tanh()
        return h, h * 2.0

    compiled = values_and_gradients(lambda: tl.scan(step, h0, xs), leaves)
    eager = values_and_gradients(lambda: written_out_loop(step, h0, xs), leaves)
    assert_same(compiled, eager, ["weight", "mask", "a", "b", "h0", "xs"])
    ops_in_the_loop = [op.function.__name__ for op in tl.scan(step, h0, xs)[1].grad_fn.loop.tape.ops]
    assert ops_in_the_loop == ["Linear", "Mul", "Add", "Tanh", "Mul"]  # no Mul/Add/Sum/Transpose of parameters


def test_a_hoisted_op_inside_a_compiled_function_is_an_op_of_its_tape() -> None:
    rng = np.random.default_rng(4)
    weight, h0, xs = tensor(rng, 3, 3), tensor(rng, 2, 3), tensor(rng, 4, 2, 3)

    def step(h, x):
        h = ((h @ (weight * 0.5)) + x).tanh()
        return h, h

    def run(h0, xs):
        return tl.scan(step, h0, xs)[1].sum()

    program = tl.compile(run)
    program(h0, xs).backward()
    names = [op.function.__name__ for op in program.traces[next(iter(program.traces))].tape.ops]
    assert names.index("Mul") < names.index("Scan")  # weight * 0.5: once per call, before the loop
    want = tl.Tensor(weight.numpy(), requires_grad=True)
    h, total = h0.detach(), 0.0
    for t in range(4):
        h = ((h @ (want * 0.5)) + xs.detach()[t]).tanh()
        total = total + h.sum()
    total.backward()
    np.testing.assert_allclose(weight.grad.numpy(), want.grad.numpy(), **TOLERANCE)
