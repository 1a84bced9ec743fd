"""The holes a mutation run found, and their siblings: public entry points that no test
called (``tl.backward`` without grads, the ``tl.NAME`` function forms, ``ones_like``,
``sum_to``) and the battery's branch for checks without differentiable outputs; plus the
argument checks of ``backward`` and of the ``requires_grad`` flag."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lstm as tl
from tinygrad_lstm.testing import battery
from tinygrad_lstm.testing import strategies as tst

# ------------------------------------------------------------- tl.backward


@given(
    values=hnp.arrays("float64", st.integers(1, 4), elements=st.floats(-2, 2)),
    weights=st.lists(st.floats(-2, 2), min_size=1, max_size=4),
)
def test_tl_backward_without_grads_seeds_every_root_with_one(values, weights):
    x = tl.Tensor(values, requires_grad=True)
    roots = [((x * weight) * x).sum() for weight in weights]
    tl.backward(roots)  # no grads: each single-element root starts from 1
    expected = sum(2 * weight * values for weight in weights)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


@given(
    values=hnp.arrays("float64", st.integers(1, 4), elements=st.floats(-2, 2)),
    seeds=st.lists(st.floats(-3, 3), min_size=1, max_size=4),
)
def test_tl_backward_with_grads_weights_each_root(values, seeds):
    x = tl.Tensor(values, requires_grad=True)
    roots = [(x * x).sum() * float(k + 1) for k in range(len(seeds))]
    tl.backward(roots, [tl.Tensor(seed, dtype="float64") for seed in seeds])
    expected = sum(seed * (k + 1) * 2 * values for k, seed in enumerate(seeds))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_tl_backward_equals_one_backward_per_root_and_keeps_the_graph_on_request():
    x = tl.Tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x.tanh()
    first, second = y.sum(), (y * y).sum()
    tl.backward([first, second], retain_graph=True)
    together = x.grad.numpy()
    x.grad = None
    first.backward(retain_graph=True)
    second.backward()
    np.testing.assert_allclose(together, x.grad.numpy(), rtol=1e-6)


def test_tl_backward_without_grads_refuses_a_root_with_several_elements():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one element"):
        tl.backward([(x * x).sum(), x * 2])


# ------------------------------------------------ backward's gradient argument


@pytest.mark.parametrize("grad", [[1.0, 1.0], (1.0, 1.0), 3.0, 3, "ones"])
def test_backward_refuses_a_gradient_that_is_not_a_tensor_or_an_array(grad):
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(TypeError, match=r"must be a Tensor or an array shaped like the tensor \(2,\)"):
        y.backward(grad)
    with pytest.raises(TypeError, match="must be a Tensor or an array"):
        tl.grad([y], [x], [grad])
    assert x.grad is None  # nothing was half done


def test_backward_3_on_a_scalar_is_refused_like_pytorch_and_the_tensor_form_works():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    with pytest.raises(TypeError, match=r"tl\.Tensor\(3\.0\)"):
        loss.backward(3.0)
    loss.backward(tl.Tensor(3.0))
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 12.0])
    torch = pytest.importorskip("torch")
    reference = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError):
        (reference * reference).sum().backward(3.0)
    with pytest.raises(TypeError):
        (reference * 2).backward([1.0, 1.0])


@pytest.mark.parametrize("grad", [np.ones(2), np.ones(2, dtype=np.float32), tl.ones(2), tl.ones(2, dtype="float64")])
def test_backward_takes_tensors_and_arrays_of_any_float_dtype(grad):
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    (x * 2).backward(grad)
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


# ---------------------------------------------------------- requires_grad flag


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_requires_grad_on_an_integer_tensor_is_refused_whichever_way_it_is_set(dtype):
    t = tl.Tensor(np.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        t.requires_grad = True
    with pytest.raises(TypeError, match="only floating-point"):
        t.requires_grad_()
    with pytest.raises(TypeError, match="only floating-point"):
        tl.Tensor(np.zeros(3, dtype=dtype), requires_grad=True)
    assert not t.requires_grad


def test_requires_grad_false_on_a_non_leaf_is_refused_and_a_leaf_may_change():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad = False
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad_(False)
    assert y.requires_grad
    y.requires_grad = True  # already so: allowed, as it changes nothing
    x.requires_grad = False
    assert not x.requires_grad and not (x * 2).requires_grad
    x.requires_grad = True
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


# ------------------------------------------------- the battery's vacuous branch


def _check(name, function, requires_grad=True):
    def build(rng, device):
        x = tl.Tensor(rng.normal(size=(2, 3)), requires_grad=requires_grad, device=device)
        return function, (x,), ["x"]

    return battery.Check(name, "op", (name,), build)


@pytest.mark.parametrize(
    "function",
    [lambda x: x.detach() * 2, lambda x: x > 0, lambda x: (x.detach(), x.detach().sum())],
    ids=["detached", "comparison", "tuple of detached"],
)
def test_a_check_without_differentiable_outputs_is_reported_vacuous(function):
    result = battery.run_check(_check("no gradient", function))
    assert not result.passed
    assert "vacuous" in result.error
    x = tl.Tensor(np.ones((2, 3)), requires_grad=True)
    outputs = battery._flatten_outputs(function(x))
    assert battery._gradient_reaches(outputs, (x,)) == [False]


def test_a_check_with_a_dead_gradient_is_reported_vacuous_and_a_live_one_passes():
    dead = battery.run_check(_check("dead relu", lambda x: (x * 0.0 - 10.0).relu()))
    assert not dead.passed and "vacuous" in dead.error
    live = battery.run_check(_check("tanh", lambda x: x.tanh()))
    assert live.passed, live.error


def test_gradient_reaches_only_the_inputs_it_reaches_with_mixed_outputs():
    a = tl.Tensor([1.0, 2.0], requires_grad=True)
    b = tl.Tensor([3.0, 4.0], requires_grad=True)
    outputs = (a * 2, (b * 2).detach(), a > 0)
    assert battery._gradient_reaches(outputs, (a, b, 7)) == [True, False]
    assert battery.graph_primitives(outputs) == {"Mul"}
    assert battery.graph_primitives((a.detach(),)) == set()


# ----------------------------------------------- the tl.NAME function forms

FUNCTION_FORMS = {
    "exp": (),
    "log": (),
    "tanh": (),
    "sigmoid": (),
    "relu": (),
    "sqrt": (),
    "abs": (),
    "clip": (0.3, 0.8),
    "sum": (1,),
    "mean": (0,),
    "max": (1,),
    "logsumexp": (1,),
    "reshape": (3, 2),
    "transpose": (),
    "expand": (4, 2, 3),
    "unsqueeze": (0,),
    "split": (1, 1),
    "chunk": (2, 1),
    "unbind": (0,),
}


@pytest.mark.parametrize("name", sorted(FUNCTION_FORMS))
def test_every_function_form_equals_its_method_in_value_and_gradient(name):
    args = FUNCTION_FORMS[name]
    values = np.random.default_rng(1).uniform(0.1, 1.0, size=(2, 3))
    via_function = tl.Tensor(values, requires_grad=True)
    via_method = tl.Tensor(values, requires_grad=True)
    results = [getattr(tl, name)(via_function, *args), getattr(via_method, name)(*args)]
    flat = [r if isinstance(r, tuple) else (r,) for r in results]
    for ours, theirs in zip(*flat):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for outputs in flat:
        total = outputs[0].sum() * 1.5
        for part in outputs[1:]:
            total = total + part.sum() * 0.5
        total.backward()
    np.testing.assert_array_equal(via_function.grad.numpy(), via_method.grad.numpy())
    assert np.any(via_function.grad.numpy() != 0)


def test_squeeze_function_form():
    x = tl.Tensor(np.ones((1, 3)))
    assert tl.squeeze(x, 0).shape == x.squeeze(0).shape == (3,)


@pytest.mark.parametrize("make_like, fill", [(tl.zeros_like, 0.0), (tl.ones_like, 1.0)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_zeros_like_and_ones_like_copy_shape_dtype_and_device(make_like, fill, dtype):
    like = tl.Tensor(np.full((2, 3), 7), dtype=dtype)
    made = make_like(like)
    assert made.shape == like.shape and made.dtype == like.dtype and made.device == like.device
    np.testing.assert_array_equal(made.numpy(), np.full((2, 3), fill))


@given(data=st.data())
def test_sum_to_undoes_broadcasting(data):
    shape = data.draw(tst.shapes(max_dims=3))
    broadcast = data.draw(tst.broadcastable_shapes(shape, max_dims=4))
    target = np.broadcast_shapes(shape, broadcast)
    grad = data.draw(hnp.arrays("float64", target, elements=st.floats(-3, 3)))
    reduced = tl.sum_to(grad, shape)
    assert reduced.shape == shape
    # the adjoint of broadcasting: <sum_to(g), v> = <g, broadcast(v)>
    v = np.random.default_rng(0).normal(size=shape)
    np.testing.assert_allclose((reduced * v).sum(), (grad * np.broadcast_to(v, target)).sum(), rtol=1e-9, atol=1e-9)


def test_get_array_module_names_numpy_on_the_cpu():
    assert tl.get_array_module("cpu") is np
