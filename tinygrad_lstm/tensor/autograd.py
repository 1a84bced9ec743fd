"""The backward pass: reverse-mode accumulation over the recorded graph, iteratively.

1. Walk the graph from the roots with an explicit stack (never recursion) and count,
   for every node, how many edges lead into it from other reachable nodes.
2. Process nodes in Kahn order: a node runs its VJP only when every consumer of its
   outputs has sent its gradient, so each gradient is complete when used.
3. After a node's VJP, each input gradient is summed back to the input's shape (the one
   place broadcasting is undone), cast to its dtype, and accumulated: into the parent
   node's buffer, or into a leaf's ``.grad``.
4. Unless ``retain_graph=True``, each node releases its saved arrays right after use.

With ``create_graph=True`` the same loop runs with gradients that are Tensors: each
node's VJP is run on Tensors (``graph_backward.recorded_backward``) with recording on,
and the sums, reductions and casts of steps 3 are Tensor ops too, so the gradients
that come out have a graph of their own and can be differentiated again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from . import backend
from .function import Context, set_grad_enabled
from .graph_backward import recorded_backward
from .tensor import Tensor, in_place_writes


def sum_to(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast gradient back to ``shape`` (the inverse of broadcasting)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, size in enumerate(shape) if size == 1 and grad.shape[i + extra] != 1
    )
    if axes and axes == tuple(range(len(axes))) and type(grad) is not Tensor:  # leading axes only (a bias)
        return backend.sum_leading_axes(grad, len(axes)).reshape(shape)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


def _initial_grad(tensor: Tensor, grad: Any, create_graph: bool = False) -> Any:
    """The gradient a root starts with, checked against the root's shape and device.

    With ``create_graph`` it is a Tensor: a Tensor ``grad`` is kept as it is (its own
    graph included, so results can be differentiated with respect to it).
    """
    if create_graph:
        if isinstance(grad, Tensor) and grad.requires_grad:
            _initial_grad(tensor, grad.detach())  # the checks only
            return grad if grad.dtype == tensor.dtype else grad.astype(tensor.dtype)
        return Tensor._make(_initial_grad(tensor, grad), tensor.device)
    xp = backend.get_array_module(tensor.device)
    if grad is None:
        if tensor.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a tensor with one element, this one has "
                f"shape {tensor.shape}; pass grad= shaped like it (e.g. tl.ones({tensor.shape})) "
                "or reduce it first (e.g. .sum())"
            )
        return xp.ones(tensor.data.shape, dtype=tensor.dtype)
    if isinstance(grad, Tensor):
        if grad.device != tensor.device:
            raise backend.DeviceError(
                f"backward: the gradient is on {grad.device!r} but the tensor on {tensor.device!r}"
            )
        grad = grad.data
    elif backend.device_of_array(grad) is None:
        raise TypeError(
            f"backward: the gradient must be a Tensor or an array shaped like the tensor {tensor.shape}, "
            f"got {type(grad).__name__}; wrap it, e.g. tl.Tensor({grad!r}) (as PyTorch, a list or a "
            "number is not taken)"
        )
    elif backend.device_of_array(grad) != tensor.device:
        raise backend.DeviceError(
            f"backward: the gradient array is on {backend.device_of_array(grad)!r} but the tensor on {tensor.device!r}"
        )
    if tuple(grad.shape) != tensor.shape:
        raise ValueError(
            f"backward: the gradient has shape {tuple(grad.shape)} but the tensor has shape {tensor.shape}"
        )
    return grad.astype(tensor.dtype, copy=False)


def _count_consumers(roots: list[Context]) -> dict[Context, int]:
    """For each reachable node, the number of graph edges that feed gradient into it."""
    consumers: dict[Context, int] = {node: 0 for node in roots}
    stack = list(consumers)
    while stack:
        node = stack.pop()
        if node.freed:
            _refuse_freed(node)
        for edge in node.edges:
            if type(edge) is not tuple:  # None or a leaf
                continue
            parent = edge[0]
            if parent in consumers:
                consumers[parent] += 1
            else:
                consumers[parent] = 1
                stack.append(parent)
    return consumers


def _refuse_freed(node: Context) -> None:
    """The error for a second backward through a node whose saved arrays the first one released."""
    raise RuntimeError(
        f"backward through the graph a second time: the {node.name} node has already "
        "freed its saved arrays; pass retain_graph=True to the first backward() "
        "if you need to backpropagate through it again"
    )


def _accumulate_into_node(node: Context, index: int, grad: Any, fresh: bool = False) -> None:
    """Add ``grad`` to the gradient of ``node``'s output ``index``; ``fresh``: nothing else holds it."""
    if node.grads is None:  # the first gradient to reach this node
        count = len(node.output_meta)
        node.grads, node.owned = [None] * count, [False] * count
    current = node.grads[index]
    if current is None:
        node.grads[index] = grad
        node.owned[index] = fresh
    elif node.owned[index]:
        current += grad  # a buffer this pass allocated: add in place
        node.grads[index] = current  # (a NumPy scalar, from 0-d math, is rebound instead)
    else:
        node.grads[index] = current = current + grad
        node.owned[index] = type(current) is not Tensor  # never add in place into a recorded Tensor


