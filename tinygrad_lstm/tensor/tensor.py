"""The Tensor: an array on a device, plus the graph node that made it.

A Tensor holds its data as a backend array (NumPy on ``"cpu"``, CuPy on ``"cuda"``),
and, when it was computed from tensors that require grad, a reference to the node
(the ``Context`` of the op) that made it. ``backward()`` walks those nodes.

Every differentiable method here is a thin call into ``ops.py``, where each op's
forward and its vector-Jacobian product stand side by side.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import backend

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

_PYTHON_SCALARS = (bool, int, float)


def as_dtype(dtype: Any) -> np.dtype:
    """``tl.float32``, a NumPy dtype or a string like ``"float64"`` as a NumPy dtype."""
    try:
        return np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"not a dtype: {dtype!r} (use tl.float32, tl.float64, tl.int64)") from error


def _infer_host_array(data: Any, dtype: np.dtype | None) -> np.ndarray:
    """Python data as a host array with PyTorch's defaults (floats become float32)."""
    array = np.asarray(data)
    if dtype is not None:
        return array.astype(dtype)
    if array.dtype.kind == "f":
        return array.astype(float32)
    if array.dtype.kind in "iu":
        return array.astype(int64)
    if array.dtype.kind == "b":
        return array
    raise TypeError(
        f"cannot make a Tensor from {type(data).__name__} holding {array.dtype} values; "
        "pass numbers, nested lists of numbers, or a numeric array"
    )


def _check_can_require_grad(dtype: np.dtype) -> None:
    if dtype.kind not in "fc":
        raise TypeError(
            f"only floating-point tensors can require gradients, not {dtype} "
            "(integer tensors serve as indices and targets)"
        )


