"""The engine's contract from API.md: tensors, dtypes, factories, the backward pass, errors."""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading
import weakref

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import backend
from tinygrad_lstm.testing import gradcheck

# ------------------------------------------------------------- creation, dtypes


@pytest.mark.parametrize(
    ("data", "dtype"),
    [
        (1.5, np.float32),
        ([1.0, 2.0], np.float32),
        ([[1, 2.5], [3, 4]], np.float32),
        (np.array([1.0, 2.0]), np.float64),
        (np.array([1.0], dtype=np.float32), np.float32),
        (np.array([1, 2], dtype=np.int32), np.int32),
        (3, np.int64),
        ([1, 2, 3], np.int64),
        (True, np.bool_),
        ([True, False], np.bool_),
    ],
    ids=repr,
)
def test_dtype_inferred_from_data_as_pytorch_does(data, dtype) -> None:
    t = tl.Tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


@pytest.mark.parametrize("spelling", [tl.float64, np.float64, "float64", np.dtype("float64")], ids=repr)
def test_dtype_argument_accepts_ours_numpy_and_strings(spelling) -> None:
    assert tl.Tensor([1.0, 2.0], dtype=spelling).dtype == np.float64
    assert tl.Tensor([1, 2], dtype=spelling).dtype == np.float64
    assert tl.zeros(2, dtype=spelling).dtype == np.float64


def test_tensor_of_a_tensor_copies() -> None:
    source = tl.Tensor([1.0, 2.0])
    copy = tl.Tensor(source, dtype=tl.float64)
    assert copy.dtype == np.float64
    copy.data[0] = 5.0
    assert source.tolist() == [1.0, 2.0]


def test_python_and_numpy_scalars_keep_float32() -> None:
    t = tl.Tensor([1.0, 2.0])
    for result in (
        t * 2.0,
        2.0 * t,
        t + 1,
        t / 3,
        1 - t,
        t**2,
        2.0**t,
        t * np.float64(2.0),
        np.float64(2.0) * t,
        t * np.int64(3),
    ):
        assert result.dtype == np.float32
    assert tl.maximum(t, np.float64(1.5)).dtype == np.float32
    assert tl.where(t > 1, t, np.float64(0.0)).dtype == np.float32


def test_float32_with_float64_promotes_and_each_grad_keeps_its_dtype() -> None:
    single = tl.Tensor([1.0, 2.0], requires_grad=True)
    double = tl.Tensor([3.0, 4.0], dtype=tl.float64, requires_grad=True)
    total = single * double + single
    assert total.dtype == np.float64
    total.sum().backward()
    assert single.grad.dtype == np.float32 and double.grad.dtype == np.float64
    np.testing.assert_allclose(single.grad.numpy(), [4.0, 5.0])
    np.testing.assert_allclose(double.grad.numpy(), [1.0, 2.0])


def test_requires_grad_on_an_integer_tensor_raises() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        tl.Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        tl.arange(3, requires_grad=True)


# -------------------------------------------------------------- backend helpers


