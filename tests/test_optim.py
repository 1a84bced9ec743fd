"""optim.SGD and optim.Adam: the update rules, in place, outside any graph.

(Step-by-step agreement with torch.optim is in test_torch_parity.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim


def _parameter(values, grad=None) -> nn.Parameter:
    parameter = nn.Parameter(np.asarray(values, dtype=np.float64))
    if grad is not None:
        parameter.grad = tl.Tensor(np.asarray(grad, dtype=np.float64))
    return parameter


def test_sgd_step_is_p_minus_lr_times_grad_with_weight_decay():
    p = _parameter([1.0, -2.0], grad=[0.5, 0.5])
    optim.SGD([p], lr=0.1, weight_decay=0.2).step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * (0.5 + 0.2), -2.0 - 0.1 * (0.5 - 0.4)], rtol=1e-15)


def test_sgd_momentum_keeps_a_velocity():
    p = _parameter([0.0], grad=[1.0])
    optimizer = optim.SGD([p], lr=1.0, momentum=0.5)
    optimizer.step()  # v = 1
    optimizer.step()  # v = 0.5 + 1
    optimizer.step()  # v = 0.75 + 1
    assert p.item() == pytest.approx(-(1 + 1.5 + 1.75))


def test_adam_first_step_moves_each_element_by_lr():
    # With bias correction, the first step is lr · g / (|g| + eps) ≈ lr · sign(g).
    p = _parameter([1.0, 1.0, 1.0], grad=[1e-3, -5.0, 100.0])
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.numpy(), [0.99, 1.01, 0.99], rtol=1e-6)


@pytest.mark.parametrize(
    "make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1), lambda ps: optim.Adam(ps, lr=0.1)]
)
def test_updates_happen_in_place_without_building_a_graph(make):
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    parameters = list(model.parameters())
    arrays = [p.data for p in parameters]
    before = [p.numpy() for p in parameters]
    optimizer = make(model.parameters())  # a generator is fine
    for _ in range(2):
        optimizer.zero_grad()
        model(tl.randn(5, 3)).sum().backward()
        optimizer.step()
    for parameter, array, old in zip(model.parameters(), arrays, before):
        assert parameter.data is array, "the update must write into the same array"
        assert parameter.is_leaf and parameter.grad_fn is None and parameter.requires_grad
        assert parameter.dtype == np.float32
        assert not np.array_equal(parameter.numpy(), old)
    assert list(model.parameters()) == parameters


def test_step_skips_parameters_without_gradient_and_works_under_no_grad():
    with_grad, without = _parameter([1.0], grad=[1.0]), _parameter([1.0])
    optimizer = optim.Adam([with_grad, without], lr=0.1)
    with tl.no_grad():
        optimizer.step()
    assert with_grad.item() < 1.0 and without.item() == 1.0


def test_zero_grad_sets_gradients_to_none():
    parameters = [_parameter([1.0], grad=[2.0]), _parameter([3.0], grad=[4.0])]
    for optimizer in (optim.SGD(parameters, lr=0.1), optim.Adam(parameters)):
        optimizer.zero_grad()
        assert all(p.grad is None for p in parameters)
        for p in parameters:
            p.grad = tl.Tensor([1.0], dtype=tl.float64)


def test_a_gradient_of_another_dtype_is_refused():
    p = _parameter([1.0])
    p.grad = tl.Tensor([1.0], dtype=tl.float32)
    with pytest.raises(TypeError, match="gradient dtype float32 differs from parameter dtype float64"):
        optim.SGD([p], lr=0.1).step()


@pytest.mark.parametrize(
    "make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.05)], ids=["SGD", "Adam"]
)
def test_training_reduces_a_loss(make):
    tl.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer = make(model.parameters())
    x = tl.randn(32, 2)
    y = x @ tl.Tensor([[2.0], [-1.0]]) + 0.5
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: optim.SGD([], lr=0.1), ValueError, "empty parameter list"),
        (lambda p: optim.Adam(iter([])), ValueError, "empty parameter list"),
        (lambda p: optim.SGD([p], lr=-1.0), ValueError, "learning rate"),
        (lambda p: optim.Adam([p], lr=-1e-3), ValueError, "learning rate"),
        (lambda p: optim.SGD([p], lr=0.1, momentum=-0.5), ValueError, "momentum"),
        (lambda p: optim.SGD([p], lr=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
        (lambda p: optim.Adam([p], betas=(1.0, 0.999)), ValueError, "betas"),
        (lambda p: optim.Adam([p], betas=(0.9, -0.1)), ValueError, "betas"),
        (lambda p: optim.Adam([p], eps=-1e-8), ValueError, "eps"),
        (lambda p: optim.Adam([p], weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda p: optim.SGD([tl.ones(2)], lr=0.1), TypeError, "require grad"),
        (lambda p: optim.Adam([np.ones(2)]), TypeError, "require grad"),
    ],
)
def test_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make(_parameter([1.0]))


# ---------------------------------------------------------------- optimizer state_dict


def _trained_pair(make_optimizer, steps=3):
    """A parameter and its optimizer after a few steps on a fixed quadratic."""
    p = nn.Parameter(tl.Tensor([[1.0, -2.0], [0.5, 3.0]], dtype=tl.float64))
    optimizer = make_optimizer([p])
    for _ in range(steps):
        optimizer.zero_grad()
        ((p * p).sum() + p.sum()).backward()
        optimizer.step()
    return p, optimizer


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.1)],
    ids=["sgd-momentum", "adam"],
)
def test_optimizer_state_dict_round_trip_resumes_exactly(make_optimizer, tmp_path):
    p, optimizer = _trained_pair(make_optimizer)
    tl.save(optimizer.state_dict(), tmp_path / "optim.npz")
    # continue the original for two steps ...
    p_copy = nn.Parameter(tl.Tensor(p.numpy()))
    for _ in range(2):
        optimizer.zero_grad()
        ((p * p).sum() + p.sum()).backward()
        optimizer.step()
    # ... and a fresh optimizer restored from the file for the same two steps
    restored = make_optimizer([p_copy])
    restored.load_state_dict(tl.load(tmp_path / "optim.npz"))
    for _ in range(2):
        restored.zero_grad()
        ((p_copy * p_copy).sum() + p_copy.sum()).backward()
        restored.step()
    np.testing.assert_array_equal(p.numpy(), p_copy.numpy())


def test_optimizer_load_state_dict_rejects_bad_keys_and_shapes_without_changing_anything():
    p, optimizer = _trained_pair(lambda ps: optim.Adam(ps, lr=0.1))
    before = {key: value.copy() for key, value in optimizer.state_dict().items()}
    with pytest.raises(KeyError, match="unexpected key '0.velocity'"):
        optimizer.load_state_dict({**before, "0.velocity": before["0.m"]})
    with pytest.raises(KeyError, match="unexpected key '5.m'"):
        optimizer.load_state_dict({"5.m": before["0.m"]})
    with pytest.raises(ValueError, match=r"'0.m' has shape \(3,\)"):
        optimizer.load_state_dict({**before, "0.m": np.zeros(3)})
    with pytest.raises(KeyError, match="lacks v"):
        optimizer.load_state_dict({"0.step": before["0.step"], "0.m": before["0.m"]})
    after = optimizer.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
