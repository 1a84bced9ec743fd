"""``Function``: an op written as forward on raw arrays plus its vector-Jacobian product.

Every built-in op is a ``Function`` subclass (see ``ops.py``), and so is any op a user
writes: what a user writes is exactly what the engine does.

    class Square(Function):
        @staticmethod
        def forward(ctx, x):            # backend arrays in, backend array out
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):        # one gradient per forward input (None = none)
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    y = Square.apply(t)

Positional arguments of ``apply`` that are Tensors are the op's inputs (differentiable
when they require grad); other positional arguments (Python scalars, say) reach
``forward`` unchanged and get no gradient. Keyword arguments are configuration
(``axis=``, ``keepdims=``) and reach ``forward`` as keywords.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from . import backend
from .tensor import Tensor, in_place_writes


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True unless inside ``with no_grad():``."""
    return _grad_mode.enabled


@contextlib.contextmanager
def set_grad_enabled(enabled: bool):
    """Record graphs (``True``) or not (``False``) inside the ``with`` block."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = bool(enabled)
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad():
    """``with no_grad():`` computes without recording anything for backward."""
    return set_grad_enabled(False)


class TraceError(RuntimeError):
    """Something inside a traced function (``tl.scan``, ``tl.compile``) cannot be traced."""


class _Tracing(threading.local):
    tracer = None  # the tracer writing a tape in this thread (tensor/scan.py), or None


_tracing = _Tracing()
_tracing_lock = threading.Lock()
# How many threads are tracing right now. Tracing is per thread: ops another thread
# applies meanwhile run eagerly. While no thread traces (almost always), ``apply`` and
# the Tensor methods that ask see 0 here and skip even the thread-local look-up.
tracing_threads = 0


def active_tracer():
    """The tracer writing a tape in this thread, or None: then ``apply`` is eager."""
    return _tracing.tracer if tracing_threads else None


def is_traced(tensor) -> bool:
    """Whether ``tensor`` holds a value on the tape this thread is writing."""
    tracer = active_tracer()
    return tracer is not None and tracer.is_traced_value(tensor)


def set_tracer(new_tracer):
    """Make ``new_tracer`` (or None) this thread's tracer; returns the previous one (tracing nests)."""
    global tracing_threads
    previous = _tracing.tracer
    _tracing.tracer = new_tracer
    change = (new_tracer is not None) - (previous is not None)
    if change:
        with _tracing_lock:
            tracing_threads += change
    return previous


def check_not_tracing(what: str) -> None:
    """Raise ``TraceError`` if a function is being traced: ``what`` would freeze a value into the tape."""
    tracer = active_tracer()
    if tracer is not None:
        raise TraceError(
            f"{what} inside {tracer.name}: the traced function runs once to record its ops, so this "
            "value would be frozen into the trace. Move it outside the traced function, or run "
            "without tracing (compile=False for nn layers, a Python loop instead of tl.scan)"
        )


