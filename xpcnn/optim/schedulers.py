"""Learning-rate schedules: each sets the learning rate of every parameter group of an optimizer, as
torch.optim.lr_scheduler does (StepLR, CosineAnnealingLR from the epoch count; ReduceLROnPlateau from a
monitored value)."""
from __future__ import annotations

import math
from typing import Any

from ..checks import monitor_mode, positive_int
from .base import Optimizer
from .checks import in_range


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
        self.gamma = in_range("StepLR", "gamma", gamma, 0.0)

    def lr_at(self, epoch, base_lr=None):
        return (self.base_lr if base_lr is None else base_lr) * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(π epoch / T_max)) / 2 (past T_max it rises again, as in PyTorch)."""

    config_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max = positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = in_range("CosineAnnealingLR", "eta_min", eta_min, 0.0)

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

    ``step(value)`` takes the epoch's value of ``monitor``; ``fit(..., scheduler=ReduceLROnPlateau(optimizer))``
    hands it ``logs[monitor]`` after each epoch ("val_loss" by default, which needs validation data), and
    checkpoints keep its state.
    """

    config_names = ("monitor", "mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr")
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
        self.factor = in_range(owner, "factor", factor, 0.0, 1.0, low_open=True)
        self.patience = int(in_range(owner, "patience", patience, 0))
        self.threshold = in_range(owner, "threshold", threshold, 0.0)
        self.cooldown = int(in_range(owner, "cooldown", cooldown, 0))
        self.min_lr = in_range(owner, "min_lr", min_lr, 0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def _improves(self, value: float) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0
        margin = abs(self.best) * self.threshold if self.threshold_mode == "rel" else self.threshold
        if math.isinf(self.best):
            return value * sign < self.best * sign
        return value * sign < self.best * sign - margin

    def step(self, value: float | None = None) -> float:
        """One epoch: ``value`` is its ``monitor`` (a number read on the host); returns the first group's lr."""
        if value is None:
            raise TypeError(f"ReduceLROnPlateau.step: pass the epoch's {self.monitor} (fit does)")
        value = float(value)
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