class _BackwardPass(threading.local):
    retaining = False  # whether this thread's running backward pass keeps the graph (retain_graph=True)


_backward_pass = _BackwardPass()


def retaining_graph() -> bool:
    """True while a backward pass with ``retain_graph=True`` runs in this thread (ops that free as they go ask)."""
    return _backward_pass.retaining


def run_backward(
    roots: Sequence[Tensor],
    grads: Sequence[Any],
    retain_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
    create_graph: bool = False,
) -> list[Any] | None:
    """Backpropagate ``grads`` from ``roots``.

    Without ``capture``, gradients accumulate into ``.grad`` of the leaves (and of
    non-leaves that called ``retain_grad()``). With ``capture``, nothing is written to
    ``.grad``: the gradients reaching those tensors are returned instead (None for a
    tensor that the roots do not depend on). With ``create_graph`` every gradient is a
    Tensor recorded in a graph of its own.
    """
    leaf_grads: dict[int, list] = {}  # id(leaf) -> [leaf, grad, owned]
    captured_leaves: dict[int, int] = {}
    captured_outputs: dict[tuple[int, int], int] = {}
    results: list[Any] = []
    if capture is not None:
        results = [None] * len(capture)
        for position, tensor in enumerate(capture):
            if tensor._node is None:
                captured_leaves[id(tensor)] = position
            else:
                captured_outputs[(id(tensor._node), tensor._output_index)] = position

    def deliver_to_leaf(leaf: Tensor, grad: Any, fresh: bool = False) -> None:
        entry = leaf_grads.get(id(leaf))
        if entry is None:
            leaf_grads[id(leaf)] = [leaf, grad, fresh]
        elif entry[2]:
            entry[1] += grad
        else:
            entry[1] = entry[1] + grad
            entry[2] = type(entry[1]) is not Tensor  # never add in place into a recorded Tensor

    root_nodes = []
    for root, grad in zip(roots, grads):
        if not root.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of its graph "
                "has requires_grad=True (or it was computed under no_grad())"
            )
        grad = _initial_grad(root, grad, create_graph)
        if root._node is None:
            deliver_to_leaf(root, grad)
        else:
            if root._node.freed:
                _refuse_freed(root._node)
            _accumulate_into_node(root._node, root._output_index, grad)
            root_nodes.append(root._node)

    with set_grad_enabled(create_graph):
        if root_nodes:
            previous, _backward_pass.retaining = _backward_pass.retaining, retain_graph
            try:
                _propagate(root_nodes, retain_graph, deliver_to_leaf, captured_outputs, results, create_graph)
            finally:
                _backward_pass.retaining = previous

    for leaf, grad, owned in leaf_grads.values():
        if capture is not None:
            position = captured_leaves.get(id(leaf))
            if position is not None:
                results[position] = grad
        else:
            _add_to_dot_grad(leaf, grad, owned)
    return results if capture is not None else None


