"""Linear probes of arrays already in memory: :func:`fit_probe` (the same readout the callbacks use)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from lit_repr.metrics.probe import ProbeReadout, Task, linear64
from lit_repr.metrics.readout import FIT, HELDOUT
from lit_repr.metrics.ridge import DEFAULT_ALPHAS

__all__ = ["ProbeResult", "fit_probe"]


@dataclass
class ProbeResult:
    """A fitted probe for in-memory arrays: weights, bias, chosen penalty and scores.

    Attributes:
        task: ``"regression"`` or ``"classification"``.
        weight: ``(D, K)`` probe weights (``K`` targets, or one column per class).
        bias: ``(K,)`` intercepts.
        alpha: the chosen ridge penalty.
        scores: ``{split: {metric: value}}``, always with the fitting split as ``"fit"``.
        num_classes: number of classes of a classification probe.
    """

    task: str
    weight: Tensor
    bias: Tensor
    alpha: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    num_classes: int | None = None

    def predict(self, x: Tensor) -> Tensor:
        """Regression predictions, or class scores for classification."""
        return linear64(torch.as_tensor(x), self.weight, self.bias)


def fit_probe(
    features: Tensor,
    targets: Tensor,
    task: Task = "regression",
    num_classes: int | None = None,
    eval_sets: dict[str, tuple[Tensor, Tensor]] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    selection: Literal["gcv", "heldout"] = "gcv",
    classifier: Literal["ridge", "logistic"] = "ridge",
    logistic_C: float = 1.0,
    float32_products: bool = False,
) -> ProbeResult:
    """Fit a linear probe on arrays already in memory and score it on each evaluation set.

    Args:
        features: ``(N, D)`` features of the fitting split.
        targets: ``(N,)`` class indices, or ``(N,)``/``(N, K)`` regression targets.
        task: ``"regression"`` or ``"classification"``.
        num_classes: number of classes (default: ``targets.max() + 1``).
        eval_sets: ``{split: (features, targets)}`` to score on; the fitting split is always
            scored as ``"fit"``.
        alphas: ridge penalty grid.
        selection: ``"gcv"``, or ``"heldout"`` (uses the first evaluation set to pick the penalty).
        classifier: ``"ridge"`` (least squares on one-hot targets) or ``"logistic"``.
        logistic_C: inverse L2 strength of the logistic probe (scikit-learn's ``C``).
        float32_products: accumulate the statistics of float32 features with float32 products (about
            twice as fast on large arrays; float32 rounding, relative ``≈ 1e-7``, instead of float64's).

    Example:
        >>> x = torch.randn(300, 4); y = (x[:, 0] > 0).long()
        >>> res = fit_probe(x, y, task="classification")
        >>> res.scores["fit"]["acc"] > 0.9
        True
    """
    features = torch.as_tensor(features)
    targets = torch.as_tensor(targets)
    if task == "classification" and num_classes is None:
        num_classes = int(targets.max()) + 1
    readout = ProbeReadout(
        features.shape[1] if features.ndim == 2 else -1,
        task=task,
        num_targets=None if task == "classification" else (1 if targets.ndim == 1 else targets.shape[1]),
        num_classes=num_classes,
        alphas=alphas,
        selection=selection,
        classifier=classifier,
        logistic_C=logistic_C,
        local=True,  # the arrays are the whole data, even inside a DDP process
        float32_products=float32_products,
    )
    readout.update(features, targets, FIT)
    eval_sets = dict(eval_sets or {})
    heldout = None
    if selection == "heldout":
        if not eval_sets:
            raise ValueError("selection='heldout' needs at least one evaluation set in eval_sets")
        name, (hx, hy) = next(iter(eval_sets.items()))
        readout.update(hx, hy, HELDOUT)
        heldout = name
    readout.fit()
    scores = {}
    moments = readout.fit_scores_from_moments()
    if moments is not None:
        # the fitting split's R², Pearson r and MSE come from its statistics (no second pass over it);
        # Spearman, from ranks, from evenly spaced rows (at most max_samples, as every split's is bounded)
        step = max(1, -(-features.shape[0] // readout.max_samples))
        readout.update_eval("fit (sample)", features[::step], targets[::step], checked=True)  # rows checked above
        scores["fit"] = {**moments, "spearman": readout.compute("fit (sample)")["spearman"]}
    for split, (ex, ey) in {**({} if moments is not None else {"fit": (features, targets)}), **eval_sets}.items():
        name = "fit (scored)" if split == FIT else split  # the fitting data, scored as an evaluation split
        readout.update(ex, ey, name)
        scores[split] = readout.compute(name)
    del heldout
    return ProbeResult(task, readout.weight, readout.bias, readout.alpha, scores, num_classes)
