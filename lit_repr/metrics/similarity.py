"""Representation similarity: linear CKA and the mutual k-nearest-neighbour alignment.

- **Linear CKA** (Kornblith et al., 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))`` with linear
  kernels ``K = XXᵀ``, ``L = YYᵀ``. The *biased* estimator uses centred Gram matrices
  (``HSIC ∝ ‖X̄ᵀȲ‖²_F``); the *debiased* one uses the unbiased HSIC of Song et al. (2012), which
  removes the upward bias CKA has when features are wide compared with the number of samples.
  Both are invariant to orthogonal transforms and isotropic scaling of either representation.
  With linear kernels both estimators are functions of ``XᵀX``, ``YᵀY``, ``XᵀY``, sums and a few
  sums of squared norms, and both are unchanged when a constant is added to ``X`` or ``Y``, so
  :class:`LinearCKA` streams these statistics about a per-process reference
  (:mod:`lit_repr.metrics.moments`, float64): exact over batches and DDP processes, free of the
  cancellation a large feature mean causes, memory ``O((D_x + D_y)²)`` whatever the number of
  samples. :func:`linear_cka` on arrays in memory uses Gram matrices of the centred features when
  there are fewer samples than features, the same statistics otherwise.
- **Mutual k-NN alignment** (Huh et al., 2024, the Platonic Representation Hypothesis): for each
  sample, the fraction of its ``k`` nearest neighbours (excluding itself) shared by the two
  representations, averaged over samples. 1 means identical neighbourhoods; chance is about
  ``k / (N − 1)``. It needs all pairs, so :class:`MutualKNNAlignment` keeps a bounded subsample.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lit_repr.metrics.mcc import as_pair
from lit_repr.metrics.moments import ShiftedMoments
from lit_repr.metrics.ridge import local_only
from lit_repr.metrics.samples import SampleBuffer

__all__ = ["LinearCKA", "MutualKNNAlignment", "linear_cka", "mutual_knn_alignment", "hsic"]

_TINY = torch.finfo(torch.float64).tiny


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return as_pair(x, y, "x", "y")


def hsic(k: Tensor, l: Tensor, debiased: bool = False) -> Tensor:  # noqa: E741
    """HSIC of two ``(N, N)`` Gram matrices: biased ``tr(KHLH)/(N−1)²`` or the unbiased estimator.

    Example:
        >>> x = torch.randn(20, 3, dtype=torch.float64)
        >>> bool(hsic(x @ x.T, x @ x.T) > 0)
        True
    """
    n = k.shape[0]
    if debiased:
        if n < 4:
            raise ValueError(f"the debiased HSIC needs at least 4 samples, got {n}")
        k = k - torch.diag(torch.diag(k))
        l = l - torch.diag(torch.diag(l))  # noqa: E741
        kl1 = (k @ l.sum(1)).sum()
        return ((k * l).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * kl1 / (n - 2)) / (n * (n - 3))
    h = torch.eye(n, dtype=k.dtype) - 1.0 / n
    return ((h @ k @ h) * l).sum() / (n - 1) ** 2


def _cka_ratio(xy: Tensor, xx: Tensor, yy: Tensor) -> Tensor:
    if float(xx) <= 0 or float(yy) <= 0:
        raise ValueError(
            "CKA is undefined: a representation is constant over the samples (its HSIC with itself is "
            f"{float(min(xx, yy)):.3g}); use more samples or a non-degenerate site"
        )
    return (xy / (xx * yy).sqrt()).clamp(-1.0, 1.0)


class LinearCKA(ShiftedMoments):
    """Streaming linear CKA between two representations of the same samples (biased and debiased).

    Args:
        in_features_x: feature dimension of ``x``.
        in_features_y: feature dimension of ``y``.
        debiased: report the debiased estimator (unbiased HSIC) instead of the biased one.

    Example:
        >>> m = LinearCKA(4, 4)
        >>> x = torch.randn(500, 4); q, _ = torch.linalg.qr(torch.randn(4, 4))
        >>> for xb in x.split(100):
        ...     m.update(xb, 3 * xb @ q)  # rotated and scaled: same representation
        >>> round(float(m.compute()), 6)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, in_features_x: int, in_features_y: int, debiased: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, v in (("in_features_x", in_features_x), ("in_features_y", in_features_y)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features_x, self.in_features_y, self.debiased = in_features_x, in_features_y, bool(debiased)
        dx, dy, f64 = in_features_x, in_features_y, torch.float64
        self.add_moments(
            variables={"x": ("sx", dx), "y": ("sy", dy)},
            products={"xtx": ("x", "x"), "yty": ("y", "y"), "xty": ("x", "y")},
            elementwise={},
        )
        for name, shape in (
            # for the unbiased HSIC: a_i = ‖x_i − x_ref‖², b_i = ‖y_i − y_ref‖²
            ("sa", ()), ("sb", ()), ("saa", ()), ("sbb", ()), ("sab", ()),
            ("sax", (dx,)), ("sbx", (dx,)), ("say", (dy,)), ("sby", (dy,)),
        ):
            self.add_state(name, torch.zeros(shape, dtype=f64), dist_reduce_fx="sum")

    def move_extra_states(self, old: dict[str, Tensor], new: dict[str, Tensor], delta: dict[str, Tensor]) -> None:
        """Move the sums of squared norms to new references (``u' = u + δ`` for ``x``, ``v' = v + ε`` for ``y``)."""
        n, d, e = old["n"], delta["x"], delta["y"]
        sx, sy, xx, yy, xy = old["sx"], old["sy"], old["xtx"], old["yty"], old["xty"]
        sa, sb = old["sa"], old["sb"]
        dd, ee = d @ d, e @ e
        s_alpha = 2 * d @ sx + n * dd  # Σ(‖u'‖² − ‖u‖²)
        s_beta = 2 * e @ sy + n * ee
        new["sa"] = sa + s_alpha
        new["sb"] = sb + s_beta
        new["saa"] = old["saa"] + 2 * (2 * d @ old["sax"] + dd * sa) + 4 * d @ xx @ d + 4 * dd * (d @ sx) + n * dd**2
        new["sbb"] = old["sbb"] + 2 * (2 * e @ old["sby"] + ee * sb) + 4 * e @ yy @ e + 4 * ee * (e @ sy) + n * ee**2
        new["sab"] = (
            old["sab"] + 2 * e @ old["say"] + ee * sa + 2 * d @ old["sbx"] + dd * sb
            + 4 * d @ xy @ e + 2 * ee * (d @ sx) + 2 * dd * (e @ sy) + n * dd * ee
        )
        new["sax"] = old["sax"] + sa * d + 2 * xx @ d + dd * sx + s_alpha * d
        new["sbx"] = old["sbx"] + sb * d + 2 * xy @ e + ee * sx + s_beta * d
        new["say"] = old["say"] + sa * e + 2 * xy.T @ d + dd * sy + s_alpha * e
        new["sby"] = old["sby"] + sb * e + 2 * yy @ e + ee * sy + s_beta * e

    def update(self, x: Tensor, y: Tensor) -> None:  # type: ignore[override]
        """Add a batch of paired features ``x`` ``(B, D_x)`` and ``y`` ``(B, D_y)``."""
        x, y = _pair(x, y)
        if x.shape[1] != self.in_features_x or y.shape[1] != self.in_features_y:
            raise ValueError(
                f"expected x (B, {self.in_features_x}) and y (B, {self.in_features_y}), "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        c = self.accumulate(x=x.to(self.n.device), y=y.to(self.n.device))
        x, y = c["x"], c["y"]  # about the references: both HSIC estimators are unchanged by a shift
        a, b = (x * x).sum(1), (y * y).sum(1)
        self.sa += a.sum()
        self.sb += b.sum()
        self.saa += (a * a).sum()
        self.sbb += (b * b).sum()
        self.sab += (a * b).sum()
        self.sax += a @ x
        self.sbx += b @ x
        self.say += a @ y
        self.sby += b @ y

    def _biased(self) -> Tensor:
        _, _, c, _ = self.centred()
        return _cka_ratio((c["xty"] ** 2).sum(), (c["xtx"] ** 2).sum(), (c["yty"] ** 2).sum())

    def _debiased(self) -> Tensor:
        n = self.n

        def u_hsic(g: Tensor, s1: Tensor, s2: Tensor, sa: Tensor, sb: Tensor, sab: Tensor, sb_1: Tensor,
                   sa_2: Tensor) -> Tensor:
            # K̃ = K − diag(K), L̃ likewise (K = X1X1ᵀ, L = X2X2ᵀ, G = X1ᵀX2, a/b their squared norms)
            tr = (g**2).sum() - sab
            k1 = s1 @ s1 - sa
            l1 = s2 @ s2 - sb
            kl = s1 @ g @ s2 - s1 @ sb_1 - s2 @ sa_2 + sab
            return (tr + k1 * l1 / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))

        xy = u_hsic(self.xty, self.sx, self.sy, self.sa, self.sb, self.sab, self.sbx, self.say)
        xx = u_hsic(self.xtx, self.sx, self.sx, self.sa, self.sa, self.saa, self.sax, self.sax)
        yy = u_hsic(self.yty, self.sy, self.sy, self.sb, self.sb, self.sbb, self.sby, self.sby)
        return _cka_ratio(xy, xx, yy)

    def compute(self) -> Tensor:  # type: ignore[override]
        need = 4 if self.debiased else 2
        if float(self.n) < need:
            raise ValueError(f"{'debiased' if self.debiased else 'biased'} CKA needs at least {need} samples, "
                             f"got {int(self.n)}")
        return self._debiased() if self.debiased else self._biased()


def linear_cka(x: Tensor, y: Tensor, debiased: bool = False) -> Tensor:
    """Linear CKA of two representations ``(N, D_x)`` and ``(N, D_y)`` of the same samples.

    Example:
        >>> x = torch.randn(100, 8)
        >>> round(float(linear_cka(x, 2.5 * x)), 6), bool(linear_cka(x, torch.randn(100, 8)) < 0.5)
        (1.0, True)
    """
    x, y = _pair(x, y)
    n = x.shape[0]
    if n < max(x.shape[1], y.shape[1]):  # Gram matrices are the smaller objects
        need = 4 if debiased else 2
        if n < need:
            raise ValueError(f"{'debiased' if debiased else 'biased'} CKA needs at least {need} samples, got {n}")
        x, y = x - x.mean(0), y - y.mean(0)  # both estimators are unchanged by a shift; centring keeps the digits
        k, l = x @ x.T, y @ y.T  # noqa: E741
        return _cka_ratio(hsic(k, l, debiased), hsic(k, k, debiased), hsic(l, l, debiased))
    # these arrays are the whole data: no summing of statistics across processes
    m = local_only(LinearCKA(x.shape[1], y.shape[1], debiased=debiased))
    m.update(x, y)
    return m.compute()


def _knn(x: Tensor, k: int, metric: str) -> Tensor:
    if metric == "cosine":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = x @ x.T
    else:
        sim = -torch.cdist(x, x)
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(k, dim=1).indices


def mutual_knn_alignment(
    x: Tensor, y: Tensor, k: int = 10, metric: Literal["cosine", "euclidean"] = "cosine"
) -> Tensor:
    """Mean fraction of shared ``k`` nearest neighbours of each sample in ``x`` and ``y``.

    Args:
        x: ``(N, D_x)`` features.
        y: ``(N, D_y)`` features of the same samples.
        k: neighbours per sample (``1 <= k < N``).
        metric: ``"cosine"`` (as in the Platonic Representation Hypothesis) or ``"euclidean"``.

    Example:
        >>> x = torch.randn(50, 4)
        >>> float(mutual_knn_alignment(x, 7 * x, k=5))
        1.0
    """
    x, y = _pair(x, y)
    n = x.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < n:
        raise ValueError(f"k must be an int with 1 <= k < number of samples = {n}, got {k!r}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    nx, ny = _knn(x, k, metric), _knn(y, k, metric)
    mask_x = torch.zeros(n, n, dtype=torch.bool).scatter_(1, nx, True)
    shared = mask_x.gather(1, ny).sum(1)
    return (shared.to(torch.float64) / k).mean()


class MutualKNNAlignment(SampleBuffer):
    """Mutual k-NN alignment on a bounded uniform subsample (see :class:`~lit_repr.metrics.samples.SampleBuffer`).

    Args:
        k: neighbours per sample.
        metric: ``"cosine"`` or ``"euclidean"``.
        max_samples: samples compared (all pairs are compared: ``O(max_samples²)``).

    Example:
        >>> m = MutualKNNAlignment(k=3, max_samples=100)
        >>> x = torch.randn(60, 5); m.update(x, -x)
        >>> float(m.compute())
        1.0
    """

    higher_is_better = True

    def __init__(self, k: int = 10, metric: Literal["cosine", "euclidean"] = "cosine", max_samples: int = 2000,
                 **kwargs) -> None:
        super().__init__(max_samples=max_samples, num_tensors=2, **kwargs)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
        self.k, self.metric = k, metric

    def update(self, x: Tensor, y: Tensor) -> None:  # type: ignore[override]
        super().update(*_pair(x, y))

    def compute(self) -> Tensor:  # type: ignore[override]
        x, y = super().compute()
        return mutual_knn_alignment(x, y, k=min(self.k, x.shape[0] - 1), metric=self.metric)
