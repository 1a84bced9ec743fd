"""Random expression DAGs, with shared subexpressions, gradchecked in float64.

``programs()`` draws a small straight-line program over the op set: leaves of mutually
broadcastable shapes, then steps that each apply an op to earlier values — often the
same value twice (``v3 = mul(v1, v1)``) or a value that other steps also use, so
gradients must be accumulated from several consumers, across broadcasting, through
multi-output ops (split, unbind) and scatter-adds (gathers with repeated rows).

Values stay bounded, so the checks are not flaky: every value carries a bound on its
magnitude, an op is only drawn where its result stays under ``MAX_BOUND``, and log,
sqrt and exp only ever see squashed or shifted inputs (``log(x·x + 1)``,
``exp(tanh x)``). Ops with kinks (relu, abs, max, clip) are left to ``test_ops.py``,
which draws values away from them.

Each program is run twice: on Tensors and on NumPy arrays (forward parity), then
gradchecked, and the ``.backward()`` path is compared with ``tl.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lstm as tl
import tinygrad_lstm.testing.strategies as tst
from tinygrad_lstm.testing import gradcheck

MAX_BOUND = 30.0


@dataclass(frozen=True)
class Op:
    """One step kind: the same computation written with our ops and with NumPy.

    ``shape(shapes, param)`` and ``bound(bounds, shapes, param)`` give the result's shape
    and a bound on its magnitude; ``param(shapes)`` is a strategy for the step's
    constant (an axis, a scale, rows to gather), or None.
    """

    name: str
    arity: int
    ours: Callable[..., tl.Tensor]
    numpy: Callable[..., np.ndarray]
    bound: Callable[[tuple[float, ...], tuple[tuple[int, ...], ...], Any], float]
    shape: Callable[[tuple[tuple[int, ...], ...], Any], tuple[int, ...]] = lambda shapes, param: np.broadcast_shapes(
        *shapes
    )
    param: Callable[[tuple[tuple[int, ...], ...]], st.SearchStrategy] | None = None
    applies: Callable[[tuple[tuple[int, ...], ...]], bool] = lambda shapes: True


def _axis_param(shapes):
    (shape,) = shapes
    return st.none() | st.integers(-len(shape), len(shape) - 1) if shape else st.none()


def _reduced_count(shape, axis):
    return math.prod(shape) if axis is None else shape[axis]


def _keepdims_shape(shapes, axis):
    (shape,) = shapes
    if axis is None:
        return tuple(1 for _ in shape)
    return tuple(1 if i == axis % len(shape) else size for i, size in enumerate(shape))


def _dropped_shape(shapes, axis):
    (shape,) = shapes
    if axis is None:
        return ()
    return tuple(size for i, size in enumerate(shape) if i != axis % len(shape))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


OPS = [
    # unary, shape-preserving
    Op("tanh", 1, lambda x, p: x.tanh(), lambda x, p: np.tanh(x), lambda b, s, p: min(b[0], 1.0)),
    Op("sigmoid", 1, lambda x, p: tl.sigmoid(x), lambda x, p: _sigmoid(x), lambda b, s, p: 1.0),
    Op("neg", 1, lambda x, p: -x, lambda x, p: -x, lambda b, s, p: b[0]),
    Op(
        "scale",
        1,
        lambda x, c: x * c,
        lambda x, c: x * c,
        lambda b, s, c: b[0] * abs(c),
        param=lambda s: tst.floats(-2, 2),
    ),
    Op(
        "shift",
        1,
        lambda x, c: c - x,
        lambda x, c: c - x,
        lambda b, s, c: b[0] + abs(c),
        param=lambda s: tst.floats(-2, 2),
    ),
    Op("square", 1, lambda x, p: x**2, lambda x, p: x**2, lambda b, s, p: b[0] ** 2),
    Op("exp_tanh", 1, lambda x, p: x.tanh().exp(), lambda x, p: np.exp(np.tanh(x)), lambda b, s, p: math.e),
    Op(
        "log_square_plus_1",
        1,
        lambda x, p: (x * x + 1).log(),
        lambda x, p: np.log(x * x + 1),
        lambda b, s, p: math.log(b[0] ** 2 + 1),
    ),
    Op(
        "sqrt_square_plus_1",
        1,
        lambda x, p: tl.sqrt(x * x + 1),
        lambda x, p: np.sqrt(x * x + 1),
        lambda b, s, p: math.sqrt(b[0] ** 2 + 1),
    ),
    Op("inverse_square_plus_1", 1, lambda x, p: 1 / (x * x + 1), lambda x, p: 1 / (x * x + 1), lambda b, s, p: 1.0),
    # reductions
    Op(
        "sum_keepdims",
        1,
        lambda x, axis: x.sum(axis=axis, keepdims=True),
        lambda x, axis: np.sum(x, axis=axis, keepdims=True),
        lambda b, s, axis: b[0] * _reduced_count(s[0], axis),
        shape=_keepdims_shape,
        param=_axis_param,
    ),
    Op(
        "mean",
        1,
        lambda x, axis: tl.mean(x, axis=axis),
        lambda x, axis: np.mean(x, axis=axis),
        lambda b, s, axis: b[0],
        shape=_dropped_shape,
        param=_axis_param,
    ),
    Op(
        "logsumexp_keepdims",
        1,
        lambda x, axis: x.logsumexp(axis=axis, keepdims=True),
        lambda x, axis: np.log(np.sum(np.exp(x), axis=axis, keepdims=True)),
        lambda b, s, axis: b[0] + math.log(_reduced_count(s[0], axis)),
        shape=_keepdims_shape,
        param=_axis_param,
    ),
    # shape and gather
    Op("transpose", 1, lambda x, p: x.T, lambda x, p: x.T, lambda b, s, p: b[0], shape=lambda s, p: s[0][::-1]),
    Op(
        "gather_rows",  # repeated rows: the VJP must scatter-add
        1,
        lambda x, rows: x[rows],
        lambda x, rows: x[rows],
        lambda b, s, p: b[0],
        shape=lambda s, p: s[0],
        param=lambda s: hnp.arrays(np.int64, (s[0][0],), elements=st.integers(-s[0][0], s[0][0] - 1)),
        applies=lambda s: len(s[0]) >= 1,
    ),
    Op(
        "roll_rows",  # split into two pieces and cat them the other way round
        1,
        lambda x, k: tl.cat(x.split([k, x.shape[0] - k])[::-1]),
        lambda x, k: np.roll(x, -k, axis=0),
        lambda b, s, p: b[0],
        shape=lambda s, p: s[0],
        param=lambda s: st.integers(1, s[0][0] - 1),
        applies=lambda s: len(s[0]) >= 1 and s[0][0] >= 2,
    ),
    Op(
        "reverse_rows",  # unbind, then stack in reverse order
        1,
        lambda x, p: tl.stack(x.unbind(0)[::-1]),
        lambda x, p: x[::-1],
        lambda b, s, p: b[0],
        shape=lambda s, p: s[0],
        applies=lambda s: len(s[0]) >= 1,
    ),
    # binary, broadcasting
    Op("add", 2, lambda a, b, p: a + b, lambda a, b, p: a + b, lambda b, s, p: b[0] + b[1]),
    Op("sub", 2, lambda a, b, p: a - b, lambda a, b, p: a - b, lambda b, s, p: b[0] + b[1]),
    Op("mul", 2, lambda a, b, p: a * b, lambda a, b, p: a * b, lambda b, s, p: b[0] * b[1]),
    Op(
        "div_square_plus_1",
        2,
        lambda a, b, p: a / (b * b + 1),
        lambda a, b, p: a / (b * b + 1),
        lambda b, s, p: b[0],
    ),
    Op(
        "where",
        2,
        lambda a, b, mask: tl.where(mask, a, b),
        lambda a, b, mask: np.where(mask, a, b),
        lambda b, s, p: max(b),
        param=lambda s: hnp.arrays(np.bool_, np.broadcast_shapes(*s)),
    ),
]
OPS_BY_NAME = {op.name: op for op in OPS}


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[int, ...]
    param: Any = None


@dataclass
class Program:
    """Leaves, then steps over earlier values; the outputs are values by number."""

    leaves: tuple[np.ndarray, ...]
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]

    def __repr__(self) -> str:
        lines = [f"v{i} = leaf {leaf.shape}: {leaf.tolist()}" for i, leaf in enumerate(self.leaves)]
        for i, step in enumerate(self.steps, start=len(self.leaves)):
            args = ", ".join(f"v{a}" for a in step.args)
            param = "" if step.param is None else f"; {step.param!r}"
            lines.append(f"v{i} = {step.op}({args}{param})")
        lines.append("outputs: " + ", ".join(f"v{o}" for o in self.outputs))
        return "Program:\n  " + "\n  ".join(lines)

    def run(self, leaves: tuple[Any, ...], flavour: str) -> tuple[Any, ...]:
        """Evaluate on Tensors (``flavour="ours"``) or NumPy arrays (``"numpy"``)."""
        values = list(leaves)
        for step in self.steps:
            compute = getattr(OPS_BY_NAME[step.op], flavour)
            values.append(compute(*(values[a] for a in step.args), step.param))
        return tuple(values[o] for o in self.outputs)


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


@st.composite
def programs(draw, max_leaves: int = 3, min_steps: int = 4, max_steps: int = 12) -> Program:
    base = draw(tst.shapes(min_dims=1, max_dims=3, max_side=3))
    others = st.lists(tst.broadcastable_shapes(base, max_side=3), max_size=max_leaves - 1)
    leaf_shapes = [base] + draw(others)
    leaves = tuple(draw(tst.arrays(shape, elements=tst.floats(-2.0, 2.0))) for shape in leaf_shapes)
    shapes, bounds = list(leaf_shapes), [2.0] * len(leaves)
    steps = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        first = len(shapes) - 1 - draw(st.integers(0, len(shapes) - 1), label="steps back")  # chains are likely
        partners = [j for j in range(len(shapes)) if _broadcasts(shapes[first], shapes[j])]  # first itself too
        usable = [op for op in OPS if op.arity == 2 or op.applies((shapes[first],))]
        op = draw(st.sampled_from(usable), label="op")
        args = (first,) if op.arity == 1 else (first, draw(st.sampled_from(partners), label="partner"))
        operand_shapes = tuple(shapes[a] for a in args)
        param = draw(op.param(operand_shapes), label="param") if op.param is not None else None
        bound = op.bound(tuple(bounds[a] for a in args), operand_shapes, param)
        if bound > MAX_BOUND:  # the result could grow too large: squash the operand instead
            op, args, param, bound, operand_shapes = OPS_BY_NAME["tanh"], (first,), None, 1.0, (shapes[first],)
        steps.append(Step(op.name, args, param))
        shapes.append(tuple(op.shape(operand_shapes, param)))
        bounds.append(bound)
    last = len(shapes) - 1
    other = draw(st.integers(len(leaves), last))
    return Program(leaves, tuple(steps), (last,) if other == last else (last, other))


def _as_tensors(program: Program) -> tuple[tl.Tensor, ...]:
    return tuple(tl.Tensor(leaf, requires_grad=True) for leaf in program.leaves)


@settings(max_examples=100)
@given(program=programs())
def test_random_graphs_match_numpy_and_finite_differences(program: Program) -> None:
    leaves = _as_tensors(program)
    for got, expected in zip(program.run(leaves, "ours"), program.run(program.leaves, "numpy")):
        assert got.shape == np.shape(expected) and got.dtype == np.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda *xs: program.run(xs, "ours"), leaves)


@settings(max_examples=40)
@given(program=programs())
def test_backward_into_dot_grad_agrees_with_functional_grad(program: Program) -> None:
    leaves = _as_tensors(program)
    loss = sum(out.sum() for out in program.run(leaves, "ours"))
    expected = tl.grad(loss, list(leaves), retain_graph=True)
    loss.backward()
    for leaf, grad in zip(leaves, expected):
        if leaf.grad is None:  # the outputs do not depend on this leaf
            assert not grad.numpy().any()
            continue
        assert leaf.grad.shape == leaf.shape and leaf.grad.dtype == leaf.dtype
        np.testing.assert_array_equal(leaf.grad.numpy(), grad.numpy())
