"""Callbacks that read representations during any Lightning run."""

from lit_repr.callbacks.base import TapCallback, frozen_mode
from lit_repr.callbacks.identifiability import IdentifiabilityMetrics, RepresentationSimilarity
from lit_repr.callbacks.kernel_distance import KernelDistance
from lit_repr.callbacks.phyip import PhyIPReport
from lit_repr.callbacks.probe import LinearProbe
from lit_repr.callbacks.progress import LineProgressBar
from lit_repr.callbacks.summary import RunSummary
from lit_repr.callbacks.whitening import Whitening

__all__ = ["TapCallback", "frozen_mode", "LinearProbe", "IdentifiabilityMetrics", "RepresentationSimilarity",
           "KernelDistance", "RunSummary", "LineProgressBar", "Whitening", "PhyIPReport"]
