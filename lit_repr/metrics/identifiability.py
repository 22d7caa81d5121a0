"""Identifiability readouts: how much of the ground-truth latents do features recover, and how?

- :class:`LinearIdentifiability`: R² (uniform and per factor) of a ridge map from features to
  latents, fitted on one split from streamed sufficient statistics
  (:class:`~lit_repr.metrics.ridge.StreamingRidge`, penalty by GCV) and scored exactly on another
  from its statistics: exact under DDP, memory independent of the data.
- :func:`kernel_ridge_r2` / :class:`KernelIdentifiability`: the nonlinear counterpart, RBF kernel
  ridge with penalty and bandwidth chosen by cross-validation (scikit-learn's ``GridSearchCV``),
  on a bounded subsample.
- :func:`dci` / :class:`DCI`: disentanglement, completeness and informativeness (Eastwood &
  Williams, 2018) from the importance matrix of tree ensembles, one regressor per factor.

Bad input raises ``ValueError`` before any state changes: NaN or inf, mismatched shapes, fewer
samples than latent dimensions, constant ground-truth factors (R² and correlations are undefined
for them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from lit_repr.checks import check_int
from lit_repr.metrics.mcc import as_pair, constant_columns
from lit_repr.metrics.readout import FIT, HELDOUT, SplitDict
from lit_repr.metrics.ridge import DEFAULT_ALPHAS, StreamingRidge, moments_score, synced, synced_like
from lit_repr.metrics.samples import SampleBuffer

__all__ = ["LinearIdentifiability", "KernelIdentifiability", "DCI", "kernel_ridge_r2", "dci", "dci_from_importance"]



def _paired(features: Any, latents: Any) -> tuple[Tensor, Tensor]:
    return as_pair(features, latents, "features", "latents")


def _check_latents(z: Tensor, what: str) -> None:
    n, k = z.shape
    if n < max(3, k):
        raise ValueError(
            f"{what} has {n} samples for {k} latent dimensions: identifiability needs at least "
            f"max(3, latent dimensions) = {max(3, k)} samples"
        )
    const = constant_columns(z.var(0), (z * z).mean(0))
    if const:
        raise ValueError(f"latent factor(s) {const} are constant in {what}: their R² is undefined; drop them")


def _train_test(f_train: Any, z_train: Any, f_test: Any, z_test: Any) -> tuple[np.ndarray, ...]:
    """Checked float64 arrays ``(features_train, latents_train, features_test, latents_test)``."""
    ftr, ztr = (t.numpy() for t in _paired(f_train, z_train))
    fte, zte = (t.numpy() for t in _paired(f_test, z_test))
    if ftr.shape[1] != fte.shape[1] or ztr.shape[1] != zte.shape[1]:
        raise ValueError(
            f"train and test shapes differ: features {ftr.shape[1]} vs {fte.shape[1]}, "
            f"latents {ztr.shape[1]} vs {zte.shape[1]}"
        )
    _check_latents(torch.from_numpy(ztr), "the training latents")
    _check_latents(torch.from_numpy(zte), "the test latents")
    return ftr, ztr, fte, zte


def _check_split(split: Any) -> str:
    if not isinstance(split, str) or not split or split == HELDOUT:
        raise ValueError(f"split must be 'fit' or the name of an evaluation split (e.g. 'eval', 'val'), got {split!r}")
    return split


class LinearIdentifiability(Metric):
    """Held-out R² of the best linear (ridge) map from features to ground-truth latents.

    ``update(features, latents, split)`` streams a batch into the ``"fit"`` statistics or those of
    an evaluation split (any other name, ``"eval"`` by default); ``compute(split)`` fits ridge on
    ``"fit"`` (penalty by GCV over ``alphas``) and returns exact scores on that split: ``{"r2":
    uniform mean, "r2_per_factor": (K,), "pearson_per_factor": (K,), "alpha": chosen penalty}``.
    Every state is a sum (exact under DDP); memory does not grow with the data.

    Args:
        in_features: feature dimension ``D``.
        num_factors: latent dimension ``K``.
        alphas: ridge penalties (scikit-learn convention).
        projection_dim: optional random projection of wide features (see ``StreamingRidge``).

    Example:
        >>> m = LinearIdentifiability(in_features=6, num_factors=2)
        >>> z = torch.randn(400, 2); f = z @ torch.randn(2, 6)
        >>> m.update(f[:300], z[:300], "fit"); m.update(f[300:], z[300:], "eval")
        >>> round(float(m.compute()["r2"]), 4)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        in_features: int,
        num_factors: int,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        projection_dim: int | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("compute_with_cache", False)  # the result depends on the split asked for
        super().__init__(**kwargs)
        self._ridge_kw = dict(alphas=alphas, projection_dim=projection_dim)
        self.fit_stats = StreamingRidge(in_features, num_factors, **self._ridge_kw)
        self.eval_stats = SplitDict()
        self.in_features, self.num_factors = in_features, num_factors

    def _eval_stats(self, split: str) -> StreamingRidge:
        if split not in self.eval_stats:
            stats = StreamingRidge(self.in_features, self.num_factors, **self._ridge_kw).to(self.fit_stats.n.device)
            self.eval_stats[split] = synced_like(stats, self.fit_stats)
        return self.eval_stats[split]  # type: ignore[return-value]

    def update(self, features: Tensor, latents: Tensor, split: str = FIT) -> None:  # type: ignore[override]
        split = _check_split(split)
        f, z = _paired(features, latents)
        (self.fit_stats if split == FIT else self._eval_stats(split)).update(f, z)

    def _check_moments(self, stats: StreamingRidge, what: str) -> None:
        n = float(stats.n)
        if n < max(3, self.num_factors):
            raise ValueError(
                f"the {what} split has {int(n)} samples for {self.num_factors} latent dimensions: "
                f"identifiability needs at least max(3, latent dimensions) = {max(3, self.num_factors)}"
            )
        _, means, _, elem = stats.centred()
        var = elem["yy"] / n
        const = constant_columns(var, means["y"] ** 2 + var)
        if const:
            raise ValueError(f"latent factor(s) {const} are constant in the {what} split: their R² is undefined")

    def compute(self, split: str = "eval") -> dict[str, Tensor]:  # type: ignore[override]
        if split == FIT:
            return {}
        if split not in self.eval_stats:
            raise ValueError(f"no data for evaluation split {split!r}; splits seen: {list(self.eval_stats)}")
        eval_stats = self._eval_stats(split)
        with synced(self.fit_stats, eval_stats):  # sum the statistics of all processes
            self._check_moments(self.fit_stats, "fit")
            self._check_moments(eval_stats, repr(split))
            fit = self.fit_stats.solve()
            s = moments_score(fit, eval_stats)
        return {
            "r2": s["r2"].mean(),
            "r2_per_factor": s["r2"],
            "pearson_per_factor": s["pearson"],
            "alpha": torch.tensor(fit.alpha, dtype=torch.float64),
        }

    def reset(self, split: str | None = None) -> None:
        if split is None:
            super().reset()
            self.fit_stats.reset()
        for name, stats in self.eval_stats.items():
            if split is None or name == split:
                stats.reset()


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    keep = sd > 1e-12 * np.maximum(np.abs(mu), 1.0)
    if not keep.any():
        raise ValueError("every feature is constant on the training samples: nothing can be predicted")
    return [(a[:, keep] - mu[keep]) / sd[keep] for a in (train, *others)]