@pytest.mark.parametrize("shape", [(1, 3), (64, 5), (65, 7), (200, 33), (512, 128)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_transpose_is_the_transpose_in_a_c_contiguous_array(shape, dtype) -> None:
    matrix = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    transpose = backend.contiguous_transpose(np, matrix)
    assert transpose.flags.c_contiguous and transpose.dtype == dtype
    np.testing.assert_array_equal(transpose, matrix.T)  # every tile, the last partial one included
    if shape[0] > 1:  # (a single row's transpose is contiguous already: then it is that view)
        assert not np.shares_memory(transpose, matrix)


def test_contiguous_transpose_of_a_strided_view() -> None:
    matrix = np.arange(300.0 * 40).reshape(300, 40)[::2, 1::3]  # (150, 13), neither row- nor column-contiguous
    np.testing.assert_array_equal(backend.contiguous_transpose(np, matrix), matrix.T)


@pytest.mark.parametrize(
    ("shape", "count"),
    # rows of 1..2048 numbers; row counts below, at, and past two groups, with and without a remainder
    [((2048, 128), 1), ((64, 32, 128), 2), ((65, 31, 128), 2), ((3, 4000, 1), 2), ((4097, 3), 1), ((7, 3), 1),
     ((5, 2, 4096), 1), ((300, 2, 2, 5), 3), ((9000,), 1)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_leading_axes_is_the_sum_over_those_axes(shape, count, dtype) -> None:
    array = np.random.default_rng(1).random(shape).astype(dtype)  # positive: sums without cancellation
    total = backend.sum_leading_axes(array, count)
    exact = array.astype(np.float64).sum(axis=tuple(range(count)))
    assert total.shape == shape[count:] and total.dtype == dtype
    np.testing.assert_allclose(total, exact, rtol=(2e-6 if dtype == np.float32 else 1e-13))


def test_sum_leading_axes_of_views_and_of_nothing() -> None:
    array = np.arange(2.0 * 3000 * 4).reshape(2, 3000, 4)
    np.testing.assert_array_equal(backend.sum_leading_axes(array[:, ::2], 2), array[:, ::2].sum(axis=(0, 1)))
    np.testing.assert_array_equal(backend.sum_leading_axes(np.zeros((0, 5)), 1), np.zeros(5))
    np.testing.assert_array_equal(backend.sum_leading_axes(np.zeros((5, 0)), 1), np.zeros(0))


# ------------------------------------------------------------------ factories


@pytest.mark.parametrize(
    ("make", "shape", "dtype"),
    [
        (lambda **kw: tl.zeros(2, 3, **kw), (2, 3), np.float32),
        (lambda **kw: tl.zeros((2, 3), **kw), (2, 3), np.float32),
        (lambda **kw: tl.ones(4, **kw), (4,), np.float32),
        (lambda **kw: tl.full((2, 2), 1.5, **kw), (2, 2), np.float32),
        (lambda **kw: tl.randn(3, 2, **kw), (3, 2), np.float32),
        (lambda **kw: tl.rand(5, **kw), (5,), np.float32),
        (lambda **kw: tl.arange(4.0, **kw), (4,), np.float32),
    ],
    ids=["zeros(*shape)", "zeros(shape)", "ones", "full", "randn", "rand", "arange(float)"],
)
def test_factories_take_dtype_device_and_requires_grad(make, shape, dtype, strict_device) -> None:
    default = make()
    assert default.shape == shape and default.dtype == dtype and default.device == "cpu"
    assert not default.requires_grad
    made = make(dtype=tl.float64, device=strict_device, requires_grad=True)
    assert made.shape == shape and made.dtype == np.float64 and made.device == strict_device
    assert made.requires_grad and made.is_leaf


def test_factory_values() -> None:
    np.testing.assert_array_equal(tl.full(3, 7).numpy(), [7, 7, 7])
    assert tl.full(3, 7).dtype == np.int64 and tl.full(2, True).dtype == np.bool_
    np.testing.assert_array_equal(tl.arange(4).numpy(), [0, 1, 2, 3])
    assert tl.arange(4).dtype == np.int64
    np.testing.assert_array_equal(tl.arange(1, 7, 2).numpy(), [1, 3, 5])
    uniform = tl.rand(1000, dtype=tl.float64).numpy()
    assert uniform.min() >= 0.0 and uniform.max() < 1.0


def test_manual_seed_makes_random_factories_reproducible() -> None:
    tl.manual_seed(1234)
    first = (tl.randn(3, 4).numpy(), tl.rand(5).numpy())
    tl.manual_seed(1234)
    second = (tl.randn(3, 4).numpy(), tl.rand(5).numpy())
    tl.manual_seed(4321)
    third = tl.randn(3, 4).numpy()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], third)


# ------------------------------------------------------------- to the host


def test_conversions_to_host() -> None:
    t = tl.Tensor([[1.0, 2.0], [3.0, 4.0]], dtype=tl.float64)
    host = t.numpy()
    assert isinstance(host, np.ndarray) and host.dtype == np.float64
    host[0, 0] = 100.0  # a copy
    assert t.numpy()[0, 0] == 1.0
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t.sum().item() == 10.0 and isinstance(t.sum().item(), float)
    assert tl.Tensor([7]).item() == 7 and isinstance(tl.Tensor([7]).item(), int)
    as_array = np.asarray(t)
    assert as_array.dtype == np.float64
    np.testing.assert_array_equal(as_array, [[1.0, 2.0], [3.0, 4.0]])
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_repr_shows_values_dtype_and_graph_state() -> None:
    leaf = tl.Tensor([1.0, 2.0], requires_grad=True)
    assert repr(leaf) == "Tensor([1., 2.], dtype=float32, requires_grad=True)"
    assert repr(leaf * 2) == "Tensor([2., 4.], dtype=float32, grad_fn=Mul)"
    assert repr(tl.Tensor(3)) == "Tensor(3, dtype=int64)"


def test_detach_shares_data_and_cuts_the_graph() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    cut = y.detach()
    assert not cut.requires_grad and cut.grad_fn is None and cut.data is y.data
    (cut * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 6.0])  # nothing flowed through y


def test_to_and_astype() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    assert x.to("cpu") is x
    doubled = x.astype(tl.float64)
    assert doubled.dtype == np.float64 and doubled.requires_grad
    (doubled * doubled).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    integers = x.astype(tl.int64)
    assert integers.dtype == np.int64 and not integers.requires_grad
    assert x.astype("float32") is x


# --------------------------------------------------------------- backward


def test_a_100000_op_chain_backpropagates_without_recursion() -> None:
    limit = sys.getrecursionlimit()
    x = tl.Tensor([1.0, -2.0], dtype=tl.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    y.sum().backward()
    assert sys.getrecursionlimit() == limit
    np.testing.assert_allclose(x.grad.numpy(), [1.00001**100_000] * 2, rtol=1e-9)
    # An unused deep graph is freed without recursing either.
    z = x
    for _ in range(100_000):
        z = z + 1.0
    del z
    gc.collect()
    assert sys.getrecursionlimit() == limit


def test_gradients_accumulate_across_uses_and_backward_calls() -> None:
    x = tl.Tensor([1.0, 2.0, 3.0], dtype=tl.float64, requires_grad=True)
    (x * x + x).sum().backward()  # x used three times
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 5.0, 7.0])
    (x * 10).sum().backward()  # a second graph adds to .grad
    np.testing.assert_array_equal(x.grad.numpy(), [13.0, 15.0, 17.0])


