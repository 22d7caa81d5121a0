"""Linear probe readouts: closed-form ridge (and optional logistic) probes with split-wise scores.

:class:`ProbeReadout` is the science behind :class:`lit_repr.callbacks.LinearProbe`: it streams
features and targets into a :class:`~lit_repr.metrics.ridge.StreamingRidge` (sufficient
statistics, exact under DDP), fits in closed form, and scores the fitted probe on any number of
evaluation splits with torchmetrics (R², Pearson, Spearman, MSE; accuracy and AUROC).
:func:`~lit_repr.metrics.arrays.fit_probe` does the same for arrays already in memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lit_repr.metrics.logistic import fit_logistic
from lit_repr.metrics.moments import CentredR2Score, all_finite
from lit_repr.metrics.readout import FIT, HELDOUT, SplitDict
from lit_repr.metrics.ridge import (
    DEFAULT_ALPHAS,
    RidgeFit,
    StreamingRidge,
    local_only,
    moments_score,
    synced,
)
from lit_repr.metrics.samples import EmptyShardSync, SampleBuffer
from lit_repr.threads import num_threads

__all__ = [
    "ProbeReadout",
    "evaluation_metrics",
    "Task",
]

Task = Literal["regression", "classification"]
_TASKS = ("regression", "classification")
_CLASSIFIERS = ("ridge", "logistic")


#: work (multiply-adds) below which one CPU thread does a probe's step faster than several
_ONE_THREAD_WORK = 2**27


@contextmanager
def _threads_for(work: float, device: torch.device) -> Iterator[None]:
    """Run the block on one CPU thread when its work (in multiply-adds) is small.

    Small tensor operations gain nothing from more threads and, on shared cores, stall waiting for
    them (the quickstart probe, measured on 2 busy cores: 5.9 ms vs 210 ms per fit, 3.6 ms vs 66 ms
    per report). The caller's thread count is restored afterwards, also on exceptions.
    """
    with num_threads(1 if device.type == "cpu" and work <= _ONE_THREAD_WORK else None):
        yield


def _check_task(task: str, num_classes: int | None, what: str = "task") -> None:
    if task not in _TASKS:
        raise ValueError(f"{what} must be 'regression' or 'classification', got {task!r}")
    if task == "classification" and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"classification probes need num_classes >= 2, got {num_classes!r}")


def prepare_targets(y: Tensor, task: str, num_classes: int | None, batch: int, name: str = "target") -> Tensor:
    """Check a target batch against its task and return it as ``(B, K)`` float64 (or ``(B,)`` long).

    Raises ``ValueError`` on shape mismatch, NaN, or class indices outside ``[0, num_classes)``.
    """
    if y.shape[0] != batch:
        raise ValueError(f"target {name!r} has {y.shape[0]} samples but the features have {batch}")
    if task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"classification target {name!r} must hold class indices of shape (batch,), got {tuple(y.shape)}"
            )
        if y.is_floating_point():
            if not bool(torch.isfinite(y).all()) or bool((y != y.round()).any()):
                raise ValueError(f"classification target {name!r} must hold integer class indices")
        y = y.long()
        if y.numel():
            lo, hi = (int(v) for v in torch.aminmax(y))
            if lo < 0 or hi >= num_classes:  # type: ignore[operator]
                raise ValueError(
                    f"classification target {name!r} has class indices in [{lo}, {hi}], outside "
                    f"[0, {num_classes}); set num_classes"
                )
        return y
    y = y.to(torch.float64)  # sums in float64: no precision is lost on float64 targets
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim > 2:
        y = y.flatten(1)
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"regression target {name!r} contains NaN or inf")
    return y


class _Accuracy(torchmetrics.Metric):
    """Share of samples whose highest score is their class (``MulticlassAccuracy(average="micro")``: the
    first highest score wins ties), streamed as two counts; NaN, not 0, without samples. Three tensor
    operations per batch instead of torchmetrics' per-class statistics."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.validate_args = validate_args
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.validate_args:
            if preds.ndim != 2 or preds.shape[1] != self.num_classes or target.shape != preds.shape[:1]:
                raise ValueError(
                    f"accuracy takes scores (N, {self.num_classes}) and class indices (N,), got "
                    f"{tuple(preds.shape)} and {tuple(target.shape)}"
                )
            target = prepare_targets(target, "classification", self.num_classes, preds.shape[0])
        self.correct += (preds.argmax(1) == target).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            return torch.tensor(float("nan"))
        return (self.correct / self.total).float()


