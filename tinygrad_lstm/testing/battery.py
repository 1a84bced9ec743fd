"""The gradient-check battery: every differentiable op, every cell and every layer, checked.

Each entry is a :class:`Check`: a name, the API names it covers, and a function that
builds its inputs (float64, small, on a given device) and returns ``(fn, inputs,
names)`` ready for :func:`tinygrad_lstm.testing.check_gradients`. Inputs are drawn away
from kinks (relu and abs at 0, ties in max, clip's bounds) and from saturation, so a
failure means a wrong VJP, not an unlucky point. For a module, its parameters are among
the checked inputs: gradcheck nudges them in place, and the module sees the nudge.

``run_battery(device)`` runs them all and returns one :class:`CheckResult` per check;
``primitives_covered`` says which primitive ops of ``tensor/ops.py`` the battery's graphs
contain, so a new primitive without a check does not go unnoticed.
``tinygrad-lstm gradcheck`` prints the table. With ``order=2`` (``--order 2``) every
check compares second derivatives instead (:func:`check_second_derivatives`: the
VJP of the VJP, recorded with ``create_graph=True``, against finite differences).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import Function, Tensor, float64, get_default_device, manual_seed, ops, set_grad_enabled
from ..tensor import cat as tl_cat
from ..tensor import grad as tl_grad
from ..tensor import stack as tl_stack
from ..tensor import where as tl_where
from ..tensor.scan import traced_ops
from .gradcheck import GradcheckReport, check_gradients
from .gradgradcheck import check_second_derivatives

Built = tuple[Callable[..., Any], tuple[Any, ...], list[str]]
Rng = np.random.Generator


@dataclass
class Check:
    """One gradient check: ``build(rng, device)`` returns (fn, inputs, input names)."""

    name: str
    group: str  # "op", "function", "layer", "cell" or "recurrent layer"
    covers: tuple[str, ...]  # the API names this check exercises
    build: Callable[[Rng, str | None], Built]
    eps: float = 1e-6
    atol: float = 1e-5
    rtol: float = 1e-3
    orders: tuple[int, ...] = (1, 2)  # the derivative orders it checks (compiled code: first only)


# Primitives that pass no gradient at all: a second-order check has nothing to see in them.
NO_GRADIENT = ("Compare", "Detach")


@dataclass
class CheckResult:
    check: Check
    report: GradcheckReport | None  # None when the check raised before comparing
    seconds: float
    error: str | None = None
    primitives: set[str] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed


# ------------------------------------------------------------------ input helpers


def check_rng(name: str, seed: int = 0) -> np.random.Generator:
    """The generator a check draws its inputs from: fixed by the seed and the check's name."""
    return np.random.default_rng([seed, sum(ord(c) * (i + 1) for i, c in enumerate(name))])


def _tensor(values: Any, device: str | None, requires_grad: bool = True) -> Tensor:
    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad, device=device)


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) * 0.7


def _away_from_zero(rng: np.random.Generator, *shape: int, low: float = 0.2, high: float = 1.0) -> np.ndarray:
    """|x| in [low, high] with random signs: far from the kink of relu and abs at 0."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def _positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


def _unary(name: str, method: str, make: Callable = _normal, shape: tuple[int, ...] = (2, 3)) -> Check:
    def build(rng: Rng, device: str | None) -> Built:
        x = _tensor(make(rng, *shape), device)
        return (lambda x: getattr(x, method)()), (x,), ["x"]

    return Check(name, "op", (method,), build)


def _binary(name: str, covers: str, function: Callable, shapes, make_a=_normal, make_b=_normal, group="op") -> Check:
    def build(rng: Rng, device: str | None) -> Built:
        a = _tensor(make_a(rng, *shapes[0]), device)
        b = _tensor(make_b(rng, *shapes[1]), device)
        return function, (a, b), ["a", "b"]

    return Check(name, group, (covers,), build)


def _single(name: str, covers: tuple[str, ...], function: Callable, shape, make=_normal, group="op", **tol) -> Check:
    def build(rng: Rng, device: str | None) -> Built:
        x = _tensor(make(rng, *shape), device)
        return (lambda x: function(x, device)), (x,), ["x"]

    return Check(name, group, covers, build, **tol)


# ------------------------------------------------------------------------- ops


class _Square(Function):
    """A user-defined op as in API.md: y = x²;  VJP: 2x · g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def _gradient_of_indexing(x: Tensor, device: str | None) -> Tensor:
    """d/dx Σ x[i]³ for repeated indices i, recorded: its graph holds IndexAdd, GetItem's VJP."""
    index = Tensor([0, 2, 0], device=device)
    with set_grad_enabled(True):  # finite differences call fn under no_grad; a gradient needs a graph
        return tl_grad([(x[index] ** 3).sum()], [x], create_graph=True)[0]


