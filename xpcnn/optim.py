"""Optimizers and learning-rate schedules, with the update rules torch.optim documents.

Every update rebinds ``param.data`` to a new array instead of writing in place, so the same
code runs on backends whose arrays are immutable (JAX). State (momentum buffers, moment
estimates) is created lazily with ``zeros_like(param.data)``, on the parameter's device. The
parameters that have gradients are updated together on flat arrays (one kernel per operation of
the formula, whatever the number of parameters; see ``Optimizer.step``).

With g = grad + weight_decay * θ (AdamW decays θ directly instead), t = step count:

    SGD        b = μ b + (1 - τ) g  (b = g at t = 1);  g' = g + μ b (Nesterov) or b;  θ -= lr g'
    Adagrad    s += g²;  θ -= lr / (1 + (t - 1) lr_decay) · g / (sqrt(s) + ε)
    RMSprop    v = α v + (1 - α) g²;  θ -= lr g / (sqrt(v) + ε)   (momentum and centred variants)
    Adam       m = β1 m + (1 - β1) g;  v = β2 v + (1 - β2) g²;  θ -= lr/(1 - β1^t) · m / (sqrt(v)/sqrt(1 - β2^t) + ε)
    AdamW      θ *= 1 - lr λ, then Adam without weight decay in g
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Iterable

import array_api_compat
import numpy as np

from .backend import device_copy, like, same_place, to_numpy
from .checks import monitor_mode, positive_int
from .layers.base import Parameter


def _check(owner: str, name: str, value: Any, low: float, high: float | None = None,
           low_open: bool = False, high_open: bool = True) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{owner}: {name} must be in {left}{low}, {right}, got {value!r}")
    return float(value)


def _flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def _joined(xp, arrays: list) -> Any:
    """``arrays`` flattened into one 1-D array (a reshape, no copy, when there is only one)."""
    flat = [xp.reshape(a, (-1,)) for a in arrays]
    return flat[0] if len(flat) == 1 else xp.concat(flat)


def _follow(state: dict[str, Any], data: Any) -> None:
    """Move a parameter's state arrays to the parameter's library and device (after the model moved)."""
    for name, value in state.items():
        if name != "step" and not same_place(value, data):
            state[name] = like(value, data)


def _groups(owner: str, params) -> list[dict[str, Any]]:
    """``params`` as a list of groups ``{"params": [Parameter, ...], ...}``, checked: every item a Parameter,
    none in two places, no group empty."""
    if isinstance(params, (Parameter, dict)):
        params = [params]
    items = list(params)
    if not items:
        raise ValueError(f"{owner}: got an empty parameter list")
    if any(isinstance(item, dict) for item in items):
        groups = []
        for number, item in enumerate(items):
            if not isinstance(item, dict) or "params" not in item:
                raise TypeError(f"{owner}: parameter group {number} must be a dict with 'params' (do not mix "
                                f"groups and bare parameters), got {type(item).__name__}")
            members = item["params"]
            members = [members] if isinstance(members, Parameter) else list(members)
            if not members:
                raise ValueError(f"{owner}: parameter group {number} has no parameters")
            groups.append({**item, "params": members})
    else:
        groups = [{"params": items}]
    seen: set[int] = set()
    for number, group in enumerate(groups):
        where = "" if len(groups) == 1 else f" of group {number}"
        for index, p in enumerate(group["params"]):
            if not isinstance(p, Parameter):
                raise TypeError(f"{owner}: parameter {index}{where} is a {type(p).__name__}, not a Parameter; "
                                "pass model.parameters()")
            if id(p) in seen:
                raise ValueError(f"{owner}: parameter {index}{where} appears twice; each parameter belongs to one "
                                 "group, once")
            seen.add(id(p))
    return groups


@dataclass
class _Flat:
    """Parameters updated together: their indices, shapes and [start, stop) bounds in the flat arrays, the
    namespace, the flat parameters, and the flat state (``"step"`` an int)."""

    indices: tuple[int, ...]
    shapes: list[tuple]
    bounds: list[tuple[int, int]]
    xp: Any
    theta: Any
    state: dict[str, Any]


class _Hyper:
    """A hyper-parameter attribute (``optimizer.lr``, ``optimizer.momentum``, ...). It reads the parameter group
    being updated (the first group outside a step). Setting it checks the value as the constructor does
    (``optimizer.lr = -5`` is refused, and nothing changes), then sets the default and every group that
    did not give its own value, as a group's own ``lr`` stays its own."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj._group[self.name]

    def __set__(self, obj, value):
        cls = type(obj)
        value = cls.check_hyperparameters({**obj.defaults, self.name: value}).get(self.name, value)
        followers = [number for number, own in enumerate(obj._own_keys) if self.name not in own]
        for number in followers:
            if obj._own_keys[number]:              # its own values must hold together with the new one
                obj._checked_group(number, {**obj.param_groups[number], self.name: value})
        obj.defaults[self.name] = value
        for number in followers:
            obj.param_groups[number][self.name] = value


