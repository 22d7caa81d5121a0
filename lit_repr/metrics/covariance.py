"""Streaming mean and covariance from float64 sufficient statistics.

:class:`CovarianceMoments` accumulates ``n``, ``Σx`` and ``Σxxᵀ`` about a per-process reference
(:mod:`lit_repr.metrics.moments`), so batches, DDP processes and checkpoints combine exactly, a
large mean costs no precision, and memory is ``O(D²)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_repr.metrics.moments import NonFiniteBatch, ShiftedMoments, symmetrise_

__all__ = ["CovarianceMoments"]


class CovarianceMoments(ShiftedMoments):
    """Streaming mean and (population) covariance of features, accumulated in float64.

    States ``n``, ``x_ref`` (the reference, ``(D,)``), ``sum_x`` (``Σ(x − x_ref)``) and ``sum_xxT``
    (``Σ(x − x_ref)(x − x_ref)ᵀ``) are merged exactly across batches and DDP processes.
    ``compute()`` returns ``(mean, covariance)`` with the covariance normalised by ``n`` (the
    maximum-likelihood estimate).

    Args:
        num_features: the feature dimension ``D``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> m = CovarianceMoments(num_features=2)
        >>> m.update(torch.tensor([[0.0, 0.0], [2.0, 4.0]]))
        >>> mean, cov = m.compute()
        >>> mean.tolist(), cov.tolist()
        ([1.0, 2.0], [[1.0, 2.0], [2.0, 4.0]])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    sum_x: Tensor
    sum_xxT: Tensor

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.add_moments(variables={"x": ("sum_x", num_features)}, products={"sum_xxT": ("x", "x")}, elementwise={})

    def update(self, x: Tensor) -> None:
        """Add a batch ``x`` of shape ``(N, D)`` (or ``(..., D)``, flattened). Bad input changes nothing."""
        x = torch.as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.num_features:
            raise ValueError(
                f"x must have shape (N, {self.num_features}) (num_features={self.num_features}), "
                f"got shape {tuple(x.shape)}"
            )
        x = x.detach().reshape(-1, self.num_features).to(device=self.sum_x.device)
        if not x.is_floating_point():
            x = x.to(torch.float64)  # (floating-point batches are converted as their reference is subtracted)
        try:
            self.add_checked(x=x)  # (on the CPU in float64 the check reads the Gram's diagonal: no extra pass)
        except NonFiniteBatch as e:
            why = "values whose squares overflow float64" if e.overflow else "NaN or infinite values"
            raise ValueError(f"x must be finite, got {why}") from None

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(mean, covariance)`` in float64; raises ValueError if no samples were seen."""
        if float(self.n) < 1:
            raise ValueError("CovarianceMoments has seen no samples (n=0); call update() first")
        n, means, prods, _ = self.centred()
        return means["x"], symmetrise_(prods["sum_xxT"].div_(n))  # (a new tensor: the states stay as they are)
