"""Readouts: torchmetrics Metrics whose states are sufficient statistics."""

from lit_repr.metrics.probe import FeatureCache, ProbeReadout, ProbeResult, fit_logistic, fit_probe
from lit_repr.metrics.ridge import DEFAULT_ALPHAS, RidgeFit, StreamingRidge, moments_score

__all__ = [
    "DEFAULT_ALPHAS", "RidgeFit", "StreamingRidge", "moments_score",
    "FeatureCache", "ProbeReadout", "ProbeResult", "fit_logistic", "fit_probe",
]