def test_an_op_reading_the_second_output_of_a_node_sends_its_gradient_there() -> None:
    x = tl.Tensor([1.0, 2.0, 3.0, 4.0], dtype=tl.float64, requires_grad=True)
    first, second = x.split(2)
    (first * second).sum().backward()  # d/dx = (second, first)
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0, 1.0, 2.0])
    x.grad = None
    _, second = x.split(2)
    (second * 10.0).sum().backward()  # a Tensor and a number: only the second output gets one
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 10.0, 10.0])


def test_a_gradient_shared_by_two_inputs_is_never_added_into_in_place() -> None:
    # Add hands one array to both inputs. u gets it first (from s + u) and then a second
    # one (from u + v): adding that into the shared array in place would change v's too.
    p = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    u, v = p * 2.0, p * 3.0
    s = u + v
    (s + u).sum().backward()  # = Σ 7p
    np.testing.assert_array_equal(p.grad.numpy(), [7.0, 7.0])


def test_float32_gradients_stay_float32_through_one_and_several_output_ops() -> None:
    x = tl.Tensor([0.5, -1.0, 2.0, 0.25], requires_grad=True)
    first, second = x.split(2)
    middle = (x * 2.0).tanh()
    middle.retain_grad()  # what reached a float32 node, as the node kept it
    loss = (middle.sum() + (first * second).exp().sum()).astype(tl.float64)
    loss.backward()
    assert middle.grad.dtype == tl.float32 and x.grad.dtype == tl.float32


