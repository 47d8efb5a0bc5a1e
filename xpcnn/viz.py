"""Deprecated alias of :mod:`xpcnn.plots`, the one plotting module (kept for code written for xpcnn 0.1)."""
import warnings

from .plots import plot_feature_maps, plot_filters, plot_history

warnings.warn("xpcnn.viz is now part of xpcnn.plots; import from there", DeprecationWarning, stacklevel=2)

__all__ = ["plot_filters", "plot_feature_maps", "plot_history"]
