"""Exact solutions of lazy and rich learning in a single neuron (Kunin et al., NeurIPS 2024, arXiv 2406.06158).

The model is ``f(x) = a·wᵀx`` on whitened inputs (``E[x xᵀ] = I``) with the teacher ``y = β*ᵀx``,
so the loss is ``L = ½‖a w − β*‖²``. Gradient flow runs with layer rates ``η_a`` and ``η_w``:
``da/dt = −η_a ∂L/∂a``, ``dw/dt = −η_w ∇_w L``. The quantity ``δ = η_w a² − η_a ‖w‖²`` is
conserved; with the scale of the weights it sets the regime. ``δ ≫ 0`` (large output weight, so the
input weight learns fast): ``β = a w`` moves linearly, like a kernel model (lazy). ``δ ≈ 0`` at a small
scale: sigmoidal, rich learning that first aligns ``w`` with ``β*``, then grows. ``δ ≪ 0`` (large input
weight, so the output weight learns fast): ``β`` rescales quickly along its current direction and
rotates slowly. Kunin et al. find that in wide ReLU networks unbalanced initializations in which the
earlier layer learns faster accelerate rich learning.

In a wider two-layer network ``f(x) = Σ_k a_k σ(w_kᵀx + b_k)`` with a homogeneous ``σ`` (linear
or ReLU) every neuron conserves its own ``δ_k = η_w ‖a_k‖² − η_a (‖w_k‖² + b_k²)``;
:func:`lazy_rich_init` draws weights with a prescribed scale ``τ`` and ``δ`` per neuron and
:func:`neuron_conserved_quantities` measures ``δ_k``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["conserved_quantity", "single_neuron_solution", "lazy_rich_init", "neuron_conserved_quantities"]


def _check_rate(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def conserved_quantity(a, w, eta_a: float = 1.0, eta_w: float = 1.0):
    """``δ = η_w a² − η_a ‖w‖²``, conserved by the gradient flow of a single neuron ``a·wᵀx``.

    ``a`` is a scalar (or an array of them) and ``w`` a vector (or an array with the vector in the
    last axis, matching ``a``'s shape in front).

    Example:
        >>> conserved_quantity(2.0, [1.0, 1.0])
        2.0
        >>> conserved_quantity(1.0, [1.0], eta_a=2.0, eta_w=1.0)
        -1.0
    """
    eta_a = _check_rate(eta_a, "eta_a")
    eta_w = _check_rate(eta_w, "eta_w")
    a = np.asarray(a, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    out = eta_w * a**2 - eta_a * (w**2).sum(-1)
    return float(out) if np.ndim(out) == 0 else out


def _h(rate: float, t: np.ndarray) -> np.ndarray:
    """``∫_0^t e^{−rate·s} ds = (1 − e^{−rate·t}) / rate`` (``= t`` at ``rate = 0``), for ``rate >= 0``."""
    if rate == 0.0:
        return t.copy()
    return -np.expm1(-rate * t) / rate


def single_neuron_solution(a0, w0, beta_star, t, eta_a: float = 1.0, eta_w: float = 1.0):
    """The exact gradient-flow trajectory ``(a(t), w(t))`` of ``f(x) = a·wᵀx`` on whitened inputs.

    Derivation (an exact closed form in hyperbolic functions of ``ωt``: no ODE is integrated, and no
    root find or quadrature is needed). Rescale
    ``ã = a/√η_a``, ``w̃ = w/√η_w`` and let ``g = √(η_a η_w)``: the flow becomes plain gradient flow
    of ``½‖g ã w̃ − β*‖²``. Stack ``Q = (ã, w̃) ∈ R^{1+d}``; with ``F = [[0, β*ᵀ], [β*, 0]]``,
    ``J = diag(1, −I)`` and the conserved ``δ = g²·QᵀJQ``, one checks
    ``(ã‖w̃‖², ã² w̃) = ½(‖Q‖² Q − (δ/g²) J Q)``, hence

        ``dQ/dt = A Q − (g²/2) ‖Q‖² Q``,   ``A = g F + (δ/2) J``  (symmetric, constant):

    a Riccati-type equation whose nonlinearity only rescales ``Q``, so ``Q(t) = c(t) e^{At} Q0`` with
    ``d(c⁻²)/dt = g² ‖e^{At} Q0‖²``:

        ``Q(t) = e^{At} Q0 / √(1 + g² ∫_0^t ‖e^{As} Q0‖² ds)``.

    ``A`` acts on the plane spanned by ``e0 = (1, 0)`` and ``(0, β*/‖β*‖)`` as
    ``[[δ/2, g‖β*‖], [g‖β*‖, −δ/2]]`` with eigenvalues ``±ω``,
    ``ω = ½√(δ² + 4 η_a η_w ‖β*‖²)``, so ``e^{At} = cosh(ωt) I + sinh(ωt) A/ω`` there, and as
    ``−δ/2`` on the part of ``w̃`` orthogonal to ``β*`` (which decays or grows like ``e^{−δt/2}``).
    Writing ``Q0`` in the eigenvectors of ``A`` (rates ``r_i``, components ``v_i``) the integral is
    ``Σ_i ‖v_i‖² (e^{2 r_i t} − 1)/(2 r_i)``. Everything is evaluated after factoring out the fastest
    growing exponential, so any ``t >= 0`` (including ``t → ∞``, where ``a w → β*``) is finite.
    The same formula covers ``δ > 0``, ``δ = 0`` and ``δ < 0``; ``β* = 0`` uses the eigenbasis
    ``e0`` (rate ``δ/2``) and the ``w̃`` space (rate ``−δ/2``); ``w0 ∥ β*`` and ``a0 = 0`` need no
    special case; the saddle ``a0 = 0, w0 = 0`` is a fixed point and returns zeros, and an
    initialization on its stable manifold (no component along the growing eigenvector, e.g. ``δ = 0``
    and ``a0 w0`` opposite to ``β*`` in ``d = 1``) converges to it, as gradient flow does.

    Args:
        a0: initial output weight (scalar).
        w0: initial input weight, shape ``(d,)`` (a scalar is ``d = 1``).
        beta_star: the teacher ``β*``, shape ``(d,)``.
        t: time or times ``>= 0``, shape ``(T,)`` (a scalar is ``T = 1``).
        eta_a: rate of the output weight ``η_a > 0``.
        eta_w: rate of the input weight ``η_w > 0``.

    Returns:
        ``(a_t, w_t)`` with shapes ``(T,)`` and ``(T, d)`` (float64 numpy arrays).

    Example:
        >>> a, w = single_neuron_solution(0.1, [0.1, 0.0], [1.0, 2.0], [0.0, 1.0, 100.0])
        >>> a.shape, w.shape
        ((3,), (3, 2))
        >>> np.allclose(a[-1] * w[-1], [1.0, 2.0])
        True
    """
    eta_a = _check_rate(eta_a, "eta_a")
    eta_w = _check_rate(eta_w, "eta_w")
    a0 = float(np.asarray(a0, dtype=np.float64).reshape(()))
    w0 = np.atleast_1d(np.asarray(w0, dtype=np.float64))
    beta = np.atleast_1d(np.asarray(beta_star, dtype=np.float64))
    if w0.ndim != 1:
        raise ValueError(f"w0 must be a vector of shape (d,), got shape {w0.shape}")
    if beta.shape != w0.shape:
        raise ValueError(f"beta_star must have the shape of w0 {w0.shape}, got {beta.shape}")
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or a vector of times, got shape {t.shape}")
    values = np.concatenate([[a0], w0, beta, t])
    if not np.all(np.isfinite(values)):
        raise ValueError("a0, w0, beta_star and t must be finite (got NaN or inf)")
    if np.any(t < 0):
        raise ValueError(f"t must be >= 0, got min(t) = {t.min()}")
    d = w0.size
    g = math.sqrt(eta_a * eta_w)
    q0 = np.concatenate([[a0 / math.sqrt(eta_a)], w0 / math.sqrt(eta_w)])
    delta = float(conserved_quantity(a0, w0, eta_a, eta_w))
    e0 = np.zeros(d + 1)
    e0[0] = 1.0
    s = float(np.linalg.norm(beta))
    components: list[tuple[float, np.ndarray]] = []  # (rate r_i, component v_i of Q0 in that eigenspace)
    if s > 0:
        e1 = np.concatenate([[0.0], beta / s])
        omega = 0.5 * math.hypot(delta, 2.0 * g * s)
        gs = g * s
        m = gs * gs / (omega + delta / 2) if delta > 0 else omega - delta / 2  # ω − δ/2 without cancellation
        norm = math.hypot(gs, m)
        u_plus = (gs * e0 + m * e1) / norm
        u_minus = (-m * e0 + gs * e1) / norm
        perp = q0 - q0[0] * e0 - (q0 @ e1) * e1
        perp[0] = 0.0
        components += [(omega, (q0 @ u_plus) * u_plus), (-omega, (q0 @ u_minus) * u_minus), (-delta / 2, perp)]
    else:
        rest = q0.copy()
        rest[0] = 0.0
        components += [(delta / 2, q0[0] * e0), (-delta / 2, rest)]
    components = [(r, v) for r, v in components if np.any(v != 0)]
    if not components:  # the saddle a = 0, w = 0 is a fixed point
        return np.zeros(t.size), np.zeros((t.size, d))
    lam = max(0.0, max(r for r, _ in components))  # factor e^{λt} out of numerator, e^{2λt} out of denominator
    num = np.zeros((t.size, d + 1))
    den = np.exp(-2.0 * lam * t)
    for r, v in components:
        num += np.exp((r - lam) * t)[:, None] * v[None, :]
        # e^{−2λt} ∫_0^t e^{2rs} ds = e^{(max(2r, 0) − 2λ)t} · (1 − e^{−|2r|t}) / |2r|
        den = den + g * g * float(v @ v) * np.exp((max(2.0 * r, 0.0) - 2.0 * lam) * t) * _h(abs(2.0 * r), t)
    q = num / np.sqrt(den)[:, None]
    return math.sqrt(eta_a) * q[:, 0], math.sqrt(eta_w) * q[:, 1:]


def lazy_rich_init(
    in_features: int,
    hidden_features: int,
    out_features: int,
    tau=1.0,
    delta=0.0,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Weights of ``f(x) = W2 σ(W1 x)`` with a prescribed scale ``τ`` and conserved ``δ`` per neuron.

    For neuron ``k`` with input weight ``w_k = W1[k]`` and output weight ``a_k = W2[:, k]``:

        ``τ_k² = η_w ‖a_k‖² + η_a ‖w_k‖²``,   ``δ_k = η_w ‖a_k‖² − η_a ‖w_k‖²``,

    so ``η_w ‖a_k‖² = (τ² + δ)/2`` and ``η_a ‖w_k‖² = (τ² − δ)/2``. Along gradient flow
    ``τ_k² = √(δ_k² + 4 η_a η_w ‖a_k‖² ‖w_k‖²)``; ``τ`` is therefore the neuron's overall weight
    scale and ``δ/τ² ∈ [−1, 1]`` its relative imbalance (``−1``: ``a_k = 0``, ``1``: ``w_k = 0``).
    A ``δ`` outside ``[−τ², τ²]`` is unreachable and raises ``ValueError``. Directions of ``w_k``
    and ``a_k`` are uniform on their spheres.

    Args:
        in_features: input dimension ``d``.
        hidden_features: number of neurons ``k``.
        out_features: output dimension.
        tau: scale ``τ > 0``, a number or one per neuron.
        delta: imbalance ``δ``, a number or one per neuron, with ``|δ| <= τ²``.
        eta_a: rate of the output layer ``η_a > 0`` (the ``δ`` convention).
        eta_w: rate of the hidden layer ``η_w > 0``.
        generator: torch generator of the random directions.
        dtype: dtype of the weights.

    Returns:
        ``(W1, W2)`` of shapes ``(hidden_features, in_features)`` and ``(out_features, hidden_features)``.

    Example:
        >>> W1, W2 = lazy_rich_init(3, 4, 1, tau=2.0, delta=-1.0, dtype=torch.float64)
        >>> neuron_conserved_quantities(W1, W2).round(decimals=12)
        tensor([-1., -1., -1., -1.], dtype=torch.float64)
    """
    for name, v in (("in_features", in_features), ("hidden_features", hidden_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    eta_a = _check_rate(eta_a, "eta_a")
    eta_w = _check_rate(eta_w, "eta_w")
    tau_t = torch.as_tensor(tau, dtype=torch.float64).reshape(-1)
    delta_t = torch.as_tensor(delta, dtype=torch.float64).reshape(-1)
    for name, v in (("tau", tau_t), ("delta", delta_t)):
        if v.numel() not in (1, hidden_features):
            raise ValueError(
                f"{name} must be a number or have one entry per neuron ({hidden_features}), got {v.numel()} entries"
            )
        if not torch.all(torch.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {v.tolist()}")
    if torch.any(tau_t <= 0):
        raise ValueError(f"tau must be > 0, got {tau_t.tolist()}")
    tau_t, delta_t = tau_t.expand(hidden_features), delta_t.expand(hidden_features)
    bad = delta_t.abs() > tau_t**2 * (1 + 1e-12)
    if torch.any(bad):
        k = int(bad.nonzero()[0])
        tk, dk = float(tau_t[k]), float(delta_t[k])
        raise ValueError(
            f"delta={dk} is unreachable at tau={tk}: with tau^2 = eta_w*|a|^2 + eta_a*|w|^2 the reachable range is "
            f"[-tau^2, tau^2] = [{-tk * tk}, {tk * tk}]"
        )
    a_sq = ((tau_t**2 + delta_t) / 2).clamp_min(0) / eta_w
    w_sq = ((tau_t**2 - delta_t) / 2).clamp_min(0) / eta_a
    w_dir = torch.randn(hidden_features, in_features, generator=generator, dtype=torch.float64)
    a_dir = torch.randn(out_features, hidden_features, generator=generator, dtype=torch.float64)
    w_dir = w_dir / w_dir.norm(dim=1, keepdim=True).clamp_min(1e-300)
    a_dir = a_dir / a_dir.norm(dim=0, keepdim=True).clamp_min(1e-300)
    W1 = w_dir * w_sq.sqrt()[:, None]
    W2 = a_dir * a_sq.sqrt()[None, :]
    return W1.to(dtype), W2.to(dtype)


def neuron_conserved_quantities(
    hidden_weight: Tensor,
    output_weight: Tensor,
    hidden_bias: Tensor | None = None,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> Tensor:
    """``δ_k = η_w ‖a_k‖² − η_a (‖w_k‖² + b_k²)`` per neuron of ``f(x) = W2 σ(W1 x + b)``.

    Conserved by gradient flow for homogeneous ``σ`` (linear, ReLU) when the hidden bias learns at
    the hidden layer's rate ``η_w`` (any output bias does not enter).

    Args:
        hidden_weight: ``W1``, shape ``(k, d)``.
        output_weight: ``W2``, shape ``(out, k)``.
        hidden_bias: ``b``, shape ``(k,)``, or ``None``.
        eta_a: rate of the output layer.
        eta_w: rate of the hidden layer.

    Example:
        >>> neuron_conserved_quantities(torch.ones(2, 3), 2 * torch.ones(1, 2))
        tensor([1., 1.])
    """
    eta_a = _check_rate(eta_a, "eta_a")
    eta_w = _check_rate(eta_w, "eta_w")
    if hidden_weight.ndim != 2 or output_weight.ndim != 2 or output_weight.shape[1] != hidden_weight.shape[0]:
        raise ValueError(
            f"hidden_weight must be (k, d) and output_weight (out, k); got {tuple(hidden_weight.shape)} and "
            f"{tuple(output_weight.shape)}"
        )
    w_sq = hidden_weight.pow(2).sum(1)
    if hidden_bias is not None:
        w_sq = w_sq + hidden_bias.pow(2)
    return eta_w * output_weight.pow(2).sum(0) - eta_a * w_sq
