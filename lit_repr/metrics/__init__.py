"""Readouts: torchmetrics Metrics whose states are sufficient statistics (or bounded samples).

The contract a callback drives is in :mod:`lit_repr.metrics.readout`; the one bounded-sample
mechanism is :class:`~lit_repr.metrics.samples.SampleBuffer`.
"""

from lit_repr.metrics.arrays import ProbeResult, fit_probe
from lit_repr.metrics.covariance import CovarianceMoments
from lit_repr.metrics.identifiability import DCI, KernelIdentifiability, LinearIdentifiability, dci, kernel_ridge_r2
from lit_repr.metrics.logistic import fit_logistic
from lit_repr.metrics.mcc import MCCResult, MeanCorrelationCoefficient, correlation_matrix, mean_correlation_coefficient
from lit_repr.metrics.probe import ProbeReadout
from lit_repr.metrics.readout import FIT, HELDOUT, MetricReadout, Readout, as_readout, scalars
from lit_repr.metrics.ridge import DEFAULT_ALPHAS, RidgeFit, StreamingRidge, moments_score
from lit_repr.metrics.sae import FiringFrequency, FractionOfVarianceExplained, MeanL0
from lit_repr.metrics.samples import SampleBuffer
from lit_repr.metrics.similarity import LinearCKA, MutualKNNAlignment, linear_cka, mutual_knn_alignment

__all__ = [
    "DEFAULT_ALPHAS", "RidgeFit", "StreamingRidge", "moments_score",
    "FIT", "HELDOUT", "Readout", "MetricReadout", "as_readout", "scalars", "SampleBuffer",
    "ProbeReadout", "ProbeResult", "fit_logistic", "fit_probe",
    "MCCResult", "MeanCorrelationCoefficient", "correlation_matrix", "mean_correlation_coefficient",
    "LinearIdentifiability", "KernelIdentifiability", "DCI", "kernel_ridge_r2", "dci",
    "LinearCKA", "MutualKNNAlignment", "linear_cka", "mutual_knn_alignment",
    "FractionOfVarianceExplained", "MeanL0", "FiringFrequency",
    "CovarianceMoments",
]