def _add_to_dot_grad(tensor: Tensor, grad: Any, owned: bool = False) -> None:
    if isinstance(grad, Tensor):  # create_graph: .grad keeps the gradient's graph
        # ``+ 0.0`` is a recorded copy: .grad must not share an array with another .grad
        # or with the recorded graph, since users (and clip_grad_norm_) update it in place.
        tensor.grad = grad + 0.0 if tensor.grad is None else tensor.grad + grad
        return
    device = backend.get_device(tensor.device)
    if not isinstance(grad, device.array_type):
        grad, owned = device.xp.asarray(grad), True  # 0-d math in NumPy yields scalars
    if tensor.grad is None:
        # .grad gets an array of its own: a VJP may hand one array (even a read-only
        # broadcast view, or the caller's seed) to several inputs, and users update .grad in place.
        tensor.grad = Tensor._make(grad if owned else grad.copy(), tensor.device)
    else:
        tensor.grad = Tensor._make(tensor.grad.data + grad, tensor.device)


def _propagate(root_nodes, retain_graph, deliver_to_leaf, captured_outputs, results, create_graph=False) -> None:
    consumers = _count_consumers(list(dict.fromkeys(root_nodes)))
    ready = [node for node, count in consumers.items() if count == 0]
    while ready:
        node = ready.pop()
        grads = node.grads
        if captured_outputs and grads is not None:
            for index, grad in enumerate(grads):
                position = captured_outputs.get((id(node), index))
                if position is not None:
                    results[position] = grad
        if node.retained is not None and grads is not None and not captured_outputs:
            _fill_retained(node)
        edges = node.edges
        function = node.function
        if grads is not None:  # (made as the first gradient arrives: then some output has one)
            if node.clock != in_place_writes.clock and node.saved_tensors:
                _check_saved_arrays(node)
            if create_graph:
                input_grads = recorded_backward(node, _materialize(node) if node.multi_output else grads)
            else:
                input_grads = function.backward(node, *(_materialize(node) if node.multi_output else grads))
            if type(input_grads) is not tuple:
                input_grads = (input_grads,)
            if len(input_grads) != len(edges):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(input_grads)} gradients for "
                    f"{len(edges)} inputs; return one per forward input (None for no gradient)"
                )
        else:
            input_grads = (None,) * len(edges)
        fresh = not create_graph and function.fresh_gradients
        if fresh and len(input_grads) > 1 and input_grads[0] is input_grads[1]:
            fresh = _same_destination(edges[0], edges[1])  # x * x: then the second adds in place
        for edge, grad in zip(edges, input_grads):
            if edge is None:
                continue
            if type(edge) is tuple:  # a non-leaf: its creator node and output index
                parent, index = edge
                if grad is not None:
                    shape, dtype = parent.output_meta[index]
                    if grad.shape != shape or grad.dtype is not dtype:  # (an equal dtype: fit does nothing)
                        grad = _fit_gradient(grad, shape, dtype, node)
                    if parent.grads is None and not parent.multi_output:  # its first and only gradient
                        parent.grads, parent.owned = [grad], [fresh]  # (_accumulate_into_node, written out)
                    else:
                        _accumulate_into_node(parent, index, grad, fresh)
                remaining = consumers[parent] - 1
                consumers[parent] = remaining
                if remaining == 0:
                    ready.append(parent)
            elif grad is not None:  # a leaf tensor
                data = edge.data
                if grad.shape != data.shape or grad.dtype is not data.dtype:
                    grad = _fit_gradient(grad, data.shape, data.dtype, node)
                deliver_to_leaf(edge, grad, fresh)
        if retain_graph:
            node.grads = node.owned = None
        else:
            node.release()


