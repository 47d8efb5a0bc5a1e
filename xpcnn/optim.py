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
from typing import Any, Iterable

import array_api_compat
import numpy as np

from .backend import device_copy, like, same_place, to_numpy
from .checks import positive_int
from .layers.base import Parameter


def _check(owner: str, name: str, value: Any, low: float, high: float | None = None,
           low_open: bool = False, high_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{owner}: {name} must be in {left}{low}, {right}, got {value!r}")
    return float(value)


def _joined(xp, arrays: list) -> Any:
    """``arrays`` flattened into one 1-D array (a reshape, no copy, when there is only one)."""
    flat = [xp.reshape(a, (-1,)) for a in arrays]
    return flat[0] if len(flat) == 1 else xp.concat(flat)


def _follow(state: dict[str, Any], data: Any) -> None:
    """Move a parameter's state arrays to the parameter's library and device (after the model moved)."""
    for name, value in state.items():
        if name != "step" and not same_place(value, data):
            state[name] = like(value, data)


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


class Optimizer:
    """Base class: holds the parameters, the learning rate and lazily created per-parameter state."""

    possible_state: tuple[str, ...] = ()   # every per-parameter entry this class may keep

    @property
    def state_names(self) -> tuple[str, ...]:
        """The per-parameter arrays created as zeros on first use (for the current hyper-parameters)."""
        return ()

    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for index, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: parameter {index} is a {type(p).__name__}, not a Parameter; "
                                "pass model.parameters()")
        self.lr = _check(type(self).__name__, "lr", lr, 0.0)
        self.step_count = 0
        self.state = [{} for _ in self.params]

    @property
    def state(self) -> list[dict[str, Any]]:
        """Per-parameter state: ``state[i]["exp_avg"]``, ..., ``state[i]["step"]`` (what state_dict saves).
        Steps keep it as flat arrays (see :meth:`step`); reading it splits them back into per-parameter arrays."""
        self._unflatten()
        return self._state

    @state.setter
    def state(self, states: list[dict[str, Any]]) -> None:
        self._state, self._flat = states, None
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
        """Update every parameter that has a gradient. Gradients are checked first, so a NaN or a wrong
        shape leaves every parameter and every state unchanged.

        The parameters that have a gradient are updated together when they share one library, device
        and dtype (and one step count): their gradients are concatenated once, the update formula runs
        once on flat arrays (a handful of kernel launches whatever the number of parameters), and each
        ``p.data`` becomes its slice of the result (a view on NumPy, CuPy and PyTorch; a copy on JAX).
        Otherwise, or when a parameter has no gradient (it is skipped, as torch.optim skips it), each
        parameter is updated on its own, with the same formula.
        """
        for index, p in enumerate(self.params):
            if p.grad is not None and tuple(p.grad.shape) != tuple(p.data.shape):
                raise ValueError(f"{type(self).__name__}: gradient {index} has shape {tuple(p.grad.shape)}, "
                                 f"its parameter {tuple(p.data.shape)}")
        self.step_count += 1
        active = tuple(index for index, p in enumerate(self.params) if p.grad is not None)
        flat = self._flat
        if flat is None or flat.indices != active or any(self.params[i].data is not self._written[i] for i in active):
            flat = self._flatten(active)
        if flat is None:
            self._step_each(active)
            return
        xp = flat.xp
        grad = xp.astype(_joined(xp, [self.params[i].grad for i in active]), flat.theta.dtype, copy=False)
        flat.state["step"] += 1
        flat.theta = self.update(xp, flat.theta, grad, flat.state)
        for index, shape, (start, stop) in zip(active, flat.shapes, flat.bounds):
            self.params[index].data = self._written[index] = xp.reshape(flat.theta[start:stop], shape)

    def _flatten(self, active: tuple[int, ...]) -> "_Flat | None":
        """The flat arrays for the parameters ``active`` (and their state), or None when they cannot share
        them: different libraries, devices or dtypes, or states of different histories."""
        self._unflatten()
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
        self._flat = _Flat(active, [tuple(p.shape) for p in params], list(zip([0] + ends[:-1], ends)), xp, theta,
                           flat_state)
        return self._flat

    def _unflatten(self) -> None:
        """Split the flat arrays of the last steps back into per-parameter state (views where the library has them)."""
        flat, self._flat = self._flat, None
        if flat is None:
            return
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

    def state_dict(self) -> dict[str, Any]:
        """Host copies: ``{"step": int, "hyper": {...}, "state": {"0.exp_avg": ndarray, ...}}``."""
        flat = {f"{i}.{name}": np.array(value if name == "step" else to_numpy(value), copy=True)
                for i, state in enumerate(self.state) for name, value in state.items()}
        return {"type": type(self).__name__, "step": self.step_count, "hyper": self.hyperparameters(), "state": flat}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; checked whole before anything changes."""
        owner = type(self).__name__
        if saved.get("type", owner) != owner:
            raise ValueError(f"{owner}.load_state_dict: the state was saved by {saved['type']}")
        states: list[dict[str, Any]] = [{} for _ in self.params]
        for key, value in saved.get("state", {}).items():
            index_text, _, name = key.partition(".")
            if not index_text.isdigit() or int(index_text) >= len(self.params) or name not in self.valid_state:
                raise ValueError(f"{owner}.load_state_dict: unexpected state entry {key!r}")
            param = self.params[int(index_text)]
            value = np.array(to_numpy(value), copy=True)     # a copy: the state is updated in place
            if name == "step":
                states[int(index_text)][name] = int(value)
                continue
            if value.shape != param.shape:
                raise ValueError(f"{owner}.load_state_dict: {key!r} has shape {value.shape}, "
                                 f"its parameter {param.shape}")
            states[int(index_text)][name] = like(value, param.data)   # the parameter's own device and dtype
        hyper = dict(saved.get("hyper", {}))
        for name, value in hyper.items():
            if not hasattr(self, name):
                raise ValueError(f"{owner}.load_state_dict: unknown hyper-parameter {name!r}")
        for name, value in hyper.items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        self.state = states
        self.step_count = int(saved.get("step", 0))

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hyper})"


class SGD(Optimizer):
    possible_state = ("momentum_buffer",)   # starts as the first gradient, not as zeros

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _check("SGD", "momentum", momentum, 0.0, 1.0)
        self.dampening = _check("SGD", "dampening", dampening, 0.0, 1.0, high_open=False)
        self.weight_decay = _check("SGD", "weight_decay", weight_decay, 0.0)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

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

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 eps: float = 1e-10):
        super().__init__(params, lr)
        self.lr_decay = _check("Adagrad", "lr_decay", lr_decay, 0.0)
        self.weight_decay = _check("Adagrad", "weight_decay", weight_decay, 0.0)
        self.eps = _check("Adagrad", "eps", eps, 0.0)

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

    @property
    def state_names(self):
        return ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) + \
            (("grad_avg",) if self.centered else ())

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False):
        super().__init__(params, lr)
        self.alpha = _check("RMSprop", "alpha", alpha, 0.0, 1.0, high_open=False)
        self.eps = _check("RMSprop", "eps", eps, 0.0)
        self.weight_decay = _check("RMSprop", "weight_decay", weight_decay, 0.0)
        self.momentum = _check("RMSprop", "momentum", momentum, 0.0, 1.0)
        self.centered = bool(centered)

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

    @property
    def state_names(self):
        return self.possible_state if self.amsgrad else self.possible_state[:2]

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False):
        super().__init__(params, lr)
        owner = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair, got {betas!r}")
        self.betas = (_check(owner, "betas[0]", betas[0], 0.0, 1.0), _check(owner, "betas[1]", betas[1], 0.0, 1.0))
        self.eps = _check(owner, "eps", eps, 0.0)
        self.weight_decay = _check(owner, "weight_decay", weight_decay, 0.0)
        self.amsgrad = bool(amsgrad)

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
    """Sets ``optimizer.lr`` from the epoch count; call ``step()`` once per epoch."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an xpcnn optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr

    config_names: tuple[str, ...] = ()     # the constructor arguments other than the optimizer

    def config(self) -> dict[str, Any]:
        """The constructor arguments other than the optimizer (checkpoints rebuild the schedule from them)."""
        return {name: getattr(self, name) for name in self.config_names}

    def state_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.epoch, self.base_lr = int(saved["epoch"]), float(saved["base_lr"])
        self.optimizer.lr = self.lr_at(self.epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    config_names = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size = positive_int("StepLR", "step_size", step_size)
        self.gamma = _check("StepLR", "gamma", gamma, 0.0)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(π epoch / T_max)) / 2 (past T_max it rises again, as in PyTorch)."""

    config_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max = positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _check("CosineAnnealingLR", "eta_min", eta_min, 0.0)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


SCHEDULERS = {cls.__name__: cls for cls in (StepLR, CosineAnnealingLR)}