def _other_device(device: str | None) -> str:
    """A second device to round-trip through: the strict stand-in from the CPU, else the CPU."""
    from .strict_backend import register_strict_device

    return register_strict_device() if (device or get_default_device()) == "cpu" else "cpu"


def _op_checks() -> list[Check]:
    checks = [
        _binary("add (broadcast)", "+", lambda a, b: a + b, [(2, 3), (3,)]),
        _binary("sub (broadcast)", "-", lambda a, b: a - b, [(2, 1), (1, 3)]),
        _binary("mul (broadcast)", "*", lambda a, b: a * b, [(2, 3), (2, 1)]),
        _binary("div (broadcast)", "/", lambda a, b: a / b, [(2, 3), (3,)], make_b=_positive),
        _binary("pow tensor ** tensor", "**", lambda a, b: a**b, [(2, 3), (2, 3)], make_a=_positive),
        _single("pow tensor ** scalar", ("**",), lambda x, d: x**3, (2, 3)),
        _single("pow scalar ** tensor", ("**",), lambda x, d: 2.0**x, (2, 3)),
        _single("scalars on either side", ("+", "-", "*", "/"), lambda x, d: (2.0 - x) * 3.0 / (1.5 + x * x), (4,)),
        _single("neg", ("neg",), lambda x, d: -x, (2, 3)),
        _binary("matmul 1-D @ 1-D", "@", lambda a, b: a @ b, [(3,), (3,)]),
        _binary("matmul 2-D @ 1-D", "@", lambda a, b: a @ b, [(2, 3), (3,)]),
        _binary("matmul 1-D @ 2-D", "@", lambda a, b: a @ b, [(3,), (3, 2)]),
        _binary("matmul 2-D @ 2-D", "@", lambda a, b: a @ b, [(2, 3), (3, 4)]),
        _binary("matmul batched (broadcast)", "@", lambda a, b: a @ b, [(2, 2, 3), (3, 2)]),
        _unary("exp", "exp"),
        _unary("log", "log", _positive),
        _unary("tanh", "tanh"),
        _unary("sigmoid", "sigmoid"),
        _unary("relu", "relu", _away_from_zero),
        _unary("sqrt", "sqrt", _positive),
        _unary("abs", "abs", _away_from_zero),
        _binary("maximum", "maximum", lambda a, b: a.maximum(b), [(2, 3), (2, 3)]),
        _single("clip", ("clip",), lambda x, d: x.clip(-0.5, 0.5), (2, 3), make=_away_from_zero),
        _single("sum", ("sum",), lambda x, d: x.sum(), (2, 3)),
        _single("sum axis keepdims", ("sum",), lambda x, d: x.sum(axis=(0, -1), keepdims=True), (2, 3, 2)),
        _single("mean axis", ("mean",), lambda x, d: x.mean(axis=1), (2, 3)),
        _single("max", ("max",), lambda x, d: x.max(), (2, 3)),
        _single("max axis", ("max",), lambda x, d: x.max(axis=-1, keepdims=True), (3, 4)),
        _single("logsumexp axis", ("logsumexp",), lambda x, d: x.logsumexp(axis=1), (2, 4)),
        _single("reshape -1", ("reshape",), lambda x, d: x.reshape(3, -1) * 1.5, (2, 3)),
        _single("transpose", ("transpose", "T"), lambda x, d: (x.transpose(2, 0, 1), x.T), (2, 3, 2)),
        _single("expand", ("expand",), lambda x, d: x.expand(2, 3, 3), (3, 1)),
        _single("squeeze unsqueeze", ("squeeze", "unsqueeze"), lambda x, d: x.squeeze(1).unsqueeze(0), (2, 1, 3)),
        _single("getitem slices", ("getitem",), lambda x, d: x[1:, ::2], (3, 4)),
        _single("getitem int", ("getitem",), lambda x, d: x[-1, 2], (3, 4)),
        _single("getitem negative step", ("getitem",), lambda x, d: x[::-1, 3:0:-2], (3, 4)),
        _single("getitem integer array (repeats)", ("getitem",), lambda x, d: x[Tensor([0, 2, 0], device=d)], (3, 2)),
        _single("cat", ("cat",), lambda x, d: tl_cat([x, x[:, :1] * 2.0], axis=1), (2, 3)),
        _single("stack", ("stack",), lambda x, d: tl_stack([x, x.exp()], axis=1), (2, 3)),
        _single("split sizes", ("split",), lambda x, d: x.split([1, 3], axis=1), (2, 4)),
        _single("split size", ("split",), lambda x, d: x.split(2, axis=0), (5, 2)),
        _single("chunk", ("chunk",), lambda x, d: x.chunk(3, axis=1), (2, 7)),
        _single("unbind", ("unbind",), lambda x, d: tuple(p * (i + 1) for i, p in enumerate(x.unbind(1))), (2, 3)),
        _single("where", ("where",), lambda x, d: tl_where(x > 0, x, x * x), (3, 4), make=_away_from_zero),
        _single("gradient of getitem (IndexAdd)", ("getitem", "create_graph"), _gradient_of_indexing, (3, 2)),
        _single("user Function (Square.apply)", ("Function",), lambda x, d: _Square.apply(x), (2, 3)),
        # float32 cannot resolve a 1e-6 nudge: a wider step, and a tolerance for its rounding
        _single(
            "astype float32 and back",
            ("astype",),
            lambda x, d: (x.astype("float32") * 2.0).astype(float64),
            (2, 3),
            eps=1e-2,
            atol=1e-4,
        ),
        _single("to another device and back", ("to",), lambda x, d: (x.to(_other_device(d)) * 2.0).to(x.device), (3,)),
    ]
    from .. import tensor

    if hasattr(tensor, "linear"):
        checks.append(
            _binary("linear (x @ Wᵀ)", "linear", lambda x, w: tensor.linear(x, w), [(2, 2, 3), (4, 3)]),
        )
    return checks


