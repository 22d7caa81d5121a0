"""Mean correlation coefficient (MCC): how well learned dimensions match ground-truth factors.

The identifiability literature's MCC correlates every ground-truth factor with every learned
dimension, matches them one-to-one with the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`)
so that the sum of absolute correlations is largest, and reports the mean over factors. It is
invariant to permutations and sign flips of the learned dimensions (and, for Spearman, to any
monotone map of each dimension).

- ``method="pearson"``: Pearson correlation of samples (``true``: ``(N, K)``, ``learned``: ``(N, D)``);
  :class:`MeanCorrelationCoefficient` streams its sufficient statistics (exact under DDP);
- ``method="spearman"``: Pearson correlation of ranks (the metric keeps the samples, bounded);
- ``method="cosine"``: the variant for dictionaries: absolute cosine between atoms
  (``true``: ``(K, M)``, ``learned``: ``(D, M)``, one atom per row).

Rectangular cases: with more learned dimensions than factors (``D > K``), each factor gets its own
dimension and the surplus is ignored; with fewer (``D < K``), ``K − D`` factors stay unmatched,
count as 0 in the mean (a representation with fewer dimensions cannot identify every factor) and
have ``matching == -1``.

A constant learned dimension (a dead unit) correlates 0 with everything; a constant ground-truth
factor has no defined correlation and raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from torch import Tensor

from lit_repr.metrics.moments import ShiftedMoments, all_finite

__all__ = [
    "MCCResult",
    "MeanCorrelationCoefficient",
    "mean_correlation_coefficient",
    "correlation_matrix",
    "match_factors",
    "as_matrix",
    "as_pair",
    "constant_columns",
]

Method = Literal["pearson", "spearman", "cosine"]
_METHODS = ("pearson", "spearman", "cosine")
_TINY = 1e-12


def as_matrix(x: Tensor | np.ndarray, name: str) -> Tensor:
    """``x`` as a finite float64 CPU matrix ``(rows, columns)``; 1-D input becomes one column.

    Raises ``ValueError`` naming ``name`` for other ranks, empty input, NaN or inf.
    """
    x = torch.as_tensor(x).detach()
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty matrix (rows, columns), got shape {tuple(x.shape)}")
    x = x.to("cpu", torch.float64)
    if not all_finite(x):
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN or inf values")
    return x


def as_pair(a: Tensor | np.ndarray, b: Tensor | np.ndarray, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """Two matrices of :func:`as_matrix` that hold the same samples (rows)."""
    a, b = as_matrix(a, name_a), as_matrix(b, name_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must hold the same samples (rows), got {a.shape[0]} and {b.shape[0]}")
    return a, b


def constant_columns(var: Tensor, mean_square: Tensor) -> list[int]:
    """Columns whose variance is at the rounding level of their values: constant ones.

    ``var`` must come from centred data (two passes, or moments about a reference), whose rounding
    error is about ``(ε · |value|)²`` with ``ε ≈ 2e-16`` for float64; ``mean_square`` is the mean of
    the squared values (``mean² + var``). A column with a large mean and a small spread (``1e8 + z``)
    is not constant.
    """
    return torch.nonzero(var <= 1e-20 * mean_square.clamp_min(1e-300)).flatten().tolist()


@dataclass
class MCCResult:
    """Matched correlations between ground-truth factors and learned dimensions.

    Attributes:
        mean: the MCC: mean over ground-truth factors of the matched absolute correlation.
        per_factor: ``(K,)`` matched absolute correlation of each factor (0 if unmatched).
        corr: ``(K, D)`` absolute correlation of every factor with every learned dimension.
        matching: ``(K,)`` index of the learned dimension matched to each factor, ``-1`` if none.
    """

    mean: float
    per_factor: Tensor
    corr: Tensor
    matching: Tensor


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _correlation_from_moments(
    n: Tensor, mt: Tensor, ml: Tensor, ss_t: Tensor, ss_l: Tensor, tl: Tensor
) -> Tensor:
    """Absolute Pearson correlations ``(K, D)`` from the means and the *centred* sums of squares and
    cross products."""
    var_t = (ss_t / n).clamp_min(0)
    var_l = (ss_l / n).clamp_min(0)
    cov = tl / n
    const = constant_columns(var_t, var_t + mt**2)
    if const:
        raise ValueError(
            f"ground-truth factor(s) {const} are constant: their correlation is undefined; drop them before measuring"
        )
    scale = torch.outer(var_t, var_l).sqrt()
    dead = constant_columns(var_l, var_l + ml**2)  # constant learned dimensions correlate 0
    corr = torch.where(scale > 0, cov / scale.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(cov))
    corr[:, dead] = 0.0
    return corr.abs().clamp_max(1.0)


def correlation_matrix(true: Tensor | np.ndarray, learned: Tensor | np.ndarray, method: Method = "pearson") -> Tensor:
    """Absolute correlations ``(K, D)`` between ground-truth and learned columns (or atoms).

    Args:
        true: ``(N, K)`` ground-truth factors (``(K, M)`` atoms for ``method="cosine"``).
        learned: ``(N, D)`` learned dimensions (``(D, M)`` atoms for ``method="cosine"``).
        method: ``"pearson"``, ``"spearman"`` or ``"cosine"``.

    Example:
        >>> z = torch.randn(100, 2)
        >>> c = correlation_matrix(z, -3 * z.flip(1))  # swapped and scaled, sign flipped
        >>> c.shape, round(float(c[0, 1]), 6), round(float(c[1, 0]), 6)
        (torch.Size([2, 2]), 1.0, 1.0)
    """
    _check_method(method)
    t, lr = as_matrix(true, "true"), as_matrix(learned, "learned")
    if method == "cosine":
        if t.shape[1] != lr.shape[1]:
            raise ValueError(
                f"cosine MCC compares atoms (one per row): true atoms have dimension {t.shape[1]}, "
                f"learned atoms {lr.shape[1]}"
            )
        nt, nl = t.norm(dim=1), lr.norm(dim=1)
        zero = torch.nonzero(nt <= _TINY).flatten().tolist()
        if zero:
            raise ValueError(f"true atoms {zero} have zero norm: their cosine is undefined")
        return ((t / nt[:, None]) @ (lr / nl.clamp_min(_TINY)[:, None]).T).abs().clamp_max(1.0)
    if t.shape[0] != lr.shape[0]:
        raise ValueError(f"true and learned must have the same number of samples, got {t.shape[0]} and {lr.shape[0]}")
    n = t.shape[0]
    if n < max(3, t.shape[1]):
        raise ValueError(
            f"MCC needs at least max(3, number of factors) = {max(3, t.shape[1])} samples, got {n} "
            f"(fewer samples than ground-truth dimensions)"
        )
    if method == "spearman":
        t = torch.from_numpy(rankdata(t.numpy(), axis=0))
        lr = torch.from_numpy(rankdata(lr.numpy(), axis=0))
    # centre first (two passes) for accuracy
    mt, ml = t.mean(0), lr.mean(0)
    t, lr = t - mt, lr - ml
    nn_ = torch.tensor(float(n), dtype=torch.float64)
    return _correlation_from_moments(nn_, mt, ml, (t * t).sum(0), (lr * lr).sum(0), t.T @ lr)


def match_factors(corr: Tensor) -> MCCResult:
    """Hungarian matching of factors (rows) to learned dimensions (columns) of ``|corr|``.

    Example:
        >>> res = match_factors(torch.tensor([[0.1, 0.9], [0.8, 0.2]]))
        >>> res.matching.tolist(), round(res.mean, 2)
        ([1, 0], 0.85)
    """
    corr = corr.detach().to("cpu", torch.float64)
    rows, cols = linear_sum_assignment(corr.numpy(), maximize=True)
    k = corr.shape[0]
    matching = torch.full((k,), -1, dtype=torch.long)
    per_factor = torch.zeros(k, dtype=torch.float64)
    matching[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    per_factor[torch.as_tensor(rows, dtype=torch.long)] = corr[rows, cols]
    return MCCResult(mean=float(per_factor.mean()), per_factor=per_factor, corr=corr, matching=matching)


def mean_correlation_coefficient(
    true: Tensor | np.ndarray, learned: Tensor | np.ndarray, method: Method = "pearson"
) -> MCCResult:
    """The MCC of ``learned`` against ``true`` (see the module docstring for shapes and conventions).

    Example:
        >>> z = torch.randn(500, 3)
        >>> f = torch.cat([-2 * z[:, [2, 0, 1]], torch.randn(500, 2)], 1)  # permuted, scaled, extra dims
        >>> res = mean_correlation_coefficient(z, f)
        >>> round(res.mean, 6), res.matching.tolist()
        (1.0, [1, 2, 0])
    """
    return match_factors(correlation_matrix(true, learned, method))


class MeanCorrelationCoefficient(ShiftedMoments):
    """Streaming MCC between ground-truth factors and learned dimensions.

    Pearson: the states are sums, sums of squares and the ``(K, D)`` cross products (float64) about
    a per-process reference (see :mod:`lit_repr.metrics.moments`), so the result is exact over
    batches and DDP processes, does not change when a constant is added to either input, and memory
    does not grow with the data. Spearman needs global ranks: it is computed on a bounded uniform sample of at most
    ``max_samples`` rows (:class:`~lit_repr.metrics.samples.SampleBuffer`, gathered under DDP).
    ``compute()`` returns an :class:`MCCResult`.

    Args:
        num_factors: ground-truth dimension ``K``.
        in_features: learned dimension ``D``.
        method: ``"pearson"`` or ``"spearman"`` (use :func:`mean_correlation_coefficient` with
            ``method="cosine"`` for dictionaries).
        max_samples: samples kept for Spearman.

    Example:
        >>> m = MeanCorrelationCoefficient(num_factors=2, in_features=3)
        >>> z = torch.randn(300, 2)
        >>> for zb in z.split(100):
        ...     m.update(zb, torch.cat([zb.flip(1), torch.randn(len(zb), 1)], 1))
        >>> round(m.compute().mean, 6)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, num_factors: int, in_features: int, method: Method = "pearson", max_samples: int = 20_000, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        for name, v in (("num_factors", num_factors), ("in_features", in_features), ("max_samples", max_samples)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if method not in ("pearson", "spearman"):
            raise ValueError(
                f"method must be 'pearson' or 'spearman' for streamed samples, got {method!r} "
                f"(dictionaries: mean_correlation_coefficient(true, learned, method='cosine'))"
            )
        self.num_factors, self.in_features = num_factors, in_features
        self.method, self.max_samples = method, max_samples
        if method == "pearson":
            self.add_moments(
                variables={"t": ("sum_t", num_factors), "l": ("sum_l", in_features)},
                products={"cross": ("t", "l")},
                elementwise={"sq_t": ("t", "t"), "sq_l": ("l", "l")},
            )
        else:
            from lit_repr.metrics.samples import SampleBuffer

            self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.samples = SampleBuffer(max_samples)

    def update(self, true: Tensor, learned: Tensor) -> None:  # type: ignore[override]
        """Add a batch: ``true`` ``(B, num_factors)``, ``learned`` ``(B, in_features)``."""
        t, lr = as_matrix(true, "true"), as_matrix(learned, "learned")
        if t.shape[1] != self.num_factors or lr.shape[1] != self.in_features or t.shape[0] != lr.shape[0]:
            raise ValueError(
                f"expected true (B, {self.num_factors}) and learned (B, {self.in_features}), "
                f"got {tuple(t.shape)} and {tuple(lr.shape)}"
            )
        dev = self.n.device
        t, lr = t.to(dev), lr.to(dev)
        if self.method == "pearson":
            self.accumulate(t=t, l=lr)
            return
        self.samples.update(t, lr)
        self.n += t.shape[0]

    def compute(self) -> MCCResult:  # type: ignore[override]
        if self.method == "spearman":
            t, lr = self.samples.compute()
            return mean_correlation_coefficient(t, lr, method="spearman")
        n = float(self.n)
        if n < max(3, self.num_factors):
            raise ValueError(
                f"MCC needs at least max(3, number of factors) = {max(3, self.num_factors)} samples, got {int(n)}"
            )
        count, means, prods, elem = self.centred()
        corr = _correlation_from_moments(count, means["t"], means["l"], elem["sq_t"], elem["sq_l"], prods["cross"])
        return match_factors(corr)
