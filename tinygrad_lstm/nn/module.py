"""Module and Parameter: how layers own their weights and find each other.

Assigning an ``nn.Parameter`` or an ``nn.Module`` to an attribute registers it, so
``named_parameters()`` can walk the tree and name every weight with a dotted path
(``rnn.weight_ih_l0``, ``head.bias``) — the names ``state_dict()`` uses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..tensor import Tensor, as_dtype, backend
from ..tensor.tensor import device_and_dtype


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates; requires grad by default."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class LoadResult(NamedTuple):
    """What ``load_state_dict(strict=False)`` left out: names missing from the mapping and
    names in the mapping that the module does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class StateDictKeyError(RuntimeError, KeyError):
    """Missing or unexpected keys in ``load_state_dict``: a RuntimeError, as PyTorch raises,
    and a KeyError, since keys are the problem. The message lists every such key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def numeric_host_array(value: Any, name: Any, context: str) -> np.ndarray:
    """A value given for the array ``name`` as a host NumPy array of numbers, or a clear error.

    Takes anything numpy.asarray takes, plus our Tensors, CuPy arrays and PyTorch tensors.
    Refuses what would turn into garbage silently: ragged nesting, ``None``, objects,
    strings (``dtype=object`` values would otherwise load as NaN or need a pickle).
    """
    if isinstance(value, Tensor):
        array = value.numpy()
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a PyTorch tensor
        array = value.detach().cpu().numpy()
    elif type(value).__module__.startswith("cupy"):
        array = value.get()
    else:
        try:
            array = np.asarray(value)
        except ValueError as error:  # ragged nesting: NumPy refuses to guess
            raise ValueError(f"{context}: {name!r} is not a rectangular array of numbers ({error})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{context}: {name!r} has dtype {array.dtype} ({type(value).__name__}); only numeric "
            "arrays are accepted (no None, strings or Python objects, nothing that needs a pickle)"
        )
    return array


class Module:
    """Base class of every layer: registers parameters and submodules by assignment."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameter_names", [])
        object.__setattr__(self, "_module_names", [])
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------- registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameter_names" not in self.__dict__:
            raise AttributeError(f"assign {name!r} after calling super().__init__() in {type(self).__name__}.__init__")
        if name in self._parameter_names and self.__dict__.get(name) is value:
            return  # ``self.weight -= ...`` assigns the same Parameter back: keep its place
        for registry in (self._parameter_names, self._module_names):
            if name in registry:
                registry.remove(name)
        if isinstance(value, Parameter):
            self._parameter_names.append(name)
        elif isinstance(value, Module):
            self._module_names.append(name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameter_names, self._module_names):
            if name in registry:
                registry.remove(name)
        object.__delattr__(self, name)

    def children(self) -> Iterator[Module]:
        for name in self._module_names:
            yield getattr(self, name)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every submodule, with dotted names (this one is ``""``)."""
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child}" if name else child, getattr(module, child)) for child in module._module_names
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name, in registration order, each once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name in module._parameter_names:
                parameter = getattr(module, name)
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self) -> Iterator[Parameter]:
        for _, parameter in self.named_parameters():
            yield parameter

    # -------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameter name -> host NumPy copy."""
        return OrderedDict((name, parameter.numpy()) for name, parameter in self.named_parameters())

    def load_state_dict(self, mapping: Any, strict: bool = True) -> LoadResult:
        """Copy values into the parameters (cast to each one's dtype, kept on its device).

        Everything is checked before anything changes: a mapping that is not one, a key
        that is not a string, a value that is not a rectangular numeric array, a missing
        or unexpected key (when ``strict``; ``StateDictKeyError``, a RuntimeError listing
        them all, as PyTorch) or a wrong shape raises and leaves the module as it was.
        """
        context = f"load_state_dict into {type(self).__name__}"
        if not isinstance(mapping, Mapping):
            hint = (
                " (for a list of (name, value) pairs, pass dict(pairs))" if isinstance(mapping, (list, tuple)) else ""
            )
            raise TypeError(
                f"{context}: expected a mapping name -> array, like state_dict(), got {type(mapping).__name__}{hint}"
            )
        for name in mapping:
            if not isinstance(name, str):
                raise TypeError(f"{context}: key {name!r} ({type(name).__name__}) is not a parameter name (a str)")
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in mapping]
        unexpected = [name for name in mapping if name not in own]
        if strict and (missing or unexpected):
            problems = []
            if missing:
                problems.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                problems.append(f"unexpected keys: {', '.join(unexpected)}")
            raise StateDictKeyError(f"{context}: " + "; ".join(problems))
        staged = {}
        for name, parameter in own.items():
            if name not in mapping:
                continue
            value = numeric_host_array(mapping[name], name, context)
            if value.shape != parameter.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} has shape {value.shape} in the mapping but "
                    f"{parameter.shape} in the module"
                )
            staged[name] = value.astype(parameter.dtype)
        for name, value in staged.items():
            parameter = own[name]
            parameter.data = backend.get_device(parameter.device).from_host(value)
        return LoadResult(missing, unexpected)

    # ----------------------------------------------------------- behaviour
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every parameter's ``.grad`` to None (the default, as PyTorch), or fill it with 0."""
        for parameter in self.parameters():
            if set_to_none or parameter.grad is None:
                parameter.grad = None
            else:
                parameter.grad.zero_()

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active) for this module and all submodules.

        Each child's own ``train`` is called (as in PyTorch), so a module that overrides
        it, like ``Recurrent`` for its cells, is reached inside a bigger model too.
        """
        object.__setattr__(self, "training", bool(mode))
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off)."""
        return self.train(False)

    def to(self, *device_or_dtype: Any, device: str | None = None, dtype: Any = None) -> Module:
        """Move every parameter (and its gradient) to a device and/or cast it, in place; returns self.

        As in PyTorch: ``model.to("cuda")``, ``model.to(tl.float64)``, ``model.to("cuda",
        tl.float64)``, or the keywords ``device=`` and ``dtype=``.
        """
        device, dtype = device_and_dtype(f"{type(self).__name__}.to", device_or_dtype, device, dtype)
        if device is not None:
            self._move_to(device)
        if dtype is not None:
            self.astype(dtype)
        return self

    def _move_to(self, device: str) -> None:
        for parameter in self.parameters():
            if parameter.device != device:
                parameter.data = backend.to_device(parameter.data, parameter.device, device)
                if parameter.grad is not None:
                    parameter.grad = parameter.grad.to(device).detach()
                parameter.device = device

    def astype(self, dtype: Any) -> Module:
        """Cast every floating parameter to ``dtype``, in place (drops gradients); returns self."""
        dtype = as_dtype(dtype)
        for parameter in self.parameters():
            parameter.data = parameter.data.astype(dtype)
            parameter.grad = None
        return self

    def double(self) -> Module:
        """Cast every parameter to float64 (``astype(tl.float64)``); returns self."""
        return self.astype("float64")

    def float(self) -> Module:
        """Cast every parameter to float32 (``astype(tl.float32)``); returns self."""
        return self.astype("float32")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ---------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(getattr(self, name)).replace("\n", "\n  ") for name in self._module_names]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered as ``0``, ``1``, ... so their parameters are found."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, not {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self) -> Iterator[Module]:
        return self.children()

    def __getitem__(self, index: int) -> Module:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__} indices must be integers (or slices), not {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a {type(self).__name__} of {len(self)} modules")
        return getattr(self, self._module_names[index])


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b)(x) == b(a(x))``.

    ``model[0]`` is the first module, ``model[-1]`` the last, and ``model[1:]`` a
    Sequential of the same (shared) modules, as in PyTorch.
    """

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(*[getattr(self, name) for name in self._module_names[index]])
        return super().__getitem__(index)

    def forward(self, x: Any) -> Any:
        for module in self:
            x = module(x)
        return x