class Context:
    """What one application of a Function remembers for its backward pass.

    ``saved_tensors`` holds what forward saved; ``needs_input_grad[i]`` says whether
    input ``i`` wants a gradient (backward may skip the others); ``xp`` is the array
    module of the device. Forward may store anything else as attributes.

    For the engine, a recorded Context is also a node of the graph: ``edges[i]`` is
    where input ``i``'s gradient goes (a leaf Tensor, a ``(node, output_index)`` pair,
    or None), ``grads`` collects the gradients of this node's outputs, and ``clock`` is
    the in-place write clock when it was made (see ``tensor.InPlaceWrites``).
    """

    __slots__ = (
        "function",
        "saved_tensors",
        "needs_input_grad",
        "xp",
        "device",
        "output_device",
        "edges",
        "grads",
        "owned",
        "output_meta",
        "multi_output",
        "clock",
        "freed",  # True once backward released what this node saved
        "__dict__",
    )

    # Rarely set, so kept out of the slots: an instance sets them in its __dict__.
    retained = None  # output index -> weakref of a tensor that called retain_grad()
    source = None  # where user code created this node (recorded while localizing)
    saved_roles = None  # for a user's Function: what each saved array was (see saved_roles)

    def __init__(self, function, xp, device):
        # Function.apply writes these lines out (its hottest path): keep the two alike.
        self.function = function
        self.xp = xp
        self.device = device
        self.output_device = device
        self.saved_tensors = ()
        self.clock = in_place_writes.clock
        self.freed = False

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep ``arrays`` until the backward pass has used them."""
        self.saved_tensors = arrays

    @property
    def name(self) -> str:
        return self.function.__name__

    def release(self) -> None:
        """Drop everything kept for backward, so memory is freed as backward proceeds."""
        self.saved_tensors = ()
        self.edges = ()
        self.grads = None
        self.owned = None
        self.__dict__.clear()  # what forward set (an axis, a mask)
        self.freed = True

    def __repr__(self) -> str:
        return f"<{self.name} node>"


_known_devices = backend._devices  # name -> device, read directly on the hot path

# When set (by testing.localize), each recorded node remembers where user code made it.
record_source = None


class Function:
    """Base class of every op: subclass it and write ``forward`` and ``backward``.

    Higher order (``backward(create_graph=True)``): the engine calls the same
    ``backward`` once more, now with Tensors. Each gradient argument is a Tensor, each
    entry of ``ctx.saved_tensors`` is the Tensor of the forward input or output it was
    (so it is connected to the graph), and ``ctx.xp`` is a namespace of differentiable
    functions (``exp``, ``where``, ``concatenate``, ...: see ``graph_backward.py``) in
    place of the array module. A backward written with ``ctx.xp`` and arithmetic on its
    arguments is therefore recorded, and can be differentiated again, to any order.
    What cannot be recorded raises an error naming the Function, never a wrong
    derivative: an array saved that is neither an input nor an output of ``forward``
    (recompute it in ``backward`` from those), a floating-point array kept as a ``ctx``
    attribute, a NumPy call on a Tensor.

    Class attributes:

    * ``differentiable_backward`` (default True): set it to False when ``backward``
      works only on raw arrays; ``create_graph=True`` through this op then raises an
      error that names it and ends with ``create_graph_advice``.
    * ``create_graph_advice``: what that error tells the user to do instead.
    * ``saves``: the built-in ops name what ``forward`` passes to
      ``save_for_backward``, in order: ``forward``'s parameter names, ``"y"`` for the
      output (so the engine needs no look-up on the hot path). It is a promise for
      every call: ``forward`` always saves exactly those (a replay relies on it). Left
      None (as users leave it), the engine finds out by identity when the node is recorded.
    * ``fresh_gradients`` (default False): True promises that ``backward`` returns
      arrays it has just made (or views of them) and hands each to one input only,
      except that its first two inputs may share one (``x * x``). The engine then adds
      later gradients into them in place, and gives a leaf one as its ``.grad``
      without a copy.
    * ``row_wise`` (default ``()``): the positions of the inputs that may come with
      extra leading axes: given those inputs of several calls stacked along a new
      leading axis (and the same other inputs), ``forward`` returns the outputs of those
      calls stacked the same way. A loop (``tl.scan``) that recomputes steps whose
      inputs it knows in advance then runs such an op for many steps in one call (see
      ``scan.mark_batched``). ``axis_arguments`` names the keyword arguments that
      count axes of those inputs (then shifted by one for stacked inputs).
    """

    differentiable_backward: bool = True
    create_graph_advice: str = (
        "write its backward with ctx.xp functions and arithmetic on its arguments, saving only "
        "forward's inputs and outputs with ctx.save_for_backward (recompute anything else in "
        "backward), or compose it from built-in ops"
    )
    saves: tuple[str, ...] | None = None
    fresh_gradients: bool = False
    row_wise: tuple[int, ...] = ()
    axis_arguments: tuple[str, ...] = ()

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define forward(ctx, *inputs)")

    @staticmethod
    def backward(ctx: Context, *grad_outputs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, *grads)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` on the inputs' arrays and record the node if grad is needed (see ``_inputs``)."""
        if tracing_threads:
            tracer = _tracing.tracer
            if tracer is not None:
                return tracer.record(cls, args, kwargs)
        if len(args) == 2:  # a binary op (most are): the loop of _inputs, written out for two
            a, b = args
            if isinstance(a, Tensor):
                device, first = a.device, a.data
                edge_a = (a if a._node is None else (a._node, a._output_index)) if a._requires_grad else None
            else:
                device, first, edge_a = None, a, None
            if isinstance(b, Tensor):
                if device is None:
                    device = b.device
                elif b.device != device:
                    raise _device_mismatch(cls, device, b.device)
                second = b.data
                edge_b = (b if b._node is None else (b._node, b._output_index)) if b._requires_grad else None
            else:
                second, edge_b = b, None
            arrays, edges = [first, second], (edge_a, edge_b)
            needs = _PAIR_NEEDS[edge_a is not None][edge_b is not None]
        else:
            arrays, edges, needs, device = _inputs(cls, args)
        target = _known_devices.get(device) or backend.get_device(device or backend.default_device())
        ctx = _new_tensor(Context)  # (Context.__init__, written out: this is the hottest path)
        ctx.function = cls
        ctx.xp = target.xp
        ctx.device = ctx.output_device = target.name
        ctx.saved_tensors = ()
        ctx.clock = in_place_writes.clock
        ctx.freed = False
        output = cls.forward(ctx, *arrays, **kwargs)
        record = _grad_mode.enabled and True in needs
        node = ctx if record else None
        if type(output) is tuple:
            result = tuple([_wrap(ctx, out, target, node, i) for i, out in enumerate(output)])
            meta = tuple([(out.data.shape, out.data.dtype) for out in result])
        else:
            result = _wrap(ctx, output, target, node, 0)
            meta = _one_output_meta(result.data)
        if record:
            ctx.edges = edges
            ctx.needs_input_grad = needs
            ctx.output_meta = meta
            ctx.multi_output = type(output) is tuple
            ctx.grads = None  # made by backward when the first gradient arrives
            if cls.saves is None and ctx.saved_tensors:  # a user's op: note what it saved
                ctx.saved_roles = saved_roles(ctx.saved_tensors, arrays, output)
            if record_source is not None:
                ctx.source = record_source()
        return result