def test_ops_of_many_shapes_keep_each_output_shape_and_dtype() -> None:
    # Nodes of one output share their (shape, dtype) records, of which the engine keeps
    # a bounded number: more shapes than that must each still get the right gradient.
    from tinygrad_lstm.tensor import function

    for n in range(1, 4200):
        x = tl.Tensor(np.arange(n, dtype=np.float64), requires_grad=True)
        (x * x).sum().backward()
        assert x.grad.shape == (n,) and x.grad.dtype == tl.float64
        np.testing.assert_array_equal(x.grad.numpy(), 2 * np.arange(n))
    assert len(function._one_output_metas) <= 4096


def test_a_recorded_node_starts_as_a_context_made_by_its_init() -> None:
    # Function.apply makes its Context without calling __init__ (the hottest path).
    from tinygrad_lstm.tensor.function import Context

    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    node = (x * 2.0).grad_fn
    made = Context(node.function, node.xp, node.device)
    for name in Context.__slots__:
        if name in ("__dict__", "saved_tensors", "clock") or not hasattr(made, name):
            continue
        assert getattr(node, name) == getattr(made, name), name
    assert node.clock == made.clock and node.saved_tensors == (x.data, 2.0)


def test_leaf_grads_are_independent_writable_arrays() -> None:
    a = tl.Tensor([1.0, 2.0], requires_grad=True)
    b = tl.Tensor([3.0, 4.0], requires_grad=True)
    seed = np.array([1.0, 1.0], dtype=np.float32)
    (a + b).backward(seed)  # Add hands the same array to both inputs
    a.grad.data *= 2  # what an optimizer or clip_grad_norm_ may do
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(seed, [1.0, 1.0])
    w = tl.Tensor([[1.0, 2.0]], requires_grad=True)
    w.sum().backward()  # Sum's VJP is a read-only broadcast view
    w.grad.data += 1
    np.testing.assert_array_equal(w.grad.numpy(), [[2.0, 2.0]])


def test_saved_arrays_are_released_after_backward() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    hidden = x * 2.0
    y = hidden * hidden  # Mul saves hidden's array: only the graph keeps it alive
    saved = weakref.ref(hidden.data)
    node = y.grad_fn
    del hidden
    assert saved() is not None and len(node.saved_tensors) == 2
    y.sum().backward()
    gc.collect()
    assert node.saved_tensors == () and saved() is None


def test_a_second_backward_needs_retain_graph() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_backward_twice_and_doubles_grads() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    loss = (x * x).tanh().sum()
    loss.backward(retain_graph=True)
    once = x.grad.numpy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * once, rtol=1e-15)


def test_retain_graph_is_per_thread() -> None:
    """Two backward passes in two threads, overlapping: A (retain_graph=True) starts, B
    (False) starts, A ends, B ends. Neither's setting outlives its pass, in any thread."""
    from tinygrad_lstm.tensor import autograd

    class Pause(tl.Function):
        """Identity whose VJP waits in the middle of the backward pass until told to go on."""

        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, g):
            ctx.inside.set()
            assert ctx.go_on.wait(10)
            return g

    def paused_backward(retain: bool, seen: dict) -> tuple[threading.Thread, threading.Event, threading.Event]:
        inside, go_on = threading.Event(), threading.Event()
        x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
        y = Pause.apply(x)
        y.grad_fn.inside, y.grad_fn.go_on = inside, go_on
        loss = (y * y).sum()

        def run():
            loss.backward(retain_graph=retain)
            seen[retain] = autograd.retaining_graph()

        thread = threading.Thread(target=run)
        thread.start()
        assert inside.wait(10)
        return thread, go_on, inside

    seen: dict = {}
    thread_a, go_a, _ = paused_backward(True, seen)
    thread_b, go_b, _ = paused_backward(False, seen)
    go_a.set()
    thread_a.join()
    go_b.set()
    thread_b.join()
    assert seen == {True: False, False: False}  # each pass's setting ended with it
    assert autograd.retaining_graph() is False


def test_only_leaves_keep_grad_unless_retain_grad() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    hidden = x * 3
    kept = (x * 2).retain_grad()
    (hidden * kept).sum().backward()
    assert x.grad is not None and hidden.grad is None
    np.testing.assert_array_equal(kept.grad.numpy(), hidden.numpy())
    with pytest.raises(RuntimeError, match="does not require grad"):
        tl.Tensor([1.0]).retain_grad()