# ------------------------------------------------------------ functions and layers


def _dropout(x: Tensor, device: str | None) -> Tensor:
    manual_seed(0)  # the same mask at every call, so finite differences see one function
    return F.dropout(x, 0.5, training=True)


def _weights(device: str | None) -> Tensor:
    return Tensor(np.arange(1.0, 5.0), device=device)  # (4,) float64, distinct


def _function_checks() -> list[Check]:
    def cross_entropy(rng: Rng, device: str | None) -> Built:
        logits = _tensor(_normal(rng, 4, 5), device)
        targets = Tensor(np.array([0, 3, 4, 3]), device=device)
        return (lambda logits: F.cross_entropy(logits, targets)), (logits,), ["logits"]

    return [
        # Weighted: a softmax row sums to 1, so the plain sum the vacuity test takes has no gradient.
        _single("softmax", ("softmax",), lambda x, d: F.softmax(x, axis=1) * _weights(d), (2, 4), group="function"),
        _single("log_softmax", ("log_softmax",), lambda x, d: F.log_softmax(x, axis=-1), (2, 4), group="function"),
        Check("cross_entropy", "function", ("cross_entropy",), cross_entropy),
        _binary("mse_loss", "mse_loss", F.mse_loss, [(3, 2), (3, 2)], group="function"),
        _single("dropout (fixed mask)", ("dropout",), _dropout, (3, 4), group="function"),
    ]