def kernel_ridge_r2(
    features_train: Any,
    latents_train: Any,
    features_test: Any,
    latents_test: Any,
    alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    bandwidth_factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    cv: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out R² of RBF kernel ridge regression from features to latents.

    Features are standardised on the training samples. The RBF bandwidth grid is
    ``gamma = 1 / (factor · median squared pairwise distance)``; penalty and bandwidth are chosen by
    ``cv``-fold cross-validation on the training samples (scikit-learn ``GridSearchCV`` over
    ``KernelRidge``), then the refitted model is scored on the test samples.

    Returns:
        ``{"r2": uniform mean R², "r2_per_factor": (K,) array, "alpha": float, "gamma": float}``.

    Example:
        >>> z = torch.rand(300, 2) * 4 - 2; f = torch.cat([torch.sin(z), z**3], 1)
        >>> out = kernel_ridge_r2(f[:200], z[:200], f[200:], z[200:])
        >>> out["r2"] > 0.95
        True
    """
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GridSearchCV, KFold

    if not isinstance(cv, int) or cv < 2:
        raise ValueError(f"cv must be an int >= 2, got {cv!r}")
    ftr, ztr, fte, zte = _train_test(features_train, latents_train, features_test, latents_test)
    if ztr.shape[0] < 2 * cv:
        raise ValueError(f"kernel ridge needs at least {2 * cv} training samples for {cv}-fold CV, got {ztr.shape[0]}")
    ftr, fte = _standardise(ftr, fte)
    sub = ftr[np.random.default_rng(seed).permutation(len(ftr))[:500]]
    d2 = ((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1)
    med = float(np.median(d2[np.triu_indices(len(sub), 1)]))
    med = med if med > 0 else 1.0
    grid = {"alpha": list(alphas), "gamma": [1.0 / (f * med) for f in bandwidth_factors]}
    search = GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=KFold(cv, shuffle=True, random_state=seed), scoring="r2")
    search.fit(ftr, ztr)
    pred = search.best_estimator_.predict(fte).reshape(zte.shape)
    per = r2_score(zte, pred, multioutput="raw_values")
    return {
        "r2": float(np.mean(per)),
        "r2_per_factor": per,
        "alpha": float(search.best_params_["alpha"]),
        "gamma": float(search.best_params_["gamma"]),
    }


def _normalised_entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of the distributions along ``axis`` in ``log_base`` units (0 · log 0 = 0)."""
    if base < 2:
        return np.zeros(p.shape[1 - axis])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis) / math.log(base)


