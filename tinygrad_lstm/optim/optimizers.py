"""Optimizers: SGD, Adam and AdamW with PyTorch's update rules, applied in place on raw arrays.

``params`` is an iterable of Parameters, or of dicts, the *parameter groups*: each has a
``"params"`` list and may set its own options (``{"params": head, "lr": 1e-2}``); an
option a group leaves out comes from the constructor. ``opt.param_groups`` holds those
dicts, as in PyTorch, and a scheduler (``optim.lr_scheduler``) or the user changes
``group["lr"]`` there between steps.

The update is not part of any graph: it writes into ``parameter.data`` (every model and
optimizer holding the Parameter sees the new values) and bumps the parameter's version,
as ``p -= ...`` under ``no_grad()`` would. Every option and every gradient is checked
before anything changes, so a bad one raises without a half-done step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from ..tensor import DeviceError, Tensor, get_array_module, int64
from ..tensor.tensor import in_place_writes


def _check_number(owner: str, name: str, value: Any, high: float | None = None) -> float:
    """An option's value as a float: a real number, finite, ≥ 0 (and < ``high`` if given)."""
    if isinstance(value, Tensor) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (high is not None and value >= high):
        bound = f"in [0, {high:g})" if high is not None else "finite and non-negative"
        what = "learning rate (lr)" if name == "lr" else name
        raise ValueError(f"{owner}: {what} must be {bound}, got {value}")
    return value


