"""The Tensor: an array on a device, plus the graph node that made it.

A Tensor holds its data as a backend array (NumPy on ``"cpu"``, CuPy on ``"cuda"``),
and, when it was computed from tensors that require grad, a reference to the node
(the ``Context`` of the op) that made it. ``backward()`` walks those nodes.

Every differentiable method here is a thin call into ``ops.py``, where each op's
forward and its vector-Jacobian product stand side by side.
"""

from __future__ import annotations

import numbers
import operator
import weakref
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
    if isinstance(data, np.generic) and array.dtype.kind in "biufc":
        return array  # a NumPy scalar keeps its dtype (np.float64(0.1) stays float64), as an array does
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

    # ``_requires_grad`` is read and written directly by the engine's hot path (Function.apply,
    # _wrap, _make); users go through the ``requires_grad`` property, which checks.
    # ``_version`` counts the in-place changes of this tensor, as PyTorch's does.
    __slots__ = ("data", "device", "_requires_grad", "grad", "_node", "_output_index", "_version", "__weakref__")

    # NumPy defers to our reflected operators (np_array * tensor -> Tensor.__rmul__).
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, device: str | None = None):
        dtype = None if dtype is None else as_dtype(dtype)
        if isinstance(data, Tensor):
            if _function.tracing_threads and _function.is_traced(data):
                _function.check_not_tracing("Tensor(t), a copy of a traced value,")
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
        self._requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._output_index = 0
        self._version = 0

    @classmethod
    def _make(cls, array: Any, device: str, requires_grad: bool = False, node: Any = None, index: int = 0) -> Tensor:
        """Wrap a backend array without copying or checking (the engine's fast path)."""
        tensor = object.__new__(cls)
        tensor.data = array
        tensor.device = device
        tensor._requires_grad = requires_grad
        tensor.grad = None
        tensor._node = node
        tensor._output_index = index
        tensor._version = 0
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
    def size(self) -> ElementCount:
        """The number of elements (NumPy's ``t.size``); ``t.size()`` is PyTorch's shape."""
        return ElementCount(self.data.size, self.data.shape)

    def dim(self) -> int:
        """The number of dimensions, ``ndim`` (PyTorch's spelling)."""
        return self.data.ndim

    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor (set it on a floating-point leaf only)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, requires_grad: bool) -> None:
        self.requires_grad_(requires_grad)

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
        if _function.tracing_threads:
            _function.check_not_tracing(".numpy()")
        return np.array(backend.to_host(self.data, self.device), copy=True)

    def item(self) -> Any:
        if _function.tracing_threads:
            _function.check_not_tracing(".item()")
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        if _function.tracing_threads:
            _function.check_not_tracing(".tolist()")
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None):
        if _function.tracing_threads:
            _function.check_not_tracing("numpy.asarray(t)")
        if self.device != "cpu":
            raise TypeError(
                f"cannot convert a {self.device!r} tensor to NumPy implicitly; call .numpy() to copy it to the host"
            )
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self) -> bool:
        if _function.tracing_threads:
            _function.check_not_tracing("bool(t) (an if or while on a tensor)")
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor with shape {self.shape} is ambiguous; "
                "use (t).sum() or compare elements explicitly"
            )
        return bool(self.item())

    def __float__(self) -> float:
        if _function.tracing_threads:
            _function.check_not_tracing("float(t)")
        return float(self.item())

    def __int__(self) -> int:
        if _function.tracing_threads:
            _function.check_not_tracing("int(t)")
        return int(self.item())

    def __repr__(self) -> str:
        if _function.active_tracer() is not None:  # printing inside a traced function: no values to show
            return f"Tensor(<traced>, shape={self.shape}, dtype={self.dtype})"
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
        if _function.active_tracer() is not None:  # while tracing, a recorded op: its value changes per step
            with _function.no_grad():
                return _ops.Detach.apply(self)
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
        """Set ``requires_grad`` on a leaf in place (as PyTorch: only floating-point
        tensors can require grad, and a non-leaf's flag cannot be turned off)."""
        if self._node is not None and not requires_grad:
            raise RuntimeError(
                "cannot turn off requires_grad of a non-leaf tensor (one computed by a recorded op); "
                "use .detach() for a copy outside the graph"
            )
        if requires_grad:
            _check_can_require_grad(self.dtype)
        self._requires_grad = bool(requires_grad)
        return self

    def to(self, *device_or_dtype: Any, device: str | None = None, dtype: Any = None) -> Tensor:
        """This tensor on a device (``"cpu"``, ``"cuda"``) and/or as a dtype; differentiable.

        ``t.to("cuda")``, ``t.to(tl.float64)``, ``t.to("cuda", tl.float64)`` and the keywords
        ``device=``/``dtype=`` all work, as in PyTorch.
        """
        device, dtype = device_and_dtype("Tensor.to", device_or_dtype, device, dtype)
        result = self
        if device is not None and device != result.device:
            result = _ops.ToDevice.apply(result, device=device)
        if dtype is not None:
            result = result.astype(dtype)
        return result

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
            if _function.active_tracer() is not None:  # while tracing, a recorded op without gradient
                with _function.no_grad():
                    return _ops.Cast.apply(self, dtype=dtype)
            return Tensor._make(self.data.astype(dtype), self.device)
        return _ops.Cast.apply(self, dtype=dtype)

    def clone(self) -> Tensor:
        """A copy with its own array; differentiable (VJP: g), as PyTorch's ``clone``."""
        return _ops.Cast.apply(self, dtype=self.dtype)  # astype copies: a Cast to its own dtype

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
        dtype = self.data.dtype
        if isinstance(other, Tensor):
            promote = other.data.dtype is not dtype or dtype.kind != "f"
        else:
            other = self._operand(other)
            promote = dtype.kind != "f" or (isinstance(other, Tensor) and other.data.dtype is not dtype)
        left, right = (other, self) if reflected else (self, other)
        if promote:  # mixed or non-float dtypes: PyTorch's rules (one float dtype needs nothing)
            left, right = _promoted(function, left, right)
        try:  # (_apply_binary, inlined: every arithmetic operator comes this way)
            return function.apply(left, right)
        except ValueError as error:
            raise _broadcast_error(function, left, right, error) from None

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

    # ------------------------------------------------------------------ in place
    # ``x += y`` changes the tensor ``x`` itself (a Parameter stays the same Parameter).
    # Under no_grad, or when nothing involved requires grad, the new values are written
    # into x's own array. Otherwise the change is recorded as ``x = x + y`` would be: x
    # takes over the result's node. A leaf that requires grad cannot change in place while
    # gradients are recorded (its gradient would be lost), as in PyTorch. Every change
    # bumps ``x._version`` (PyTorch's count), and a write into an array is stamped in
    # ``in_place_writes``, so a backward that saved the old values refuses to run.

    def __iadd__(self, other):
        return self._in_place(_ops.Add, other, "+=")

    def __isub__(self, other):
        return self._in_place(_ops.Sub, other, "-=")

    def __imul__(self, other):
        return self._in_place(_ops.Mul, other, "*=")

    def __itruediv__(self, other):
        return self._in_place(_ops.Div, other, "/=")

    def zero_(self) -> Tensor:
        """Set every element to 0, in place (the rules of ``+=``); returns self."""
        return self.copy_(0)

    def copy_(self, source: Any) -> Tensor:
        """Copy ``source`` (broadcast to this shape, cast to this dtype) into self, in place.

        Recorded in grad mode as ``where(False, self, source)``: the gradient goes to
        ``source``, the old values get none. Returns self.
        """
        if isinstance(source, Tensor) and source.device != self.device:
            source = source.to(self.device)
        operand = self._operand(source)
        if isinstance(operand, Tensor):
            try:
                np.broadcast_shapes(operand.shape, self.shape)
            except ValueError:
                raise ValueError(
                    f"copy_: a source of shape {operand.shape} does not broadcast to {self.shape}"
                ) from None
        self._check_may_change("copy_")
        keep_nothing = backend.get_array_module(self.device).zeros(self.shape, dtype=bool)
        result = _ops.Where.apply(self, operand, Tensor._make(keep_nothing, self.device))
        if result.dtype != self.dtype:  # copy_ casts whatever it gets, as PyTorch's does
            result = _ops.Cast.apply(result, dtype=self.dtype)
        return self._take_value(result, "copy_")

    def _in_place(self, function, other: Any, spelling: str) -> Tensor:
        operand = self._operand(other)
        self._check_may_change(spelling)
        return self._take_value(_apply_binary(function, self, operand), spelling)

    def _check_may_change(self, spelling: str) -> None:
        tracing = _function.active_tracer() is not None  # values on a tape have no nodes: the tracer judges (rebind)
        if self.requires_grad and self._node is None and _function.is_grad_enabled() and not tracing:
            raise RuntimeError(
                f"in-place {spelling} on a leaf tensor that requires grad (a Parameter, say) while "
                "gradients are recorded: its gradient would be lost. Update parameters inside "
                "`with tl.no_grad():` (as an optimizer does), or write x = x + y for a new tensor"
            )

    def _take_value(self, result: Tensor, spelling: str) -> Tensor:
        """Make self hold ``result``: as its node when recorded, else in its own array."""
        if result.shape != self.shape:
            raise ValueError(
                f"in-place {spelling}: the result has shape {result.shape}, the tensor {self.shape}; "
                "an in-place op cannot change a tensor's shape (use x = x + y)"
            )
        if result.dtype != self.dtype:
            if not np.can_cast(result.dtype, self.dtype, casting="same_kind"):
                raise TypeError(
                    f"in-place {spelling}: the result is {result.dtype}, which cannot be stored in this "
                    f"{self.dtype} tensor (use x = x + y, or cast first with .astype)"
                )
            result = _ops.Cast.apply(result, dtype=self.dtype)
        tracer = _function.active_tracer()
        if tracer is not None:  # tracing: self now stands for the result's value on the tape
            tracer.rebind(self, result, spelling)
            self.data, self._node, self._output_index = result.data, result._node, result._output_index
            self._requires_grad = result.requires_grad
        elif result.requires_grad:  # recorded: self becomes the result, node and all
            self.data, self._node, self._output_index = result.data, result._node, result._output_index
            self._requires_grad = True
        else:
            try:
                self.data[...] = result.data
            except ValueError as error:  # a read-only array: a broadcast view (expand)
                raise ValueError(
                    f"in-place {spelling} on a tensor whose array cannot be written ({error}); "
                    "an expanded tensor shares one element among many: .clone() it first"
                ) from None
            in_place_writes.note(self.data)
        self._version += 1
        return self

    # ---------------------------------------------- comparisons (no gradient)
    def _compare(self, other: Any, compare) -> Tensor:
        other = self._operand(other)
        if isinstance(other, Tensor):
            if other.device != self.device:
                raise backend.DeviceError(
                    f"comparison of tensors on different devices, {self.device!r} and {other.device!r}"
                )
        if _function.active_tracer() is not None:  # while tracing, a recorded op without gradient
            with _function.no_grad():
                return _ops.Compare.apply(self, other, compare=compare)
        if isinstance(other, Tensor):
            other = other.data
        return Tensor._make(compare(self.data, other), self.device)

    def __eq__(self, other):  # type: ignore[override]
        return self._compare(other, operator.eq)

    def __ne__(self, other):  # type: ignore[override]
        return self._compare(other, operator.ne)

    def __lt__(self, other):
        return self._compare(other, operator.lt)

    def __le__(self, other):
        return self._compare(other, operator.le)

    def __gt__(self, other):
        return self._compare(other, operator.gt)

    def __ge__(self, other):
        return self._compare(other, operator.ge)

    # -------------------------------------------------------------- elementwise
    def exp(self):
        return _ops.Exp.apply(self if self.data.dtype.kind in "fc" else _floating(self))

    def log(self):
        return _ops.Log.apply(self if self.data.dtype.kind in "fc" else _floating(self))

    def tanh(self):
        return _ops.Tanh.apply(self if self.data.dtype.kind in "fc" else _floating(self))

    def sigmoid(self):
        return _ops.Sigmoid.apply(self if self.data.dtype.kind in "fc" else _floating(self))

    def relu(self):
        return _ops.Relu.apply(self)

    def sqrt(self):
        return _ops.Sqrt.apply(self if self.data.dtype.kind in "fc" else _floating(self))

    def abs(self):
        return _ops.Abs.apply(self)

    def maximum(self, other):
        return maximum(self, other)

    def clip(self, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clip needs at least one of lo and hi")
        return _ops.Clip.apply(self, lo=lo, hi=hi)

    # --------------------------------------------------------------- reductions
    # Each reduction takes NumPy's ``axis=``/``keepdims=`` and PyTorch's ``dim=``/``keepdim=``.
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_spelling("sum", axis, keepdims, dim, keepdim)
        return _ops.Sum.apply(self, axis=_normalize_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_spelling("mean", axis, keepdims, dim, keepdim)
        axis = _normalize_axis(axis, self.ndim)
        count = _reduced_count(self.shape, axis)
        if count == 0:
            raise ValueError(f"mean over an empty axis of a tensor with shape {self.shape}")
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The largest values along ``axis``. With PyTorch's ``dim=``, PyTorch's result:
        ``(values, indices)`` (a named tuple), so ``values, indices = t.max(dim=1)`` works."""
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_spelling("max", axis, keepdims, dim, keepdim)
            if dim is not None:
                return MaxResult(self.max(axis, keepdims), self.argmax(axis, keepdims))
        axis = _normalize_axis(axis, self.ndim)
        if _reduced_count(self.shape, axis) == 0:
            raise ValueError(f"max over an empty axis of a tensor with shape {self.shape}")
        return _ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices (int64, no gradient) of the largest values along ``axis`` (None: flattened)."""
        return self._arg_reduce("argmax", axis, keepdims, dim, keepdim)

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices (int64, no gradient) of the smallest values along ``axis`` (None: flattened)."""
        return self._arg_reduce("argmin", axis, keepdims, dim, keepdim)

    def _arg_reduce(self, name, axis, keepdims, dim, keepdim):
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_spelling(name, axis, keepdims, dim, keepdim)
        if self.size == 0:
            raise ValueError(f"{name} of an empty tensor (shape {self.shape})")
        if axis is None:
            indices = getattr(self.data.reshape(-1), name)()
            indices = indices.reshape((1,) * self.ndim) if keepdims else indices
        else:
            indices = getattr(self.data, name)(axis=_single_axis(axis, self.ndim), keepdims=bool(keepdims))
        xp = backend.get_array_module(self.device)
        return Tensor._make(xp.asarray(indices, dtype=int64), self.device)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """log Σ exp(x), computed as m + log Σ exp(x - m) with m = max(x) held constant.

        The shift keeps exp from overflowing. Where the max is ±inf it is 0 instead, so
        [-inf, -inf] gives -inf and [inf, 1] gives inf (not nan), and an empty axis gives
        log 0 = -inf, as in PyTorch.
        """
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_spelling("logsumexp", axis, keepdims, dim, keepdim)
        axis = _normalize_axis(axis, self.ndim)
        x = _floating(self)
        shift = _max_shift(x, axis)
        with np.errstate(divide="ignore"):  # log 0 = -inf is the answer for an all -inf slice
            total = (x - shift).exp().sum(axis=axis, keepdims=True).log() + shift
        if keepdims:
            return total
        return total.reshape(*_reduced_shape(self.shape, axis))

    def softmax(self, axis=-1, *, dim=None):
        """exp(x - m) / Σ exp(x - m) along ``axis`` (PyTorch: ``dim``), m = max(x) held constant.

        Shifting by the max (not subtracting logsumexp) keeps every exponent ≤ 0 and
        rounds nothing away: rows of [1e6, 1e6, -1e6] in float32 are [0.5, 0.5, 0].
        An empty axis gives an empty result.
        """
        if dim is not None:
            axis, _ = _torch_spelling("softmax", axis, False, dim, None, default_axis=-1)
        axis = _normalize_axis(axis, self.ndim)
        x = _floating(self)
        exponentials = (x - _max_shift(x, axis)).exp()
        return exponentials / exponentials.sum(axis=axis, keepdims=True)

    def log_softmax(self, axis=-1, *, dim=None):
        """(x - m) - log Σ exp(x - m) along ``axis`` (PyTorch: ``dim``), m = max(x) held constant."""
        if dim is not None:
            axis, _ = _torch_spelling("log_softmax", axis, False, dim, None, default_axis=-1)
        axis = _normalize_axis(axis, self.ndim)
        x = _floating(self)
        shifted = x - _max_shift(x, axis)
        with np.errstate(divide="ignore"):
            return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()

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

    def permute(self, *dims):
        """The axes reordered: ``permute(2, 0, 1)``; PyTorch's name for ``transpose(*axes)``."""
        if not dims:
            raise TypeError("permute needs the new order of all axes, e.g. permute(1, 0)")
        return self.transpose(*dims)

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

    def squeeze(self, axis=None, *, dim=None):
        if dim is not None:
            axis, _ = _torch_spelling("squeeze", axis, False, dim, None)
        if axis is None:
            return self.reshape(*(s for s in self.shape if s != 1))
        axes = _normalize_axis(axis, self.ndim)
        for a in axes:
            if self.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {self.shape} has size {self.shape[a]}, not 1")
        return self.reshape(*(s for i, s in enumerate(self.shape) if i not in axes))

    def unsqueeze(self, axis: int | None = None, *, dim: int | None = None):
        if dim is not None:
            axis, _ = _torch_spelling("unsqueeze", axis, False, dim, None)
        if axis is None:
            raise TypeError("unsqueeze needs the position of the new axis")
        ndim = self.ndim + 1
        if not -ndim <= axis < ndim:
            raise ValueError(f"unsqueeze: axis {axis} out of range for a result with {ndim} dims")
        shape = list(self.shape)
        shape.insert(axis % ndim, 1)
        return self.reshape(*shape)

    def __getitem__(self, index):
        return _ops.GetItem.apply(self, index=_index_arg(index, self))

    def split(self, size_or_sizes, axis: int = 0, *, dim: int | None = None):
        """Pieces along ``axis``: each of size ``size`` (an int) or of the listed sizes."""
        if dim is not None:
            axis, _ = _torch_spelling("split", axis, False, dim, None, default_axis=0)
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

    def chunk(self, chunks: int, axis: int = 0, *, dim: int | None = None):
        """``chunks`` pieces along ``axis`` of size ceil(n / chunks); the last may be smaller."""
        if dim is not None:
            axis, _ = _torch_spelling("chunk", axis, False, dim, None, default_axis=0)
        if chunks <= 0:
            raise ValueError(f"chunk needs a positive number of chunks, got {chunks}")
        axis = _single_axis(axis, self.ndim)
        length = self.data.shape[axis]
        if length == 0:  # as PyTorch: an empty axis gives ``chunks`` empty pieces
            return self.split([0] * chunks, axis)
        return self.split(-(-length // chunks), axis)

    def unbind(self, axis: int = 0, *, dim: int | None = None):
        """The slices along ``axis`` as a tuple, each without that axis; VJP: one stack."""
        if dim is not None:
            axis, _ = _torch_spelling("unbind", axis, False, dim, None, default_axis=0)
        return _ops.Unbind.apply(self, axis=_single_axis(axis, self.ndim))


# ---------------------------------------------------------------- helpers


class InPlaceWrites:
    """A clock of in-place writes into arrays, and when each written array was last written.

    Each recorded node keeps the clock of its recording (``Context.clock``). Before a VJP
    runs, backward asks whether any array the node saved was written since then; if so,
    the VJP would compute with changed values, and backward raises instead. As long as
    nothing is written in place (the clock stands still), that check costs one comparison.
    Stamps refer to arrays weakly, so a written array is freed as usual.
    """

    def __init__(self) -> None:
        self.clock = 0
        self.stamps: dict[int, tuple[Any, int]] = {}  # id(array) -> (reference to it, clock)
        self.prune_at = 1024

    def note(self, array: Any) -> None:
        """``array`` was just written in place."""
        self.clock += 1
        try:
            reference = weakref.ref(array)
        except TypeError:  # an array type without weak references: keep it alive instead
            reference = _StrongReference(array)
        self.stamps[id(array)] = (reference, self.clock)
        if len(self.stamps) >= self.prune_at:
            self.stamps = {key: entry for key, entry in self.stamps.items() if entry[0]() is not None}
            self.prune_at = 2 * len(self.stamps) + 1024

    def changed_since(self, array: Any, clock: int) -> bool:
        """True if ``array`` was written in place after ``clock``."""
        entry = self.stamps.get(id(array))
        return entry is not None and entry[1] > clock and entry[0]() is array


class _StrongReference:
    __slots__ = ("array",)

    def __init__(self, array: Any):
        self.array = array

    def __call__(self) -> Any:
        return self.array


in_place_writes = InPlaceWrites()


class ElementCount(int):
    """``t.size``: the number of elements, an int as in NumPy (``t.size == 6``).

    Called, it answers PyTorch's question instead: ``t.size()`` is the shape (a tuple) and
    ``t.size(dim)`` the length of one axis, so both habits work.
    """

    def __new__(cls, count: int, shape: tuple[int, ...]) -> ElementCount:
        number = super().__new__(cls, count)
        number.shape = tuple(shape)
        return number

    def __call__(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        return self.shape[_single_axis(dim, len(self.shape))]

    def __reduce__(self):  # pickled and copied as the plain int it is
        return (int, (int(self),))


class MaxResult(tuple):
    """``t.max(dim=...)``'s result, as PyTorch's: ``.values`` and ``.indices`` (a pair)."""

    def __new__(cls, values: Tensor, indices: Tensor) -> MaxResult:
        return super().__new__(cls, (values, indices))

    @property
    def values(self) -> Tensor:
        return self[0]

    @property
    def indices(self) -> Tensor:
        return self[1]


def _torch_spelling(name, axis, keepdims, dim, keepdim, default_axis=None):
    """PyTorch's ``dim=``/``keepdim=`` as NumPy's ``axis=``/``keepdims=``; both at once is an error."""
    if dim is not None:
        if axis is not None and axis != default_axis:
            raise TypeError(f"{name}() got both axis={axis!r} and dim={dim!r}; use one of them")
        axis = dim
    if keepdim is not None:
        if keepdims:
            raise TypeError(f"{name}() got both keepdims= and keepdim=; use one of them")
        keepdims = keepdim
    return axis, bool(keepdims)


def device_and_dtype(name: str, positional: tuple, device: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """Sort ``to()``'s arguments: each positional one is a device name or a dtype."""
    for value in positional:
        if isinstance(value, str) and (value in backend._devices or value == "cuda"):
            kind = "device"
        else:
            try:
                value = np.dtype(value)
            except TypeError:
                known = ", ".join(sorted(set(backend._devices) | {"cuda"}))
                raise TypeError(
                    f"{name}: {value!r} is neither a device ({known}) nor a dtype (tl.float32, tl.float64, ...)"
                ) from None
            kind = "dtype"
        if (device if kind == "device" else dtype) is not None:
            raise TypeError(f"{name}: got two {kind}s")
        device, dtype = (value, dtype) if kind == "device" else (device, value)
    if device is not None:
        backend.get_device(device)  # unknown or unavailable: raise now
    return device, (None if dtype is None else as_dtype(dtype))


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


def _floating(tensor: Tensor) -> Tensor:
    """An integer or bool tensor as float32 (PyTorch's default float dtype); floats unchanged."""
    return tensor if tensor.data.dtype.kind in "fc" else tensor.astype(float32)


def _max_shift(tensor: Tensor, axis: tuple[int, ...] | None) -> Tensor:
    """max(tensor) along ``axis`` (kept as size-1 axes) as a constant, 0 where it is not finite
    or where the axis is empty: the shift that makes exp(x - shift) safe to sum."""
    xp = backend.get_array_module(tensor.device)
    if _reduced_count(tensor.shape, axis) == 0:
        shape = tuple(1 if axis is None or i in axis else s for i, s in enumerate(tensor.shape))
        return Tensor._make(xp.zeros(shape, dtype=tensor.dtype), tensor.device)
    # Ops on a detached tensor, not NumPy on .data: inside tl.scan / tl.compile the shift
    # must be recomputed at every replay, so it has to be on the tape.
    largest = tensor.detach().max(axis=axis, keepdims=True)
    return where(largest.abs() < float("inf"), largest, 0.0)


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
            if _function.tracing_threads and _function.is_traced(part):
                _function.check_not_tracing("indexing with a traced tensor")
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
    """Apply an elementwise binary op (operands already promoted); a broadcasting failure names both shapes."""
    try:
        return function.apply(left, right)
    except ValueError as error:
        raise _broadcast_error(function, left, right, error) from None


def _broadcast_error(function, left: Any, right: Any, error: ValueError) -> ValueError:
    """The error for operands of a binary op whose shapes do not broadcast: it names both."""
    left_shape = tuple(getattr(left, "shape", ()))
    right_shape = tuple(getattr(right, "shape", ()))
    return ValueError(f"{function.__name__}: shapes {left_shape} and {right_shape} do not broadcast ({error})")


def result_dtype(*operands: Any, true_division: bool = False) -> np.dtype:
    """The dtype PyTorch gives an elementwise op of ``operands`` (Tensors and Python scalars).

    Three tiers, highest first: tensors with dimensions, 0-d tensors, Python scalars (a
    float counts as float32, an int as int64, a bool as bool). Dtypes promote within a
    tier; a lower tier counts only when its category (bool < integer < floating) is
    higher: int64 + float32 is float32, float32 + a 0-d float64 is float32, int64 + 2.5 is
    float32. True division of integers or bools gives float32.
    """
    tiers: list[np.dtype | None] = [None, None, None]
    for operand in operands:
        if isinstance(operand, Tensor):
            tier, dtype = (0 if operand.ndim else 1), operand.data.dtype
        elif isinstance(operand, bool):
            tier, dtype = 2, bool_
        elif isinstance(operand, int):
            tier, dtype = 2, int64
        else:
            tier, dtype = 2, float32
        tiers[tier] = dtype if tiers[tier] is None else _promote_pair(tiers[tier], dtype)
    result = _combine_tiers(tiers[0], _combine_tiers(tiers[1], tiers[2]))
    if true_division and _category(result) < 2:
        return float32
    return result


def _category(dtype: np.dtype) -> int:
    return 0 if dtype.kind == "b" else 1 if dtype.kind in "iu" else 2


def _promote_pair(a: np.dtype, b: np.dtype) -> np.dtype:
    """Two dtypes of one tier: the higher category wins outright (int64 + float32 is float32)."""
    category_a, category_b = _category(a), _category(b)
    if category_a != category_b:
        return a if category_a > category_b else b
    return np.promote_types(a, b)


def _combine_tiers(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    if higher is None or lower is None:
        return lower if higher is None else higher
    return lower if _category(lower) > _category(higher) else higher


def _promoted(function, left: Any, right: Any) -> tuple[Any, Any]:
    """Both operands cast to PyTorch's result dtype (NumPy's rules differ for int with float and for /)."""
    left_dtype = left.data.dtype if isinstance(left, Tensor) else None
    right_dtype = right.data.dtype if isinstance(right, Tensor) else None
    if left_dtype is not None and right_dtype is not None:
        if left_dtype is right_dtype and (left_dtype.kind in "fc" or function is not _ops.Div):
            return left, right  # the common case: one dtype, nothing to do
    elif left_dtype is None and right_dtype is None:
        return left, right  # two Python scalars: NumPy's rules are Python's
    elif (left_dtype or right_dtype).kind in "fc":
        return left, right  # a float tensor and a Python scalar: NumPy keeps the tensor's dtype
    target = result_dtype(left, right, true_division=function is _ops.Div)
    if left_dtype is not None and left_dtype != target:
        left = left.astype(target)
    if right_dtype is not None and right_dtype != target:
        right = right.astype(target)
    return left, right


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
    if not weight.data.size:  # a layer of size 0 (PyTorch allows one): the composed form handles empties
        product = matmul(x, weight.T)
        return product if bias is None else product + bias
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
    return _apply_binary(_ops.Maximum, *_promoted(_ops.Maximum, a, b))


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
    a, b = _promoted(_ops.Where, a, b)
    return _ops.Where.apply(a, b, condition)


def _check_same_kind(tensors: Any, name: str) -> list[Tensor]:
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name} needs at least one tensor")
    tensors = [_as_tensor(t) for t in tensors]
    if any(not isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} takes tensors or arrays, not Python scalars")
    return tensors


def cat(tensors: Any, axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join tensors along an existing axis; VJP: split the gradient back into pieces."""
    if dim is not None:
        axis, _ = _torch_spelling("cat", axis, False, dim, None, default_axis=0)
    tensors = _check_same_kind(tensors, "cat")
    first = tensors[0]
    axis = _normalize_axis(axis, first.ndim)[0]
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(s != f for i, (s, f) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise ValueError(f"cat along axis {axis}: shapes {first.shape} and {t.shape} differ off that axis")
    return _ops.Cat.apply(*tensors, axis=axis)


def stack(tensors: Any, axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join same-shaped tensors along a new axis; VJP: unbind the gradient."""
    if dim is not None:
        axis, _ = _torch_spelling("stack", axis, False, dim, None, default_axis=0)
    tensors = _check_same_kind(tensors, "stack")
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape != first.shape:
            raise ValueError(f"stack needs equal shapes, got {first.shape} and {t.shape}")
    ndim = first.ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} out of range for a result with {ndim} dims")
    return _ops.Stack.apply(*tensors, axis=axis % ndim)


from . import function as _function  # noqa: E402  (grad mode and the tracer: function.py needs Tensor too)
from . import ops as _ops  # noqa: E402  (ops need the Tensor class defined above)
