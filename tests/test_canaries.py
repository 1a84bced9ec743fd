"""Canaries: the checks have teeth.

Every canary plants a realistic bug (a wrong VJP, a scatter-add turned into an
assignment, a forward off by a hair, a float32 op that quietly computes in float64) and
asserts that the very check which passes in ``test_ops.py`` / ``test_random_graphs.py``
now goes red. A check that cannot fail here would not catch the bug in real code.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from test_ops import SPECS_BY_NAME, op_property
from test_random_graphs import Program, programs

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import autograd, ops
from tinygrad_lstm.testing import GradcheckError, gradcheck

# Stop at the first failure: no shrinking, one bug reported.
RED = dict(max_examples=200, phases=[Phase.generate], report_multiple_bugs=False)


def goes_red(spec_name: str, expected: type[BaseException] | tuple = GradcheckError) -> BaseException:
    """Run the op table's property test for ``spec_name``; it must fail with ``expected``."""
    with pytest.raises(expected) as failure:
        op_property(SPECS_BY_NAME[spec_name], **RED)()
    return failure.value


# ------------------------------------------------- gradcheck on a user op


class SquareWithWrongBackward(tl.Function):
    """y = x², with the VJP 3·x·g instead of 2·x·g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * grad


class Square(tl.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_gradcheck_names_input_output_element_and_both_values() -> None:
    x = tl.Tensor([0.5, -1.0, 2.0], dtype=tl.float64, requires_grad=True)
    assert gradcheck(Square.apply, (x,))  # the same check passes on the right VJP
    with pytest.raises(GradcheckError) as failure:
        gradcheck(SquareWithWrongBackward.apply, (x,))
    message = str(failure.value)
    # worst element: x = 2, where reverse mode says 3·2 = 6 and the truth is 2·2 = 4
    assert re.search(
        r"d\(output 0\)\[2\] / d\(input 0\)\[2\]: reverse mode gives 6, finite differences give 4\b", message
    ), message
    (mismatch,) = failure.value.report.mismatches
    assert (mismatch.input_index, mismatch.output_index) == (0, 0)
    assert (mismatch.input_element, mismatch.output_element) == ((2,), (2,))
    assert mismatch.analytical == pytest.approx(6.0) and mismatch.numerical == pytest.approx(4.0, rel=1e-8)
    assert gradcheck(SquareWithWrongBackward.apply, (x,), raise_exception=False) is False


def test_gradcheck_points_at_the_right_pair_among_several() -> None:
    a = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    b = tl.Tensor([[0.5], [-3.0]], dtype=tl.float64, requires_grad=True)

    def two_outputs(a, b):
        return Square.apply(a), SquareWithWrongBackward.apply(b) + a.sum()

    with pytest.raises(GradcheckError) as failure:
        gradcheck(two_outputs, (a, b), names=["a", "b"])
    (mismatch,) = failure.value.report.mismatches
    assert (mismatch.input_name, mismatch.output_index) == ("b", 1)
    assert mismatch.input_element == (1, 0) and mismatch.output_element == (1, 0)
    assert "d(output 1)[1, 0] / d(b)[1, 0]: reverse mode gives -9, finite differences give -6" in str(failure.value)


def test_gradcheck_warns_about_float32_inputs() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)  # float32
    with pytest.warns(UserWarning, match=r"input 0 is float32, not float64"):
        gradcheck(lambda x: x * 2.0, (x,), raise_exception=False)


# ------------------------------------------- sabotaged built-in backward passes


def test_mul_with_swapped_vjp_goes_red(monkeypatch) -> None:
    def swapped(ctx, g):
        a, b = ctx.saved_tensors
        return g * a, g * b  # should be (g·b, g·a)

    monkeypatch.setattr(ops.Mul, "backward", staticmethod(swapped))
    goes_red("mul")


def test_tanh_with_wrong_derivative_goes_red(monkeypatch) -> None:
    def wrong(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y)  # should be 1 - y²

    monkeypatch.setattr(ops.Tanh, "backward", staticmethod(wrong))
    goes_red("tanh")


def test_sum_with_mean_gradient_goes_red(monkeypatch) -> None:
    right = ops.Sum.backward

    def like_mean(ctx, g):
        summed = math.prod(ctx.input_shape) // max(1, g.size)
        return right(ctx, g) / max(1, summed)  # the VJP of mean, not of sum

    monkeypatch.setattr(ops.Sum, "backward", staticmethod(like_mean))
    goes_red("sum")


def test_split_concatenating_gradients_in_the_wrong_order_goes_red(monkeypatch) -> None:
    def reversed_pieces(ctx, *grads):
        return ctx.xp.concatenate(grads[::-1], axis=ctx.axis)

    monkeypatch.setattr(ops.Split, "backward", staticmethod(reversed_pieces))
    goes_red("split")


def test_getitem_assigning_instead_of_scatter_adding_goes_red(monkeypatch) -> None:
    def assigning(ctx, g):
        grad = ctx.xp.zeros(ctx.input_shape, dtype=g.dtype)
        grad[ctx.index] = g  # repeated indices: the last write wins instead of accumulating
        return grad

    monkeypatch.setattr(ops.GetItem, "backward", staticmethod(assigning))
    goes_red("getitem_advanced")
    op_property(SPECS_BY_NAME["getitem_basic"], max_examples=10)()  # no repeats there: still green


def test_matmul_with_a_transposed_gradient_goes_red(monkeypatch) -> None:
    right = ops.MatMul.backward

    def transposed(ctx, g):
        grad_a, grad_b = right(ctx, g)
        if grad_b is not None and grad_b.ndim >= 2:
            grad_b = ctx.xp.swapaxes(grad_b, -1, -2)  # gᵀa instead of aᵀg
        return grad_a, grad_b

    monkeypatch.setattr(ops.MatMul, "backward", staticmethod(transposed))
    # square matrices: wrong values; others: the engine refuses a wrongly shaped gradient
    failure = goes_red("matmul", (GradcheckError, RuntimeError))
    assert isinstance(failure, GradcheckError) or "MatMul.backward returned a gradient of shape" in str(failure)


def test_broadcast_gradients_taken_instead_of_summed_goes_red(monkeypatch) -> None:
    def first_entry(grad, shape):
        extra = grad.ndim - len(shape)
        index = (0,) * extra + tuple(slice(0, 1) if size == 1 else slice(None) for size in shape)
        return grad[index].reshape(shape)  # should sum over the broadcast axes

    monkeypatch.setattr(autograd, "sum_to", first_entry)
    goes_red("add")


def test_random_graphs_go_red_with_a_broken_mul(monkeypatch) -> None:
    def swapped(ctx, g):
        a, b = ctx.saved_tensors
        return g * a, g * b

    monkeypatch.setattr(ops.Mul, "backward", staticmethod(swapped))

    @settings(**RED)
    @given(program=programs())
    def check(program: Program) -> None:
        leaves = tuple(tl.Tensor(leaf, requires_grad=True) for leaf in program.leaves)
        gradcheck(lambda *xs: program.run(xs, "ours"), leaves)

    with pytest.raises(GradcheckError):
        check()


# ---------------------------------------------------- sabotaged forward passes


def test_a_forward_off_by_a_millionth_fails_numpy_parity(monkeypatch) -> None:
    def slightly_off(ctx, x):
        y = ctx.xp.exp(x) * (1 + 1e-6)
        ctx.save_for_backward(y)
        return y

    monkeypatch.setattr(ops.Exp, "forward", staticmethod(slightly_off))
    failure = goes_red("exp", AssertionError)
    assert not isinstance(failure, GradcheckError) and "exp: " in str(failure)


def test_a_float32_op_computing_in_float64_fails_the_dtype_check(monkeypatch) -> None:
    right = ops.Sigmoid.forward

    def upcasting(ctx, x):
        return right(ctx, x.astype(np.float64))

    monkeypatch.setattr(ops.Sigmoid, "forward", staticmethod(upcasting))
    failure = goes_red("sigmoid", AssertionError)
    assert "in float32: dtype float64, NumPy gives float32" in str(failure)
