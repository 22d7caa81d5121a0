"""Streaming closed-form ridge regression from sufficient statistics.

:class:`StreamingRidge` accumulates ``n``, ``Σx``, ``Σy``, ``XᵀX``, ``Xᵀy`` and ``Σy²`` about a
per-process reference (the mean of its first batch; see :mod:`lit_repr.metrics.moments`) as float64
torchmetrics states, so batches, DDP processes and checkpoints combine exactly, a constant added to
the features or targets changes nothing, and memory is ``O(D² + D·K)`` whatever the number of
samples. ``compute()``
eigendecomposes the centred ``XᵀX`` once and solves ridge for a whole grid of penalties, choosing
the penalty by generalised cross-validation (GCV) or by the error on a held-out
:class:`StreamingRidge` of the same shape (its statistics are enough: no features are kept).

Penalties follow scikit-learn's convention: ``alpha`` multiplies ``‖W‖²`` against the *sum* of
squared residuals, so ``StreamingRidge(alphas=[a])`` matches ``sklearn.linear_model.Ridge(alpha=a)``.

Cost: each update is ``O(B·D²)``; each solve is one ``O(D³)`` eigendecomposition plus
``O(D²·K)``. At ``D = 4096`` the statistics take 128 MiB (float64) and the solve a few seconds on
a CPU core; beyond that pass ``projection_dim`` (a fixed random Gaussian projection, identical on
every process) or ``max_components`` (ridge on the leading principal components).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from lit_repr.metrics.moments import NonFiniteBatch, ShiftedMoments, symmetrise_
from lit_repr.threads import blas_threads, num_threads

__all__ = ["StreamingRidge", "RidgeFit", "DEFAULT_ALPHAS", "moments_score", "local_only", "synced", "synced_like"]

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 7))


@dataclass
class RidgeFit:
    """A fitted linear map ``y ≈ x @ weight + bias`` (``weight``: ``(D, K)``, ``bias``: ``(K,)``).

    ``alpha`` is the chosen penalty; ``scores`` the selection criterion per penalty in ``alphas``
    (GCV error or held-out mean squared error, lower is better; NaN for a GCV error that rounding leaves
    undefined, see :func:`_gcv_tridiagonal`); ``projection`` the ``(D_in, D)``
    matrix applied to raw features first, if any.
    """

    weight: Tensor
    bias: Tensor
    alpha: float
    alphas: Tensor
    scores: Tensor
    projection: Tensor | None = None

    def predict(self, x: Tensor) -> Tensor:
        """Predictions for raw features ``x`` of shape ``(N, D_in)``."""
        x = x.to(self.weight.dtype)
        if self.projection is not None:
            x = x @ self.projection
        return x @ self.weight + self.bias

    def state_dict(self) -> dict[str, Tensor | float | None]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "alpha": self.alpha,
            "alphas": self.alphas,
            "scores": self.scores,
            "projection": self.projection,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> "RidgeFit":
        return cls(d["weight"], d["bias"], float(d["alpha"]), d["alphas"], d["scores"], d.get("projection"))


def moments_score(fit: RidgeFit, stats: "StreamingRidge", centred: tuple | None = None) -> dict[str, Tensor]:
    """Exact MSE, R² and Pearson r per target of ``fit`` on the data summarised by ``stats``.

    Uses only the sufficient statistics of ``stats`` (``n``, sums, ``XᵀX``, ``Xᵀy``, ``Σy²`` about
    their references), or ``centred``, their ``stats.centred()`` already formed (scoring several fits on
    the same statistics). Returns ``{"mse": (K,), "r2": (K,), "pearson": (K,)}`` in float64.
    """
    count, means, prods, elem = stats.centred() if centred is None else centred
    n = count.clamp_min(1)
    mx, my = means["x"], means["y"]
    cxx, cxy, vy = prods["xtx"] / n, prods["xty"] / n, elem["yy"] / n
    W = fit.weight.to(torch.float64)
    b = fit.bias.to(torch.float64)
    pred_mean = mx @ W + b
    cov_pred_y = (W * cxy).sum(0)
    var_pred = (W * (cxx @ W)).sum(0)
    mse = vy - 2 * cov_pred_y + var_pred + (my - pred_mean) ** 2
    mse = mse.clamp_min(0)
    r2 = 1 - mse / vy.clamp_min(torch.finfo(torch.float64).tiny)
    pearson = cov_pred_y / (var_pred * vy).clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    return {"mse": mse, "r2": r2, "pearson": pearson}


def local_only(module: torch.nn.Module) -> torch.nn.Module:
    """Make every torchmetrics Metric in ``module`` compute on this process's states only.

    For readouts of arrays that are already the whole data (e.g. :func:`~lit_repr.metrics.fit_probe`
    called on one rank under DDP): no collective is entered, so nothing is summed twice and a call
    on a single rank cannot hang.
    """
    for m in module.modules():
        if isinstance(m, Metric):
            m.distributed_available_fn = _never
            m.sync_on_compute = False
    return module


def synced_like(metric: Metric, parent: Metric) -> Metric:
    """``metric`` set to synchronise across processes exactly when ``parent`` does (e.g. a per-split child
    metric created after :func:`local_only` was applied to its owner)."""
    metric.distributed_available_fn = parent.distributed_available_fn
    metric.sync_on_compute = parent.sync_on_compute
    return metric


@contextmanager
def synced(*metrics: Metric | None) -> Iterator[None]:
    """Within the block, every given Metric holds the states summed over all DDP processes.

    Metrics already synchronised (e.g. inside their own ``compute``) are left as they are; a
    ``None`` is skipped. torchmetrics has no public "is synced" query, so this is the one place
    that reads the private ``_is_synced`` flag (a test fails loudly if it moves).
    """
    with ExitStack() as stack:
        for m in metrics:
            if m is not None and not m._is_synced:
                stack.enter_context(m.sync_context())
        yield


def _never() -> bool:
    return False


def _eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric eigendecomposition; CPU matrices up to 1024 × 1024 are solved on one thread.

    One thread is faster there and immune to the stalls multi-threaded LAPACK suffers on busy
    cores (measured on 2 shared cores, 1 vs 2 threads: 0.03 s vs 0.3-4 s at 512, 0.36 s vs
    0.73 s at 1024). The caller's thread count is restored afterwards, also on exceptions.
    """
    with num_threads(1 if a.device.type == "cpu" and a.shape[0] <= 1024 else None):
        return torch.linalg.eigh(a)


