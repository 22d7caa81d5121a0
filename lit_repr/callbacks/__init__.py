"""Callbacks that read representations during any Lightning run."""

from lit_repr.callbacks.base import TapCallback, frozen_mode
from lit_repr.callbacks.identifiability import IdentifiabilityMetrics, RepresentationSimilarity
from lit_repr.callbacks.kernel_distance import KernelDistance
from lit_repr.callbacks.probe import LinearProbe

__all__ = ["TapCallback", "frozen_mode", "LinearProbe", "IdentifiabilityMetrics", "RepresentationSimilarity",
           "KernelDistance"]