class Tensor:
    """An n-dimensional array that records the ops applied to it for ``backward()``.

    ``Tensor(data, requires_grad=False, dtype=None, device=None)``: ``data`` is a Python
    scalar, a nested list, a NumPy/CuPy array or a Tensor (copied). Python floats become
    float32, integers int64, booleans bool; an array keeps its dtype.
    """

    __slots__ = ("data", "device", "requires_grad", "grad", "_node", "_output_index", "__weakref__")

    # NumPy defers to our reflected operators (np_array * tensor -> Tensor.__rmul__).
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, device: str | None = None):
        dtype = None if dtype is None else as_dtype(dtype)
        if isinstance(data, Tensor):
            source_device, array = data.device, data.data
        else:
            source_device = backend.device_of_array(data)
            array = data
        target_device = device if device is not None else source_device or backend.default_device()
        target = backend.get_device(target_device)  # unknown or unavailable: raise now
        if source_device is None:
            array = target.from_host(_infer_host_array(array, dtype))
        else:
            array = backend.to_device(array, source_device, target_device)
            array = array.astype(dtype) if dtype is not None else array.copy()
        if requires_grad:
            _check_can_require_grad(array.dtype)
        self.data = array
        self.device = target_device
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._output_index = 0

    @classmethod
    def _make(cls, array: Any, device: str, requires_grad: bool = False, node: Any = None, index: int = 0) -> Tensor:
        """Wrap a backend array without copying or checking (the engine's fast path)."""
        tensor = object.__new__(cls)
        tensor.data = array
        tensor.device = device
        tensor.requires_grad = requires_grad
        tensor.grad = None
        tensor._node = node
        tensor._output_index = index
        return tensor

    # ----------------------------------------------------------------- attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user rather than by a recorded op."""
        return self._node is None

    @property
    def grad_fn(self):
        """The node (op context) that made this tensor, or None for a leaf."""
        return self._node

    @property
    def T(self) -> Tensor:
        """The transpose (axes reversed)."""
        if self.data.ndim == 2:  # the common case, without transpose()'s checks
            return _ops.Transpose.apply(self, axes=(1, 0))
        return self.transpose()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ to host
    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the data (works for any device)."""
        return np.array(backend.to_host(self.data, self.device), copy=True)

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None):
        if self.device != "cpu":
            raise TypeError(
                f"cannot convert a {self.device!r} tensor to NumPy implicitly; call .numpy() to copy it to the host"
            )
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor with shape {self.shape} is ambiguous; "
                "use (t).sum() or compare elements explicitly"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20, prefix="Tensor(")
        extras = [f"dtype={self.dtype}"]
        if self.device != "cpu":
            extras.append(f"device={self.device!r}")
        if self._node is not None:
            extras.append(f"grad_fn={self._node.name}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"Tensor({body}, {', '.join(extras)})"

    # -------------------------------------------------------- graph management
    def backward(self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into ``.grad`` of every leaf that requires grad.

        ``grad`` (a Tensor or array shaped like ``self``) may be omitted only when
        ``self`` has one element; it then defaults to 1. The graph's saved arrays are
        freed afterwards unless ``retain_graph=True``. ``create_graph=True`` records the
        backward pass itself, so each ``.grad`` can be differentiated again (see
        docs/higher_order.md); ``retain_graph`` then defaults to True.
        """
        from .autograd import backward

        backward([self], [grad], retain_graph=retain_graph, create_graph=create_graph)

    def detach(self) -> Tensor:
        """The same data, cut from the graph (shares memory, never requires grad)."""
        return Tensor._make(self.data, self.device)

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` for this non-leaf tensor after ``backward()``."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        node = self._node
        if node is not None:
            if node.retained is None:
                node.retained = {}
            import weakref

            node.retained[self._output_index] = weakref.ref(self)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` on a leaf in place."""
        if self._node is not None and not requires_grad:
            raise RuntimeError("cannot turn off requires_grad of a non-leaf tensor; use .detach()")
        if requires_grad:
            _check_can_require_grad(self.dtype)
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, device: str) -> Tensor:
        """This tensor on ``device`` (``"cpu"`` or ``"cuda"``); differentiable."""
        backend.get_device(device)
        if device == self.device:
            return self
        return _ops.ToDevice.apply(self, device=device)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def astype(self, dtype: Any) -> Tensor:
        """This tensor cast to ``dtype``; differentiable between floating dtypes."""
        dtype = as_dtype(dtype)
        if dtype == self.dtype:
            return self
        if self.requires_grad and dtype.kind not in "fc":
            return Tensor._make(self.data.astype(dtype), self.device)
        return _ops.Cast.apply(self, dtype=dtype)

    def float(self) -> Tensor:
        return self.astype(float32)

    def double(self) -> Tensor:
        return self.astype(float64)

    # ------------------------------------------------------- arithmetic operators
    def _operand(self, other: Any) -> Any:
        """Python scalars stay as they are (they never change dtype); the rest → Tensor."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.generic):
            other = other.item()  # np.float64 subclasses float: it must act like one, not promote
        if isinstance(other, _PYTHON_SCALARS):
            return other
        if isinstance(other, numbers.Number) and not isinstance(other, np.generic):
            return other
        return Tensor(other, device=backend.device_of_array(other) or self.device)

    def _binary(self, function, other: Any, reflected: bool = False) -> Tensor:
        if not isinstance(other, Tensor):
            other = self._operand(other)
        return _apply_binary(function, other, self) if reflected else _apply_binary(function, self, other)

    def __add__(self, other):
        return self._binary(_ops.Add, other)

    def __radd__(self, other):
        return self._binary(_ops.Add, other, reflected=True)

    def __sub__(self, other):
        return self._binary(_ops.Sub, other)

    def __rsub__(self, other):
        return self._binary(_ops.Sub, other, reflected=True)

    def __mul__(self, other):
        return self._binary(_ops.Mul, other)

    def __rmul__(self, other):
        return self._binary(_ops.Mul, other, reflected=True)

    def __truediv__(self, other):
        return self._binary(_ops.Div, other)

    def __rtruediv__(self, other):
        return self._binary(_ops.Div, other, reflected=True)

    def __pow__(self, other):
        return self._binary(_ops.Pow, other)

    def __rpow__(self, other):
        return self._binary(_ops.Pow, other, reflected=True)

    def __matmul__(self, other):
        return matmul(self, self._operand(other))

    def __rmatmul__(self, other):
        return matmul(self._operand(other), self)

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __pos__(self):
        return self

    # ---------------------------------------------- comparisons (no gradient)
    def _compare(self, other: Any, compare) -> Tensor:
        other = self._operand(other)
        if isinstance(other, Tensor):
            if other.device != self.device:
                raise backend.DeviceError(
                    f"comparison of tensors on different devices, {self.device!r} and {other.device!r}"
                )
            other = other.data
        return Tensor._make(compare(self.data, other), self.device)

    def __eq__(self, other):  # type: ignore[override]
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):  # type: ignore[override]
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    # -------------------------------------------------------------- elementwise
    def exp(self):
        return _ops.Exp.apply(self)

    def log(self):
        return _ops.Log.apply(self)

    def tanh(self):
        return _ops.Tanh.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(self)

    def relu(self):
        return _ops.Relu.apply(self)

    def sqrt(self):
        return _ops.Sqrt.apply(self)

    def abs(self):
        return _ops.Abs.apply(self)

    def maximum(self, other):
        return maximum(self, other)

    def clip(self, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clip needs at least one of lo and hi")
        return _ops.Clip.apply(self, lo=lo, hi=hi)

    # --------------------------------------------------------------- reductions
    def sum(self, axis=None, keepdims=False):
        return _ops.Sum.apply(self, axis=_normalize_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        axis = _normalize_axis(axis, self.ndim)
        count = _reduced_count(self.shape, axis)
        if count == 0:
            raise ValueError(f"mean over an empty axis of a tensor with shape {self.shape}")
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    def max(self, axis=None, keepdims=False):
        axis = _normalize_axis(axis, self.ndim)
        if _reduced_count(self.shape, axis) == 0:
            raise ValueError(f"max over an empty axis of a tensor with shape {self.shape}")
        return _ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def logsumexp(self, axis=None, keepdims=False):
        """log Σ exp(x), computed as m + log Σ exp(x - m) with m = max(x) held constant."""
        axis = _normalize_axis(axis, self.ndim)
        shift = self.detach().max(axis=axis, keepdims=True)
        total = (self - shift).exp().sum(axis=axis, keepdims=True).log() + shift
        if keepdims:
            return total
        return total.reshape(*_reduced_shape(self.shape, axis))

    # -------------------------------------------------------------------- shape
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        try:
            return _ops.Reshape.apply(self, shape=shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {self.shape} into shape {shape}") from None

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self):
        return self.reshape(-1)

    def transpose(self, *axes):
        axes = _shape_arg(axes)
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        permutation = tuple(a + self.ndim if a < 0 else a for a in axes)
        if sorted(permutation) != list(range(self.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation for a {self.ndim}-d tensor")
        return _ops.Transpose.apply(self, axes=permutation)

    def swapaxes(self, axis1: int, axis2: int):
        axes = list(range(self.ndim))
        axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
        return self.transpose(*axes)

    def expand(self, *shape):
        shape = _shape_arg(shape)
        offset = len(shape) - self.ndim
        if offset < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to fewer dims {shape}")
        full = tuple(self.shape[i - offset] if (size == -1 and i >= offset) else size for i, size in enumerate(shape))
        try:
            broadcastable = np.broadcast_shapes(self.shape, full) == full
        except ValueError:
            broadcastable = False
        if not broadcastable:
            raise ValueError(f"expand: shape {self.shape} cannot expand to {shape}")
        if full == self.shape:
            return self
        return _ops.Expand.apply(self, shape=full)

    def squeeze(self, axis=None):
        if axis is None:
            return self.reshape(*(s for s in self.shape if s != 1))
        axes = _normalize_axis(axis, self.ndim)
        for a in axes:
            if self.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {self.shape} has size {self.shape[a]}, not 1")
        return self.reshape(*(s for i, s in enumerate(self.shape) if i not in axes))

    def unsqueeze(self, axis: int):
        ndim = self.ndim + 1
        if not -ndim <= axis < ndim:
            raise ValueError(f"unsqueeze: axis {axis} out of range for a result with {ndim} dims")
        shape = list(self.shape)
        shape.insert(axis % ndim, 1)
        return self.reshape(*shape)

    def __getitem__(self, index):
        return _ops.GetItem.apply(self, index=_index_arg(index, self))

    def split(self, size_or_sizes, axis: int = 0):
        """Pieces along ``axis``: each of size ``size`` (an int) or of the listed sizes."""
        axis = _single_axis(axis, self.ndim)
        length = self.data.shape[axis]
        if type(size_or_sizes) is int or isinstance(size_or_sizes, numbers.Integral):
            size = int(size_or_sizes)
            if size <= 0:
                raise ValueError(f"split size must be positive, got {size}")
            sizes = [size] * (length // size) + ([length % size] if length % size else [])
        else:
            sizes = [int(s) for s in size_or_sizes]
            if sum(sizes) != length or any(s < 0 for s in sizes):
                raise ValueError(f"split sizes {sizes} do not add up to {length}, the size of axis {axis}")
        return _ops.Split.apply(self, sizes=tuple(sizes), axis=axis)

    def chunk(self, chunks: int, axis: int = 0):
        """``chunks`` pieces along ``axis`` of size ceil(n / chunks); the last may be smaller."""
        if chunks <= 0:
            raise ValueError(f"chunk needs a positive number of chunks, got {chunks}")
        axis = _single_axis(axis, self.ndim)
        size = max(1, -(-self.data.shape[axis] // chunks))
        return self.split(size, axis)

    def unbind(self, axis: int = 0):
        """The slices along ``axis`` as a tuple, each without that axis; VJP: one stack."""
        return _ops.Unbind.apply(self, axis=_single_axis(axis, self.ndim))


# ---------------------------------------------------------------- helpers


def _shape_arg(shape: tuple) -> tuple[int, ...]:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _single_axis(axis: Any, ndim: int) -> int:
    """One ``axis`` (negatives allowed) as a non-negative int."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, checked cheaply
        return axis % ndim
    return _normalize_axis(axis, ndim)[0]


def _normalize_axis(axis: Any, ndim: int) -> tuple[int, ...] | None:
    """``axis`` (int, tuple or None) as a sorted tuple of non-negative axes, or None."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dims")
        normalized.append(a % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(sorted(normalized))


def _reduced_shape(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    return tuple(s for i, s in enumerate(shape) if i not in axis)


def _reduced_count(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> int:
    count = 1
    for i, s in enumerate(shape):
        if axis is None or i in axis:
            count *= s
    return count


def _index_arg(index: Any, tensor: Tensor) -> Any:
    """Tensors and lists inside an index become device index arrays; check their dtype."""
    parts = index if isinstance(index, tuple) else (index,)
    converted = []
    for part in parts:
        if isinstance(part, Tensor):
            if part.device != tensor.device:
                raise backend.DeviceError(
                    f"index tensor is on {part.device!r} but the indexed tensor on {tensor.device!r}"
                )
            part = part.data
        elif isinstance(part, list):
            part = backend.get_device(tensor.device).from_host(np.asarray(part))
        elif isinstance(part, np.ndarray) and tensor.device != "cpu":
            part = backend.get_device(tensor.device).from_host(part)
        if hasattr(part, "dtype") and part.dtype.kind not in "iub":
            raise IndexError(f"tensors used as indices must be integer or bool, not {part.dtype}")
        converted.append(part)
    return tuple(converted) if isinstance(index, tuple) else converted[0]


# ------------------------------------------------- functions of several tensors


def _as_tensor(value: Any, like_device: str | None = None) -> Any:
    if isinstance(value, np.generic):
        value = value.item()  # a NumPy scalar acts as the Python scalar it holds
    if isinstance(value, Tensor) or isinstance(value, _PYTHON_SCALARS):
        return value
    return Tensor(value, device=backend.device_of_array(value) or like_device)


def _apply_binary(function, left: Any, right: Any) -> Tensor:
    """Apply an elementwise binary op; a broadcasting failure names both shapes."""
    try:
        return function.apply(left, right)
    except ValueError as error:
        left_shape = tuple(getattr(left, "shape", ()))
        right_shape = tuple(getattr(right, "shape", ()))
        raise ValueError(
            f"{function.__name__}: shapes {left_shape} and {right_shape} do not broadcast ({error})"
        ) from None


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy's rules: 1-D, 2-D and batched (broadcast) operands."""
    a = _as_tensor(a)
    b = _as_tensor(b, a.device)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dim, got shapes {a.shape} and {b.shape}")
    inner_a = a.shape[-1]
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if inner_a != inner_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not align: {inner_a} (last dim of the "
            f"left) != {inner_b} ({'only' if b.ndim == 1 else 'second-to-last'} dim of the right)"
        )
    try:
        return _ops.MatMul.apply(a, b)
    except ValueError:
        raise ValueError(f"matmul: batch dims of shapes {a.shape} and {b.shape} do not broadcast") from None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weightᵀ (+ bias) for x (..., in) and weight (out, in), as PyTorch's F.linear."""
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: x of shape {x.shape} and weight of shape {weight.shape} do not fit; "
            "weight must be (out_features, in_features) with in_features = x.shape[-1]"
        )
    if bias is not None and (not isinstance(bias, Tensor) or bias.dtype != weight.dtype or x.dtype != weight.dtype):
        return _ops.Linear.apply(x, weight, None) + bias  # mixed dtypes: promote as ``+`` does
    try:
        return _ops.Linear.apply(x, weight, bias)
    except ValueError:
        raise ValueError(
            f"linear: bias of shape {bias.shape} does not broadcast to the output shape "
            f"{(*x.shape[:-1], weight.shape[0])}"
        ) from None


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; where a == b the gradient is split evenly between them."""
    a = _as_tensor(a)
    device = a.device if isinstance(a, Tensor) else None
    b = _as_tensor(b, device)
    return _apply_binary(_ops.Maximum, a, b)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` holds, else ``b`` (broadcast); no gradient to condition."""
    a = _as_tensor(a)
    b = _as_tensor(b, a.device if isinstance(a, Tensor) else None)
    device = a.device if isinstance(a, Tensor) else b.device if isinstance(b, Tensor) else None
    if not isinstance(condition, Tensor):
        condition = Tensor(condition, device=backend.device_of_array(condition) or device)
    if device is not None and condition.device != device:
        raise backend.DeviceError(f"where: the condition is on {condition.device!r} but the values on {device!r}")
    if condition.dtype.kind != "b":
        raise TypeError(f"where: the condition must be boolean, got {condition.dtype}")
    return _ops.Where.apply(a, b, condition=condition.data)


def _check_same_kind(tensors: Any, name: str) -> list[Tensor]:
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name} needs at least one tensor")
    tensors = [_as_tensor(t) for t in tensors]
    if any(not isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} takes tensors or arrays, not Python scalars")
    return tensors


def cat(tensors: Any, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; VJP: split the gradient back into pieces."""
    tensors = _check_same_kind(tensors, "cat")
    first = tensors[0]
    axis = _normalize_axis(axis, first.ndim)[0]
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(s != f for i, (s, f) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise ValueError(f"cat along axis {axis}: shapes {first.shape} and {t.shape} differ off that axis")
    return _ops.Cat.apply(*tensors, axis=axis)


def stack(tensors: Any, axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis; VJP: unbind the gradient."""
    tensors = _check_same_kind(tensors, "stack")
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape != first.shape:
            raise ValueError(f"stack needs equal shapes, got {first.shape} and {t.shape}")
    ndim = first.ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} out of range for a result with {ndim} dims")
    return _ops.Stack.apply(*tensors, axis=axis % ndim)


from . import ops as _ops  # noqa: E402  (ops need the Tensor class defined above)