def _best_split_gains(x: np.ndarray, z: np.ndarray, block: int = 256) -> np.ndarray:
    """``(D, K)``: per feature and factor, the largest drop in squared error of the factor from one
    threshold on that feature alone.

    This is the criterion a regression tree's root split maximises (``S_L²/n_L + S_R²/n_R − S²/n``).
    Each block of feature columns is sorted once for every factor; blocks bound the memory.
    """
    n, d = x.shape
    z = z - z.mean(0)
    k = np.arange(1, n, dtype=np.float64)[:, None]
    gains = np.empty((d, z.shape[1]))
    for lo in range(0, d, block):
        xb = x[:, lo : lo + block]
        order = np.argsort(xb, axis=0, kind="stable")
        xs = np.take_along_axis(xb, order, axis=0)
        tied = xs[1:] <= xs[:-1]  # no threshold between tied values
        for j in range(z.shape[1]):
            left = np.cumsum(z[order, j], axis=0)[:-1]  # sums of the n_L smallest, for n_L = 1 .. n-1
            gain = left**2 / k + left**2 / (n - k)  # the total is 0 after centring, so S_R = -S_L
            gain[tied] = -np.inf
            gains[lo : lo + block, j] = gain.max(axis=0)
    return gains


def _dci_candidates(x: np.ndarray, z: np.ndarray, per_factor: int) -> np.ndarray:
    """Column indices: the union over factors of each factor's ``per_factor`` best features by split gain."""
    gains = _best_split_gains(x, z)
    picks = [np.argsort(-gains[:, j], kind="stable")[:per_factor] for j in range(z.shape[1])]
    return np.unique(np.concatenate(picks))


