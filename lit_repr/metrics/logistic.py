"""Multinomial logistic regression by L-BFGS, the logistic probe of :class:`~lit_repr.metrics.ProbeReadout`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fit_logistic"]


def fit_logistic(
    x: Tensor, y: Tensor, num_classes: int, C: float = 1.0, max_iter: int = 200, tol: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression by L-BFGS (float64), scikit-learn's objective.

    Minimises ``Σ_i CE(x_i W + b, y_i) + ‖W‖² / (2C)`` (intercept unpenalised), the objective of
    ``sklearn.linear_model.LogisticRegression(C=C)``.

    Returns:
        ``(weight (D, num_classes), bias (num_classes,))``.
    """
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    x = x.to(torch.float64)
    y = y.long()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-12)
    xs = (x - mu) / sd  # conditioning only; mapped back below (penalty rescaled to match)
    d = x.shape[1]
    w = torch.zeros(d, num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-2,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    scale = sd[:, None]

    def closure() -> Tensor:
        opt.zero_grad()
        # the penalty acts on the weights of the *raw* features: W_raw = W / sd
        loss = F.cross_entropy(xs @ w + b, y, reduction="sum") + ((w / scale) ** 2).sum() / (2 * C)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w / scale).detach()
    b_raw = (b - (mu[:, None] / scale * w).sum(0)).detach()
    return w_raw, b_raw
