"""Training: :class:`Trainer` (the loop: a step per batch, then the callbacks), the validated front door
``fit`` / ``evaluate`` / ``predict`` that builds one, and the batches it feeds. The callbacks live in
:mod:`xpcnn.callbacks` and are importable from here too. Works on any model of the :mod:`~xpcnn.train.protocol`
(a Sequential); imports no module above it (never :mod:`xpcnn.model`).
"""
from ..callbacks import (Callback, CallbackList, EarlyStopping, EpochPrinter, LRSchedule, MetricsLogger,
                         ModelCheckpoint)
from .batches import Batch, ProcessGroup, TrainingFeed, batches
from .extensions import TrainingDiverged
from .loop import LOSSES, evaluate, fit, predict
from .protocol import TrainableModel
from .trainer import History, Trainer, train_step

__all__ = ["fit", "evaluate", "predict", "History", "Trainer", "train_step", "TrainingFeed", "Batch", "ProcessGroup",
           "TrainableModel", "TrainingDiverged", "LOSSES", "batches", "Callback", "CallbackList", "EarlyStopping",
           "EpochPrinter", "LRSchedule", "MetricsLogger", "ModelCheckpoint"]