def dci(
    features_train: Any,
    latents_train: Any,
    features_test: Any,
    latents_test: Any,
    n_estimators: int = 50,
    max_depth: int | None = 8,
    seed: int = 0,
    candidates_per_factor: int | None = 32,
    n_jobs: int | None = -1,
) -> dict[str, Any]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams, 2018).

    One random-forest regressor per latent factor predicts it from the features (fitted on the
    training samples); its impurity-based feature importances form column ``j`` of the importance
    matrix ``R`` (``(D, K)``, codes × factors).

    - disentanglement of code ``i``: ``1 − H_K(P_i·)`` with ``P_ij = R_ij / Σ_k R_ik``; the total
      weights codes by their share of the importance, ``ρ_i = Σ_j R_ij / Σ R``;
    - completeness of factor ``j``: ``1 − H_D(P_·j)`` with ``P_ij = R_ij / Σ_k R_kj``; the total
      is the mean over factors;
    - informativeness: the mean held-out R² of the regressors on the test samples (higher is
      better; the paper's prediction error is ``1 − R²`` for standardised factors).

    Wide features: a forest's cost grows with the number of features it searches at every split. When
    there are more than ``candidates_per_factor × K`` features, each factor first ranks every feature by
    the gain of its best single split (the criterion of a tree's root split, computed exactly and cheaply)
    and every forest searches only the union of the factors' top ``candidates_per_factor``; the other
    features get importance 0. On 2048 features, 1500 samples and 5 factors this takes 12× less CPU time
    and moves disentanglement and completeness by less than 0.02 (``benchmarks/bench_dci.py``); with
    ``candidates_per_factor=None`` every forest searches every feature.

    Args:
        features_train: ``(N, D)`` features the regressors are fitted on.
        latents_train: ``(N, K)`` ground-truth factors of the same samples.
        features_test: ``(M, D)`` held-out features (informativeness).
        latents_test: ``(M, K)`` their factors.
        n_estimators: trees per factor's random forest.
        max_depth: depth limit of the trees (``None``: unlimited).
        seed: random state of the forests (factor ``j`` uses ``seed + j``).
        candidates_per_factor: features each factor contributes to the searched set on wide features;
            ``None`` searches all.
        n_jobs: threads per forest (``-1``: all cores, ``None``: one); results do not depend on it.

    Returns:
        ``{"disentanglement", "completeness", "informativeness"}`` (floats) plus
        ``"importance"`` (``(D, K)``), ``"disentanglement_per_code"``, ``"completeness_per_factor"``
        and ``"informativeness_per_factor"`` arrays.

    Example:
        >>> z = torch.rand(400, 2); f = torch.cat([z, torch.rand(400, 2)], 1)  # axis-aligned + noise
        >>> out = dci(f[:300], z[:300], f[300:], z[300:])
        >>> out["disentanglement"] > 0.8, out["completeness"] > 0.8, out["informativeness"] > 0.9
        (True, True, True)
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import r2_score

    if not isinstance(n_estimators, int) or isinstance(n_estimators, bool) or n_estimators < 1:
        raise ValueError(f"n_estimators must be a positive int, got {n_estimators!r}")
    per_factor = candidates_per_factor
    if per_factor is not None and (not isinstance(per_factor, int) or isinstance(per_factor, bool) or per_factor < 1):
        raise ValueError(f"candidates_per_factor must be a positive int or None (all features), got {per_factor!r}")
    if n_jobs is not None and (not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0):
        raise ValueError(f"n_jobs must be None, -1 (all cores) or a positive int, got {n_jobs!r}")
    ftr, ztr, fte, zte = _train_test(features_train, latents_train, features_test, latents_test)
    d, k = ftr.shape[1], ztr.shape[1]
    cols = np.arange(d)
    if per_factor is not None and d > per_factor * k:
        cols = _dci_candidates(ftr, ztr, per_factor)
        ftr, fte = ftr[:, cols], fte[:, cols]
    importance = np.zeros((d, k))
    informativeness = np.zeros(k)
    for j in range(k):
        model = RandomForestRegressor(
            n_estimators=n_estimators, max_depth=max_depth, random_state=seed + j, n_jobs=n_jobs
        )
        model.fit(ftr, ztr[:, j])
        importance[cols, j] = np.abs(model.feature_importances_)
        informativeness[j] = r2_score(zte[:, j], model.predict(fte))
    out = dci_from_importance(importance)
    out["informativeness"] = float(informativeness.mean())
    out["informativeness_per_factor"] = informativeness
    return out


def dci_from_importance(importance: Any) -> dict[str, Any]:
    """Disentanglement and completeness of a non-negative importance matrix ``R`` (codes × factors).

    Codes (rows) or factors (columns) with no importance at all score 0 and get no weight.

    Example:
        >>> out = dci_from_importance(np.eye(3))
        >>> out["disentanglement"], out["completeness"]
        (1.0, 1.0)
    """
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    if importance.ndim != 2 or not np.isfinite(importance).all():
        raise ValueError(f"importance must be a finite (codes, factors) matrix, got shape {importance.shape}")
    d, k = importance.shape
    total = importance.sum()
    if total <= 0:  # e.g. every tree is a single leaf: the features carry nothing the trees can split on
        return {"disentanglement": 0.0, "completeness": 0.0, "importance": importance,
                "disentanglement_per_code": np.zeros(d), "completeness_per_factor": np.zeros(k)}
    row = importance.sum(1, keepdims=True)
    p_codes = np.divide(importance, row, out=np.zeros_like(importance), where=row > 0)
    d_per_code = np.where(row[:, 0] > 0, 1.0 - _normalised_entropy(p_codes, k, axis=1), 0.0)
    col = importance.sum(0, keepdims=True)
    p_factors = np.divide(importance, col, out=np.zeros_like(importance), where=col > 0)
    c_per_factor = np.where(col[0] > 0, 1.0 - _normalised_entropy(p_factors, d, axis=0), 0.0)
    return {
        "disentanglement": float((row[:, 0] / total * d_per_code).sum()),
        "completeness": float(c_per_factor.mean()),
        "importance": importance,
        "disentanglement_per_code": d_per_code,
        "completeness_per_factor": c_per_factor,
    }


class _SplitSubsample(Metric):
    """Bounded samples (:class:`~lit_repr.metrics.samples.SampleBuffer`) of (features, latents) for
    the ``"fit"`` split and each evaluation split."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, max_samples: int = 2000, **kwargs) -> None:
        kwargs.setdefault("compute_with_cache", False)  # the result depends on the split asked for
        super().__init__(**kwargs)
        self.max_samples = check_int("max_samples", max_samples, low=10)
        self.split_samples = SplitDict()

    def _buffer(self, split: str) -> SampleBuffer:
        if split not in self.split_samples:
            self.split_samples[split] = synced_like(SampleBuffer(self.max_samples).to(self.device), self)
        return self.split_samples[split]  # type: ignore[return-value]

    def update(self, features: Tensor, latents: Tensor, split: str = FIT) -> None:  # type: ignore[override]
        f, z = _paired(features, latents)
        self._buffer(_check_split(split)).update(f, z)

    def _data(self, split: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        for s in (FIT, split):
            if s not in self.split_samples or self.split_samples[s].num_kept == 0:
                raise ValueError(f"the {s!r} split has no samples: call update(..., split={s!r}) first")
        ftr, ztr = self._buffer(FIT).compute()
        fte, zte = self._buffer(split).compute()
        return ftr, ztr, fte, zte

    def reset(self, split: str | None = None) -> None:
        if split is None:
            super().reset()
        for name, buf in self.split_samples.items():
            if split is None or name == split:
                buf.reset()


class KernelIdentifiability(_SplitSubsample):
    """Held-out R² of RBF kernel ridge from features to latents, on bounded subsamples.

    Args:
        max_samples: samples kept per split (a uniform subsample, see
            :class:`~lit_repr.metrics.samples.SampleBuffer`; kernel ridge is ``O(n³)``).
        alphas: penalties of the cross-validation grid.
        bandwidth_factors: multiples of the median squared distance tried as RBF bandwidths.
        cv: cross-validation folds.

    Example:
        >>> m = KernelIdentifiability(max_samples=300)
        >>> z = torch.rand(400, 2) * 4 - 2; f = torch.cat([torch.sin(z), z**3], 1)
        >>> m.update(f[:250], z[:250], "fit"); m.update(f[250:], z[250:], "eval")
        >>> m.compute()["r2"] > 0.95
        True
    """

    def __init__(
        self,
        max_samples: int = 1000,
        alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
        bandwidth_factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        cv: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(max_samples, **kwargs)
        if not isinstance(cv, int) or cv < 2:
            raise ValueError(f"cv must be an int >= 2, got {cv!r}")
        self.alphas, self.bandwidth_factors, self.cv = tuple(alphas), tuple(bandwidth_factors), cv

    def compute(self, split: str = "eval") -> dict[str, Any]:  # type: ignore[override]
        if split == FIT:
            return {}
        return kernel_ridge_r2(
            *self._data(split), alphas=self.alphas, bandwidth_factors=self.bandwidth_factors, cv=self.cv
        )


class DCI(_SplitSubsample):
    """Disentanglement, completeness and informativeness on bounded subsamples (see :func:`dci`).

    Args:
        max_samples: samples kept per split (a uniform subsample).
        n_estimators: trees per factor's random forest.
        max_depth: depth limit of the trees.

    Example:
        >>> m = DCI(max_samples=500)
        >>> z = torch.rand(400, 2); f = torch.cat([z, torch.rand(400, 2)], 1)
        >>> m.update(f[:300], z[:300], "fit"); m.update(f[300:], z[300:], "eval")
        >>> m.compute()["disentanglement"] > 0.8
        True
    """

    def __init__(self, max_samples: int = 2000, n_estimators: int = 50, max_depth: int | None = 8, **kwargs) -> None:
        super().__init__(max_samples, **kwargs)
        if not isinstance(n_estimators, int) or n_estimators < 1:
            raise ValueError(f"n_estimators must be a positive int, got {n_estimators!r}")
        self.n_estimators, self.max_depth = n_estimators, max_depth

    def compute(self, split: str = "eval") -> dict[str, Any]:  # type: ignore[override]
        if split == FIT:
            return {}
        return dci(*self._data(split), n_estimators=self.n_estimators, max_depth=self.max_depth)
