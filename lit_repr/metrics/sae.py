"""Sparse-autoencoder statistics as torchmetrics Metrics whose states merge exactly across processes.

- :class:`FractionOfVarianceExplained`: ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` from streaming sums about a reference
  (float64), exact over batches and DDP processes;
- :class:`MeanL0`: mean number of non-zero codes per sample;
- :class:`FiringFrequency`: per-latent firing frequency, dead and dense fractions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_repr.metrics.moments import ShiftedMoments

__all__ = ["FractionOfVarianceExplained", "MeanL0", "FiringFrequency"]


def _check_codes(codes: Tensor, n: int | None = None) -> None:
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (batch, num_latents), got {tuple(codes.shape)}")
    if n is not None and codes.shape[1] != n:
        raise ValueError(f"codes must have {n} latents, got {codes.shape[1]}")


class FractionOfVarianceExplained(ShiftedMoments):
    """Fraction of variance explained by a reconstruction: ``1 − SSE / total sum of squares``.

    The total sum of squares is taken around the per-feature mean of all inputs seen, computed
    from streaming sums ``Σx``, ``Σx²`` (float64) about a per-process reference
    (:mod:`lit_repr.metrics.moments`), so the result does not depend on batching, on the number of
    DDP processes, nor on a large constant in the inputs.

    Args:
        in_features: input dimension ``d``.

    Example:
        >>> m = FractionOfVarianceExplained(2)
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
        >>> m.update(x, x); float(m.compute())
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, in_features: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        self.in_features = in_features
        self.add_moments(variables={"x": ("sum_x", in_features)}, products={}, elementwise={"sum_x2": ("x", "x")})
        self.add_state("sse", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, recon: Tensor) -> None:
        if x.shape != recon.shape or x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"x and recon must both have shape (batch, {self.in_features}), got {tuple(x.shape)} and "
                f"{tuple(recon.shape)}"
            )
        x64 = x.detach().double()
        self.sse += (x64 - recon.detach().double()).pow(2).sum()
        self.accumulate(x=x64)

    def compute(self) -> Tensor:
        tss = self.centred()[3]["sum_x2"].sum()
        return (1.0 - self.sse / tss.clamp_min(1e-30)).float()


class MeanL0(Metric):
    """Mean number of non-zero codes per sample.

    Example:
        >>> m = MeanL0(); m.update(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])); float(m.compute())
        1.5
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, codes: Tensor) -> None:
        _check_codes(codes)
        self.total += (codes != 0).sum()
        self.n += codes.shape[0]

    def compute(self) -> Tensor:
        return (self.total / self.n.clamp_min(1)).float()


class FiringFrequency(Metric):
    """Per-latent firing frequency over the samples seen, with dead and dense fractions.

    ``compute()`` returns ``{"frequency": (n,), "dead_fraction": ..., "dense_fraction": ...}``: a latent
    is dead if it never fired, dense if it fired on more than ``dense_threshold`` of the samples.

    Args:
        num_latents: number of latents.
        dense_threshold: firing frequency above which a latent counts as dense, in ``(0, 1]``.

    Example:
        >>> m = FiringFrequency(3, dense_threshold=0.6)
        >>> m.update(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0]]))
        >>> r = m.compute(); r["frequency"].tolist(), float(r["dead_fraction"]), float(r["dense_fraction"])
        ([1.0, 0.5, 0.0], 0.3333333432674408, 0.3333333432674408)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_latents: int, dense_threshold: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError(f"num_latents must be a positive int, got {num_latents!r}")
        if not 0 < dense_threshold <= 1:
            raise ValueError(f"dense_threshold must be in (0, 1], got {dense_threshold!r}")
        self.num_latents = num_latents
        self.dense_threshold = dense_threshold
        self.add_state("counts", torch.zeros(num_latents, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, codes: Tensor) -> None:
        _check_codes(codes, self.num_latents)
        self.counts += (codes != 0).sum(0)
        self.n += codes.shape[0]

    def compute(self) -> dict[str, Tensor]:
        freq = (self.counts / self.n.clamp_min(1)).float()
        return {
            "frequency": freq,
            "dead_fraction": (freq == 0).float().mean(),
            "dense_fraction": (freq > self.dense_threshold).float().mean(),
        }
