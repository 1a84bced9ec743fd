"""Higher-order derivatives against PyTorch: second derivatives of the ops, HVPs through
nn.LSTM, the functional transforms against torch.autograd.functional, and one training
step with a gradient penalty. Skipped cleanly when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim

torch = pytest.importorskip("torch")
functional = pytest.importorskip("torch.autograd.functional")

TOLERANCE = dict(rtol=1e-9, atol=1e-11)


def _pair(array: np.ndarray):
    return tl.Tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def _assert_close(ours, theirs, what: str) -> None:
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), err_msg=what, **TOLERANCE)


def _positive(rng, *shape):
    return rng.uniform(0.5, 2.0, shape)


def _off_zero(rng, *shape):
    return rng.uniform(0.2, 1.0, shape) * rng.choice([-1.0, 1.0], shape)


def _normal(rng, *shape):
    return rng.standard_normal(shape) * 0.7


# name -> (ours, torch's, input makers); each function of the inputs returns one tensor
OPS = {
    "mul (broadcast)": (lambda a, b: a * b, lambda a, b: a * b, [(_normal, (2, 3)), (_normal, (3,))]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [(_normal, (2, 3)), (_positive, (2, 1))]),
    "pow": (lambda a, b: a**b, lambda a, b: a**b, [(_positive, (2, 3)), (_normal, (2, 3))]),
    "pow scalar": (lambda a: a**3 + 2.0**a, lambda a: a**3 + 2.0**a, [(_normal, (4,))]),
    "exp": (lambda x: x.exp(), torch.exp, [(_normal, (2, 3))]),
    "log": (lambda x: x.log(), torch.log, [(_positive, (2, 3))]),
    "tanh": (lambda x: x.tanh(), torch.tanh, [(_normal, (2, 3))]),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, [(_normal, (2, 3))]),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, [(_positive, (2, 3))]),
    "relu": (lambda x: x.relu() * x, lambda x: x.relu() * x, [(_off_zero, (2, 3))]),
    "abs": (lambda x: x.abs() * x, lambda x: x.abs() * x, [(_off_zero, (2, 3))]),
    "clip": (lambda x: x.clip(-0.5, 0.5) * x, lambda x: x.clamp(-0.5, 0.5) * x, [(_off_zero, (2, 3))]),
    "maximum": (
        lambda a, b: tl.maximum(a, b) * a,
        lambda a, b: torch.maximum(a, b) * a,
        [(_normal, (3,)), (_normal, (3,))],
    ),
    "matmul": (lambda a, b: (a @ b).tanh(), lambda a, b: (a @ b).tanh(), [(_normal, (2, 3)), (_normal, (3, 4))]),
    "linear": (
        lambda x, w, b: tl.linear(x, w, b).sigmoid(),
        lambda x, w, b: torch.nn.functional.linear(x, w, b).sigmoid(),
        [(_normal, (2, 3)), (_normal, (4, 3)), (_normal, (4,))],
    ),
    "sum and mean": (
        lambda x: x.sum(axis=1) * x.mean(axis=0).sum(),
        lambda x: x.sum(dim=1) * x.mean(dim=0).sum(),
        [(_normal, (2, 3))],
    ),
    "max": (lambda x: x.max(axis=1) ** 2, lambda x: x.amax(dim=1) ** 2, [(_normal, (2, 3))]),
    "logsumexp": (lambda x: x.logsumexp(axis=1), lambda x: x.logsumexp(dim=1), [(_normal, (2, 4))]),
    "softmax": (
        lambda x: nn.functional.softmax(x, axis=1),
        lambda x: torch.softmax(x, dim=1),
        [(_normal, (2, 4))],
    ),
    "shape ops": (
        lambda x: (x.reshape(3, 2).T.expand(2, 2, 3) * x).sum(axis=0),
        lambda x: (x.reshape(3, 2).T.expand(2, 2, 3) * x).sum(dim=0),
        [(_normal, (2, 3))],
    ),
    "getitem": (lambda x: x[[0, 1, 0]] ** 3, lambda x: x[[0, 1, 0]] ** 3, [(_normal, (2, 3))]),
    "cat, stack, split": (
        lambda x: tl.stack([tl.cat([x, x * x], axis=1), tl.cat(list(x.split(1, axis=1))[::-1] + [x.exp()], axis=1)]),
        lambda x: torch.stack(
            [torch.cat([x, x * x], dim=1), torch.cat(list(x.split(1, dim=1))[::-1] + [x.exp()], dim=1)]
        ),
        [(_normal, (2, 3))],
    ),
    "add, sub, neg": (
        lambda a, b: (a + b) * (a - b) * -b,
        lambda a, b: (a + b) * (a - b) * -b,
        [(_normal, (2, 3)), (_normal, (1, 3))],
    ),
    "unbind, chunk": (
        lambda x: tl.stack([p * q.squeeze(1) for p, q in zip(x.unbind(1), x.chunk(3, axis=1)[::-1])]),
        lambda x: torch.stack([p * q.squeeze(1) for p, q in zip(x.unbind(1), x.chunk(3, dim=1)[::-1])]),
        [(_normal, (2, 3))],
    ),
    "astype": (
        lambda x: (x.astype(tl.float32).astype(tl.float64) ** 2) * x,
        lambda x: (x.float().double() ** 2) * x,
        [(_normal, (2, 3))],
    ),
    "where": (
        lambda x: tl.where(x > 0, x * x, x.exp()),
        lambda x: torch.where(x > 0, x * x, x.exp()),
        [(_off_zero, (2, 3))],
    ),
}


@pytest.mark.parametrize("name", list(OPS))
def test_second_derivatives_of_ops_match_torch(name: str) -> None:
    ours_fn, their_fn, makers = OPS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    pairs = [_pair(make(rng, *shape)) for make, shape in makers]
    ours_inputs, their_inputs = [p[0] for p in pairs], [p[1] for p in pairs]
    ours, theirs = ours_fn(*ours_inputs), their_fn(*their_inputs)
    v = rng.standard_normal(ours.shape)
    ours_grads = tl.grad(ours, ours_inputs, tl.Tensor(v), create_graph=True)
    their_grads = torch.autograd.grad(theirs, their_inputs, torch.tensor(v), create_graph=True)
    directions = [rng.standard_normal(x.shape) for x in ours_inputs]
    ours_total = sum((g * tl.Tensor(d)).sum() for g, d in zip(ours_grads, directions))
    their_total = sum((g * torch.tensor(d)).sum() for g, d in zip(their_grads, directions))
    ours_second = tl.grad(ours_total, ours_inputs)
    their_second = torch.autograd.grad(their_total, their_inputs, allow_unused=True)
    for i, (mine, theirs_) in enumerate(zip(ours_second, their_second)):
        if theirs_ is None:
            theirs_ = torch.zeros(mine.shape, dtype=torch.float64)
        _assert_close(mine, theirs_, f"{name}: second derivative, input {i}")


# ----------------------------------------------------------------- HVPs through nn.LSTM


def _lstms(num_layers: int, seed: int = 0):
    tl.manual_seed(seed)
    ours = nn.LSTM(3, 4, num_layers=num_layers, compile=False).astype(tl.float64)  # recordable backward
    theirs = torch.nn.LSTM(3, 4, num_layers=num_layers, dtype=torch.float64)
    theirs.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("num_layers", [1, 2])
def test_hessian_vector_products_through_lstm_match_torch(num_layers: int) -> None:
    """vᵀ∇² of a loss through nn.LSTM with respect to the input and every weight."""
    ours, theirs = _lstms(num_layers)
    rng = np.random.default_rng(num_layers)
    x_array = rng.standard_normal((5, 2, 3))
    x, their_x = _pair(x_array)
    ours_leaves = [x, *ours.parameters()]
    their_leaves = [their_x, *theirs.parameters()]
    directions = [rng.standard_normal(t.shape) for t in ours_leaves]

    def ours_loss():
        output, (h, c) = ours(x)
        return (output * output).sum() + (c.tanh() * h).sum()

    def their_loss():
        output, (h, c) = theirs(their_x)
        return (output * output).sum() + (c.tanh() * h).sum()

    ours_grads = tl.grad(ours_loss(), ours_leaves, create_graph=True)
    their_grads = torch.autograd.grad(their_loss(), their_leaves, create_graph=True)
    for g, their_g in zip(ours_grads, their_grads):
        _assert_close(g, their_g, "first order")
    ours_dot = sum((g * tl.Tensor(d)).sum() for g, d in zip(ours_grads, directions))
    their_dot = sum((g * torch.tensor(d)).sum() for g, d in zip(their_grads, directions))
    ours_hvp = tl.grad(ours_dot, ours_leaves)
    their_hvp = torch.autograd.grad(their_dot, their_leaves)
    names = ["x", *dict(ours.named_parameters())]
    for name, mine, theirs_hvp in zip(names, ours_hvp, their_hvp):
        _assert_close(mine, theirs_hvp, f"HVP with respect to {name}")

    # and the same through tl.hvp, against torch.autograd.functional.hvp (input only)
    def ours_of_x(inputs):
        output, _ = ours(inputs)
        return (output * output).sum()

    def their_of_x(inputs):
        output, _ = theirs(inputs)
        return (output * output).sum()

    value, product = tl.hvp(ours_of_x, tl.Tensor(x_array), tl.Tensor(directions[0]))
    their_value, their_product = functional.hvp(their_of_x, torch.tensor(x_array), torch.tensor(directions[0]))
    _assert_close(value, their_value, "hvp value")
    _assert_close(product, their_product, "hvp")


# ---------------------------------------------------- the functional transforms


def _compare_structure(ours, theirs, what: str) -> None:
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple), f"{what}: torch gives a tuple, we give {type(ours).__name__}"
        assert len(ours) == len(theirs), f"{what}: {len(ours)} entries, torch has {len(theirs)}"
        for i, (mine, their) in enumerate(zip(ours, theirs)):
            _compare_structure(mine, their, f"{what}[{i}]")
        return
    assert isinstance(ours, tl.Tensor), f"{what}: torch gives a tensor, we give {type(ours).__name__}"
    assert ours.shape == tuple(theirs.shape), f"{what}: shape {ours.shape}, torch {tuple(theirs.shape)}"
    assert not ours.requires_grad, f"{what}: without create_graph the result is cut from the graph"
    _assert_close(ours, theirs, what)


def _vector_fn(x, w):
    return (w @ x).tanh() * x.sum()


def _scalar_fn(x, w):
    return ((w @ x).tanh() * (w * w).sum(axis=1)).sum() + (x * x * x).sum()


def _pair_fn(x, w):
    return (w @ x).sigmoid(), (x * x).sum()


@pytest.fixture
def transform_inputs():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(3), rng.standard_normal((2, 3))
    vectors = dict(out=rng.standard_normal(2), x=rng.standard_normal(3), w=rng.standard_normal((2, 3)))
    return x, w, vectors


def test_vjp_jvp_hvp_match_torch_functional(transform_inputs) -> None:
    x, w, v = transform_inputs
    ours_in, their_in = (tl.Tensor(x), tl.Tensor(w)), (torch.tensor(x), torch.tensor(w))
    ours_v_in = (tl.Tensor(v["x"]), tl.Tensor(v["w"]))
    their_v_in = (torch.tensor(v["x"]), torch.tensor(v["w"]))
    _compare_structure(
        tl.vjp(_vector_fn, ours_in, tl.Tensor(v["out"])),
        functional.vjp(_vector_fn, their_in, torch.tensor(v["out"])),
        "vjp",
    )
    _compare_structure(tl.jvp(_vector_fn, ours_in, ours_v_in), functional.jvp(_vector_fn, their_in, their_v_in), "jvp")
    _compare_structure(tl.hvp(_scalar_fn, ours_in, ours_v_in), functional.hvp(_scalar_fn, their_in, their_v_in), "hvp")
    # a single Tensor input gives single Tensors back; a scalar output needs no v
    single = lambda x: _scalar_fn(x, ours_in[1])  # noqa: E731
    their_single = lambda x: _scalar_fn(x, their_in[1])  # noqa: E731
    _compare_structure(tl.vjp(single, ours_in[0]), functional.vjp(their_single, their_in[0]), "vjp, one input")
    _compare_structure(
        tl.jvp(single, ours_in[0], ours_v_in[0]),
        functional.jvp(their_single, their_in[0], their_v_in[0]),
        "jvp, one input",
    )
    # tuple outputs
    _compare_structure(
        tl.jvp(_pair_fn, ours_in, ours_v_in), functional.jvp(_pair_fn, their_in, their_v_in), "jvp, two outputs"
    )


def test_jacobian_and_hessian_match_torch_functional(transform_inputs) -> None:
    x, w, _ = transform_inputs
    ours_in, their_in = (tl.Tensor(x), tl.Tensor(w)), (torch.tensor(x), torch.tensor(w))
    _compare_structure(tl.jacobian(_vector_fn, ours_in), functional.jacobian(_vector_fn, their_in), "jacobian")
    _compare_structure(tl.jacobian(_pair_fn, ours_in), functional.jacobian(_pair_fn, their_in), "jacobian, two outputs")
    _compare_structure(
        tl.jacobian(lambda x: _vector_fn(x, ours_in[1]), ours_in[0]),
        functional.jacobian(lambda x: _vector_fn(x, their_in[1]), their_in[0]),
        "jacobian, one input",
    )
    _compare_structure(tl.hessian(_scalar_fn, ours_in), functional.hessian(_scalar_fn, their_in), "hessian")
    _compare_structure(
        tl.hessian(lambda w: _scalar_fn(ours_in[0], w), ours_in[1]),
        functional.hessian(lambda w: _scalar_fn(their_in[0], w), their_in[1]),
        "hessian, one input",
    )


def test_transforms_with_create_graph_stay_differentiable() -> None:
    x = tl.Tensor(np.array([0.3, -0.4]), requires_grad=True)
    _, product = tl.hvp(lambda x: (x * x * x).sum(), x, tl.Tensor(np.ones(2)), create_graph=True)  # 6x
    assert product.requires_grad
    (third,) = tl.grad(product.sum(), x)
    np.testing.assert_allclose(third.numpy(), [6.0, 6.0])
    assert x.grad is None  # the transforms never touch .grad


def test_transforms_reject_bad_arguments() -> None:
    x = tl.Tensor(np.ones(3))
    with pytest.raises(ValueError, match="v may be omitted only"):
        tl.vjp(lambda x: x * 2.0, x)
    with pytest.raises(ValueError, match=r"v\[0\] has shape \(2,\) but inputs\[0\] has shape \(3,\)"):
        tl.jvp(lambda x: x * 2.0, x, tl.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="single element"):
        tl.hessian(lambda x: x * 2.0, x)
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a Tensor"):
        tl.jacobian(lambda x, y: x, (x, np.ones(3)))


# ------------------------------------------------- a training step with a gradient penalty


def test_a_training_step_with_a_gradient_penalty_matches_torch() -> None:
    """loss = mse + λ‖∂mse/∂x‖² (a WGAN-GP style penalty), one SGD step, same weights after."""
    tl.manual_seed(5)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)).astype(tl.float64)
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)).double()
    theirs.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})
    rng = np.random.default_rng(5)
    x_array, target = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))

    def ours_model(x):
        return ours[1](ours[0](x).tanh())

    def their_model(x):
        return theirs[1](theirs[0](x).tanh())

    x, their_x = _pair(x_array)
    data_loss = nn.functional.mse_loss(ours_model(x), tl.Tensor(target))
    (input_grad,) = tl.grad(data_loss, x, create_graph=True)
    loss = data_loss + 10.0 * (input_grad * input_grad).sum()
    optimizer = optim.SGD(ours.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    their_data_loss = torch.nn.functional.mse_loss(their_model(their_x), torch.tensor(target))
    (their_input_grad,) = torch.autograd.grad(their_data_loss, their_x, create_graph=True)
    their_loss = their_data_loss + 10.0 * (their_input_grad * their_input_grad).sum()
    their_optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    their_optimizer.zero_grad()
    their_loss.backward()
    their_optimizer.step()

    _assert_close(loss, their_loss, "loss")
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, theirs.state_dict()[name].numpy(), err_msg=name, **TOLERANCE)
    moved = [np.abs(p.grad.numpy()).max() for p in ours.parameters()]
    assert all(m > 0 for m in moved)
