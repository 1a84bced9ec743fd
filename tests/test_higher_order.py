"""Higher-order derivatives: create_graph, second and third order checks, user Functions.

* every row of ``test_ops.OP_SPECS`` (every primitive, each spelling, drawn shapes with
  broadcasting and axes, values off the kinks) is gradgradchecked in float64;
* a few smooth chains are checked to third order (gradgradcheck of a gradient);
* ``create_graph`` semantics: ``retain_graph`` defaults to it, ``.grad`` has a graph,
  ``create_graph=False`` leaves gradients as plain data;
* user-defined Functions: recorded when written with ``ctx.xp`` and arithmetic, a
  ``DoubleBackwardError`` naming the op otherwise (never a wrong second derivative);
* a VJP that is right to first order only is caught by gradgradcheck and localised.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from test_ops import OP_SPECS, Case, OpSpec, to_tensors

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import function as function_module
from tinygrad_lstm.tensor import ops
from tinygrad_lstm.testing import GradcheckError, check_second_derivatives, gradcheck, gradgradcheck


def f64(values, requires_grad=True):
    return tl.Tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


# ---------------------------------------------------------- every primitive, second order


def second_order_property(spec: OpSpec, **hypothesis_settings):
    """A Hypothesis test: gradgradcheck of ``spec`` for a drawn case and spelling."""

    @settings(**hypothesis_settings)
    @given(case=spec.cases, label=st.sampled_from(list(spec.forms)))
    def check(case: Case, label: str) -> None:
        form = spec.forms[label]
        inputs = to_tensors(case.arrays, "cpu")
        gradgradcheck(lambda *tensors: form(*tensors, **case.kwargs), inputs, **spec.gradcheck_options)

    return check


def _examples(spec: OpSpec, count: int = 5) -> list[Case]:
    """The same few drawn cases of ``spec`` at every run (for walking the table)."""
    found = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate])
    @given(case=spec.cases)
    def collect(case: Case) -> None:
        found.append(case)

    collect()
    return found


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda spec: spec.name)
def test_second_derivatives_of_every_op_match_finite_differences(spec: OpSpec) -> None:
    second_order_property(spec, max_examples=6)()


def test_every_primitive_is_covered_by_the_second_order_table() -> None:
    from tinygrad_lstm.testing.battery import all_primitives, graph_primitives

    seen = set()
    for spec in OP_SPECS:
        for case in _examples(spec):
            outputs = spec.forms[next(iter(spec.forms))](*to_tensors(case.arrays, "cpu"), **case.kwargs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            seen |= graph_primitives(outputs)
    # Cast and ToDevice are gradgradchecked in the battery (--order 2); IndexAdd is GetItem's VJP;
    # Compare and Detach pass no gradient at all (they exist so that traces record comparisons and .detach())
    missing = set(all_primitives()) - seen - {"Cast", "ToDevice", "IndexAdd", "Compare", "Detach"}
    assert not missing, f"no second-order check exercises {sorted(missing)}"


@pytest.mark.parametrize("name", ["getitem_basic", "getitem_advanced"])
def test_the_vjp_of_indexing_is_checked_to_second_order_on_drawn_indices(name: str) -> None:
    """IndexAdd (GetItem's VJP, recorded) gradgradchecked: the gradient of Σ x[index]³."""
    spec = next(spec for spec in OP_SPECS if spec.name == name)

    @settings(max_examples=6)
    @given(case=spec.cases)
    def check(case: Case) -> None:
        form = next(iter(spec.forms.values()))
        inputs = to_tensors(case.arrays, "cpu")

        def gradient(x, *rest):
            return tl.grad((form(x, *rest, **case.kwargs) ** 3).sum(), x, create_graph=True)[0]

        gradgradcheck(gradient, inputs)

    check()


def test_the_vjp_of_indexing_is_itself_differentiable() -> None:
    x = f64([[0.3, -0.2], [0.5, 0.9], [-0.4, 0.1]])
    index = tl.Tensor([0, 2, 0])
    gradgradcheck(lambda x: (x[index] ** 3).sum(axis=1), (x,))
    gradgradcheck(lambda x: x[1:, ::-1] * x[:2], (x,))
    (g,) = tl.grad((x[index] * x[index]).sum(), x, create_graph=True)
    assert "IndexAdd" in repr(g.grad_fn) or g.grad_fn is not None


# ------------------------------------------------------------------------ third order


CHAINS = {
    "tanh of a product": lambda x: (x.tanh() * x.exp()).sum(),
    "sigmoid over a matmul": lambda x: (x.reshape(2, 2) @ x.reshape(2, 2).sigmoid()).sum(),
    "log-sum-exp": lambda x: x.logsumexp(axis=0) * x.sqrt().sum(),
    "power and division": lambda x: (x**3 / (1.0 + x * x)).sum(),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_third_derivatives_of_smooth_chains(name: str) -> None:
    fn = CHAINS[name]
    x = f64([0.4, 0.7, 1.1, 0.9])

    def gradient(x):  # first order, recorded: gradgradcheck of it checks the third derivative
        return tl.grad(fn(x), x, create_graph=True)[0]

    gradgradcheck(gradient, (x,))


def test_third_derivative_of_tanh_equals_the_formula() -> None:
    x = f64([0.3, -0.8])
    (g1,) = tl.grad(x.tanh().sum(), x, create_graph=True)
    (g2,) = tl.grad(g1.sum(), x, create_graph=True)
    (g3,) = tl.grad(g2.sum(), x)
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(g1.numpy(), 1 - t**2, rtol=1e-12)
    np.testing.assert_allclose(g2.numpy(), -2 * t * (1 - t**2), rtol=1e-12)
    np.testing.assert_allclose(g3.numpy(), (1 - t**2) * (6 * t**2 - 2), rtol=1e-12)


# ------------------------------------------------------------------ create_graph semantics


def test_create_graph_leaves_a_differentiable_grad_and_retains_the_graph() -> None:
    x = f64([0.5, -1.5])
    y = (x * x * x).sum()
    y.backward(create_graph=True)
    assert x.grad.requires_grad and x.grad.grad_fn is not None
    np.testing.assert_allclose(x.grad.numpy(), 3 * x.numpy() ** 2)
    (again,) = tl.grad(y, x, retain_graph=True)  # retain_graph defaulted to True: the first graph is still there
    np.testing.assert_allclose(again.numpy(), 3 * x.numpy() ** 2)
    first = x.grad
    x.grad = None
    first.sum().backward()  # d/dx Σ 3x² = 6x
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy())


def test_without_create_graph_gradients_are_plain_and_the_graph_is_freed() -> None:
    x = f64([0.5, -1.5])
    y = (x * x).sum()
    (g,) = tl.grad(y, x)
    assert not g.requires_grad and g.grad_fn is None
    with pytest.raises(RuntimeError, match="second time"):
        tl.grad(y, x)


def test_create_graph_with_retain_graph_false_frees_as_it_goes() -> None:
    x = f64([0.5, -1.5])
    (g,) = tl.grad(x.exp().sum(), x, create_graph=True, retain_graph=False)  # g = y: Exp's output
    with pytest.raises(RuntimeError, match="second time"):
        tl.grad(g.sum(), x)


def test_gradients_accumulate_under_create_graph() -> None:
    x = f64([0.5, 2.0])
    (x * x).sum().backward(create_graph=True)
    (x * x * x).sum().backward(create_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 3 * x.numpy() ** 2)
    (h,) = tl.grad(x.grad.sum(), x)
    np.testing.assert_allclose(h.numpy(), 2 + 6 * x.numpy())


def test_grad_outputs_that_require_grad_are_differentiated_through() -> None:
    x = f64([0.5, 2.0])
    v = f64([1.0, -1.0])
    (g,) = tl.grad(x.exp(), x, v, create_graph=True)
    (dv,) = tl.grad(g.sum(), v)
    np.testing.assert_allclose(dv.numpy(), np.exp(x.numpy()))


def test_broadcasting_and_dtype_edges_are_recorded_too() -> None:
    a = f64([[0.5], [1.5]])
    b = f64([0.3, -0.2, 0.7])
    gradgradcheck(lambda a, b: (a * b).tanh() * b, (a, b))
    x32 = tl.Tensor([0.5, 1.5], requires_grad=True)
    (g,) = tl.grad((x32.astype(tl.float64) ** 3).sum(), x32, create_graph=True)
    assert g.dtype == tl.float32 and g.requires_grad
    (h,) = tl.grad(g.sum(), x32)
    np.testing.assert_allclose(h.numpy(), 6 * x32.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------- user Functions


class Cube(tl.Function):
    """y = x³, saving its input: differentiable to any order as written."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class SoftplusSavingDerived(tl.Function):
    """y = log(1 + eˣ); saves σ(x), which is neither input nor output."""

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        ctx.save_for_backward(1 / (1 + xp.exp(-x)))
        return xp.log1p(xp.exp(x))

    @staticmethod
    def backward(ctx, grad):
        (sigma,) = ctx.saved_tensors
        return grad * sigma


class ExpKeepingAttribute(tl.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.y = ctx.xp.exp(x)
        return ctx.y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.y


class SinWithNumpy(tl.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * np.cos(x)


class MarkedOnceDifferentiable(tl.Function):
    differentiable_backward = False
    create_graph_advice = "use the composed version instead"

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_a_user_function_written_with_arithmetic_is_recorded() -> None:
    x = f64([0.5, -1.2, 2.0])
    gradgradcheck(lambda x: Cube.apply(x).tanh(), (x,))
    (g,) = tl.grad(Cube.apply(x).sum(), x, create_graph=True)
    (h,) = tl.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())


@pytest.mark.parametrize(
    "function, message",
    [
        (SoftplusSavingDerived, r"SoftplusSavingDerived\.forward saved an array .* neither one of its inputs"),
        (ExpKeepingAttribute, r"ExpKeepingAttribute\.backward reads ctx\.y"),
        (SinWithNumpy, r"SinWithNumpy\.backward failed when run on Tensors"),
        (MarkedOnceDifferentiable, r"MarkedOnceDifferentiable\.backward is not differentiable.*composed version"),
    ],
    ids=lambda value: getattr(value, "__name__", "message"),
)
def test_a_user_function_that_cannot_be_recorded_raises_naming_it(function, message) -> None:
    x = f64([0.5, -1.2])
    y = function.apply(x).sum()
    (first,) = tl.grad(y, x, retain_graph=True)  # first order is unaffected
    assert np.all(np.isfinite(first.numpy()))
    with pytest.raises(tl.DoubleBackwardError, match=message):
        tl.grad(y, x, create_graph=True)


def test_the_fused_lstm_step_refuses_create_graph_clearly() -> None:
    from tinygrad_lstm import nn

    tl.manual_seed(0)
    cell = nn.FusedLSTMCell(3, 2).astype(tl.float64)
    x = f64(np.random.default_rng(0).standard_normal((2, 3)))
    h, c = cell(x)
    with pytest.raises(tl.DoubleBackwardError, match="FusedLSTMStep"):
        tl.grad((h * h).sum(), x, create_graph=True)


def test_declared_saves_match_what_each_forward_saves() -> None:
    """Each built-in op's ``saves`` names exactly what forward saved (checked by identity)."""
    original = function_module.Function.apply.__func__
    checked = set()

    def apply(cls, *args, **kwargs):
        result = original(cls, *args, **kwargs)
        outputs = result if isinstance(result, tuple) else (result,)
        node = outputs[0]._node
        if node is not None and cls.saves is not None:  # every call saves exactly what saves names
            assert len(node.saved_tensors) == len(cls.saves), f"{cls.__name__} saved {len(node.saved_tensors)}"
        if node is not None and cls.saves is not None and node.saved_tensors:
            arrays = [a.data if isinstance(a, tl.Tensor) else a for a in args]
            found = function_module.saved_roles(node.saved_tensors, arrays, tuple(o.data for o in outputs))
            from tinygrad_lstm.tensor.graph_backward import declared_roles

            declared = declared_roles(cls)
            for position, (have, want) in enumerate(zip(found, declared)):
                if isinstance(node.saved_tensors[position], np.ndarray):
                    assert have == want, f"{cls.__name__}: saved {position} is {have}, declared {want}"
            checked.add(cls.__name__)
        return result

    function_module.Function.apply = classmethod(apply)
    try:
        for spec in OP_SPECS:
            for case in _examples(spec, count=2):
                for form in spec.forms.values():
                    form(*to_tensors(case.arrays, "cpu"), **case.kwargs)
    finally:
        function_module.Function.apply = classmethod(original)
    declared = {name for name, value in vars(ops).items() if getattr(value, "saves", None)}
    assert declared <= checked, f"never exercised: {sorted(declared - checked)}"


# ------------------------------------------------- a VJP right to first order only


def _tanh_vjp_from_a_detached_value(ctx, g):
    """Tanh's VJP with its factor 1 - y² computed from a value cut from the graph."""
    (y,) = ctx.saved_tensors
    if isinstance(y, tl.Tensor):
        y = y.detach()
    return g * (1 - y * y)


def test_a_vjp_wrong_only_to_second_order_is_caught_and_localised(monkeypatch) -> None:
    x = f64([0.3, -0.5, 0.8])
    w = f64([[0.2, -0.1, 0.4], [0.5, 0.3, -0.2]])

    def fn(x, w):
        return ((w @ x).tanh() * 2.0).exp()

    assert gradgradcheck(fn, (x, w))
    monkeypatch.setattr(ops.Tanh, "backward", staticmethod(_tanh_vjp_from_a_detached_value))
    assert gradcheck(fn, (x, w))  # right to first order
    with pytest.raises(GradcheckError) as failure:
        gradgradcheck(fn, (x, w), names=["x", "w"])
    text = str(failure.value)
    assert "gradgradcheck failed" in text
    assert "d(grad of x)" in text and "/ d(x)" in text  # which gradient, which input, elements, values
    assert "reverse mode gives" in text and "finite differences give" in text
    assert "first wrong second derivative: Tanh" in text
    assert failure.value.report.localization.culprit.name == "Tanh"


def test_check_second_derivatives_returns_a_report() -> None:
    x = f64([0.3, 0.9])
    report = check_second_derivatives(lambda x: x.sigmoid() * x, (x,))
    assert report.passed and report.check == "gradgradcheck"
    assert str(report).startswith("gradgradcheck passed")
    assert gradgradcheck(lambda x: x * 2.0, (x,), grad_outputs=[f64([1.0, 2.0])]) is True


def test_gradgradcheck_rejects_bad_grad_outputs() -> None:
    x = f64([0.3, 0.9])
    with pytest.raises(ValueError, match="grad_outputs\\[0\\] has shape"):
        gradgradcheck(lambda x: x * x, (x,), grad_outputs=[f64([1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="no input Tensor requires grad"):
        gradgradcheck(lambda x: x * x, (f64([1.0], requires_grad=False),))


# ------------------------------------------------------ the battery and the command line


def test_the_op_battery_passes_to_second_order_on_the_strict_device(strict_device: str) -> None:
    """Every op check, second order, on the stand-in that refuses host arrays (as CuPy does)."""
    from tinygrad_lstm.testing import battery

    checks = [check for check in battery.battery() if check.group == "op"]
    results = battery.run_battery(strict_device, checks, order=2)
    failed = [f"{r.check.name}: {r.error or r.report}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_gradcheck_command_with_order_2_catches_a_second_order_only_bug(capsys, monkeypatch) -> None:
    from tinygrad_lstm.cli import main

    assert main(["gradcheck", "--order", "2", "-k", "tanh"]) == 0
    out = capsys.readouterr().out
    assert "second-derivative checks (gradgradcheck)" in out and "3 of 3 checks passed" in out
    monkeypatch.setattr(ops.Tanh, "backward", staticmethod(_tanh_vjp_from_a_detached_value))
    assert main(["gradcheck", "-k", "tanh"]) == 0  # first order cannot see it
    capsys.readouterr()
    assert main(["gradcheck", "--order", "2", "-k", "tanh"]) == 1
    out = capsys.readouterr().out
    assert "FAILED tanh" in out and "first wrong second derivative: Tanh" in out


def test_battery_rejects_an_unknown_order() -> None:
    from tinygrad_lstm.testing import battery

    result = battery.run_check(battery.battery()[0], order=2)
    assert result.passed
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        battery.run_check(battery.battery()[0], order=3)


def test_each_grad_under_create_graph_has_an_array_of_its_own() -> None:
    a, b = f64([0.5, 1.0]), f64([2.0, -1.0])
    ((a + b) ** 2).sum().backward(create_graph=True)  # Add hands one gradient, 2(a + b), to both
    first = a.grad.numpy().copy()
    b.grad.data *= 0  # an in-place update of one .grad ...
    np.testing.assert_allclose(a.grad.numpy(), first)  # ... leaves the other alone
    (second,) = tl.grad(a.grad.sum(), b)  # and the recorded graph intact: d/db Σ 2(a + b) = 2
    np.testing.assert_allclose(second.numpy(), [2.0, 2.0])


def test_a_first_order_backward_runs_every_vjp_on_raw_arrays(monkeypatch) -> None:
    """create_graph=False: each VJP sees the engine's Context (a replay's own subclass of it) and backend arrays."""
    from tinygrad_lstm import nn
    from tinygrad_lstm.testing.battery import all_primitives

    seen = []
    for name in all_primitives():
        function = getattr(ops, name)
        original = function.backward

        def spy(ctx, *grads, _original=original):
            seen.append((type(ctx), {type(g) for g in grads} | {type(s) for s in ctx.saved_tensors}))
            return _original(ctx, *grads)

        monkeypatch.setattr(function, "backward", staticmethod(spy))
    tl.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2).astype(tl.float64)  # compiled: the scan replay calls the same VJPs
    output, _ = lstm(tl.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3))))
    (output * output).sum().backward()
    assert len(seen) > 50
    for context_type, value_types in seen:
        assert issubclass(context_type, tl.Context)
        assert not any(issubclass(t, tl.Tensor) for t in value_types), value_types


class SumOfExp(tl.Function):
    """y = Σ exp(x), saving its 0-d output (a NumPy scalar, as NumPy reductions return)."""

    @staticmethod
    def forward(ctx, x):
        total = ctx.xp.exp(x).sum()
        ctx.save_for_backward(x, total)
        return total

    @staticmethod
    def backward(ctx, grad):
        x, total = ctx.saved_tensors
        return grad * ctx.xp.exp(x) * (total / total)


def test_a_user_function_saving_its_scalar_output_is_recorded() -> None:
    x = f64([0.2, -0.4])
    gradgradcheck(SumOfExp.apply, (x,))
