"""Interventions and the evidence ladder: edits at named sites, their effects, and each result's rung.

- :mod:`~lit_repr.interventions.edits`: :func:`intervene` and the edits (zero, mean and resample
  ablation, activation patching, directional ablation, steering, SAE feature ablation);
- :mod:`~lit_repr.interventions.effects`: effect metrics over a set of inputs with bootstrap intervals;
- :mod:`~lit_repr.interventions.patching`: patching sweeps over sites × positions or units, heat maps;
- :mod:`~lit_repr.interventions.callback`: :class:`InterventionReport`, the callback;
- :mod:`~lit_repr.interventions.ladder`: rungs, :func:`claim_gap` and the :func:`report` table.
"""

from lit_repr.interventions.callback import EffectReadout, InterventionReport, PatchingSweep
from lit_repr.interventions.edits import (
    ActivationCache,
    ActivationPatch,
    DirectionalAblation,
    Edit,
    MeanAblation,
    ResampleAblation,
    SAEFeatureAblation,
    Steering,
    ZeroAblation,
    bind_edits,
    cache_activations,
    intervene,
    model_signature,
    record_activations,
)
from lit_repr.interventions.effects import (
    AccuracyChange,
    EffectMetric,
    LogitChange,
    LossChange,
    ProbabilityChange,
    bootstrap_ci,
    effect_metrics,
)
from lit_repr.interventions.ladder import Claim, Evidence, Rung, claim_gap, evidence_from_scores, format_report, report
from lit_repr.interventions.patching import PatchingResult, patching_figure, patching_sweep

__all__ = [
    "Edit", "ZeroAblation", "MeanAblation", "ResampleAblation", "ActivationCache", "cache_activations",
    "record_activations", "ActivationPatch", "DirectionalAblation", "Steering", "SAEFeatureAblation", "intervene",
    "bind_edits", "model_signature", "EffectMetric", "LossChange", "LogitChange", "ProbabilityChange",
    "AccuracyChange", "bootstrap_ci", "effect_metrics", "InterventionReport", "PatchingSweep", "EffectReadout",
    "PatchingResult", "patching_sweep", "patching_figure", "Rung", "Evidence", "Claim", "claim_gap", "report",
    "format_report", "evidence_from_scores",
]
