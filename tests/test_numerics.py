"""Numerics at the extremes and dtype promotion, against PyTorch as the oracle.

Each function has one stable formula (sigmoid without cancellation, softmax shifted by
the max, logsumexp that survives infinities); dtype promotion follows PyTorch's tiers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lstm as tl
from tinygrad_lstm.nn import functional as F

try:
    import torch
except ImportError:  # the PyTorch comparisons skip; the exact references still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the oracle here")

FLOAT_RANGES = {"float32": 80.0, "float64": 700.0}  # where exp(-x) of the reference stays finite


def to_torch(array):
    return torch.tensor(np.asarray(array))


# -------------------------------------------------------------------- sigmoid


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(data=st.data())
def test_sigmoid_is_accurate_to_a_few_ulp_over_its_whole_range(dtype, data):
    bound = FLOAT_RANGES[dtype]
    width = 32 if dtype == "float32" else 64
    x = data.draw(hnp.arrays(dtype, st.integers(1, 8), elements=st.floats(-bound, bound, width=width)))
    ours = tl.Tensor(x).sigmoid().numpy()
    exact = np.array([1.0 / (1.0 + math.exp(-float(v))) for v in x])  # float64, from the float input
    np.testing.assert_allclose(ours, exact, rtol=8 * np.finfo(dtype).eps, atol=0)
    if torch is not None:
        np.testing.assert_allclose(ours, torch.sigmoid(to_torch(x)).numpy(), rtol=8 * np.finfo(dtype).eps, atol=0)
    assert np.isfinite(np.log(ours)).all()  # log σ(x) never -inf inside the range


def test_sigmoid_at_the_examples_of_the_issue():
    x = tl.Tensor([-20.0, -15.0])
    np.testing.assert_allclose(x.sigmoid().numpy(), [2.0611537e-09, 3.0590222e-07], rtol=1e-6)
    assert np.isfinite(x.sigmoid().log().numpy()).all()
    with np.errstate(all="raise", under="ignore"):  # no overflow warning even far out
        far = tl.Tensor([-1e30, -1e4, 1e4, 1e30]).sigmoid().numpy()
    assert far[0] >= 0 and far[0] < 1e-38 and far[-1] == 1.0


@given(x=hnp.arrays("float64", st.integers(1, 6), elements=st.floats(-40, 40)))
@needs_torch
def test_sigmoid_gradient_matches_pytorch_far_into_saturation(x):
    ours = tl.Tensor(x, requires_grad=True)
    ours.sigmoid().sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    torch.sigmoid(theirs).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_the_fused_lstm_step_uses_the_same_stable_sigmoid():
    from tinygrad_lstm import nn

    cell = nn.FusedLSTMCell(1, 1, bias=False)
    with tl.no_grad():
        cell.weight_ih.data[:] = 0.0
        cell.weight_hh.data[:] = 0.0
    x = tl.zeros(1, 1)
    # gates (i, f, g, o) = (σ(-20), σ(-20), tanh(20), σ(-20)), so c' = f·1 + i·g = 2σ(-20)
    h, c = cell.step(tl.Tensor([[-20.0, -20.0, 20.0, -20.0]]), (x, tl.ones(1, 1)))
    np.testing.assert_allclose(c.numpy(), [[2 * 2.0611537e-09]], rtol=1e-5)


# -------------------------------------------------------- softmax and friends

large_logits = hnp.arrays(
    "float32",
    st.tuples(st.integers(1, 4), st.integers(1, 5)),
    elements=st.floats(-1e6, 1e6, width=32),
)


@given(logits=large_logits)
@needs_torch
def test_softmax_and_log_softmax_match_pytorch_at_large_logits(logits):
    reference = to_torch(logits)
    probabilities = F.softmax(tl.Tensor(logits), axis=1).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities, torch.softmax(reference, 1).numpy(), rtol=1e-5, atol=1e-7)
    log_probabilities = F.log_softmax(tl.Tensor(logits), axis=1).numpy()
    np.testing.assert_allclose(log_probabilities, torch.log_softmax(reference, 1).numpy(), rtol=1e-6, atol=1e-5)
    assert tl.Tensor(logits).softmax(1).shape == logits.shape


@given(logits=large_logits, data=st.data())
@needs_torch
def test_cross_entropy_and_its_gradient_match_pytorch_at_large_logits(logits, data):
    targets = np.array(
        data.draw(st.lists(st.integers(0, logits.shape[1] - 1), min_size=len(logits), max_size=len(logits)))
    )
    ours = tl.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, targets)
    loss.backward()
    theirs = torch.tensor(logits, requires_grad=True)
    reference = torch.nn.functional.cross_entropy(theirs, torch.tensor(targets))
    reference.backward()
    np.testing.assert_allclose(loss.item(), reference.item(), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_the_softmax_example_of_the_issue_sums_to_one():
    rows = F.softmax(tl.Tensor([[1e6, 1e6, -1e6]]), axis=1).numpy()
    np.testing.assert_array_equal(rows, [[0.5, 0.5, 0.0]])


extended_floats = st.one_of(st.floats(-50, 50, width=32), st.sampled_from([np.inf, -np.inf]))


@given(x=hnp.arrays("float32", st.tuples(st.integers(1, 3), st.integers(1, 4)), elements=extended_floats))
@needs_torch
def test_logsumexp_matches_pytorch_with_infinities(x):
    for axis in (0, 1):
        ours = tl.Tensor(x).logsumexp(axis=axis).numpy()
        theirs = torch.logsumexp(to_torch(x), axis).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # equal infinities compare equal
    np.testing.assert_allclose(tl.Tensor(x).logsumexp().item(), torch.logsumexp(to_torch(x), (0, 1)).item(), rtol=1e-6)


def test_logsumexp_examples_of_the_issue():
    assert tl.Tensor([-np.inf, -np.inf]).logsumexp().item() == -np.inf
    assert tl.Tensor([np.inf, 1.0]).logsumexp().item() == np.inf


@pytest.mark.parametrize("shape, axis", [((2, 0), 1), ((0, 3), 0), ((0, 3), 1), ((4, 0, 2), 1)])
@needs_torch
def test_an_empty_axis_gives_what_pytorch_gives(shape, axis):
    x = tl.zeros(*shape)
    reference = torch.zeros(*shape)
    assert F.softmax(x, axis).shape == tuple(torch.softmax(reference, axis).shape)
    assert F.log_softmax(x, axis).shape == tuple(torch.log_softmax(reference, axis).shape)
    np.testing.assert_array_equal(x.logsumexp(axis=axis).numpy(), torch.logsumexp(reference, axis).numpy())


# ------------------------------------------------------------ dtype promotion

DTYPES = ["bool", "int32", "int64", "float32", "float64"]
BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "maximum": lambda a, b, module=None: (tl.maximum if isinstance(a, tl.Tensor) else torch.maximum)(a, b),
}


def tensor_pair(dtype, zero_dim, values):
    array = np.asarray(values[0] if zero_dim else values).astype(dtype)
    return tl.Tensor(array), torch.tensor(array)


@needs_torch  # every combination: the space is small, and a sample missed true division of ints
@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("left, right", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("left_0d, right_0d", list(itertools.product([False, True], repeat=2)))
def test_binary_ops_between_tensors_promote_as_pytorch(left, right, left_0d, right_0d, op):
    ours_a, theirs_a = tensor_pair(left, left_0d, [1, 2, 3])
    ours_b, theirs_b = tensor_pair(right, right_0d, [2, 1, 3])
    try:
        expected = BINARY[op](theirs_a, theirs_b)
    except RuntimeError:  # PyTorch refuses subtraction with a bool tensor
        promoted = (theirs_a + theirs_b).dtype  # "-" would promote as "+" does
        if promoted == torch.bool:  # bool - bool: NumPy refuses too
            with pytest.raises(TypeError, match="subtract"):
                BINARY[op](ours_a, ours_b)
            return
        expected = (theirs_a.long() if left == "bool" else theirs_a) - (
            theirs_b.long() if right == "bool" else theirs_b
        )
        expected = expected.to(promoted)
    result = BINARY[op](ours_a, ours_b)
    assert str(result.dtype) == str(expected.dtype).removeprefix("torch."), (left, right, left_0d, right_0d, op)
    np.testing.assert_allclose(result.numpy().astype(float), expected.numpy().astype(float), rtol=1e-6)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zero_dim", [False, True])
@pytest.mark.parametrize("scalar", [True, 2, -3, 2.5, np.float64(1.5), np.int64(4), np.float32(0.5)], ids=repr)
@pytest.mark.parametrize("op", ["+", "*", "/", "-"])
@pytest.mark.parametrize("reflected", [False, True])
def test_python_and_numpy_scalars_promote_as_pytorch(dtype, zero_dim, scalar, op, reflected):
    ours, theirs = tensor_pair(dtype, zero_dim, [1, 2, 3])
    function = BINARY[op]
    try:
        expected = function(scalar, theirs) if reflected else function(theirs, scalar)
    except (RuntimeError, TypeError):  # PyTorch refuses subtraction with a bool
        plus = BINARY["+"]
        expected = plus(scalar, theirs) if reflected else plus(theirs, scalar)  # "-" would promote alike
        if expected.dtype == torch.bool:  # bool - True: NumPy refuses too
            with pytest.raises(TypeError, match="subtract"):
                function(scalar, ours) if reflected else function(ours, scalar)
            return
    result = function(scalar, ours) if reflected else function(ours, scalar)
    assert str(result.dtype) == str(expected.dtype).removeprefix("torch."), (dtype, zero_dim, scalar, op, reflected)


@pytest.mark.parametrize("dtype", ["bool", "int32", "int64"])
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "sqrt"])
@needs_torch
def test_float_functions_of_integer_and_bool_tensors_are_float32(dtype, name):
    values = np.array([1, 0, 1] if dtype == "bool" else [1, 2, 3]).astype(dtype)
    result = getattr(tl.Tensor(values), name)()
    expected = getattr(torch, name)(torch.tensor(values))
    assert result.dtype == tl.float32 and expected.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-6)


def test_bool_exp_is_float32_e_as_in_the_issue():
    values = tl.Tensor([True, False]).exp()
    assert values.dtype == tl.float32
    np.testing.assert_allclose(values.numpy(), [math.e, 1.0], rtol=1e-7)


@needs_torch
def test_where_promotes_its_values_as_pytorch():
    condition = np.array([True, False])
    for a, b in [("float32", "int64"), ("int64", "float64"), ("bool", "int32"), ("float32", "float64")]:
        ours = tl.where(tl.Tensor(condition), tl.Tensor(np.ones(2, a)), tl.Tensor(np.ones(2, b)))
        theirs = torch.where(
            torch.tensor(condition), torch.ones(2, dtype=getattr(torch, a)), torch.ones(2, dtype=getattr(torch, b))
        )
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")


@pytest.mark.parametrize("scalar", [np.float64(0.1), np.float32(0.1), np.int32(3), np.int64(3), np.bool_(True)])
@needs_torch
def test_a_numpy_scalar_keeps_its_dtype_as_a_tensor(scalar):
    assert tl.Tensor(scalar).dtype == scalar.dtype
    assert str(torch.tensor(scalar).dtype).removeprefix("torch.") == str(scalar.dtype)
    assert tl.Tensor(0.1).dtype == tl.float32 and tl.Tensor(3).dtype == tl.int64  # Python numbers: defaults


def test_gradients_flow_through_a_promotion_to_the_float_operand():
    weights = tl.Tensor([1.0, 2.0], requires_grad=True)
    (weights * tl.Tensor([3, 4])).sum().backward()
    assert weights.grad.dtype == tl.float32
    np.testing.assert_array_equal(weights.grad.numpy(), [3.0, 4.0])