def _gcv_tridiagonal(
    sxx: Tensor, sxy: Tensor, syy: Tensor, alphas: Tensor, n: float, df0: float, noise: float
) -> tuple[Tensor, Tensor, int] | None:
    """Ridge over the penalty grid, chosen by GCV, from one Householder tridiagonalisation ``S = Q T Qᵀ``.

    For every penalty ``α``, ``(T + αI) z = Qᵀ Sxy`` is one tridiagonal solve (all penalties in a single
    block-diagonal system); ``RSS(α) = Σyy − zᵀQᵀSxy − α‖z‖²`` and the chosen weights are ``Q z``. The
    degrees of freedom ``df(α) = Σ_i s_i/(s_i + α) = D − α·tr((T + αI)⁻¹)`` come from the two ``LDLᵀ``
    factorisations of ``T + αI``, from the top (the pivots ``d⁺`` of that solve) and from the bottom
    (``d⁻``): ``((T + αI)⁻¹)_ii = 1/(d⁺_i + d⁻_i − T_ii − α)``, ``O(D)`` per penalty, no eigenvalues.
    Constant features (variance at the rounding level ``noise``) are left out first, with weight 0, as
    the eigendecomposition drops them. Other directions without variance (fewer samples than features,
    collinear features: ``T − noise·I`` has no ``LDLᵀ`` factorisation with positive pivots) add nothing
    to ``RSS`` (``z_i = q_i/α`` cancels) and are left out of ``df`` as there, from the eigenvalues of
    ``T``.
    The same fit as the eigendecomposition without its eigenvectors (measured on one core, 114
    features: 0.4 ms against 0.75 ms; 512: 8 ms against 30 ms; on two cores, 2,049: 0.44 s against
    0.75 s for the eigendecomposition alone).
    Where least squares interpolates (as many directions with variance as samples), the penalties whose
    RSS is down at the rounding level of ``Σyy`` get a NaN score (the eigendecomposition computes them
    without cancellation). Returns ``(weight, scores, best)``, or ``None`` where it does not apply (not a
    CPU float64 matrix of at least 32 rows; directions without variance and a chosen penalty near the
    rounding level; no score left): the caller then solves through :func:`_eigh`.
    """
    d = sxx.shape[0]
    if sxx.device.type != "cpu" or sxx.dtype != torch.float64 or d < 32:
        return None
    s_xx, s_xy = sxx.numpy(), sxy.numpy()  # (numpy: a fraction of torch's cost per call on arrays this small)
    live = np.diagonal(s_xx) > noise
    keep = None
    if not live.all():
        # constant features (e.g. ReLU units that never fire) have a variance, and so a row and column of
        # the centred XᵀX, at the rounding level: the eigendecomposition drops their directions, and so
        # does solving without them (weight 0)
        keep = np.flatnonzero(live)
        if keep.size < 32:
            return None
        s_xx, s_xy = s_xx.take(keep, 0).take(keep, 1), s_xy.take(keep, 0)
    from scipy.linalg import lapack

    m, k = s_xy.shape
    al = alphas.numpy()
    a = al.size
    with blas_threads(1 if m < 1024 else torch.get_num_threads()):  # small ones stall on busy cores
        c, diag, off, tau, info = lapack.dsytrd(s_xx.T, lower=1, lwork=32 * m)  # (symmetric: .T is Fortran order)
        if info != 0:
            return None
        null = None
        if lapack.dpttrf(diag - noise, off)[2] != 0:  # an eigenvalue of T at or below the rounding level
            evals, info_e = lapack.dsterf(diag, off)
            if info_e != 0 or evals[-1] <= 1e-12 * max(n, 1.0):
                return None
            null = evals <= noise
        reflectors, lwork = c[1:, :-1], 32 * max(k, 1)  # Q = diag(1, Q'), Q' from the reflectors
        bn = s_xy.copy()
        bn[1:], _, info_q = lapack.dormqr(b"L", b"T", reflectors, tau, bn[1:], lwork)  # Qᵀ Sxy
        if info_q != 0:
            return None
        shifted = (diag[None, :] + al[:, None]).reshape(-1)  # T + αI for every α, one block each
        coupling = np.zeros((a, m))
        coupling[:, :-1] = off
        coupling = coupling.reshape(-1)[:-1]
        top, _, z, info_z = lapack.dptsv(shifted, coupling, np.tile(bn, (a, 1)), overwrite_b=1)
        if info_z != 0:
            return None
        if null is None:
            bottom, _, info_b = lapack.dpttrf(shifted[::-1].copy(), coupling[::-1].copy())
            if info_b != 0:
                return None
            trace = (1.0 / (top + bottom[::-1] - shifted)).reshape(a, m).sum(1)  # tr((T + αI)⁻¹)
            df = m - al * trace + df0
        else:
            s = np.where(null, 0.0, evals)
            df = (s[None, :] / (s[None, :] + al[:, None])).sum(1) + df0
        z = z.reshape(a, m, k)
        fitted = np.einsum("amk,mk->ak", z, bn) + al[:, None] * np.einsum("amk,amk->ak", z, z)
        rss = np.maximum(syy.numpy()[None, :] - fitted, 0.0)  # (A, K)
        scores = (rss / n).mean(1) / np.maximum(1 - df / n, 1e-12) ** 2
        if (m if null is None else int((~null).sum())) + df0 >= n:
            # least squares interpolates (as many directions with variance as samples): RSS vanishes with α and
            # is computed here as a difference, so where it is down at the rounding level of Σyy its GCV score
            # is noise (NaN); a choice among the rest stands, none left goes to the eigendecomposition
            scores = np.where(rss.mean(1) < 1e-8 * float(syy.mean()), np.nan, scores)
            if np.isnan(scores).all():
                return None
        best = int(np.argmin(np.where(np.isnan(scores), np.inf, scores)))
        if null is not None and bool(null.any()) and float(al[best]) < 1e4 * noise:
            # the eigendecomposition gives those directions weight 0; here they get (rounding of Xᵀy)/α,
            # negligible unless α is near the rounding level itself
            return None
        w = np.array(z[best])
        w[1:], _, info_q = lapack.dormqr(b"L", b"N", reflectors, tau, w[1:], lwork)  # Q z
        if info_q != 0:
            return None
    if keep is not None:
        full = np.zeros((d, k))
        full[keep] = w
        w = full
    return torch.from_numpy(w), torch.from_numpy(scores), best