class Optimizer:
    """Base class: holds the parameters (in groups, as torch.optim does), the hyper-parameters and lazily
    created per-parameter state.

    ``params`` is ``model.parameters()``, or a list of groups ``[{"params": [...], "lr": 0.01}, {"params":
    [...]}]`` where a group's own values replace the constructor's (``optimizer.param_groups[i]["lr"]``
    reads and sets them later). A parameter whose ``requires_grad`` is False (``layer.freeze()``) has no
    gradient, and a step leaves it alone.
    """

    possible_state: tuple[str, ...] = ()   # every per-parameter entry this class may keep
    lr = _Hyper()

    @property
    def state_names(self) -> tuple[str, ...]:
        """The per-parameter arrays created as zeros on first use (for the current hyper-parameters)."""
        return ()

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float, **hyperparameters: Any):
        owner = type(self).__name__
        groups = _groups(owner, params)
        self.params = [p for group in groups for p in group["params"]]
        self.defaults: dict[str, Any] = type(self).check_hyperparameters({"lr": lr, **hyperparameters})
        self._own_keys = [set(group) - {"params"} for group in groups]
        self.param_groups = [{**group, **{k: v for k, v in self.defaults.items() if k not in group}} for group in groups]
        self._group = self.param_groups[0]
        self._group_indices: list[tuple[int, ...]] = []
        start = 0
        for group in groups:
            self._group_indices.append(tuple(range(start, start + len(group["params"]))))
            start += len(group["params"])
        self.step_count = 0
        self.state = [{} for _ in self.params]
        known = set(self.defaults)
        for number, own in enumerate(self._own_keys):
            unknown = sorted(own - known)
            if unknown:
                raise ValueError(f"{owner}: parameter group {number} sets {', '.join(unknown)}, which "
                                 f"{owner} does not have (it has {', '.join(sorted(known))})")
            if own:
                self.param_groups[number].update(self._checked_group(number, self.param_groups[number]))

    @classmethod
    def check_hyperparameters(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (every hyper-parameter of this class; other keys are ignored) checked as the constructor
        checks its arguments, and normalised (floats, bools, a tuple of betas). A ValueError names the first
        bad value. Subclasses extend it with their own hyper-parameters."""
        return {"lr": _check(cls.__name__, "lr", values["lr"], 0.0)}

    def _checked_group(self, number: int, values: dict[str, Any]) -> dict[str, Any]:
        """check_hyperparameters for the values of group ``number``; the error names the group when there are
        several, or when the group was given its own values."""
        try:
            return type(self).check_hyperparameters(values)
        except ValueError as exc:
            if len(self.param_groups) == 1 and not self._own_keys[number]:
                raise
            raise ValueError(f"parameter group {number}: {exc}") from None

    @property
    def state(self) -> list[dict[str, Any]]:
        """Per-parameter state: ``state[i]["exp_avg"]``, ..., ``state[i]["step"]`` (what state_dict saves).
        Steps keep it as flat arrays (see :meth:`step`); reading it splits them back into per-parameter arrays."""
        self._unflatten()
        return self._state

    @state.setter
    def state(self, states: list[dict[str, Any]]) -> None:
        self._state, self._flats = states, {}
        self._forget_places()

    def _forget_places(self) -> None:
        # per parameter: the array this optimizer last wrote into p.data, and that array's namespace; while
        # p.data is still that array the parameter has not moved, so no namespace or device is looked up
        self._written: list[Any] = [None] * len(self.params)
        self._namespaces: list[Any] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient. Checked first, so that a failure changes no parameter
        and no state of any group: each gradient's shape, and every group's hyper-parameters as the
        constructor checks them (``param_groups[1]["lr"] = "fast"`` is refused here).

        Gradient values are not read (that would read device memory every step): a NaN or infinite
        gradient is applied as torch.optim applies it, and spreads into the parameters and the state.
        ``fit`` reads the loss every ``log_every`` steps and at each epoch's end, and on a non-finite value
        restores the end of the last good epoch (``TrainingDiverged``); a custom loop can keep a
        :meth:`snapshot` and :meth:`restore` it in the same way.

        The parameters of a group that have a gradient are updated together when they share one library,
        device and dtype (and one step count): their gradients are concatenated once, the update formula
        runs once on flat arrays (a handful of kernel launches whatever the number of parameters), and
        each ``p.data`` becomes its slice of the result (a view on NumPy, CuPy and PyTorch; a copy on JAX).
        Otherwise, or when a parameter has no gradient (it is skipped, as torch.optim skips it), each
        parameter is updated on its own, with the same formula.
        """
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            if not hasattr(p.grad, "shape"):
                raise TypeError(f"{type(self).__name__}: gradient {index} is a {type(p.grad).__name__}, not an array")
            if tuple(p.grad.shape) != tuple(p.data.shape):
                raise ValueError(f"{type(self).__name__}: gradient {index} has shape {tuple(p.grad.shape)}, "
                                 f"its parameter {tuple(p.data.shape)}")
        for number, group in enumerate(self.param_groups):
            self._checked_group(number, group)
        self.step_count += 1
        try:
            for number, (group, indices) in enumerate(zip(self.param_groups, self._group_indices)):
                self._group = group
                self._step_group(number, tuple(i for i in indices if self.params[i].grad is not None
                                               and self.params[i].requires_grad))
        finally:
            self._group = self.param_groups[0]

    def _step_group(self, number: int, active: tuple[int, ...]) -> None:
        flat = self._flats.get(number)
        if flat is None or flat.indices != active or any(self.params[i].data is not self._written[i] for i in active):
            flat = self._flatten(number, active)
        if flat is None:
            self._step_each(active)
            return
        xp = flat.xp
        grad = xp.astype(_joined(xp, [self.params[i].grad for i in active]), flat.theta.dtype, copy=False)
        flat.state["step"] += 1
        flat.theta = self.update(xp, flat.theta, grad, flat.state)
        for index, shape, (start, stop) in zip(active, flat.shapes, flat.bounds):
            self.params[index].data = self._written[index] = xp.reshape(flat.theta[start:stop], shape)

    def _flatten(self, number: int, active: tuple[int, ...]) -> "_Flat | None":
        """The flat arrays of group ``number`` for the parameters ``active`` (and their state), or None when
        they cannot share them: different libraries, devices or dtypes, or states of different histories."""
        self._unflatten(number)
        if not active:
            return None
        params = [self.params[i].data for i in active]
        try:
            xp = array_api_compat.array_namespace(*params)
        except TypeError:
            return None
        first = params[0]
        if any(not same_place(p, first) or p.dtype != first.dtype for p in params):
            return None
        states = [self._state[i] for i in active]
        names = {name for name in states[0] if name != "step"}
        if len({state.get("step", 0) for state in states}) != 1 or any(set(state) - {"step"} != names
                                                                       for state in states):
            return None
        for state, data in zip(states, params):
            _follow(state, data)
        ends = list(itertools.accumulate(math.prod(p.shape) for p in params))
        theta = _joined(xp, params)
        flat_state = {name: _joined(xp, [state[name] for state in states]) for name in names}
        for name in self.state_names:
            if name not in flat_state:
                flat_state[name] = xp.zeros_like(theta)
        flat_state["step"] = states[0].get("step", 0)
        for index in active:
            self._namespaces[index] = xp
        flat = _Flat(active, [tuple(p.shape) for p in params], list(zip([0] + ends[:-1], ends)), xp, theta, flat_state)
        self._flats[number] = flat
        return flat

    def _unflatten(self, number: int | None = None) -> None:
        """Split the flat arrays of the last steps (of group ``number``, or of all) back into per-parameter
        state (views where the library has them)."""
        for key in list(self._flats) if number is None else [number]:
            flat = self._flats.pop(key, None)
            if flat is None:
                continue
            for index, shape, (start, stop) in zip(flat.indices, flat.shapes, flat.bounds):
                self._state[index] = {name: value if name == "step" else flat.xp.reshape(value[start:stop], shape)
                                      for name, value in flat.state.items()}

    def _step_each(self, active: tuple[int, ...]) -> None:
        """The update of each parameter in ``active`` on its own (mixed devices or dtypes, or a parameter
        without a gradient)."""
        for index in active:
            p, state = self.params[index], self._state[index]
            if p.data is not self._written[index]:      # first step, or the model moved or was reloaded
                self._namespaces[index] = array_api_compat.array_namespace(p.data)
                _follow(state, p.data)
            xp = self._namespaces[index]
            for name in self.state_names:
                if name not in state:
                    state[name] = xp.zeros_like(p.data)
            state["step"] = state.get("step", 0) + 1
            p.data = self.update(xp, p.data, xp.astype(p.grad, p.data.dtype, copy=False), state)
            self._written[index] = p.data

    def update(self, xp, theta, grad, state):
        """Return the new θ from the old θ, its gradient and its state (``state["step"]`` counts its updates)."""
        raise NotImplementedError

    def snapshot(self) -> tuple:
        """Device copies of the parameters and the state (nothing goes to the host); see :meth:`restore`."""
        return ([device_copy(p.data) for p in self.params],
                [{k: v if k == "step" else device_copy(v) for k, v in state.items()} for state in self.state],
                self.step_count)

    def restore(self, snapshot: tuple) -> None:
        """Put back the parameters and the state of a :meth:`snapshot` (gradients are cleared)."""
        datas, states, step_count = snapshot
        for p, data in zip(self.params, datas):
            p.data, p.grad = data, None
        self.state, self.step_count = states, step_count

    @property
    def valid_state(self) -> tuple[str, ...]:
        return ("step",) + self.possible_state

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def _hyperparameters_of(self, group: dict) -> dict[str, Any]:
        previous, self._group = self._group, group
        try:
            return self.hyperparameters()
        finally:
            self._group = previous

    def state_dict(self) -> dict[str, Any]:
        """Host copies: ``{"step": int, "hyper": {...}, "groups": [...], "state": {"0.exp_avg": ndarray, ...}}``
        (``hyper`` the defaults; ``groups`` each group's parameter indices and its own values)."""
        flat = {f"{i}.{name}": np.array(value if name == "step" else to_numpy(value), copy=True)
                for i, state in enumerate(self.state) for name, value in state.items()}
        own = [self._hyperparameters_of(group) for group in self.param_groups]
        groups = [{"params": list(indices), **{k: v for k, v in values.items() if k in keys}}
                  for indices, values, keys in zip(self._group_indices, own, self._own_keys)]
        return {"type": type(self).__name__, "step": self.step_count, "hyper": self._hyperparameters_of(self.defaults),
                "groups": groups, "state": flat}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; checked whole before anything changes (the hyper-parameters as
        the constructor checks them)."""
        owner = type(self).__name__
        if not isinstance(saved, Mapping):
            raise TypeError(f"{owner}.load_state_dict: expected the dict state_dict() returns, got {type(saved).__name__}")
        if saved.get("type", owner) != owner:
            raise ValueError(f"{owner}.load_state_dict: the state was saved by {saved['type']}")
        states: list[dict[str, Any]] = [{} for _ in self.params]
        entries = saved.get("state", {})
        if not isinstance(entries, Mapping):
            raise TypeError(f"{owner}.load_state_dict: 'state' must be a dict of arrays, got {type(entries).__name__}")
        for key, value in entries.items():
            index_text, _, name = str(key).partition(".")
            if not index_text.isdigit() or int(index_text) >= len(self.params) or name not in self.valid_state:
                raise ValueError(f"{owner}.load_state_dict: unexpected state entry {key!r}")
            param = self.params[int(index_text)]
            value = None if value is None else np.array(to_numpy(value), copy=True)  # a copy: updated in place
            if value is None or value.dtype.kind not in "biuf":
                raise ValueError(f"{owner}.load_state_dict: {key!r} must be an array of numbers, got "
                                 f"{type(value).__name__ if value is None else value.dtype}")
            if name == "step":
                if value.size != 1 or value.dtype.kind == "f" and not float(value.reshape(())).is_integer() \
                        or value.reshape(()) < 0:
                    raise ValueError(f"{owner}.load_state_dict: {key!r} must be a count >= 0, got {value!r}")
                states[int(index_text)][name] = int(value.reshape(()))
                continue
            if value.shape != param.shape:
                raise ValueError(f"{owner}.load_state_dict: {key!r} has shape {value.shape}, "
                                 f"its parameter {param.shape}")
            states[int(index_text)][name] = like(value, param.data)   # the parameter's own device and dtype
        hyper = saved.get("hyper", {})
        groups = saved.get("groups")
        step = saved.get("step", 0)
        if not isinstance(hyper, Mapping) or not (groups is None or isinstance(groups, (list, tuple)) and all(
                isinstance(group, Mapping) for group in groups)):
            raise TypeError(f"{owner}.load_state_dict: 'hyper' must be a dict and 'groups' a list of dicts, got "
                            f"{type(hyper).__name__} and {type(groups).__name__}")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"{owner}.load_state_dict: 'step' must be an int >= 0, got {step!r}")
        known = set(self.defaults)
        for name in [*hyper, *(name for group in groups or () for name in group if name != "params")]:
            if name not in known:
                raise ValueError(f"{owner}.load_state_dict: unknown hyper-parameter {name!r}")
        if groups is not None:
            indices = [tuple(group.get("params", ())) for group in groups]
            if indices != self._group_indices:
                raise ValueError(f"{owner}.load_state_dict: the state has {len(groups)} parameter group(s) of sizes "
                                 f"{[len(i) for i in indices]}, this optimizer {[len(i) for i in self._group_indices]}")
        try:
            defaults = type(self).check_hyperparameters({**self.defaults, **hyper})
            owns, values = [], []
            for number, (group, own) in enumerate(zip(self.param_groups, self._own_keys)):
                given = {k: v for k, v in (groups[number] if groups else {}).items() if k != "params"}
                owns.append(own | set(given))
                merged = {k: given.get(k, group[k] if k in own else defaults[k]) for k in defaults}
                values.append(self._checked_group(number, merged))
        except ValueError as exc:
            raise ValueError(f"{owner}.load_state_dict: {exc}") from None
        self.defaults.update(defaults)
        for group, checked in zip(self.param_groups, values):
            group.update(checked)
        self._own_keys = owns
        self.state = states
        self.step_count = int(step)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hyper})"


class SGD(Optimizer):
    possible_state = ("momentum_buffer",)   # starts as the first gradient, not as zeros
    momentum, dampening, nesterov, weight_decay = _Hyper(), _Hyper(), _Hyper(), _Hyper()

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        checked = {**super().check_hyperparameters(values),
                   "momentum": _check(owner, "momentum", values["momentum"], 0.0, 1.0),
                   "dampening": _check(owner, "dampening", values["dampening"], 0.0, 1.0, high_open=False),
                   "weight_decay": _check(owner, "weight_decay", values["weight_decay"], 0.0),
                   "nesterov": _flag(owner, "nesterov", values["nesterov"])}
        if checked["nesterov"] and (checked["momentum"] == 0 or checked["dampening"] != 0):
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0 and dampening = 0")
        return checked

    def update(self, xp, theta, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * theta
        if self.momentum:
            previous = state.get("momentum_buffer")
            buf = grad if previous is None else self.momentum * previous + (1.0 - self.dampening) * grad
            state["momentum_buffer"] = buf
            grad = grad + self.momentum * buf if self.nesterov else buf
        return theta - self.lr * grad

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adagrad(Optimizer):
    possible_state = ("sum",)
    state_names = possible_state
    lr_decay, weight_decay, eps = _Hyper(), _Hyper(), _Hyper()

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 eps: float = 1e-10):
        super().__init__(params, lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        return {**super().check_hyperparameters(values),
                "lr_decay": _check(owner, "lr_decay", values["lr_decay"], 0.0),
                "weight_decay": _check(owner, "weight_decay", values["weight_decay"], 0.0),
                "eps": _check(owner, "eps", values["eps"], 0.0)}

    def update(self, xp, theta, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * theta
        clr = self.lr / (1.0 + (state["step"] - 1) * self.lr_decay)
        state["sum"] = state["sum"] + grad * grad
        return theta - clr * grad / (xp.sqrt(state["sum"]) + self.eps)

    def hyperparameters(self):
        return {"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay, "eps": self.eps}


class RMSprop(Optimizer):
    possible_state = ("square_avg", "momentum_buffer", "grad_avg")
    alpha, eps, weight_decay, momentum, centered = _Hyper(), _Hyper(), _Hyper(), _Hyper(), _Hyper()

    @property
    def state_names(self):
        return ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) + \
            (("grad_avg",) if self.centered else ())

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False):
        super().__init__(params, lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        return {**super().check_hyperparameters(values),
                "alpha": _check(owner, "alpha", values["alpha"], 0.0, 1.0, high_open=False),
                "eps": _check(owner, "eps", values["eps"], 0.0),
                "weight_decay": _check(owner, "weight_decay", values["weight_decay"], 0.0),
                "momentum": _check(owner, "momentum", values["momentum"], 0.0, 1.0),
                "centered": _flag(owner, "centered", values["centered"])}

    def update(self, xp, theta, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * theta
        state["square_avg"] = self.alpha * state["square_avg"] + (1.0 - self.alpha) * grad * grad
        average = state["square_avg"]
        if self.centered:
            state["grad_avg"] = self.alpha * state["grad_avg"] + (1.0 - self.alpha) * grad
            average = average - state["grad_avg"] * state["grad_avg"]
        direction = grad / (xp.sqrt(average) + self.eps)
        if self.momentum:
            state["momentum_buffer"] = self.momentum * state["momentum_buffer"] + direction
            direction = state["momentum_buffer"]
        return theta - self.lr * direction

    def hyperparameters(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}


class Adam(Optimizer):
    possible_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    decoupled = False
    betas, eps, weight_decay, amsgrad = _Hyper(), _Hyper(), _Hyper(), _Hyper()

    @property
    def state_names(self):
        return self.possible_state if self.amsgrad else self.possible_state[:2]

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

    @classmethod
    def check_hyperparameters(cls, values):
        owner, betas = cls.__name__, values["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair, got {betas!r}")
        return {**super().check_hyperparameters(values),
                "betas": (_check(owner, "betas[0]", betas[0], 0.0, 1.0), _check(owner, "betas[1]", betas[1], 0.0, 1.0)),
                "eps": _check(owner, "eps", values["eps"], 0.0),
                "weight_decay": _check(owner, "weight_decay", values["weight_decay"], 0.0),
                "amsgrad": _flag(owner, "amsgrad", values["amsgrad"])}

    def update(self, xp, theta, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                theta = theta * (1.0 - self.lr * self.weight_decay)
            else:
                grad = grad + self.weight_decay * theta
        # The moment estimates belong to this optimizer alone, so they are updated in place (no fresh
        # parameter-sized arrays every step); on backends with immutable arrays (JAX) the augmented
        # assignments rebind instead. Same operations, in the same order, as the formula above.
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * grad * grad
        state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
        second = exp_avg_sq
        if self.amsgrad:
            state["max_exp_avg_sq"] = xp.maximum(state["max_exp_avg_sq"], second)
            second = state["max_exp_avg_sq"]
        t = state["step"]
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(second)
        denom /= math.sqrt(1.0 - beta2 ** t)
        denom += self.eps
        step = exp_avg / denom
        step *= step_size
        return theta - step

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ shrinks by lr·λ before the Adam step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


# ---------------------------------------------------------------------------- schedules
class LRScheduler:
    """Sets the learning rate of every parameter group from the epoch count; call ``step()`` once per epoch.
    Each group's schedule starts from its own learning rate (``base_lrs``), as in torch.optim."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an xpcnn optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.defaults["lr"]
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        """The learning rate at ``epoch`` of a group that started at ``base_lr`` (default: the optimizer's)."""
        raise NotImplementedError

    def apply(self) -> float:
        """Set every group's learning rate for the current epoch; returns the first group's."""
        self.optimizer.defaults["lr"] = self.lr_at(self.epoch, self.base_lr)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.epoch, base)
        return self.optimizer.lr

    def step(self) -> float:
        self.epoch += 1
        return self.apply()

    config_names: tuple[str, ...] = ()     # the constructor arguments other than the optimizer
    needs_metric = False                   # step(metric) instead of step(): fit passes logs[self.monitor]

    def config(self) -> dict[str, Any]:
        """The constructor arguments other than the optimizer (checkpoints rebuild the schedule from them)."""
        return {name: getattr(self, name) for name in self.config_names}

    def state_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "epoch": self.epoch, "base_lr": self.base_lr, "base_lrs": self.base_lrs}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        base_lrs = [float(v) for v in saved.get("base_lrs", [saved["base_lr"]] * len(self.base_lrs))]
        if len(base_lrs) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has {len(base_lrs)} parameter "
                             f"group(s), the optimizer {len(self.base_lrs)}")
        self.epoch, self.base_lr, self.base_lrs = int(saved["epoch"]), float(saved["base_lr"]), base_lrs
        self.apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    config_names = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size = positive_int("StepLR", "step_size", step_size)
        self.gamma = _check("StepLR", "gamma", gamma, 0.0)

    def lr_at(self, epoch, base_lr=None):
        return (self.base_lr if base_lr is None else base_lr) * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(π epoch / T_max)) / 2 (past T_max it rises again, as in PyTorch)."""

    config_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max = positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _check("CosineAnnealingLR", "eta_min", eta_min, 0.0)

    def lr_at(self, epoch, base_lr=None):
        base = self.base_lr if base_lr is None else base_lr
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class ReduceLROnPlateau(LRScheduler):
    """Multiply every group's learning rate by ``factor`` (not below ``min_lr``) once ``monitor`` has not
    improved for more than ``patience`` epochs, then wait ``cooldown`` epochs; torch.optim's rule and
    defaults. Improvement means below ``best * (1 - threshold)`` in mode "min" with threshold_mode "rel"
    (``best - threshold`` with "abs"; the mirror image in mode "max"). ``mode="auto"`` (the default, as in
    Keras; torch.optim, which has no ``monitor``, defaults to "min") takes "max" for an accuracy and "min"
    otherwise, the rule EarlyStopping follows.

    ``fit(..., scheduler=ReduceLROnPlateau(optimizer))`` steps it with ``logs[monitor]`` after each epoch
    ("val_loss" by default, which needs validation data), and checkpoints keep its state; in
    ``fit(..., callbacks=[...])`` it works as Keras' callback of that name (its state is then not saved);
    ``step(metric)`` steps it by hand.
    """

    config_names = ("monitor", "mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr")
    needs_metric = True
    MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, optimizer, monitor: str = "val_loss", mode: str = "auto", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0):
        super().__init__(optimizer)
        owner = "ReduceLROnPlateau"
        if monitor not in self.MONITORS:
            raise ValueError(f"{owner}: monitor must be one of {', '.join(self.MONITORS)}, got {monitor!r}")
        mode = monitor_mode(owner, monitor, mode)      # "auto": EarlyStopping's rule (an accuracy goes up)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{owner}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.monitor, self.mode, self.threshold_mode = monitor, mode, threshold_mode
        self.factor = _check(owner, "factor", factor, 0.0, 1.0, low_open=True)
        self.patience = int(_check(owner, "patience", patience, 0))
        self.threshold = _check(owner, "threshold", threshold, 0.0)
        self.cooldown = int(_check(owner, "cooldown", cooldown, 0))
        self.min_lr = _check(owner, "min_lr", min_lr, 0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def _improves(self, value: float) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0
        margin = abs(self.best) * self.threshold if self.threshold_mode == "rel" else self.threshold
        if math.isinf(self.best):
            return value * sign < self.best * sign
        return value * sign < self.best * sign - margin

    def step(self, metric: float | None = None) -> float:
        if metric is None:
            raise TypeError(f"ReduceLROnPlateau.step: pass the epoch's {self.monitor} (fit does)")
        value = float(metric)
        self.epoch += 1
        if self._improves(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
            self.optimizer.defaults["lr"] = max(self.optimizer.defaults["lr"] * self.factor, self.min_lr)
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return self.optimizer.lr

    # as a callback of fit (xpcnn.callbacks re-exports the class)
    def on_train_begin(self, trainer) -> None: ...

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau: the epoch's logs have no {self.monitor!r} (they have "
                             f"{', '.join(sorted(logs))}); give fit validation data or choose monitor='loss'")
        self.step(logs[self.monitor])

    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "lrs": [group["lr"] for group in self.optimizer.param_groups]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        lrs = [float(v) for v in saved["lrs"]]
        if len(lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: the state has {len(lrs)} parameter group(s), "
                             f"the optimizer {len(self.optimizer.param_groups)}")
        self.epoch, self.best = int(saved["epoch"]), float(saved["best"])
        self.num_bad_epochs, self.cooldown_counter = int(saved["num_bad_epochs"]), int(saved["cooldown_counter"])
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.optimizer.defaults["lr"] = lrs[0]


SCHEDULERS = {cls.__name__: cls for cls in (StepLR, CosineAnnealingLR, ReduceLROnPlateau)}


# ---------------------------------------------------------------------------- gradients
def clip_grad_norm(parameters: Iterable[Parameter], max_norm: float) -> Any:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does: with n = sqrt(Σ |g|²) over every gradient, each g is
    multiplied by min(1, max_norm / (n + 1e-6)).

    Everything stays on the device: one concatenation, one sum of squares, one scale factor, and no
    value is read (a GPU does not synchronise). Returns n as a 0-d array of the gradients' library, or
    None when no parameter has a gradient. Frozen parameters (``requires_grad=False``) have none.
    """
    max_norm = _check("clip_grad_norm", "max_norm", max_norm, 0.0, low_open=True)
    params = [p for p in parameters if isinstance(p, Parameter) and p.grad is not None]
    if not params:
        return None
    grads = [p.grad for p in params]
    xp = array_api_compat.array_namespace(*grads)
    dtype = grads[0].dtype
    flat = _joined(xp, [xp.astype(g, dtype, copy=False) for g in grads])
    norm = xp.sqrt(xp.sum(flat * flat))
    factor = xp.minimum(max_norm / (norm + 1e-6), xp.ones_like(norm))
    for p in params:
        p.grad = p.grad * xp.astype(factor, p.grad.dtype, copy=False)
    return norm