def _module_check(
    name: str,
    group: str,
    covers: tuple[str, ...],
    make_module: Callable[[], nn.Module],
    make_inputs: Callable[[Rng, str | None], tuple[list[Any], list[str]]],
    call: Callable[..., Any],
) -> Check:
    """Gradients of a module's outputs with respect to its inputs and all its parameters."""

    def build(rng: Rng, device: str | None) -> Built:
        manual_seed(int(rng.integers(1 << 30)))  # the module's initial weights
        module = make_module().astype(float64).to(device or get_default_device())
        inputs, input_names = make_inputs(rng, device)
        parameters = dict(module.named_parameters())
        count = len(inputs)

        def fn(*args: Any) -> Any:  # the trailing args are the module's own parameters
            return call(module, *args[:count])

        return fn, (*inputs, *parameters.values()), [*input_names, *parameters]

    return Check(name, group, covers, build)


def _x(rng: Rng, device: str | None, *shape: int) -> Tensor:
    return _tensor(_normal(rng, *shape), device)


def _layer_checks() -> list[Check]:
    def embedding_inputs(rng, device):
        return [Tensor(np.array([[1, 3], [3, 0]]), device=device)], ["indices"]

    return [
        _module_check(
            "Linear",
            "layer",
            ("Linear",),
            lambda: nn.Linear(3, 2),
            lambda rng, d: ([_x(rng, d, 2, 2, 3)], ["x"]),
            lambda m, x: m(x),
        ),
        _module_check(
            "Embedding (repeated indices)",
            "layer",
            ("Embedding",),
            lambda: nn.Embedding(4, 3),
            embedding_inputs,
            lambda m, indices: m(indices) * 1.0,
        ),
    ]


def _cell_checks() -> list[Check]:
    batch, features, hidden = 2, 3, 2

    def x_only(rng, device):
        return [_x(rng, device, batch, features)], ["x"]

    def x_and_h(rng, device):
        return [_x(rng, device, batch, features), _x(rng, device, batch, hidden)], ["x", "h"]

    def x_h_c(rng, device):
        h, c = _x(rng, device, batch, hidden), _x(rng, device, batch, hidden)
        return [_x(rng, device, batch, features), h, c], ["x", "h", "c"]

    return [
        _module_check(
            "RNNCell tanh",
            "cell",
            ("RNNCell",),
            lambda: nn.RNNCell(features, hidden),
            x_and_h,
            lambda m, x, h: m(x, h),
        ),
        _module_check(
            "RNNCell relu",
            "cell",
            ("RNNCell",),
            lambda: nn.RNNCell(features, hidden, nonlinearity="relu"),
            x_and_h,
            lambda m, x, h: m(x, h),
        ),
        _module_check(
            "RNNCell no bias, zero state",
            "cell",
            ("RNNCell",),
            lambda: nn.RNNCell(features, hidden, bias=False),
            x_only,
            lambda m, x: m(x),
        ),
        _module_check(
            "LSTMCell",
            "cell",
            ("LSTMCell",),
            lambda: nn.LSTMCell(features, hidden),
            x_h_c,
            lambda m, x, h, c: m(x, (h, c)),
        ),
        _module_check(
            "LSTMCell zero state",
            "cell",
            ("LSTMCell",),
            lambda: nn.LSTMCell(features, hidden),
            x_only,
            lambda m, x: m(x),
        ),
        _module_check(
            "GRUCell",
            "cell",
            ("GRUCell",),
            lambda: nn.GRUCell(features, hidden),
            x_and_h,
            lambda m, x, h: m(x, h),
        ),
    ]


