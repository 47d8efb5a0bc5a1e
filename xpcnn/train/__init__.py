"""Training: the loop (fit / evaluate / predict) and the batches it feeds; the callbacks it calls live
in :mod:`xpcnn.callbacks` and are importable from here too. Works on anything with layers, state_dict
and train/eval modes; imports no module above it (never :mod:`xpcnn.model`).
"""
from ..callbacks import Callback, EarlyStopping, EpochPrinter, MetricsLogger, ModelCheckpoint
from .batches import batches
from .loop import LOSSES, History, Trainer, TrainingDiverged, evaluate, fit, predict

__all__ = ["fit", "evaluate", "predict", "History", "Trainer", "TrainingDiverged", "LOSSES", "batches",
           "Callback", "EarlyStopping", "EpochPrinter", "MetricsLogger", "ModelCheckpoint"]