def _parameter_list(owner: str, params: Any, where: str) -> list[Tensor]:
    """The tensors of one group, checked: leaves that require grad, each once."""
    if isinstance(params, Tensor):
        raise TypeError(
            f"{owner}: {where} must be an iterable of Parameters (model.parameters(), or a list), "
            f"got a single Tensor of shape {params.shape} (its rows would be taken as parameters); "
            "wrap it in a list: [t]"
        )
    if isinstance(params, (dict, str)) or not isinstance(params, Iterable):
        raise TypeError(f"{owner}: {where} must be an iterable of Parameters, got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError(f"{owner} got an empty parameter list ({where})")
    for index, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise TypeError(f"{owner} optimizes tensors that require grad, got {p!r:.60} ({where}, item {index})")
        if not p.is_leaf:
            raise ValueError(
                f"{owner} cannot optimize a non-leaf tensor ({where}, item {index}, made by {p.grad_fn.name}): "
                "its values are recomputed from its inputs, so an update would change nothing. "
                "Pass the leaves (the Parameters) instead"
            )
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{owner}: a parameter appears twice in {where}; it would be updated twice per step")
    return params


class Optimizer:
    """Holds parameter groups and per-parameter state; ``zero_grad()`` clears the gradients.

    A subclass names its options with their defaults (``defaults``), checks them
    (``check_options``), names its per-parameter state (``slots``) and writes ``update``.
    """

    slots: tuple[str, ...] = ()  # the names of the per-parameter state a subclass keeps

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        name = type(self).__name__
        self.defaults = self.check_options(dict(defaults))
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        if isinstance(params, Tensor):
            _parameter_list(name, params, "params")  # raises the single-tensor error
        if isinstance(params, dict) or not isinstance(params, Iterable):
            raise TypeError(
                f"{name}: params must be an iterable of Parameters or of dicts, got {type(params).__name__}"
            )
        params = list(params)
        if params and all(isinstance(group, dict) for group in params):
            for group in params:
                self.add_param_group(group)
        elif any(isinstance(group, dict) for group in params):
            raise TypeError(f"{name}: params mixes dicts (parameter groups) and tensors; use one or the other")
        else:
            self.add_param_group({"params": params})

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group: ``{"params": [...], option: value, ...}``; missing options take the defaults."""
        name = type(self).__name__
        where = f"param group {len(self.param_groups)}"
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: {where} must be a dict with a 'params' entry, got {group!r:.60}")
        params = _parameter_list(name, group["params"], f"{where}['params']")
        taken = {id(p) for other in self.param_groups for p in other["params"]}
        if any(id(p) in taken for p in params):
            raise ValueError(f"{name}: some parameters of {where} are already in another parameter group")
        options = {key: value for key, value in group.items() if key != "params"}
        self.param_groups.append({"params": params, **self.check_options({**self.defaults, **options})})

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options checked and normalised (a subclass checks its own; lr is everyone's)."""
        options["lr"] = _check_number(type(self).__name__, "lr", options["lr"])
        return options

    @property
    def params(self) -> list[Tensor]:
        """Every parameter, group after group (the positions ``state_dict`` uses)."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient: set ``.grad`` to None (the default, as PyTorch), or fill it with 0."""
        for p in self.params:
            if set_to_none or not isinstance(p.grad, Tensor):
                p.grad = None
            else:
                p.grad.zero_()

    def step(self) -> None:
        """One update of every parameter that has a gradient, group by group."""
        work = [(group, p, grad) for group in self.param_groups for p, grad in self._gradients(group)]
        for group, p, grad in work:
            self.update(p, grad, group)
            p._version += 1  # an in-place change: a graph that saved p refuses backward
            in_place_writes.note(p.data)

    def update(self, p: Tensor, grad: Any, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _gradients(self, group: dict[str, Any]) -> list[tuple[Tensor, Any]]:
        """(parameter, gradient array) for the group's parameters with a gradient, all checked first."""
        name = type(self).__name__
        pairs = []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            where = f"{name}.step: the gradient of a parameter of shape {p.shape}"
            if not isinstance(grad, Tensor):
                raise TypeError(
                    f"{where} is a {type(grad).__module__}.{type(grad).__name__}, not a Tensor; "
                    "assign p.grad = tl.Tensor(array) (or let backward() fill it)"
                )
            if grad.device != p.device:
                raise DeviceError(f"{where} is on {grad.device!r}, the parameter on {p.device!r}")
            if grad.shape != p.shape:
                raise ValueError(f"{where} has shape {grad.shape}; a gradient must have the parameter's shape")
            if grad.dtype != p.dtype:
                raise TypeError(f"gradient dtype {grad.dtype} differs from parameter dtype {p.dtype}")
            pairs.append((p, grad.data))
        return pairs

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Per-parameter state as host arrays, keyed ``"{position}.{slot}"`` (position in ``params``).

        Save it with ``tl.save`` beside the model's state_dict to resume training exactly.
        """
        state = {}
        for position, p in enumerate(self.params):
            for slot, value in self.state.get(id(p), {}).items():
                state[f"{position}.{slot}"] = Tensor(value, device=p.device).numpy()
        return state

    def load_state_dict(self, mapping: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave; everything is checked before anything changes."""
        params = self.params
        staged: dict[int, dict[str, Any]] = {}
        for key, value in mapping.items():
            position_text, _, slot = str(key).partition(".")
            if not position_text.isdigit() or int(position_text) >= len(params) or slot not in self.slots:
                raise KeyError(
                    f"{type(self).__name__}.load_state_dict: unexpected key {key!r} (expected "
                    f"'<position < {len(params)}>.<one of {', '.join(self.slots)}>')"
                )
            p = params[int(position_text)]
            if slot == "step":
                staged.setdefault(id(p), {})[slot] = int(Tensor(value, dtype=int64).item())
                continue
            array = Tensor(value, dtype=p.dtype, device=p.device).data
            if tuple(array.shape) != p.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has shape {tuple(array.shape)}, "
                    f"the parameter has shape {p.shape}"
                )
            staged.setdefault(id(p), {})[slot] = array
        for slots in staged.values():
            missing = [slot for slot in self.slots if slot not in slots]
            if missing:
                raise KeyError(f"{type(self).__name__}.load_state_dict: a parameter lacks {', '.join(missing)}")
        self.state = staged


class SGD(Optimizer):
    """p ← p - lr · v with v ← momentum · v + g (v = g on the first step); g += wd · p."""

    slots = ("velocity",)

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        for name in ("momentum", "weight_decay"):
            options[name] = _check_number("SGD", name, options[name])
        return super().check_options(options)

    def update(self, p: Tensor, grad: Any, group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if group["momentum"]:
            state = self.state.get(id(p))
            if state is None:
                velocity = grad.copy()
                self.state[id(p)] = {"velocity": velocity}
            else:
                velocity = state["velocity"]
                velocity *= group["momentum"]
                velocity += grad
            grad = velocity
        p.data -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as PyTorch's (L2 weight decay, not AdamW)::

    g += wd · p;  m ← β1 m + (1 - β1) g;  v ← β2 v + (1 - β2) g²
    p ← p - lr · (m / (1 - β1ᵗ)) / (√(v / (1 - β2ᵗ)) + eps)
    """

    slots = ("step", "m", "v")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        betas = options["betas"]
        if isinstance(betas, (str, Tensor)) or not isinstance(betas, Iterable) or len(tuple(betas)) != 2:
            raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        options["betas"] = tuple(_check_number(owner, "betas", beta, high=1.0) for beta in betas)
        for name in ("eps", "weight_decay"):
            options[name] = _check_number(owner, name, options[name])
        return super().check_options(options)

    def update(self, p: Tensor, grad: Any, group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        self.adam_update(p, grad, group)

    def adam_update(self, p: Tensor, grad: Any, group: dict[str, Any]) -> None:
        """The moment estimates and the bias-corrected step, without weight decay."""
        beta1, beta2 = group["betas"]
        xp = get_array_module(p.device)
        state = self.state.get(id(p))
        if state is None:
            state = self.state[id(p)] = {"step": 0, "m": xp.zeros_like(p.data), "v": xp.zeros_like(p.data)}
        state["step"] += 1
        m, v, t = state["m"], state["v"], state["step"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        denominator = xp.sqrt(v / (1 - beta2**t))
        denominator += group["eps"]
        p.data -= (group["lr"] / (1 - beta1**t)) * (m / denominator)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as PyTorch's AdamW::

    p ← p · (1 - lr · wd), then the Adam step on g alone (the decay never enters m or v)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def update(self, p: Tensor, grad: Any, group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            p.data *= 1 - group["lr"] * group["weight_decay"]
        self.adam_update(p, grad, group)
