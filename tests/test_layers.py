"""Linear, Embedding, Dropout, Sequential; nn.functional; nn.utils.clip_grad_norm_.

Values are compared with NumPy references, gradients with ``testing.gradcheck`` in
float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn
from tinygrad_lstm.nn import functional as F
from tinygrad_lstm.testing import gradcheck
from tinygrad_lstm.testing import strategies as tst


def _float64_leaf(array) -> tl.Tensor:
    return tl.Tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# -------------------------------------------------------------------- Linear


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_numpy_and_its_gradients_check(shape, bias):
    tl.manual_seed(0)
    layer = nn.Linear(4, 2, bias=bias).astype(tl.float64)
    x = _float64_leaf(np.random.default_rng(0).normal(size=shape))
    expected = x.numpy() @ layer.weight.numpy().T + (layer.bias.numpy() if bias else 0.0)
    y = layer(x)
    assert y.shape == (*shape[:-1], 2)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, *params: layer(x), (x, *layer.parameters()))


def test_linear_init_shapes_and_errors():
    tl.manual_seed(0)
    layer = nn.Linear(16, 8)
    assert layer.weight.shape == (8, 16) and layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad
    assert np.abs(layer.weight.numpy()).max() <= 1 / math.sqrt(16)
    assert layer.bias is None or np.abs(layer.bias.numpy()).max() <= 1 / math.sqrt(16)
    assert nn.Linear(2, 3, bias=False).bias is None
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\).*\(2, 15\)"):
        layer(tl.zeros(2, 15))


# ----------------------------------------------------------------- Embedding


def test_embedding_looks_up_rows_from_integer_tensors_arrays_and_lists():
    tl.manual_seed(0)
    embedding = nn.Embedding(5, 3)
    table = embedding.weight.numpy()
    indices = np.array([[0, 4], [2, 2]])
    for given_indices in (indices, tl.Tensor(indices), indices.tolist(), indices.astype(np.int32)):
        out = embedding(given_indices)
        assert out.shape == (2, 2, 3)
        np.testing.assert_array_equal(out.numpy(), table[indices])


def test_embedding_repeated_indices_accumulate_gradient():
    embedding = nn.Embedding(4, 2)
    indices = np.array([[1, 1], [3, 1]])
    upstream = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    embedding(indices).backward(upstream)
    expected = np.zeros((4, 2), dtype=np.float32)
    np.add.at(expected, indices, upstream)
    np.testing.assert_array_equal(embedding.weight.grad.numpy(), expected)
    assert expected[1].tolist() == [0 + 2 + 6, 1 + 3 + 7]  # three uses of row 1


def test_embedding_gradcheck_with_repeats():
    tl.manual_seed(1)
    embedding = nn.Embedding(4, 3).astype(tl.float64)
    indices = np.array([2, 0, 2, 2, 3])
    assert gradcheck(lambda weight: embedding(indices) * embedding(indices[::-1]), (embedding.weight,))


@pytest.mark.parametrize("indices", [np.array([0.0, 1.0]), [0.5], tl.Tensor([1.0]), np.array([True, False])])
def test_embedding_rejects_non_integer_indices(indices):
    with pytest.raises(TypeError, match="integer indices"):
        nn.Embedding(3, 2)(indices)


@pytest.mark.parametrize(("indices", "bad"), [([0, 3], 3), ([[7]], 7), ([-1, 0], -1)])
def test_embedding_rejects_out_of_range_indices(indices, bad):
    with pytest.raises(IndexError, match=rf"index {bad} is out of range for 3 rows"):
        nn.Embedding(3, 2)(np.array(indices))


# ------------------------------------------------------------------- Dropout


def test_dropout_in_training_zeroes_about_p_and_scales_the_rest():
    tl.manual_seed(0)
    dropout = nn.Dropout(0.25)
    x = tl.ones(200, 100, requires_grad=True)
    y = dropout(x)
    values = y.numpy()
    dropped = (values == 0).mean()
    assert abs(dropped - 0.25) < 0.02
    np.testing.assert_allclose(values[values != 0], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # d/dx of x · mask / (1 - p)
    assert y.dtype == np.float32


def test_dropout_is_the_identity_in_eval_and_at_p_zero():
    x = tl.randn(4, 5)
    np.testing.assert_array_equal(nn.Dropout(0.5).eval()(x).numpy(), x.numpy())
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    np.testing.assert_array_equal(F.dropout(x, 0.9, training=False).numpy(), x.numpy())


def test_dropout_p_one_zeroes_everything_and_passes_no_gradient():
    x = tl.randn(3, 4, requires_grad=True)
    y = nn.Dropout(1.0)(x)
    assert not y.numpy().any() and np.isfinite(y.numpy()).all()
    y.sum().backward()
    assert not x.grad.numpy().any()


def test_dropout_masks_follow_the_seed_and_probability_is_checked():
    x = tl.ones(50)
    tl.manual_seed(3)
    first = F.dropout(x, 0.5).numpy()
    tl.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            nn.Dropout(p)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            F.dropout(x, p)


def test_dropout_gradcheck_with_a_fixed_mask():
    x = _float64_leaf(np.random.default_rng(0).normal(size=(3, 4)))

    def dropped(x):
        tl.manual_seed(5)  # the same mask for every evaluation
        return F.dropout(x, 0.4)

    assert gradcheck(dropped, (x,))


# ---------------------------------------------------------------- Sequential


def test_sequential_composes_and_gradchecks():
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).astype(tl.float64).eval()
    x = _float64_leaf(np.random.default_rng(1).normal(size=(5, 3)))
    first, _, last = model
    np.testing.assert_array_equal(model(x).numpy(), last(first(x)).numpy())
    assert gradcheck(lambda x, *params: model(x).tanh(), (x, *model.parameters()))


# ---------------------------------------------------------------- functional


def _reference_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_softmax_and_log_softmax_match_numpy_and_gradcheck(data):
    x = data.draw(tst.tensors(shape=tst.shapes(min_dims=1, max_dims=3)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    expected = _reference_log_softmax(x.numpy(), axis)
    np.testing.assert_allclose(F.log_softmax(x, axis).numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.softmax(x, axis).numpy(), np.exp(expected), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.softmax(x, axis).numpy().sum(axis=axis), 1.0, rtol=1e-12)
    assert gradcheck(lambda x: F.log_softmax(x, axis), (x,))
    assert gradcheck(lambda x: F.softmax(x, axis), (x,))


def test_softmax_is_stable_for_huge_values():
    x = tl.Tensor([[1e4, 1e4 + 1.0, -1e4], [-1e30, 0.0, 1e30]], dtype=tl.float64, requires_grad=True)
    probabilities = F.softmax(x, axis=1)
    np.testing.assert_allclose(probabilities.numpy()[0], np.exp(_reference_log_softmax(np.array([0, 1.0, -2e4]), 0)))
    np.testing.assert_array_equal(probabilities.numpy()[1], [0.0, 0.0, 1.0])
    F.log_softmax(x, axis=1)[:, 0].sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def _reference_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    log_probs = _reference_log_softmax(logits.reshape(-1, logits.shape[-1]), 1)
    return float(-log_probs[np.arange(targets.size), targets.reshape(-1)].mean())


@st.composite
def classification_problems(draw):
    leading = draw(tst.shapes(min_dims=1, max_dims=2, max_side=4))
    classes = draw(st.integers(1, 5))
    logits = draw(tst.tensors(shape=(*leading, classes), elements=tst.floats(-5.0, 5.0)))
    targets = draw(tst.arrays(shape=leading, dtype=np.int64, elements=st.integers(0, classes - 1)))
    return logits, targets


@settings(max_examples=20, deadline=None)
@given(problem=classification_problems())
def test_cross_entropy_matches_numpy_and_gradchecks(problem):
    logits, targets = problem
    loss = F.cross_entropy(logits, targets)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_reference_cross_entropy(logits.numpy(), targets), rel=1e-12, abs=1e-12)
    assert gradcheck(lambda logits: F.cross_entropy(logits, tl.Tensor(targets)), (logits,))


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_n():
    logits = _float64_leaf(np.random.default_rng(0).normal(size=(4, 3)))
    targets = np.array([0, 2, 2, 1])
    F.cross_entropy(logits, targets).backward()
    expected = (np.exp(_reference_log_softmax(logits.numpy(), 1)) - np.eye(3)[targets]) / 4
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [tl.float32, tl.float64])
def test_cross_entropy_is_stable_for_large_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [5e3, 5e3 + 2.0, 5e3 - 1.0]])
    targets = np.array([1, 2])
    x = tl.Tensor(logits, dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(x, targets)
    assert loss.dtype == dtype and np.isfinite(loss.item())
    assert loss.item() == pytest.approx(_reference_cross_entropy(logits, targets), rel=1e-6)
    loss.backward()
    assert x.grad.dtype == dtype and np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize(("targets", "bad"), [([0, 3], 3), ([-1, 0], -1)])
def test_cross_entropy_rejects_out_of_range_targets(targets, bad):
    with pytest.raises(IndexError, match=rf"target {bad} is out of range for 3 classes"):
        F.cross_entropy(tl.zeros(2, 3), np.array(targets))


@pytest.mark.parametrize("targets", [np.array([0.0, 1.0]), [0.5, 1.0], tl.Tensor([1.0, 0.0])])
def test_cross_entropy_rejects_non_integer_targets(targets):
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(tl.zeros(2, 3), targets)


def test_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"targets of shape \(2,\), got \(3,\)"):
        F.cross_entropy(tl.zeros(2, 3), np.array([0, 1, 2]))


def test_mse_loss_matches_numpy_and_gradchecks():
    rng = np.random.default_rng(2)
    prediction, target = _float64_leaf(rng.normal(size=(3, 4))), _float64_leaf(rng.normal(size=(3, 4)))
    expected = ((prediction.numpy() - target.numpy()) ** 2).mean()
    assert F.mse_loss(prediction, target).item() == pytest.approx(expected, rel=1e-14)
    assert F.mse_loss(prediction, target.numpy()).item() == pytest.approx(expected, rel=1e-14)
    assert gradcheck(F.mse_loss, (prediction, target))
    with pytest.raises(ValueError, match=r"\(3, 4\) != target shape \(4,\)"):
        F.mse_loss(prediction, tl.zeros(4, dtype=tl.float64))


# ---------------------------------------------------------- clip_grad_norm_


def _parameters_with_grads(grads: list[np.ndarray]) -> list[nn.Parameter]:
    parameters = []
    for grad in grads:
        parameter = nn.Parameter(np.zeros_like(grad))
        parameter.grad = tl.Tensor(grad)
        parameters.append(parameter)
    return parameters


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_total_as_a_float():
    grads = [np.array([3.0, 0.0]), np.array([[0.0], [4.0]])]  # total norm 5
    parameters = _parameters_with_grads(grads)
    total = nn.utils.clip_grad_norm_(parameters, max_norm=1.0)
    assert type(total) is float and total == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    for parameter, grad in zip(parameters, grads):
        np.testing.assert_allclose(parameter.grad.numpy(), grad * scale, rtol=1e-12)
        assert parameter.grad.dtype == np.float64


def test_clip_grad_norm_leaves_small_gradients_alone_and_skips_missing_ones():
    parameters = _parameters_with_grads([np.array([0.3, 0.4], dtype=np.float32)])
    without_grad = nn.Parameter(np.ones(3, dtype=np.float32))
    total = nn.utils.clip_grad_norm_([*parameters, without_grad], max_norm=1.0)
    assert total == pytest.approx(0.5)
    np.testing.assert_array_equal(parameters[0].grad.numpy(), np.array([0.3, 0.4], dtype=np.float32))
    assert without_grad.grad is None
    assert nn.utils.clip_grad_norm_(without_grad, 1.0) == 0.0  # a single tensor is accepted too


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    for max_norm in (0.1, 2.0, 100.0):
        grads = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
        ours = _parameters_with_grads(grads)
        theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for tensor, grad in zip(theirs, grads):
            tensor.grad = torch.from_numpy(grad.copy())
        total = nn.utils.clip_grad_norm_(ours, max_norm)
        their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        assert total == pytest.approx(their_total.item(), rel=1e-13)
        for parameter, tensor in zip(ours, theirs):
            np.testing.assert_allclose(parameter.grad.numpy(), tensor.grad.numpy(), rtol=1e-13, atol=1e-15)
