"""Optimizers and learning-rate schedules, with the update rules torch.optim documents.

- :mod:`.base`: :class:`Optimizer`: parameter groups and their hyper-parameters (checked by one class
  method when they are set), per-parameter state, gradient clipping in the step, state dicts;
- :mod:`.flat`: :class:`FlatGroup`: a group's parameters updated together on flat arrays (one kernel per
  operation of the formula, whatever the number of parameters);
- :mod:`.rules`: SGD, Adagrad, RMSprop, Adam, AdamW (``update(xp, theta, grad, state, hp)``);
- :mod:`.schedulers`: StepLR, CosineAnnealingLR, ReduceLROnPlateau;
- :mod:`.clipping`: :func:`clip_grad_norm` for custom loops.

A custom optimizer subclasses :class:`Optimizer`, gives ``check_hyperparameters`` (its hyper-parameters,
checked) and ``update``, which returns the new θ from θ, its gradient, its state and the group's
hyper-parameters ``hp``::

    class SignSGD(Optimizer):
        def __init__(self, params, lr=0.01):
            super().__init__(params, lr)

        def update(self, xp, theta, grad, state, hp):
            return theta - hp["lr"] * xp.sign(grad)
"""
from .base import Optimizer
from .clipping import clip_grad_norm
from .flat import FlatGroup
from .rules import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, RMSprop
from .schedulers import SCHEDULERS, CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

__all__ = ["OPTIMIZERS", "SCHEDULERS", "SGD", "Adagrad", "Adam", "AdamW", "CosineAnnealingLR", "FlatGroup",
           "LRScheduler", "Optimizer", "RMSprop", "ReduceLROnPlateau", "StepLR", "clip_grad_norm"]
