"""The update rules torch.optim documents. With g = grad + weight_decay * θ (AdamW decays θ directly
instead), t = step count:

    SGD        b = μ b + (1 - τ) g  (b = g at t = 1);  g' = g + μ b (Nesterov) or b;  θ -= lr g'
    Adagrad    s += g²;  θ -= lr / (1 + (t - 1) lr_decay) · g / (sqrt(s) + ε)
    RMSprop    v = α v + (1 - α) g²;  θ -= lr g / (sqrt(v) + ε)   (momentum and centred variants)
    Adam       m = β1 m + (1 - β1) g;  v = β2 v + (1 - β2) g²;  θ -= lr/(1 - β1^t) · m / (sqrt(v)/sqrt(1 - β2^t) + ε)
    AdamW      θ *= 1 - lr λ, then Adam without weight decay in g

Every update returns a new θ instead of writing into it, so the same code runs on backends whose arrays
are immutable (JAX). State is created on first use with ``zeros_like(theta)``, on the parameter's device.
"""
from __future__ import annotations

import math

from .base import Optimizer
from .checks import flag, in_range


def _zeros(xp, state, name, theta):
    """``state[name]``, created as zeros like ``theta`` on first use."""
    if name not in state:
        state[name] = xp.zeros_like(theta)
    return state[name]


class SGD(Optimizer):
    state_names = ("momentum_buffer",)    # starts as the first gradient, not as zeros

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, *, clip_grad_norm: float | None = None):
        super().__init__(params, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay, clip_grad_norm=clip_grad_norm)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        checked = {**super().check_hyperparameters(values),
                   "momentum": in_range(owner, "momentum", values["momentum"], 0.0, 1.0),
                   "dampening": in_range(owner, "dampening", values["dampening"], 0.0, 1.0, high_open=False),
                   "weight_decay": in_range(owner, "weight_decay", values["weight_decay"], 0.0),
                   "nesterov": flag(owner, "nesterov", values["nesterov"])}
        if checked["nesterov"] and (checked["momentum"] == 0 or checked["dampening"] != 0):
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0 and dampening = 0")
        return checked

    def update(self, xp, theta, grad, state, hp):
        if hp["weight_decay"]:
            grad = grad + hp["weight_decay"] * theta
        momentum = hp["momentum"]
        if momentum:
            previous = state.get("momentum_buffer")
            buf = grad if previous is None else momentum * previous + (1.0 - hp["dampening"]) * grad
            state["momentum_buffer"] = buf
            grad = grad + momentum * buf if hp["nesterov"] else buf
        return theta - hp["lr"] * grad


class Adagrad(Optimizer):
    state_names = ("sum",)

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 eps: float = 1e-10, *, clip_grad_norm: float | None = None):
        super().__init__(params, lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                         clip_grad_norm=clip_grad_norm)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        return {**super().check_hyperparameters(values),
                "lr_decay": in_range(owner, "lr_decay", values["lr_decay"], 0.0),
                "weight_decay": in_range(owner, "weight_decay", values["weight_decay"], 0.0),
                "eps": in_range(owner, "eps", values["eps"], 0.0)}

    def update(self, xp, theta, grad, state, hp):
        if hp["weight_decay"]:
            grad = grad + hp["weight_decay"] * theta
        clr = hp["lr"] / (1.0 + (state["step"] - 1) * hp["lr_decay"])
        state["sum"] = _zeros(xp, state, "sum", theta) + grad * grad
        return theta - clr * grad / (xp.sqrt(state["sum"]) + hp["eps"])


class RMSprop(Optimizer):
    state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, *, clip_grad_norm: float | None = None):
        super().__init__(params, lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, clip_grad_norm=clip_grad_norm)

    @classmethod
    def check_hyperparameters(cls, values):
        owner = cls.__name__
        return {**super().check_hyperparameters(values),
                "alpha": in_range(owner, "alpha", values["alpha"], 0.0, 1.0, high_open=False),
                "eps": in_range(owner, "eps", values["eps"], 0.0),
                "weight_decay": in_range(owner, "weight_decay", values["weight_decay"], 0.0),
                "momentum": in_range(owner, "momentum", values["momentum"], 0.0, 1.0),
                "centered": flag(owner, "centered", values["centered"])}

    def update(self, xp, theta, grad, state, hp):
        alpha = hp["alpha"]
        if hp["weight_decay"]:
            grad = grad + hp["weight_decay"] * theta
        state["square_avg"] = alpha * _zeros(xp, state, "square_avg", theta) + (1.0 - alpha) * grad * grad
        average = state["square_avg"]
        if hp["centered"]:
            state["grad_avg"] = alpha * _zeros(xp, state, "grad_avg", theta) + (1.0 - alpha) * grad
            average = average - state["grad_avg"] * state["grad_avg"]
        direction = grad / (xp.sqrt(average) + hp["eps"])
        if hp["momentum"]:
            state["momentum_buffer"] = hp["momentum"] * _zeros(xp, state, "momentum_buffer", theta) + direction
            direction = state["momentum_buffer"]
        return theta - hp["lr"] * direction


class Adam(Optimizer):
    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, clip_grad_norm: float | None = None):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         clip_grad_norm=clip_grad_norm)

    @classmethod
    def check_hyperparameters(cls, values):
        owner, betas = cls.__name__, values["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair, got {betas!r}")
        return {**super().check_hyperparameters(values),
                "betas": (in_range(owner, "betas[0]", betas[0], 0.0, 1.0),
                          in_range(owner, "betas[1]", betas[1], 0.0, 1.0)),
                "eps": in_range(owner, "eps", values["eps"], 0.0),
                "weight_decay": in_range(owner, "weight_decay", values["weight_decay"], 0.0),
                "amsgrad": flag(owner, "amsgrad", values["amsgrad"])}

    def update(self, xp, theta, grad, state, hp):
        (beta1, beta2), lr, weight_decay = hp["betas"], hp["lr"], hp["weight_decay"]
        if weight_decay:
            if self.decoupled:
                theta = theta * (1.0 - lr * weight_decay)
            else:
                grad = grad + weight_decay * theta
        # The moment estimates belong to this optimizer alone, so they are updated in place (no fresh
        # parameter-sized arrays every step); on backends with immutable arrays (JAX) the augmented
        # assignments rebind instead. Same operations, in the same order, as the formula above.
        exp_avg, exp_avg_sq = _zeros(xp, state, "exp_avg", theta), _zeros(xp, state, "exp_avg_sq", theta)
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * grad * grad
        state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
        second = exp_avg_sq
        if hp["amsgrad"]:
            state["max_exp_avg_sq"] = second = xp.maximum(_zeros(xp, state, "max_exp_avg_sq", theta), second)
        t = state["step"]
        denom = xp.sqrt(second)
        denom /= math.sqrt(1.0 - beta2 ** t)
        denom += hp["eps"]
        step = exp_avg / denom
        step *= lr / (1.0 - beta1 ** t)
        return theta - step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ shrinks by lr·λ before the Adam step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, *, clip_grad_norm: float | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, clip_grad_norm=clip_grad_norm)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