class StreamingRidge(ShiftedMoments):
    """Ridge regression fitted in closed form from streamed sufficient statistics.

    Args:
        in_features: feature dimension ``D`` of the inputs to ``update``.
        num_targets: number of regression targets ``K`` (one-hot columns for classification).
        alphas: grid of penalties (scikit-learn convention); one eigendecomposition serves all.
        selection: ``"gcv"`` (generalised cross-validation on the fitting data) or ``"heldout"``
            (pass the held-out statistics to :meth:`solve`).
        fit_intercept: centre features and targets (an unpenalised intercept).
        projection_dim: if set, features are multiplied by a fixed random Gaussian matrix
            ``(in_features, projection_dim)`` (scaled by ``1/sqrt(projection_dim)``) before
            accumulation, bounding memory at ``O(projection_dim²)``.
        max_components: if set, ridge is solved on the leading principal components only
            (principal-component regression with shrinkage).
        seed: seed of the random projection (identical on every process).
        float32_products: accumulate the sums and products of float32 features in float32 per batch
            (about twice as fast; float32 rounding, see
            :meth:`~lit_repr.metrics.moments.ShiftedMoments.accumulate`). Off (default): float64, exact
            over batching and DDP processes to float64 rounding.

    States (float64, about the references ``x_ref`` and ``y_ref``): ``n``, ``sum_x``, ``sum_y``,
    ``xtx`` (``Σ(x − x_ref)(x − x_ref)ᵀ``), ``xty`` and ``yy`` (``Σ(y − y_ref)²`` per target).

    Example:
        >>> x = torch.randn(200, 5); y = x @ torch.randn(5, 2) + 0.1 * torch.randn(200, 2)
        >>> ridge = StreamingRidge(5, 2)
        >>> for xb, yb in zip(x.split(50), y.split(50)):
        ...     ridge.update(xb, yb)
        >>> fit = ridge.compute()
        >>> bool(((fit.predict(x) - y) ** 2).mean() < 0.05)
        True
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    sum_x: Tensor
    sum_y: Tensor
    xtx: Tensor
    xty: Tensor
    yy: Tensor

    def __init__(
        self,
        in_features: int,
        num_targets: int,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        selection: Literal["gcv", "heldout"] = "gcv",
        fit_intercept: bool = True,
        projection_dim: int | None = None,
        max_components: int | None = None,
        seed: int = 0,
        float32_products: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(float32_products, bool):
            raise ValueError(f"float32_products must be True or False, got {float32_products!r}")
        self.float32_products = float32_products
        for name, v in (("in_features", in_features), ("num_targets", num_targets)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        alphas_t = torch.as_tensor(list(alphas), dtype=torch.float64)
        if alphas_t.numel() == 0 or not bool(torch.isfinite(alphas_t).all()) or bool((alphas_t <= 0).any()):
            raise ValueError(f"alphas must be a non-empty list of finite penalties > 0, got {list(alphas)}")
        if selection not in ("gcv", "heldout"):
            raise ValueError(f"selection must be 'gcv' or 'heldout', got {selection!r}")
        if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim < 1):
            raise ValueError(f"projection_dim must be a positive int or None, got {projection_dim!r}")
        if max_components is not None and (not isinstance(max_components, int) or max_components < 1):
            raise ValueError(f"max_components must be a positive int or None, got {max_components!r}")
        self.in_features = in_features
        self.num_targets = num_targets
        self.alphas = alphas_t
        self.selection = selection
        self.fit_intercept = fit_intercept
        self.projection_dim = projection_dim
        self.max_components = max_components
        self.seed = seed
        if projection_dim is not None:
            gen = torch.Generator().manual_seed(seed)
            proj = torch.randn(in_features, projection_dim, generator=gen, dtype=torch.float64)
            self.register_buffer("projection", proj / math.sqrt(projection_dim), persistent=False)
        else:
            self.projection = None
        d = projection_dim or in_features
        self.dim = d
        self.add_moments(
            variables={"x": ("sum_x", d), "y": ("sum_y", num_targets)},
            products={"xtx": ("x", "x"), "xty": ("x", "y")},
            elementwise={"yy": ("y", "y")},
        )

    def _prepare(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Features and ``(B, K)`` float64 targets, their shapes checked (their values are checked as they
        are accumulated)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"features must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if y.ndim == 1:
            y = y.unsqueeze(1)
        if y.ndim != 2 or y.shape[1] != self.num_targets or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"targets must have shape ({x.shape[0]}, {self.num_targets}) to match features "
                f"{tuple(x.shape)}, got {tuple(y.shape)}"
            )
        y = y.to(torch.float64)
        if self.projection is not None:
            x = x.to(torch.float64) @ self.projection.to(x.device)
        return x, y  # converted to float64 as their reference is subtracted (unless float32_products)

    def update(self, x: Tensor, y: Tensor, *, checked: bool = False) -> None:  # type: ignore[override]
        """Accumulate a batch of features ``(B, in_features)`` and targets ``(B, num_targets)``.

        A batch holding NaN or inf (or values whose squares overflow float64) raises ``ValueError`` and
        changes nothing; on the CPU in float64 that check is read off the batch's own sums of squares, at
        no extra pass. ``checked=True``: the values were checked already, batch by batch (as
        :class:`~lit_repr.metrics.ProbeReadout` does on arrival): only the shapes are checked here.
        """
        self._accumulate(*self._prepare(x, y), checked=checked)

    def _accumulate(self, x: Tensor, y: Tensor, checked: bool = False) -> None:
        if checked:
            self.accumulate(return_centred=False, x=x, y=y)
            return
        try:
            self.add_checked(x=x, y=y)
        except NonFiniteBatch as e:
            what = " and ".join({"x": "features", "y": "targets"}[v] for v in e.variables)
            why = "hold values whose squares overflow float64" if e.overflow else "contain NaN or inf"
            raise ValueError(f"{what} {why}; nothing was accumulated") from None

    # ------------------------------------------------------------------ solving
    def _centred(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Means and the sums ``Σ(x − m)(x − m)ᵀ``, ``Σ(x − m)(y − m_y)ᵀ``, ``Σ(y − m_y)²`` about the means
        (``fit_intercept``) or about 0."""
        _, means, prods, elem = self.centred()
        if self.fit_intercept:
            mx, my = means["x"], means["y"]
            sxx, sxy, syy = prods["xtx"], prods["xty"], elem["yy"]
        else:
            mx = torch.zeros_like(self.sum_x)
            my = torch.zeros_like(self.sum_y)
            raw = self.moments_about({"x": mx, "y": my})
            sxx, sxy, syy = raw["xtx"], raw["xty"], raw["yy"]
        return mx, my, symmetrise_(sxx), sxy, syy  # (sxx is a new tensor: the states stay as they are)

    def solve(self, heldout: "StreamingRidge | None" = None) -> RidgeFit:
        """Fit over the penalty grid and return the selected :class:`RidgeFit`.

        Under DDP the statistics of all processes are summed first (every process gets the
        same fit).

        Args:
            heldout: statistics of held-out data (same shapes); required for
                ``selection="heldout"``, where the penalty with the lowest held-out MSE wins.

        Raises:
            ValueError: if nothing was accumulated, or held-out statistics are missing or empty.
        """
        with synced(self, heldout):
            return self._solve(heldout)

    def _solve(self, heldout: "StreamingRidge | None") -> RidgeFit:
        n = float(self.n)
        if n < 2:
            raise ValueError(f"ridge needs at least 2 samples to fit, got {int(n)}")
        if self.selection == "heldout" and (heldout is None or float(heldout.n) < 1):
            raise ValueError("selection='heldout' needs the statistics of a non-empty held-out split")
        if n <= self.dim:
            warnings.warn(
                f"ridge is fitted on {int(n)} samples with {self.dim} features (fewer samples than "
                f"features): the penalty keeps it well-posed, but expect optimistic training scores; "
                f"fit on more samples, or bound the features with projection_dim= or max_components=",
                stacklevel=2,
            )
        mx, my, sxx, sxy, syy = self._centred()
        # directions whose variance is at the rounding level of the accumulated moments (e.g. constant
        # features, whose centred XᵀX is rounding noise) carry no signal: drop them exactly
        scale = torch.diagonal(self.xtx if self.fit_intercept else sxx).abs().max()
        noise = 1e-11 * float(scale.clamp_min(torch.finfo(torch.float64).tiny))
        if heldout is None and self.max_components is None:
            gcv = _gcv_tridiagonal(sxx, sxy, syy, self.alphas, n, 1.0 if self.fit_intercept else 0.0, noise)
            if gcv is not None:
                w, scores, best = gcv
                fit = RidgeFit(w, my - mx @ w, float(self.alphas[best]), self.alphas, scores, self.projection)
                return fit
        evals, evecs = _eigh(sxx)
        evals = torch.where(evals > noise, evals, torch.zeros_like(evals))
        if self.max_components is not None and self.max_components < evals.numel():
            evals, evecs = evals[-self.max_components :], evecs[:, -self.max_components :]
        if float(evals.max()) <= 1e-12 * max(n, 1.0):
            warnings.warn("features are constant: the ridge probe can only predict the mean", stacklevel=2)
        q = evecs.T @ sxy  # (r, K)
        q[evals == 0] = 0.0
        alphas = self.alphas.to(evals.device)
        denom = evals[None, :] + alphas[:, None]  # (A, r)
        if heldout is None or self.selection == "gcv":
            # RSS(α) = Σyy − Σ_i q_i² (s_i + 2α)/(s_i + α)² = RSS(0) + Σ_i q_i² α²/(s_i (s_i + α)²): the residual
            # of least squares, plus what the penalty adds (without cancellation); df(α) = Σ_i s_i/(s_i + α).
            # Least squares interpolates when there are as many directions with variance as samples (the
            # intercept counted): RSS(0) is then 0, not the rounding of a difference, which at small α
            # would turn GCV's ratio of two vanishing numbers into noise
            df0 = 1.0 if self.fit_intercept else 0.0
            live = evals > 0
            inv = torch.where(live, 1.0 / evals.clamp_min(torch.finfo(evals.dtype).tiny), 0.0)
            q2 = q**2
            rss0 = (syy - inv @ q2).clamp_min(0)
            if int(live.sum()) + df0 >= n:
                rss0 = torch.zeros_like(rss0)
            rss = rss0[None, :] + (alphas[:, None] ** 2 * inv[None, :] / denom**2) @ q2  # (A, K)
            df = (evals[None, :] / denom).sum(1) + df0
            resid_df = (1 - df / n).clamp_min(1e-12)
            scores = (rss / n).mean(1) / resid_df**2
        else:
            scores = torch.empty(alphas.numel(), dtype=torch.float64, device=evals.device)
            held = heldout.centred()
            for i in range(alphas.numel()):
                fit_i = self._fit_for(evecs, q, denom[i], mx, my)
                scores[i] = moments_score(fit_i, heldout, held)["mse"].mean()
        best = int(torch.argmin(torch.nan_to_num(scores, nan=float("inf"))))
        fit = self._fit_for(evecs, q, denom[best], mx, my)
        fit.alpha = float(alphas[best])
        fit.alphas = alphas
        fit.scores = scores
        return fit

    def _fit_for(self, evecs: Tensor, q: Tensor, denom: Tensor, mx: Tensor, my: Tensor) -> RidgeFit:
        w = evecs @ (q / denom[:, None])
        b = my - mx @ w
        return RidgeFit(w, b, float("nan"), self.alphas, torch.empty(0), self.projection)

    def compute(self) -> RidgeFit:  # type: ignore[override]
        """GCV-selected fit (use :meth:`solve` with held-out statistics for ``"heldout"``)."""
        if self.selection == "heldout":
            raise ValueError("selection='heldout': call solve(heldout_stats) instead of compute()")
        return self.solve()