def _same_destination(edge: Any, other: Any) -> bool:
    """Whether two edges lead to the same place: one leaf, or one output of one node."""
    if type(edge) is tuple and type(other) is tuple:
        return edge[0] is other[0] and edge[1] == other[1]
    return edge is other and edge is not None


def _check_saved_arrays(node: Context) -> None:
    """Refuse a VJP whose saved array was changed in place after the forward pass saved it."""
    for array in node.saved_tensors:
        if in_place_writes.changed_since(array, node.clock):
            raise RuntimeError(
                f"an array the {node.name} op saved for backward (shape {tuple(array.shape)}) was "
                "changed in place afterwards (+=, -=, *=, /=, zero_, copy_ or an optimizer step), so "
                "its gradient would use the changed values. Change it after backward(), or compute "
                "out of place (x = x + y), or .clone() it before the op"
            )


def _fit_gradient(grad: Any, shape: tuple[int, ...], dtype: Any, node: Context) -> Any:
    return fit_gradient(grad, shape, dtype, node.name)


def fit_gradient(grad: Any, shape: tuple[int, ...], dtype: Any, name: str) -> Any:
    """Undo broadcasting and cast: the gradient of ``name``'s input must look exactly like it.

    The one place broadcasting is undone, after every VJP (eager, recorded or replayed).
    """
    if grad.shape != shape:
        try:
            grad = sum_to(grad, shape)
        except ValueError:
            raise RuntimeError(
                f"{name}.backward returned a gradient of shape {grad.shape} for an input of shape {shape}"
            ) from None
    if grad.dtype != dtype:
        grad = grad.astype(dtype)
    return grad


def _materialize(node: Context) -> list[Any]:
    """A multi-output op's output gradients for its VJP: the missing ones become zeros."""
    return [
        node.xp.zeros(shape, dtype=dtype) if grad is None else grad
        for grad, (shape, dtype) in zip(node.grads, node.output_meta)
    ]


def _fill_retained(node: Context) -> None:
    for index, reference in node.retained.items():
        tensor = reference()
        grad = node.grads[index]
        if tensor is not None and grad is not None:
            _add_to_dot_grad(tensor, grad)


def backward(
    tensors: Sequence[Tensor],
    grads: Sequence[Any] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> None:
    """Accumulate gradients of ``tensors`` (seeded with ``grads``) into the leaves' ``.grad``.

    ``create_graph=True`` records the backward pass, so each ``.grad`` is a Tensor with
    a graph that can be differentiated again; ``retain_graph`` defaults to it.
    """
    tensors = list(tensors)
    grads = [None] * len(tensors) if grads is None else list(grads)
    retain_graph = create_graph if retain_graph is None else retain_graph
    run_backward(tensors, grads, retain_graph=retain_graph, create_graph=create_graph)


def grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> tuple:
    """d(outputs)/d(inputs) · grad_outputs, returned as Tensors without touching ``.grad``.

    Like ``torch.autograd.grad``: ``outputs`` and ``inputs`` are Tensors or sequences of
    them. An input the outputs do not depend on gets a zero gradient. With
    ``create_graph=True`` the gradients are recorded (they have a graph and can be
    differentiated again, also with respect to Tensor ``grad_outputs`` that require
    grad); ``retain_graph`` defaults to ``create_graph``.
    """
    retain_graph = create_graph if retain_graph is None else retain_graph
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    for tensor in inputs:
        if not tensor.requires_grad:
            raise ValueError("grad(): every input must require grad")
    arrays = run_backward(
        outputs, list(grad_outputs), retain_graph=retain_graph, capture=inputs, create_graph=create_graph
    )
    result = []
    for tensor, array in zip(inputs, arrays):
        if isinstance(array, Tensor):  # create_graph: already a Tensor with its graph
            result.append(array)
            continue
        xp = backend.get_array_module(tensor.device)
        array = xp.zeros(tensor.data.shape, dtype=tensor.dtype) if array is None else xp.asarray(array)
        result.append(Tensor._make(array, tensor.device))
    return tuple(result)