def _inputs(cls: type[Function], args: tuple) -> tuple[list, tuple, tuple, str | None]:
    """``(arrays, edges, needs_input_grad, device)`` of an op's positional arguments.

    An input's edge says where its gradient goes: the leaf Tensor itself, its creator
    ``(node, output_index)``, or None (not a Tensor, or no gradient wanted).
    """
    device = None
    arrays, edges, needs = [], [], []
    for arg in args:
        if isinstance(arg, Tensor):
            if device is None:
                device = arg.device
            elif arg.device != device:
                raise _device_mismatch(cls, device, arg.device)
            arrays.append(arg.data)
            if arg._requires_grad:
                node = arg._node
                edges.append(arg if node is None else (node, arg._output_index))
                needs.append(True)
                continue
        else:
            arrays.append(arg)
        edges.append(None)
        needs.append(False)
    return arrays, tuple(edges), tuple(needs), device


def _device_mismatch(cls: type[Function], device: str, other: str) -> backend.DeviceError:
    return backend.DeviceError(
        f"{cls.__name__}: inputs are on different devices, {device!r} and {other!r}; "
        "move them to one device with .to(device)"
    )


# ``needs_input_grad`` of a binary op, shared: a new tuple per node would be one more
# object for the garbage collector to track for as long as the graph lives.
_PAIR_NEEDS = (((False, False), (False, True)), ((True, False), (True, True)))

_one_output_metas: dict[tuple, tuple] = {}


def _one_output_meta(array: Any) -> tuple:
    """``((shape, dtype),)``, the ``output_meta`` of a one-output node: one tuple shared per shape and dtype.

    Shared for the garbage collector's sake: made anew, it is three more tracked objects
    per node for as long as the graph lives (the collector's passes over a long graph
    took a tenth of an eager op's time; see benchmarks/run.py, workload "overhead").
    """
    key = (array.shape, array.dtype)
    meta = _one_output_metas.get(key)
    if meta is None:
        if len(_one_output_metas) >= 4096:  # shapes that come and go: begin afresh
            _one_output_metas.clear()
        meta = _one_output_metas[key] = (key,)
    return meta


def saved_roles(saved: tuple, inputs: list, output: Any) -> tuple:
    """What each saved array is: ``("input", i)``, ``("output", k)`` or None (neither).

    Matched by identity, so that ``backward(create_graph=True)`` can hand ``backward``
    the Tensor each saved array belongs to.
    """
    outputs = output if type(output) is tuple else (output,)
    roles = []
    for array in saved:
        role = None
        for i, value in enumerate(inputs):
            if value is array:
                role = ("input", i)
                break
        else:
            for k, value in enumerate(outputs):
                if value is array:
                    role = ("output", k)
                    break
        roles.append(role)
    return tuple(roles)


def _wrap(ctx: Context, array: Any, target: Any, node: Context | None, index: int) -> Tensor:
    """The op's output array as a Tensor (Tensor._make, inlined: this is the hottest path)."""
    if type(array) is not target.array_type or ctx.output_device is not target.name:
        array, target = _output_array(ctx, array, target)
    tensor = _new_tensor(Tensor)
    tensor.data = array
    tensor.device = target.name
    tensor._requires_grad = node is not None
    tensor.grad = None
    tensor._node = node
    tensor._output_index = index
    tensor._version = 0
    return tensor


def _output_array(ctx: Context, array: Any, target: Any) -> tuple[Any, Any]:
    """The uncommon cases: an op that moves data (ToDevice), or a scalar/subclass result."""
    if ctx.output_device != target.name:
        target = backend.get_device(ctx.output_device)
    if not isinstance(array, target.array_type):
        array = target.xp.asarray(array)  # NumPy reductions return scalars, not 0-d arrays
    return array, target


_new_tensor = object.__new__