def test_no_grad_records_nothing() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert tl.is_grad_enabled()
    assert y.grad_fn is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    with pytest.raises(KeyError), tl.no_grad():
        raise KeyError  # the mode is restored on the way out of an exception
    assert tl.is_grad_enabled()


def test_functional_grad_leaves_dot_grad_alone() -> None:
    x = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    w = tl.Tensor([3.0, -1.0], dtype=tl.float64, requires_grad=True)
    unused = tl.Tensor([5.0], dtype=tl.float64, requires_grad=True)
    hidden = x * w
    gx, gw, g_hidden, g_unused = tl.grad((hidden * x).sum(), [x, w, hidden, unused])
    np.testing.assert_array_equal(gx.numpy(), 2 * x.numpy() * w.numpy())
    np.testing.assert_array_equal(gw.numpy(), x.numpy() ** 2)
    np.testing.assert_array_equal(g_hidden.numpy(), x.numpy())
    np.testing.assert_array_equal(g_unused.numpy(), [0.0])
    assert x.grad is None and w.grad is None
    (single,) = tl.grad((x * x).sum(), x)
    np.testing.assert_array_equal(single.numpy(), [2.0, 4.0])


def test_backward_with_an_explicit_gradient() -> None:
    x = tl.Tensor([1.0, 2.0, 3.0], dtype=tl.float64, requires_grad=True)
    (x * x).backward(tl.Tensor([1.0, 0.0, -1.0], dtype=tl.float64))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, -6.0])
    (x * 1.0).backward(np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 1.0, -5.0])


# ------------------------------------------------------- user-defined ops


class Square(tl.Function):  # exactly API.md's example
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class ScaledProduct(tl.Function):
    """y = scale · a · b with ``scale`` a plain number (no gradient)."""

    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return scale * a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return ctx.scale * grad * b, ctx.scale * grad * a, None