def _recurrent_checks() -> list[Check]:
    steps, batch, features, hidden = 3, 2, 3, 2

    def sequence(rng, device):
        return [_x(rng, device, steps, batch, features)], ["x"]

    def sequence_and_state(layers: int, directions: int, lstm: bool):
        def make(rng, device):
            shape = (layers * directions, batch, hidden)
            state = [_x(rng, device, *shape)] + ([_x(rng, device, *shape)] if lstm else [])
            names = ["h_0", "c_0"] if lstm else ["h_0"]
            return [_x(rng, device, batch, steps, features), *state], ["x", *names]

        return make

    lengths = np.array([3, 2])
    return [
        _module_check(
            "RNN tanh, 2 layers",
            "recurrent layer",
            ("RNN",),
            lambda: nn.RNN(features, hidden, num_layers=2),
            sequence,
            lambda m, x: m(x),
        ),
        _module_check(
            "RNN relu, bidirectional, h_0, batch_first",
            "recurrent layer",
            ("RNN",),
            lambda: nn.RNN(features, hidden, nonlinearity="relu", bidirectional=True, batch_first=True),
            sequence_and_state(1, 2, lstm=False),
            lambda m, x, h: m(x, h),
        ),
        _module_check(
            "LSTM",
            "recurrent layer",
            ("LSTM",),
            lambda: nn.LSTM(features, hidden),
            sequence,
            lambda m, x: m(x),
        ),
        _module_check(
            "LSTM 2 layers, bidirectional, (h_0, c_0), batch_first",
            "recurrent layer",
            ("LSTM",),
            lambda: nn.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True),
            sequence_and_state(2, 2, lstm=True),
            lambda m, x, h, c: m(x, (h, c)),
        ),
        _module_check(
            "LSTM bidirectional, lengths",
            "recurrent layer",
            ("LSTM", "lengths"),
            lambda: nn.LSTM(features, hidden, bidirectional=True),
            sequence,
            lambda m, x: m(x, lengths=lengths),
        ),
        _module_check(
            "GRU 2 layers, bidirectional, lengths",
            "recurrent layer",
            ("GRU", "lengths"),
            lambda: nn.GRU(features, hidden, num_layers=2, bidirectional=True),
            sequence,
            lambda m, x: m(x, lengths=lengths),
        ),
        _module_check(
            "GRU h_0, batch_first",
            "recurrent layer",
            ("GRU",),
            lambda: nn.GRU(features, hidden, batch_first=True),
            sequence_and_state(1, 1, lstm=False),
            lambda m, x, h: m(x, h),
        ),
    ]


