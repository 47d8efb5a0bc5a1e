"""The optimizer base class: parameter groups and their hyper-parameters (checked by one class method, when
set), per-parameter state kept flat by one :class:`~xpcnn.optim.flat.FlatGroup` per group, global-norm
gradient clipping, snapshots and state dicts."""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from ..backend import device_copy, like, to_numpy
from ..layers.base import Parameter
from .checks import in_range
from .clipping import clip_scale, global_norm
from .flat import FlatGroup


class Optimizer:
    """Base class: holds the parameters (in groups, as torch.optim does), the hyper-parameters and lazily
    created per-parameter state. A subclass gives :meth:`update` (the formula), :meth:`check_hyperparameters`
    and ``state_names``.

    ``params`` is ``model.parameters()``, or a list of groups ``[{"params": [...], "lr": 0.01}, {"params":
    [...]}]`` where a group's own values replace the constructor's (``optimizer.param_groups[i]["lr"]``
    reads and sets them later). A parameter whose ``requires_grad`` is False (``layer.freeze()``) has no
    gradient, and a step leaves it alone.

    ``optimizer.lr`` (and each other hyper-parameter) reads the first group. Setting it checks the value as
    the constructor does (``optimizer.lr = -5`` is refused, and nothing changes), then sets the default and
    every group that did not give its own value. ``clip_grad_norm=c`` (None: off; Keras' ``global_clipnorm``)
    makes each step first scale the gradients of all its parameters to a global L2 norm of at most c, by
    ``torch.nn.utils.clip_grad_norm_``'s rule, on the device (``p.grad`` itself is left as it was).
    """

    state_names: tuple[str, ...] = ()      # the per-parameter arrays this class may keep, besides "step"

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float, *,
                 clip_grad_norm: float | None = None, **hyperparameters: Any):
        owner = type(self).__name__
        self.defaults: dict[str, Any] = type(self).check_hyperparameters({"lr": lr, **hyperparameters})
        groups = _groups(owner, params, self.defaults)
        self.clip_grad_norm = clip_grad_norm
        self._own_keys = [set(group) - {"params"} for group in groups]
        self.param_groups = [{**group, **{k: v for k, v in self.defaults.items() if k not in group}} for group in groups]
        self._checked: list[dict | None] = [None] * len(groups)     # each group as last checked
        for number in range(len(groups)):
            self._check_group(number)
        self.params = [p for group in groups for p in group["params"]]
        self._flats = [FlatGroup(group["params"]) for group in groups]
        ends = list(itertools.accumulate(len(group["params"]) for group in groups))
        self._indices = [tuple(range(end - len(group["params"]), end)) for group, end in zip(groups, ends)]
        self.step_count = 0

    @classmethod
    def check_hyperparameters(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (every hyper-parameter of this class; other keys are ignored) checked as the constructor
        checks its arguments, and normalised (floats, bools, a tuple of betas). A ValueError names the first
        bad value. Subclasses extend it with their own hyper-parameters."""
        return {"lr": in_range(cls.__name__, "lr", values["lr"], 0.0)}

    def _checked_values(self, number: int, values: dict[str, Any]) -> dict[str, Any]:
        """check_hyperparameters for values of group ``number``; the error names the group when there are
        several, or when the group has its own values."""
        try:
            return type(self).check_hyperparameters(values)
        except ValueError as exc:
            if len(self.param_groups) == 1 and not self._own_keys[number]:
                raise
            raise ValueError(f"parameter group {number}: {exc}") from None

    def _check_group(self, number: int) -> None:
        group = self.param_groups[number]
        group.update(self._checked_values(number, group))
        self._checked[number] = dict(group)

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("defaults", ()):
            return self.param_groups[0][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__dict__.get("defaults", ()):
            return super().__setattr__(name, value)
        value = type(self).check_hyperparameters({**self.defaults, name: value})[name]
        followers = [n for n, own in enumerate(self._own_keys) if name not in own]
        checked = [self._checked_values(n, {**self.param_groups[n], name: value}) for n in followers]
        self.defaults[name] = value
        for n, values in zip(followers, checked):
            self.param_groups[n].update(values)
            self._checked[n] = dict(self.param_groups[n])

    @property
    def clip_grad_norm(self) -> float | None:
        return self._clip_grad_norm

    @clip_grad_norm.setter
    def clip_grad_norm(self, value: float | None) -> None:
        owner = type(self).__name__
        self._clip_grad_norm = None if value is None else in_range(owner, "clip_grad_norm", value, 0.0, low_open=True)

    @property
    def state(self) -> list[dict[str, Any]]:
        """Per-parameter state: ``state[i]["exp_avg"]``, ..., ``state[i]["step"]`` (what state_dict saves).
        Steps keep it as flat arrays (see :meth:`step`); reading it splits them back into per-parameter arrays."""
        return [state for flat in self._flats for state in flat.per_parameter()]

    @state.setter
    def state(self, states: list[dict[str, Any]]) -> None:
        for flat, indices in zip(self._flats, self._indices):
            flat.load([states[i] for i in indices])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient. Checked first, so that a failure changes no parameter
        and no state of any group: each gradient's shape, and the hyper-parameters of a group written since
        they were checked (``param_groups[1]["lr"] = "fast"`` is refused here), as the constructor checks them.

        Gradient values are not read (that would read device memory every step): a NaN or infinite
        gradient is applied as torch.optim applies it, and spreads into the parameters and the state.
        ``fit`` reads the loss every ``log_every`` steps and at each epoch's end, and on a non-finite value
        restores the end of the last good epoch (``TrainingDiverged``); a custom loop can keep a
        :meth:`snapshot` and :meth:`restore` it in the same way.

        The parameters of a group that have a gradient are updated together on flat arrays when they share
        one library, device and dtype (:class:`~xpcnn.optim.flat.FlatGroup`); a parameter without a gradient
        is skipped, as torch.optim skips it.
        """
        _check_gradients(type(self).__name__, self.params)
        for number, group in enumerate(self.param_groups):
            if group != self._checked[number]:        # written since it was checked
                self._check_group(number)
        self.step_count += 1
        grads = [flat.gather() for flat in self._flats]
        if self.clip_grad_norm is not None:
            grads = self._clipped(grads)
        for flat, group, group_grads in zip(self._flats, self.param_groups, grads):
            flat.apply(self.update, group_grads, group)

    def _clipped(self, grads: list[list]) -> list[list]:
        """The gradients of every group, scaled together to a global L2 norm of at most clip_grad_norm."""
        spaces = [flat.namespace() for flat, group_grads in zip(self._flats, grads) if group_grads]
        if not spaces:
            return grads
        xp = spaces[0]
        scale = clip_scale(xp, global_norm(xp, [g for group_grads in grads for g in group_grads]), self.clip_grad_norm)
        return [[g * xp.astype(scale, g.dtype, copy=False) for g in group_grads] for group_grads in grads]

    def update(self, xp, theta, grad, state: dict[str, Any], hp: Mapping[str, Any]):
        """Return the new θ from the old θ, its gradient, its state (``state["step"]`` counts its updates; the
        other entries are created here on first use, e.g. as ``xp.zeros_like(theta)``) and the group's
        hyper-parameters ``hp`` (``hp["lr"]``, ...)."""
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

    def hyperparameters(self) -> dict[str, Any]:
        """The defaults as plain data (tuples as lists), and clip_grad_norm when it is set."""
        clip = {} if self.clip_grad_norm is None else {"clip_grad_norm": self.clip_grad_norm}
        return {**_plain(self.defaults), **clip}

    def state_dict(self) -> dict[str, Any]:
        """Host copies: ``{"step": int, "hyper": {...}, "groups": [...], "state": {"0.exp_avg": ndarray, ...}}``
        (``hyper`` the defaults; ``groups`` each group's parameter indices and its own values)."""
        flat = {f"{i}.{name}": np.array(value if name == "step" else to_numpy(value), copy=True)
                for i, state in enumerate(self.state) for name, value in state.items()}
        groups = [{"params": list(indices), **{k: v for k, v in _plain(group).items() if k in own}}
                  for indices, group, own in zip(self._indices, self.param_groups, self._own_keys)]
        return {"type": type(self).__name__, "step": self.step_count, "hyper": self.hyperparameters(),
                "groups": groups, "state": flat}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; checked whole before anything changes (the hyper-parameters as
        the constructor checks them)."""
        owner = type(self).__name__
        if not isinstance(saved, Mapping):
            raise TypeError(f"{owner}.load_state_dict: expected the dict state_dict() returns, got {type(saved).__name__}")
        if saved.get("type", owner) != owner:
            raise ValueError(f"{owner}.load_state_dict: the state was saved by {saved['type']}")
        states = _loaded_states(owner, saved.get("state", {}), self.params, ("step", *self.state_names))
        hyper, groups, step = _saved_settings(owner, saved, self.defaults, self._indices)
        clip = hyper.pop("clip_grad_norm", self.clip_grad_norm)
        try:
            defaults = type(self).check_hyperparameters({**self.defaults, **hyper})
            clip = None if clip is None else in_range(owner, "clip_grad_norm", clip, 0.0, low_open=True)
            owns, values = [], []
            for number, (group, own) in enumerate(zip(self.param_groups, self._own_keys)):
                given = {k: v for k, v in (groups[number] if groups else {}).items() if k != "params"}
                owns.append(own | set(given))
                values.append(self._checked_values(number, {k: given.get(k, group[k] if k in own else defaults[k])
                                                            for k in defaults}))
        except ValueError as exc:
            raise ValueError(f"{owner}.load_state_dict: {exc}") from None
        self.defaults.update(defaults)
        for number, (group, checked) in enumerate(zip(self.param_groups, values)):
            group.update(checked)
            self._checked[number] = dict(group)
        self._own_keys, self.clip_grad_norm = owns, clip
        self.state, self.step_count = states, int(step)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.hyperparameters().items())})"


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as plain data for JSON (tuples as lists), without "params"."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "params"}


def _groups(owner: str, params, known: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``params`` as a list of groups ``{"params": [Parameter, ...], ...}``, checked: every item a Parameter,
    none in two places, no group empty, each group's own keys among the hyper-parameters ``known``."""
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
            unknown = sorted(set(item) - {"params"} - set(known))
            if unknown:
                raise ValueError(f"{owner}: parameter group {number} sets {', '.join(unknown)}, which {owner} does "
                                 f"not have (it has {', '.join(sorted(known))})")
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


def _check_gradients(owner: str, params: list[Parameter]) -> None:
    """Every gradient an array of its parameter's shape (None: no gradient)."""
    for index, p in enumerate(params):
        if p.grad is None:
            continue
        if not hasattr(p.grad, "shape"):
            raise TypeError(f"{owner}: gradient {index} is a {type(p.grad).__name__}, not an array")
        if tuple(p.grad.shape) != tuple(p.data.shape):
            raise ValueError(f"{owner}: gradient {index} has shape {tuple(p.grad.shape)}, "
                             f"its parameter {tuple(p.data.shape)}")


def _saved_settings(owner: str, saved: Mapping, defaults: dict, indices: list[tuple[int, ...]]) -> tuple:
    """``saved``'s hyper-parameters (a new dict), groups and step count, checked in form: known names, the
    groups of this optimizer's sizes, a count >= 0 (the values are checked by check_hyperparameters)."""
    hyper, groups, step = saved.get("hyper", {}), saved.get("groups"), saved.get("step", 0)
    if not isinstance(hyper, Mapping) or not (groups is None or isinstance(groups, (list, tuple)) and all(
            isinstance(group, Mapping) for group in groups)):
        raise TypeError(f"{owner}.load_state_dict: 'hyper' must be a dict and 'groups' a list of dicts, got "
                        f"{type(hyper).__name__} and {type(groups).__name__}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{owner}.load_state_dict: 'step' must be an int >= 0, got {step!r}")
    for name in [*(name for name in hyper if name != "clip_grad_norm"),
                 *(name for group in groups or () for name in group if name != "params")]:
        if name not in defaults:
            raise ValueError(f"{owner}.load_state_dict: unknown hyper-parameter {name!r}")
    if groups is not None and [tuple(group.get("params", ())) for group in groups] != indices:
        raise ValueError(f"{owner}.load_state_dict: the state has {len(groups)} parameter group(s) of sizes "
                         f"{[len(group.get('params', ())) for group in groups]}, this optimizer "
                         f"{[len(i) for i in indices]}")
    return dict(hyper), groups, step


def _loaded_states(owner: str, entries: Any, params: list[Parameter], names: tuple[str, ...]) -> list[dict]:
    """The per-parameter state in ``entries`` (``{"0.exp_avg": array, "0.step": count, ...}``), checked and
    copied onto each parameter's device and dtype."""
    if not isinstance(entries, Mapping):
        raise TypeError(f"{owner}.load_state_dict: 'state' must be a dict of arrays, got {type(entries).__name__}")
    states: list[dict[str, Any]] = [{} for _ in params]
    for key, value in entries.items():
        index_text, _, name = str(key).partition(".")
        if not index_text.isdigit() or int(index_text) >= len(params) or name not in names:
            raise ValueError(f"{owner}.load_state_dict: unexpected state entry {key!r}")
        param = params[int(index_text)]
        value = None if value is None else np.array(to_numpy(value), copy=True)  # a copy: updated in place
        if value is None or value.dtype.kind not in "biuf":
            raise ValueError(f"{owner}.load_state_dict: {key!r} must be an array of numbers, got "
                             f"{type(value).__name__ if value is None else value.dtype}")
        if name == "step":
            if value.size != 1 or value.dtype.kind == "f" and not float(value.reshape(())).is_integer() \
                    or value.reshape(()) < 0:
                raise ValueError(f"{owner}.load_state_dict: {key!r} must be a count >= 0, got {value!r}")
            states[int(index_text)][name] = int(value.reshape(()))
        elif value.shape != param.shape:
            raise ValueError(f"{owner}.load_state_dict: {key!r} has shape {value.shape}, its parameter {param.shape}")
        else:
            states[int(index_text)][name] = like(value, param.data)   # the parameter's own device and dtype
    return states