class _AUROC(EmptyShardSync, torchmetrics.classification.MulticlassAUROC):
    """One-vs-rest AUROC averaged over the classes present (each needs positives and negatives); NaN when
    fewer than two classes are present (the AUROC of an absent class is undefined, not 0)."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.validate_args or self.thresholds is not None or self.ignore_index is not None or preds.ndim != 2:
            return super().update(preds, target)
        # checked scores (N, C) and indices (N,): kept as they are, scores outside [0, 1] normalised by a
        # softmax as torchmetrics does
        lo, hi = torch.aminmax(preds)
        if float(lo) < 0 or float(hi) > 1:
            preds = preds.softmax(1)
        self.preds.append(preds)
        self.target.append(target)

    def compute(self) -> Tensor:
        from torchmetrics.functional.classification.auroc import _multiclass_auroc_compute
        from torchmetrics.utilities.data import dim_zero_cat

        empty = isinstance(self.target, list) and not self.target  # synchronised states are one tensor
        target = torch.zeros(0, dtype=torch.long) if empty else dim_zero_cat(self.target)
        counts = torch.bincount(target.long().reshape(-1), minlength=self.num_classes)
        present = (counts > 0) & (counts < target.numel())
        if int(present.sum()) < 1:
            return torch.tensor(float("nan"))
        preds = dim_zero_cat(self.preds)
        if self.thresholds is None and self.ignore_index is None:  # exact: ranks, as torchmetrics' ROC gives
            per_class = ovr_auroc(preds, target.to(preds.device), self.num_classes)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # absent classes: their per-class value is dropped below
                per_class = _multiclass_auroc_compute((preds, target), self.num_classes, None, self.thresholds)
        return per_class[present.to(per_class.device)].mean()


def ovr_auroc(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Exact one-vs-rest AUROC per class from scores ``(N, C)`` and class indices ``(N,)``, in ``preds``' dtype.

    The Mann-Whitney statistic on average ranks (tied scores count one half): the area under the
    exact ROC curve torchmetrics draws through every distinct score, in one sort of all columns
    (torchmetrics sorts once per class). Computed on the CPU with numpy, whose vectorised sort is
    about 5x torch's on random scores and whose operations on arrays of this size cost a fraction of
    torch's: the ranks of each class's positives are summed in sorted order, and runs of tied scores
    are looked for only where there are some. Classes without positives or negatives get NaN.
    """
    p = np.ascontiguousarray(preds.detach().cpu().numpy().T)  # (C, N): one sort per class
    y = target.detach().cpu().numpy().reshape(-1)
    n = p.shape[1]
    order = p.argsort(axis=1)
    ordered = np.sort(p, axis=1)  # (the values p[order] holds, in a tenth of take_along_axis' time)
    positive = y[order] == np.arange(num_classes)[:, None]  # in sorted order
    pos = positive.sum(1).astype(np.float64)
    neg = n - pos
    ties = ordered[:, 1:] == ordered[:, :-1]
    if ties.any():
        idx = np.broadcast_to(np.arange(n), ordered.shape)
        starts = np.ones(ordered.shape, dtype=bool)
        starts[:, 1:] = ~ties
        ends = np.ones(ordered.shape, dtype=bool)
        ends[:, :-1] = ~ties
        first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)  # the run of tied scores of each entry
        last = np.minimum.accumulate(np.where(ends, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
        rank_sum = np.where(positive, (first + last) / 2 + 1, 0.0).sum(1)
    else:
        rank_sum = np.where(positive, np.arange(1.0, n + 1), 0.0).sum(1)
    u = rank_sum - pos * (pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where((pos > 0) & (neg > 0), u / np.maximum(pos * neg, 1), np.nan)
    return torch.from_numpy(auc).to(device=preds.device, dtype=preds.dtype)


def evaluation_metrics(task: str, num_outputs: int, validate_args: bool = True) -> MetricCollection:
    """The streamed torchmetrics a probe is scored with: R²/Pearson/MSE or accuracy/AUROC.

    R² is :class:`~lit_repr.metrics.moments.CentredR2Score` (its total sum of squares is taken about
    a reference, so targets such as ``1e8 + digit`` keep their digits); Pearson and MSE are
    torchmetrics'. (Spearman needs global ranks: :class:`ProbeReadout` computes it on its bounded
    sample.) A score without its definition (R² of fewer than two samples, accuracy of none, AUROC of
    fewer than two classes present) is NaN; AUROC averages one-vs-rest over the classes present.
    ``validate_args=False`` skips torchmetrics' checks of every classification batch (for callers that
    checked the class indices already, as :class:`ProbeReadout` does).
    """
    if task == "regression":
        return MetricCollection(
            {
                "r2": CentredR2Score(num_outputs=num_outputs),
                "pearson": torchmetrics.PearsonCorrCoef(num_outputs=num_outputs),
                "mse": torchmetrics.MeanSquaredError(num_outputs=num_outputs),
            }
        ).set_dtype(torch.float64)  # sums of squares in float64: scores do not depend on batching
    return MetricCollection(
        {
            "acc": _Accuracy(num_classes=num_outputs, validate_args=validate_args),
            "auroc": _AUROC(num_classes=num_outputs, validate_args=validate_args),
        },
        compute_groups=False,  # (no states in common: looking for groups cost ~30 us per update)
    )


class ProbeReadout(nn.Module):
    """One linear probe: streamed fit statistics, a closed-form fit, and per-split scores.

    It follows the readout contract (:mod:`lit_repr.metrics.readout`): ``update(features, target,
    split)`` with ``split`` ``"fit"``, ``"heldout"`` or an evaluation split name; ``fit()``;
    ``compute(split)``; ``reset(split=None)``; ``figures(split, title)``.

    Regression scores: ``r2``, ``pearson`` and ``mse`` are streamed (exact over batches and DDP
    processes); ``spearman`` needs global ranks and is computed on a bounded uniform sample of at
    most ``max_samples`` (prediction, target) pairs per split (see
    :class:`~lit_repr.metrics.samples.SampleBuffer`), the same sample the predicted-vs-true figure
    shows. Classification: ``acc``, ``auroc``. ``compute("fit")`` gives the chosen ridge penalty
    ``alpha`` (ridge only).

    Args:
        in_features: feature dimension ``D``.
        task: ``"regression"`` or ``"classification"``.
        num_targets: regression output dimension ``K`` (ignored for classification).
        num_classes: number of classes (classification).
        alphas: ridge penalty grid (scikit-learn convention).
        selection: ``"gcv"`` or ``"heldout"`` (feed held-out batches with split ``"heldout"``).
        classifier: ``"ridge"`` (one-hot least squares) or ``"logistic"`` (L-BFGS on a bounded
            sample of at most ``max_fit_samples`` fitting rows; no ridge solve).
        logistic_C: inverse L2 strength of the logistic probe.
        projection_dim: random projection of the features before fitting (bounds memory).
        max_components: ridge on the leading principal components only.
        max_fit_samples: rows the logistic probe keeps to fit on.
        max_samples: (prediction, target) pairs kept per evaluation split for Spearman and figures.
        buffer_rows: batches are checked at once but accumulated in blocks of up to this many rows
            (one large product instead of many small ones: far less per-batch overhead); default
            ``max(256, 2¹⁶ / in_features, in_features)`` rows: large enough for BLAS to run near its
            speed and to pay for the ``D²`` work of adding each block to the statistics, small enough
            that an online probe accumulates most of an epoch during training instead of at validation.
            Every read (fit, scores, ``state_dict``) flushes the block first, so results and
            checkpoints are those of unbuffered accumulation.
        local: the data given are the whole data, even inside a DDP process: never sum states
            across processes nor enter a collective (see :func:`~lit_repr.metrics.ridge.local_only`).
        target_name: what the target is called in error messages.
        float32_products: accumulate the ridge statistics of float32 features with float32 products
            (about twice as fast, float32 rounding; see :class:`~lit_repr.metrics.ridge.StreamingRidge`).

    Example:
        >>> r = ProbeReadout(3, task="regression", num_targets=1)
        >>> x = torch.randn(100, 3); r.update(x, x[:, 0], "fit"); r.fit()
        >>> r.update(x, x[:, 0], "val"); r.compute("val")["r2"] > 0.99
        True
    """

    def __init__(
        self,
        in_features: int,
        task: Task = "regression",
        num_targets: int | None = 1,
        num_classes: int | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        selection: Literal["gcv", "heldout"] = "gcv",
        classifier: Literal["ridge", "logistic"] = "ridge",
        logistic_C: float = 1.0,
        projection_dim: int | None = None,
        max_components: int | None = None,
        max_fit_samples: int = 100_000,
        max_samples: int = 10_000,
        buffer_rows: int | None = None,
        local: bool = False,
        target_name: str | None = None,
        float32_products: bool = False,
    ) -> None:
        super().__init__()
        _check_task(task, num_classes)
        if buffer_rows is not None and (not isinstance(buffer_rows, int) or buffer_rows < 1):
            raise ValueError(f"buffer_rows must be a positive int or None, got {buffer_rows!r}")
        if classifier not in _CLASSIFIERS:
            raise ValueError(f"classifier must be one of {_CLASSIFIERS}, got {classifier!r}")
        if classifier == "logistic" and task != "classification":
            raise ValueError("classifier='logistic' applies to classification targets only")
        if task == "regression" and (not isinstance(num_targets, int) or num_targets < 1):
            raise ValueError(f"regression probes need num_targets >= 1, got {num_targets!r}")
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        self.task = task
        self.target_name = target_name or "target"
        self.unfitted: str | None = None  # why the last fit() could not fit (its scores are undefined)
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_outputs = num_classes if task == "classification" else num_targets
        self.classifier = classifier
        self.logistic_C = logistic_C
        self.max_samples = max_samples
        ridge_kw = dict(
            alphas=alphas, selection=selection, projection_dim=projection_dim, max_components=max_components,
            float32_products=float32_products,
        )
        self.stats = StreamingRidge(in_features, self.num_outputs, **ridge_kw)
        self.heldout = StreamingRidge(in_features, self.num_outputs, **ridge_kw)
        self.stats.persistent(True)
        self.heldout.persistent(True)
        self.fit_samples = SampleBuffer(max_fit_samples) if classifier == "logistic" else None
        self.evals = SplitDict()
        self.samples = SplitDict()
        self.local = local
        self.buffer_rows = buffer_rows or max(256, 2**16 // max(in_features, 1), in_features)
        self._fit_buf: list[tuple[Tensor, Tensor]] = []
        self._fit_rows = 0
        self._eval_buf: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._eval_rows: dict[str, int] = {}
        self.register_buffer("weight", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("_alpha", torch.tensor(float("nan"), dtype=torch.float64))
        self.projection = self.stats.projection
        if local:
            local_only(self)

    # ---------------------------------------------------------------- helpers
    def _targets(self, y: Tensor, n: int) -> Tensor:
        y = prepare_targets(y, self.task, self.num_classes, n, name=self.target_name)
        if self.task == "regression" and y.shape[1] != self.num_outputs:
            raise ValueError(
                f"regression target {self.target_name!r} has {y.shape[1]} dimensions but this probe was built "
                f"for {self.num_outputs}"
            )
        return y

    def _design(self, y: Tensor) -> Tensor:
        return F.one_hot(y, self.num_classes).to(torch.float64) if self.task == "classification" else y

    def _check_features(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"features must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if not all_finite(x):
            raise ValueError(
                f"features contain {int((~torch.isfinite(x)).sum())} NaN/inf values; the probe was not updated"
            )
        return x

    @property
    def fitted(self) -> bool:
        return self.weight.numel() > 0

    @property
    def alpha(self) -> float:
        return float(self._alpha)

    @property
    def n_fit(self) -> int:
        self.flush()
        return int(self.stats.n)

    def flush(self) -> None:
        """Accumulate the buffered batches into the statistics and evaluation metrics."""
        if self._fit_buf:
            x, y = (torch.cat(t) if len(t) > 1 else t[0] for t in zip(*self._fit_buf))
            self._fit_buf, self._fit_rows = [], 0
            if self.fit_samples is not None:
                self.fit_samples.update(x.to(torch.float64), y)
            else:
                self._add_to_stats(x, y, checked=True)  # every batch was checked on arrival
        for split in list(self._eval_buf):
            self._flush_eval(split)

    def _add_to_stats(self, x: Tensor, y: Tensor, checked: bool) -> None:
        """Add features and checked targets to the ridge statistics (values checked there unless ``checked``)."""
        d = self.stats.dim
        with _threads_for(x.shape[0] * (self.in_features + d) * d, x.device):
            self.stats.update(x, self._design(y), checked=checked)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("weight", "bias"):  # fitted weights have the saved shape (empty before a fit)
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.flush()  # a checkpoint holds every batch seen, buffered or not
        return super().state_dict(*args, **kwargs)

    # ---------------------------------------------------------------- the readout contract
    def update(self, features: Tensor, target: Tensor, split: str) -> None:
        """Route a batch: ``"fit"`` statistics, ``"heldout"`` statistics, or evaluation split ``split``."""
        if split == FIT:
            self.update_fit(features, target)
        elif split == HELDOUT:
            self.update_heldout(features, target)
        else:
            self.update_eval(split, features, target)

    def compute(self, split: str) -> dict[str, float]:
        """Scores of an evaluation split (averaged over outputs); ``"fit"``: the chosen penalty."""
        if split in (FIT, HELDOUT):
            return {"alpha": self.alpha} if self.fitted and self.classifier == "ridge" else {}
        # the mean over the outputs whose score is defined; NaN when none is
        return {k: float(v) if v.numel() == 1 else float(torch.nanmean(v.double()))
                for k, v in self.compute_eval(split).items()}

    def reset(self, split: str | None = None) -> None:
        """Forget the evaluation statistics of ``split``, or all statistics (fitted weights stay)."""
        if split is None:
            self.reset_fit()
            self.reset_eval()
        else:
            self._eval_buf.pop(split, None)
            self._eval_rows.pop(split, None)
            for group in (self.evals, self.samples):
                if split in group:
                    group[split].reset()

    def figures(self, split: str, title: str) -> dict[str, Any]:
        """``{"pred_vs_true": figure}`` for regression probes (from the bounded sample)."""
        data = self.plot_data(split) if self.task == "regression" else None
        if data is None:
            return {}
        from lit_repr.metrics.figures import pred_vs_true_figure

        return {"pred_vs_true": pred_vs_true_figure(*data, title=title)}

    # ---------------------------------------------------------------- fitting
    def update_fit(self, x: Tensor, y: Tensor) -> None:
        """Accumulate a batch of the fitting split (checked now, added in blocks).

        A batch of at least ``buffer_rows`` rows arriving with nothing buffered (a whole array, as
        :func:`~lit_repr.metrics.fit_probe` passes) is accumulated at once, its values checked by the
        accumulation itself (no separate pass over them).
        """
        if not self._fit_buf and self.fit_samples is None and x.ndim == 2 and x.shape[0] >= self.buffer_rows:
            y = self._targets(y, x.shape[0])
            try:
                self._add_to_stats(x.detach(), y.detach(), checked=False)
            except ValueError:
                if not all_finite(x):
                    self._check_features(x)  # the readout's own message
                raise
            return
        x = self._check_features(x)
        y = self._targets(y, x.shape[0])
        self._fit_buf.append((x.detach(), y.detach()))
        self._fit_rows += x.shape[0]
        if self._fit_rows >= self.buffer_rows:
            self.flush()

    def update_heldout(self, x: Tensor, y: Tensor) -> None:
        """Accumulate a batch of the split used to choose the penalty (``selection="heldout"``)."""
        x = self._check_features(x)
        y = self._targets(y, x.shape[0])
        self.heldout.update(x, self._design(y), checked=True)

    def fit(self) -> None:
        """Solve for the probe from the accumulated statistics (synchronised under DDP)."""
        self.flush()
        n = self._global_fit_count()
        if n < 2:  # nothing to fit on: every score of this probe is undefined until the next fit
            self.unfitted = f"the probe could not be fitted: its fitting split had {n} sample(s), at least 2 are needed"
            self.weight, self.bias = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
            self._alpha = torch.tensor(float("nan"), dtype=torch.float64, device=self._alpha.device)
            return
        self.unfitted = None
        if self.fit_samples is not None:  # logistic: no ridge solve
            xs, ys = self.fit_samples.compute()
            w, b = fit_logistic(xs, ys, self.num_classes, C=self.logistic_C)  # type: ignore[arg-type]
            alpha = float("nan")
        else:
            heldout = self.heldout if self.stats.selection == "heldout" else None
            with _threads_for(self.stats.dim**3, self.weight.device):
                sol: RidgeFit = self.stats.solve(heldout)
            w, b, alpha = sol.weight, sol.bias, sol.alpha
            if sol.projection is not None:
                w = sol.projection.to(w) @ w
        self.weight = w.to(torch.float64)
        self.bias = b.to(torch.float64)
        self._alpha = torch.tensor(alpha, dtype=torch.float64, device=self._alpha.device)

    def fit_scores_from_moments(self) -> dict[str, float] | None:
        """``r2``, ``pearson`` and ``mse`` of the fitted probe on its own fitting split, from the fitting
        statistics alone (no second pass over the data), averaged over outputs as :meth:`compute` does;
        ``None`` where they do not apply (classification, logistic, random projection, not fitted).

        Exact algebra on the centred moments: ``SSE = Σyy − 2wᵀΣxy + wᵀΣxx w`` (plus the squared error of
        the means without an intercept), the same scores a pass over the predictions gives to rounding.
        """
        if self.task != "regression" or self.fit_samples is not None or not self.fitted or self.unfitted:
            return None
        if self.stats.projection is not None:
            return None
        self.flush()
        with synced(self.stats):
            fit = RidgeFit(self.weight, self.bias, self.alpha, self.stats.alphas, torch.empty(0), None)
            centred = self.stats.centred()
            raw = moments_score(fit, self.stats, centred)
            vy = centred[3]["yy"]
        flat = (self.weight == 0).all(0)
        raw["r2"] = torch.where(vy > 0, raw["r2"], float("nan"))
        raw["pearson"] = torch.where((vy > 0) & ~flat, raw["pearson"], float("nan"))
        return {k: float(torch.nanmean(v)) for k, v in raw.items()}

    def _global_fit_count(self) -> int:
        """Samples of the fitting split over every process."""
        if self.fit_samples is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an empty sample is an answer here
                return int(self.fit_samples.compute()[0].shape[0])
        with synced(self.stats):
            return int(self.stats.n)

    def reset_fit(self) -> None:
        """Forget the fitting statistics (the fitted weights stay until the next :meth:`fit`)."""
        self._fit_buf, self._fit_rows = [], 0
        self.stats.reset()
        if bool(self.heldout.n > 0):  # (GCV never fills it: no D x D copy per epoch)
            self.heldout.reset()
        if self.fit_samples is not None:
            self.fit_samples.reset()

    def predict(self, x: Tensor) -> Tensor:
        if not self.fitted:
            raise RuntimeError("the probe has not been fitted yet: call update_fit(...) then fit()")
        return linear64(x, self.weight, self.bias)

    # ---------------------------------------------------------------- evaluation
    def _eval(self, split: str) -> MetricCollection:
        if split not in self.evals:
            metrics = evaluation_metrics(self.task, self.num_outputs, validate_args=False)  # indices checked here
            self.evals[split] = metrics.to(self.weight.device)
            if self.task == "regression":
                self.samples[split] = SampleBuffer(self.max_samples).to(self.weight.device)
            if self.local:
                local_only(self.evals[split])
                if split in self.samples:
                    local_only(self.samples[split])
        return self.evals[split]  # type: ignore[return-value]

    def update_eval(self, split: str, x: Tensor, y: Tensor, *, checked: bool = False) -> None:
        """Score the fitted probe on a batch of evaluation split ``split`` (checked now, scored in blocks).

        ``checked=True``: the features were checked finite already (e.g. rows of the fitting split);
        their shape still is.
        """
        if self.unfitted is not None:  # scores undefined: the split is still declared (every process computes it)
            self._eval(split)
            return
        if not self.fitted:
            raise RuntimeError("the probe has not been fitted yet: call update_fit(...) then fit()")
        if not (checked and x.ndim == 2 and x.shape[1] == self.in_features):
            x = self._check_features(x)
        y = self._targets(y, x.shape[0])
        self._eval(split)
        self._eval_buf.setdefault(split, []).append((x.detach(), y.detach()))
        self._eval_rows[split] = self._eval_rows.get(split, 0) + x.shape[0]
        if self._eval_rows[split] >= self.buffer_rows:
            self._flush_eval(split)

    def _flush_eval(self, split: str) -> None:
        buf = self._eval_buf.pop(split, [])
        self._eval_rows.pop(split, None)
        if not buf:
            return
        x, y = (torch.cat(t) if len(t) > 1 else t[0] for t in zip(*buf))
        with _threads_for(x.shape[0] * self.in_features * self.num_outputs, x.device):
            pred = self.predict(x)
            if self.task == "classification":
                self._eval(split).update(pred.float().softmax(-1), y)
            else:
                self._eval(split).update(pred.double(), y.double())
                self.samples[split].update(pred.double(), y.double())  # float64: targets keep every digit

    def _eval_size(self, split: str) -> int:
        """Elements of the predictions kept for ``split`` (AUROC's or the bounded sample's), 0 if none."""
        if self.task == "regression":
            return self.samples[split].num_kept * self.num_outputs  # type: ignore[operator]
        kept = self._eval(split)["auroc"].preds
        return sum(t.numel() for t in kept) if isinstance(kept, list) else kept.numel()

    def compute_eval(self, split: str) -> dict[str, Tensor]:
        """Scores of split ``split`` (per output for regression), synchronised under DDP."""
        self._flush_eval(split)
        self._eval(split)  # a process whose shard of the split was empty has its (empty) metrics too
        with warnings.catch_warnings(), _threads_for(32 * self._eval_size(split), self.weight.device):
            warnings.simplefilter("ignore")  # one warning below says what is undefined
            raw = {k: torch.as_tensor(v) for k, v in self._eval(split).compute().items()}
            if self.task == "regression":
                pred, true = (t.reshape(-1, self.num_outputs) for t in self.samples[split].compute())
                raw["spearman"] = (
                    _spearman(pred, true) if pred.ndim == 2 and pred.shape[0] >= 2
                    else torch.full((self.num_outputs,), float("nan"), dtype=torch.float64)  # type: ignore[arg-type]
                )
        if self.unfitted is not None:
            raw = {k: torch.full_like(v.double(), float("nan")) for k, v in raw.items()}
        if self.task == "regression" and self.fitted:
            # a probe without weights predicts a constant: its correlations are undefined (torchmetrics
            # may return rounding noise instead of NaN when the constant is not exactly representable)
            flat = (self.weight == 0).all(0)
            for k in ("pearson", "spearman"):
                if k in raw and bool(flat.any()):
                    v = raw[k].clone().reshape(-1)
                    v[flat.to(v.device).reshape(-1)] = float("nan")
                    raw[k] = v.reshape(raw[k].shape)
        finite = {k: bool(torch.isfinite(v).all()) for k, v in raw.items()}
        bad = [k for k, ok in finite.items() if not ok]
        if bad:
            why = self.unfitted or (
                "fewer than two samples, or constant predictions or targets" if self.task == "regression"
                else "too few samples or fewer than two classes present"
            )
            warnings.warn(
                f"probe scores {bad} of target {self.target_name!r} on split {split!r} are undefined ({why}); "
                f"they are logged as NaN",
                stacklevel=2,
            )
        return {k: v if finite[k] else torch.where(torch.isfinite(v), v, torch.full_like(v, float("nan")))
                for k, v in raw.items()}

    def plot_data(self, split: str) -> tuple[Tensor, Tensor] | None:
        """The bounded sample of (prediction, truth) pairs of ``split`` (regression only)."""
        self._flush_eval(split)
        if split not in self.samples or self.samples[split].num_kept == 0:
            return None
        pred, true = self.samples[split].compute()  # (one row comes back squeezed)
        return pred.cpu().reshape(-1, self.num_outputs), true.cpu().reshape(-1, self.num_outputs)

    def reset_eval(self) -> None:
        self._eval_buf, self._eval_rows = {}, {}
        for group in (self.evals, self.samples):
            for m in group.values():
                m.reset()


def linear64(x: Tensor, weight: Tensor, bias: Tensor, rows: int = 1024) -> Tensor:
    """``x @ weight + bias`` in float64 for features of any float dtype.

    Features that are not float64 yet are converted in blocks of ``rows`` rows, each used while it is
    still in cache, instead of converting the whole array first (the same result, a fraction of the
    memory traffic).
    """
    weight, bias = weight.to(torch.float64), bias.to(torch.float64)
    if x.dtype == torch.float64 or x.shape[0] <= rows:
        return torch.addmm(bias, x.to(torch.float64), weight)
    out = torch.empty(x.shape[0], weight.shape[1], dtype=torch.float64, device=x.device)
    # few outputs: each block is bound by memory, and one thread runs the many small products without
    # waiting for the others (on 2 busy cores: 6 ms instead of 300 ms for 40,000 x 512, one output)
    with num_threads(1 if x.device.type == "cpu" and weight.shape[1] <= 32 else None):
        for start in range(0, x.shape[0], rows):
            torch.addmm(bias, x[start : start + rows].to(torch.float64), weight, out=out[start : start + rows])
    return out


def _spearman(pred: Tensor, true: Tensor) -> Tensor:
    """Spearman correlation per column (average ranks for ties), NaN where a column is constant."""
    from scipy.stats import rankdata

    def ranks(a: Tensor) -> Tensor:
        return torch.from_numpy(rankdata(a.double().cpu().numpy(), axis=0))

    rp, rt = ranks(pred), ranks(true)
    rp, rt = rp - rp.mean(0), rt - rt.mean(0)
    den = (rp.square().sum(0) * rt.square().sum(0)).sqrt()
    return torch.where(den > 0, (rp * rt).sum(0) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
