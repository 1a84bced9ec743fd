"""``Function.fresh_gradients``: ops whose VJP returns new arrays, which the engine may own.

An op that sets it promises that ``backward`` returns arrays it has just made, one per
input (only its first two inputs may share one, as Mul does for ``x * x``). The engine
then adds later gradients into them in place and hands one to a leaf as its ``.grad``
without a copy. A broken promise would corrupt gradients silently, so the promise is
checked here for every op that makes it, on every op check of the battery.
"""

import tracemalloc

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import Function, ops
from tinygrad_lstm.testing import battery

FRESH_OPS = sorted(
    name
    for name, value in vars(ops).items()
    if isinstance(value, type) and issubclass(value, Function) and value.fresh_gradients
)


def graph_nodes(outputs):
    """Every node of the graph behind ``outputs``."""
    stack = [t._node for t in outputs if isinstance(t, tl.Tensor) and t._node is not None]
    seen = {}
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(edge[0] for edge in node.edges if isinstance(edge, tuple))
    return list(seen.values())


def built_graph(check):
    fn, inputs, _ = check.build(battery.check_rng(check.name), None)
    result = fn(*inputs)
    return result if isinstance(result, tuple) else (result,)


def test_fresh_ops_are_the_ones_expected():
    assert FRESH_OPS == sorted(
        ["Abs", "Div", "Exp", "Log", "MatMul", "Max", "Maximum", "Mul", "Neg", "Pow"]
        + ["Relu", "Sigmoid", "Split", "Sqrt", "Tanh", "Unbind", "Where"]
    )


def test_every_fresh_op_appears_in_some_op_check():
    seen = {node.name for check in battery._op_checks() for node in graph_nodes(built_graph(check))}
    assert set(FRESH_OPS) <= seen


@pytest.mark.parametrize("check", battery._op_checks(), ids=lambda check: check.name)
def test_a_fresh_vjp_returns_arrays_that_nothing_else_holds(check):
    rng = np.random.default_rng(0)
    for node in graph_nodes(built_graph(check)):
        if not node.function.fresh_gradients:
            continue
        grads = [rng.standard_normal(shape).astype(dtype) for shape, dtype in node.output_meta]
        held = [*grads, *(a for a in node.saved_tensors if isinstance(a, np.ndarray))]
        result = node.function.backward(node, *grads)
        result = result if isinstance(result, tuple) else (result,)
        returned = [(i, a) for i, a in enumerate(result) if isinstance(a, np.ndarray)]
        for i, array in returned:
            for other in held:
                assert not np.shares_memory(array, other), f"{node.name}: gradient {i} shares memory with its inputs"
        for k, (i, array) in enumerate(returned):
            for j, other in returned[k + 1 :]:
                if array is other:
                    assert (i, j) == (0, 1), f"{node.name}: gradients {i} and {j} are one array"
                else:
                    assert not np.shares_memory(array, other), f"{node.name}: gradients {i} and {j} overlap"


def test_x_times_x_gives_two_g_x_in_one_array():
    x = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -4.0, 6.0])


def test_x_times_its_detached_self_gives_g_x():
    x = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x.detach()).sum().backward()  # one array on both sides, but only one side is x
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, -2.0, 3.0])


def test_two_tensors_on_one_array_get_gradients_of_their_own():
    data = np.array([1.0, -2.0, 3.0])
    a = tl.Tensor(data, requires_grad=True)
    b = a.detach()
    b.requires_grad = True  # a second leaf on a's very array
    assert a.data is b.data  # so Mul sees one array twice and returns one gradient twice
    (a * b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), data)
    np.testing.assert_array_equal(b.grad.numpy(), data)
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[0] = 100.0  # users change .grad in place (optimizers, clipping)
    assert b.grad.numpy()[0] == 1.0


def test_a_leaf_grad_from_a_fresh_op_is_not_shared_with_another_leaf():
    a = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = tl.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    (a * b + a * a).sum().backward()  # a: b + 2a, accumulated; b: a
    np.testing.assert_array_equal(a.grad.numpy(), [5.0, 8.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0])
    assert not np.shares_memory(a.grad.data, b.grad.data)


def test_a_gradient_reaching_a_node_twice_is_summed_in_place_without_touching_the_first():
    x = tl.Tensor(np.array([0.5, -1.5]), requires_grad=True)
    y = x.tanh()
    first = y * 3.0  # Mul's gradient for y (fresh) arrives first and is added into next
    z = (first + y.exp()).sum()
    z.backward()
    t = np.tanh([0.5, -1.5])
    np.testing.assert_allclose(x.grad.numpy(), (3.0 + np.exp(t)) * (1 - t * t), rtol=1e-14)


def test_a_squared_error_backward_holds_one_temporary_the_size_of_its_input():
    rows = 500_000  # 4 MB of float64
    diff = tl.Tensor(np.random.default_rng(0).standard_normal(rows), requires_grad=True)
    loss = (diff * diff).mean()
    tracemalloc.start()
    try:
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = diff.data.nbytes
    # the gradient itself (.grad keeps it), made once and doubled in place: not g·x twice plus their sum
    assert peak < 1.5 * size, f"backward of (d * d).mean() peaked at {peak / size:.2f}x the size of d"