def _compiled_checks() -> list[Check]:
    """tl.scan and tl.compile: the tape replays the primitives' own VJPs, checked end to end."""

    def scan_rnn(reverse: bool, checkpoint: int | None) -> Callable[[Rng, str | None], Built]:
        def build(rng: Rng, device: str | None) -> Built:
            xs = _tensor(_normal(rng, 4, 2, 3), device)
            h0 = _tensor(_normal(rng, 2, 3), device)
            weight = _tensor(_normal(rng, 3, 3), device)

            def step(h: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
                h = tensor_module.linear(h, weight, x).tanh()
                return h, h * 2.0

            def fn(xs: Tensor, h0: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
                return scan(step, h0, xs, reverse=reverse, checkpoint=checkpoint)

            return fn, (xs, h0, weight), ["xs", "init", "weight (read by the step)"]

        return build

    def compiled_mask(rng: Rng, device: str | None) -> Built:
        x = _tensor(_away_from_zero(rng, 3, 4), device)
        # logsumexp detaches its shift (the gradient is unchanged): a Detach op on the tape
        fn = compile_function(lambda x: tl_where(x > 0, x * x, x * 0.5).logsumexp(axis=1))
        return fn, (x,), ["x"]

    from .. import tensor as tensor_module
    from ..tensor import compile as compile_function
    from ..tensor import scan

    return [
        # First order only: a compiled node's backward replays VJPs on raw arrays (not recordable)
        Check("tl.scan (an RNN step, weight captured)", "compiled", ("scan",), scan_rnn(False, None), orders=(1,)),
        Check("tl.scan reverse, checkpoint=2", "compiled", ("scan",), scan_rnn(True, 2), orders=(1,)),
        Check("tl.compile (comparison, where, logsumexp)", "compiled", ("compile",), compiled_mask, orders=(1,)),
    ]


def battery_for(order: int) -> list[Check]:
    """The checks that apply to derivatives of ``order`` (1 or 2)."""
    return [check for check in battery() if order in check.orders]


def battery() -> list[Check]:
    """Every check, in the order the table shows them: ops, functions, layers, cells, recurrent layers, compiled."""
    return [
        *_op_checks(), *_function_checks(), *_layer_checks(), *_cell_checks(), *_recurrent_checks(),
        *_compiled_checks(),
    ]  # fmt: skip


# ------------------------------------------------------------------------ running


def _flatten_outputs(result: Any) -> tuple[Tensor, ...]:
    """A layer returns (output, state) with the state a tensor or a tuple: all of it, flat."""
    if isinstance(result, Tensor):
        return (result,)
    return tuple(t for part in result for t in _flatten_outputs(part))


def graph_primitives(outputs: Iterable[Tensor]) -> set[str]:
    """Names of the op nodes in the graph behind ``outputs`` (walked with a stack)."""
    stack = [t._node for t in outputs if isinstance(t, Tensor) and t._node is not None]
    seen, names = set(), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.name)
        names.update(op.function.__name__ for op in traced_ops(node))  # a scan/compile node's tape
        stack.extend(edge[0] for edge in node.edges if isinstance(edge, tuple))
    return names


def _gradient_reaches(outputs: tuple[Tensor, ...], inputs: tuple[Any, ...]) -> list[bool]:
    """For each checked input: does the gradient of the outputs' sum reach it, nonzero?"""
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    differentiable = [out.sum() for out in outputs if out.requires_grad]
    if not differentiable:
        return [False] * len(checked)
    total = differentiable[0]
    for part in differentiable[1:]:
        total = total + part
    grads = tl_grad([total], checked)
    return [g is not None and bool(np.any(g.numpy() != 0)) for g in grads]


def run_check(check: Check, device: str | None = None, seed: int = 0, order: int = 1) -> CheckResult:
    """Build one check's inputs on ``device`` and compare reverse mode with finite differences.

    ``order=2`` compares second derivatives (gradgradcheck) instead of first.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    start = time.perf_counter()
    try:
        fn, inputs, names = check.build(check_rng(check.name, seed), device)

        def flat(*args: Any) -> tuple[Tensor, ...]:
            return _flatten_outputs(fn(*args))

        outputs = flat(*inputs)
        primitives = graph_primitives(outputs)
        if not any(_gradient_reaches(outputs, inputs)):
            raise ValueError("vacuous check: every gradient is zero at these inputs (dead relu units?)")
        if order == 1:
            report = check_gradients(flat, inputs, eps=check.eps, atol=check.atol, rtol=check.rtol, names=names)
        else:  # second derivatives need every op recorded: recurrent layers run their loops written out
            with nn.written_out_loops():
                report = check_second_derivatives(
                    flat, inputs, eps=check.eps, atol=check.atol, rtol=check.rtol, names=names
                )
    except Exception as error:  # a check that crashes is a failed check, reported by name
        return CheckResult(check, None, time.perf_counter() - start, f"{type(error).__name__}: {error}")
    return CheckResult(check, report, time.perf_counter() - start, primitives=primitives)


def run_battery(
    device: str | None = None,
    checks: list[Check] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    seed: int = 0,
    order: int = 1,
) -> list[CheckResult]:
    """Run every check (or ``checks``) with inputs drawn from ``seed``; ``on_result`` sees each result.

    ``order=2`` checks second derivatives instead of first.
    """
    results = []
    for check in checks if checks is not None else battery():
        results.append(run_check(check, device, seed, order))
        if on_result is not None:
            on_result(results[-1])
    return results


def all_primitives() -> list[str]:
    """The primitive ops: every Function subclass defined in ``tensor/ops.py``."""
    return sorted(
        name
        for name, value in vars(ops).items()
        if isinstance(value, type) and issubclass(value, Function) and value.__module__ == ops.__name__
    )


def primitives_missed(results: Iterable[CheckResult], order: int = 1) -> list[str]:
    """Primitives of ``tensor/ops.py`` that no check's graph contained (at order 2, of those with a gradient)."""
    covered = set().union(*(result.primitives for result in results))
    exempt = NO_GRADIENT if order == 2 else ()
    return [name for name in all_primitives() if name not in covered and name not in exempt]