class StopSecond(tl.Function):
    """y = a + b, but b is treated as a constant (its gradient is None)."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def test_user_function_square_from_the_api() -> None:
    t = tl.Tensor([1.0, -2.0, 3.0], dtype=tl.float64, requires_grad=True)
    y = Square.apply(t)
    assert y.grad_fn is not None and y.grad_fn.name == "Square"
    np.testing.assert_array_equal(y.numpy(), [1.0, 4.0, 9.0])
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [2.0, -4.0, 6.0])
    assert gradcheck(Square.apply, (tl.Tensor([0.5, -1.5], dtype=tl.float64, requires_grad=True),))


def test_user_function_with_several_inputs_and_a_plain_number() -> None:
    a = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    b = tl.Tensor([[3.0], [-1.0]], dtype=tl.float64, requires_grad=True)  # broadcasts
    y = ScaledProduct.apply(a, b, 0.5)
    np.testing.assert_array_equal(y.numpy(), 0.5 * a.numpy() * b.numpy())
    assert gradcheck(lambda a, b: ScaledProduct.apply(a, b, 0.5), (a, b))
    y.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0])  # reduced back to a's shape
    np.testing.assert_array_equal(b.grad.numpy(), [[1.5], [1.5]])


def test_user_function_returning_none_gives_no_gradient() -> None:
    a = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    b = tl.Tensor([3.0, 4.0], dtype=tl.float64, requires_grad=True)
    (StopSecond.apply(a, b) * b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(b.grad.numpy(), [4.0, 6.0])  # only through the product


def test_a_node_no_gradient_reaches_runs_no_vjp_and_is_freed() -> None:
    a = tl.Tensor([1.0, 2.0], dtype=tl.float64, requires_grad=True)
    b = tl.Tensor([3.0, 4.0], dtype=tl.float64, requires_grad=True)
    first, second = (b * 2.0).tanh(), (b * 3.0).split(1)[1]  # one- and several-output nodes
    (StopSecond.apply(a, first) + StopSecond.apply(a, second)).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    assert b.grad is None  # nothing reached the Tanh, the Split or the Muls
    assert first.grad_fn.freed and second.grad_fn.freed  # and each was released all the same


def test_user_function_returning_the_wrong_number_of_gradients_says_so() -> None:
    class TwoGrads(tl.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    x = tl.Tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="returned 2 gradients for 1 inputs"):
        TwoGrads.apply(x).sum().backward()


# ------------------------------------------------------- errors that help


def test_matmul_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        tl.randn(2, 3) @ tl.randn(4, 5)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        tl.matmul(tl.randn(3), tl.randn(2))


def test_broadcasting_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\) do not broadcast"):
        tl.randn(2, 3) + tl.randn(4)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2,\)"):
        tl.maximum(tl.randn(2, 3), tl.randn(2))


def test_backward_on_a_non_scalar_says_what_to_pass() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2,\); pass grad="):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\) but the tensor has shape \(2,\)"):
        (x * 2).backward(np.ones(3, dtype=np.float32))


def test_a_float_index_tensor_raises_index_error() -> None:
    t = tl.Tensor([1.0, 2.0, 3.0])
    with pytest.raises(IndexError, match="integer"):
        t[tl.Tensor([0.0, 1.0])]


def test_bad_shape_arguments_are_refused() -> None:
    t = tl.randn(2, 3, 4)
    with pytest.raises(ValueError, match="not a permutation"):
        t.transpose(0, 1, 5)
    with pytest.raises(ValueError, match="not a permutation"):
        t.transpose(0, -4, 2)
    with pytest.raises(ValueError, match=r"cannot expand to \(1, 4\)"):
        tl.randn(3, 1).expand(1, 4)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\) into shape \(5, -1\)"):
        t.reshape(5, -1)
    with pytest.raises(ValueError, match="do not add up to 3"):
        t.split([1, 1], axis=1)
    with pytest.raises(ValueError, match="size 3, not 1"):
        t.squeeze(1)


def test_an_unknown_device_raises_device_error() -> None:
    with pytest.raises(tl.DeviceError, match="unknown device 'tpu'"):
        tl.Tensor([1.0], device="tpu")
    with pytest.raises(tl.DeviceError, match="unknown device"):
        tl.set_default_device("tpu")


def test_cuda_without_cupy_names_the_cuda_extra() -> None:
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: this test is about machines without it")
    for ask in (
        lambda: tl.Tensor([1.0], device="cuda"),
        lambda: tl.zeros(2, device="cuda"),
        lambda: tl.randn(2, device="cuda"),
        lambda: tl.Tensor([1.0]).to("cuda"),
        lambda: tl.set_default_device("cuda"),
    ):
        with pytest.raises(tl.DeviceError, match=r"tinygrad_lstm\[cuda\]"):
            ask()


def test_mixing_devices_in_one_op_names_both(strict_device) -> None:
    on_cpu = tl.Tensor([1.0, 2.0])
    elsewhere = tl.Tensor([1.0, 2.0], device=strict_device)
    for mix in (
        lambda: on_cpu + elsewhere,
        lambda: elsewhere * on_cpu,
        lambda: tl.cat([on_cpu, elsewhere]),
        lambda: tl.cat([on_cpu, on_cpu, elsewhere]),  # three inputs: Function.apply's general loop
        lambda: on_cpu @ elsewhere,
        lambda: on_cpu < elsewhere,
    ):
        with pytest.raises(tl.DeviceError, match=rf"'cpu'.*'{strict_device}'|'{strict_device}'.*'cpu'"):
            mix()


def test_default_device_from_the_setter_and_the_environment(monkeypatch, strict_device) -> None:
    tl.set_default_device(strict_device)
    assert tl.zeros(2).device == strict_device and tl.Tensor([1.0]).device == strict_device
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("TINYGRAD_LSTM_DEVICE", strict_device)
    assert tl.ones(1).device == strict_device
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("TINYGRAD_LSTM_DEVICE", "cpu")
    assert tl.ones(1).device == "cpu"


def test_pow_with_exponent_zero_has_zero_gradient_even_at_zero():
    x = tl.Tensor([0.0, 2.0, -1.5], requires_grad=True, dtype=tl.float64)
    (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])
