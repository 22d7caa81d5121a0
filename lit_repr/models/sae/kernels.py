"""Numerical kernels of the sparse autoencoder: sparse TopK autograd, straight-through estimators,
the AuxK loss and the geometric median.

- :func:`topk_encode` / :func:`sparse_decode`: a TopK layer and its decoder that touch only the
  ``k`` active latents of each sample in the backward pass (``O(B·k·d)`` instead of ``O(B·n·d)``);
- :func:`jump_relu` / :func:`heaviside_step`: ``pre·H(pre − θ)`` and ``H(pre − θ)`` with
  straight-through (rectangle-kernel) gradients to the threshold ``θ``;
- :func:`auxk_loss`: the dead-latent loss of Gao et al. (2024);
- :func:`geometric_median`: Weiszfeld's algorithm, for the decoder-bias initialization.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["topk_encode", "sparse_decode", "jump_relu", "heaviside_step", "auxk_loss", "geometric_median"]


def _segment_sum(idx: Tensor, weights: Tensor, rows: Tensor, n: int) -> Tensor:
    """``out[j] = Σ_{(b, s): idx[b, s] = j} weights[b, s] · rows[b]``, shape ``(n, d)``: the weight
    gradient of a top-k layer, ``O(B·k·d)`` instead of the dense ``O(B·n·d)``."""
    flat = idx.reshape(-1)
    order = flat.argsort()
    counts = torch.bincount(flat, minlength=n)
    offsets = torch.zeros(n, dtype=torch.long, device=idx.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    sample = torch.div(order, idx.shape[1], rounding_mode="floor")
    w = weights.reshape(-1)[order].to(rows.dtype)
    return F.embedding_bag(sample, rows, offsets, per_sample_weights=w, mode="sum")


def _gather_dot(table: Tensor, idx: Tensor, vec: Tensor, chunk: int = 64) -> Tensor:
    """``out[b, s] = table[idx[b, s]] · vec[b]`` in chunks small enough that the gathered rows are
    still in cache when they are multiplied (no ``(B, k, d)`` tensor held at once)."""
    out = torch.empty(*idx.shape, 1, dtype=vec.dtype, device=vec.device)
    k, d = idx.shape[1], table.shape[1]
    for i in range(0, idx.shape[0], chunk):
        rows = table.index_select(0, idx[i : i + chunk].reshape(-1)).view(-1, k, d)
        torch.bmm(rows, vec[i : i + chunk, :, None], out=out[i : i + chunk])
    return out[..., 0]


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, k: int):
        pre = torch.addmm(bias, x, weight.T) if bias is not None else x @ weight.T
        vals, idx = pre.topk(k, dim=-1)
        pos = vals > 0
        vals = vals * pos
        ctx.save_for_backward(x, weight, idx, pos)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(idx, pre)
        ctx.set_materialize_grads(False)  # no (B, n) zero gradient for the pre-activations
        return vals, idx, pre

    @staticmethod
    def backward(ctx, g_vals: Tensor | None, g_idx: Any, g_pre: Any):
        if g_vals is None:
            return None, None, None, None
        x, weight, idx, pos = ctx.saved_tensors
        g = g_vals * pos
        n = weight.shape[0]
        g_x = F.embedding_bag(idx, weight, per_sample_weights=g, mode="sum") if ctx.needs_input_grad[0] else None
        g_w = _segment_sum(idx, g, x, n) if ctx.needs_input_grad[1] else None
        g_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        return g_x, g_w, g_b, None


def topk_encode(x: Tensor, weight: Tensor, bias: Tensor | None, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``vals, idx = topk(relu(x Wᵀ + b), k)`` with a sparse backward; also returns the pre-activations.

    Only the ``k`` selected latents of each sample receive gradient, so the weight gradient costs
    ``O(B·k·d)``. The pre-activations ``(B, n)`` come back without gradient.

    Example:
        >>> vals, idx, pre = topk_encode(torch.tensor([[1.0, 2.0]]), torch.eye(2), None, k=1)
        >>> vals, idx
        (tensor([[2.]]), tensor([[1]]))
    """
    return _TopKEncode.apply(x, weight, bias, k)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, weight: Tensor, bias: Tensor):
        ctx.save_for_backward(vals, idx, weight)
        return F.embedding_bag(idx, weight, per_sample_weights=vals, mode="sum") + bias

    @staticmethod
    def backward(ctx, g_out: Tensor):
        vals, idx, weight = ctx.saved_tensors
        g_vals = _gather_dot(weight, idx, g_out) if ctx.needs_input_grad[0] else None
        g_w = _segment_sum(idx, vals, g_out, weight.shape[0]) if ctx.needs_input_grad[2] else None
        g_b = g_out.sum(0) if ctx.needs_input_grad[3] else None
        return g_vals, None, g_w, g_b


def sparse_decode(vals: Tensor, idx: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x̂[b] = Σ_s vals[b, s]·W[idx[b, s]] + bias``, reading (and backpropagating into) the active atoms only.

    Example:
        >>> sparse_decode(torch.tensor([[2.0]]), torch.tensor([[1]]), torch.eye(2), torch.zeros(2))
        tensor([[0., 2.]])
    """
    return _SparseDecode.apply(vals, idx, weight, bias)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return torch.where(pre > threshold, pre, torch.zeros_like(pre))

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        rect = ((pre - threshold).abs() < eps / 2).to(pre.dtype)
        grad_thr = (grad * (-threshold / eps) * rect).sum(0)
        return grad_pre, grad_thr, None


class _HeavisideStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        rect = ((pre - threshold).abs() < eps / 2).to(pre.dtype)
        return None, (grad * (-1.0 / eps) * rect).sum(0), None


def jump_relu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre·H(pre − θ)``: gradient to ``pre`` on the support, straight-through to ``θ``
    (``−θ/ε`` inside the rectangle ``|pre − θ| < ε/2``, ``ε = bandwidth``).

    Example:
        >>> jump_relu(torch.tensor([[0.4, 0.6]]), torch.tensor([0.5, 0.5]), 0.1)
        tensor([[0.0000, 0.6000]])
    """
    return _JumpReLU.apply(pre, threshold, bandwidth)


def heaviside_step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``H(pre − θ)``: no gradient to ``pre``, straight-through ``−1/ε`` to ``θ`` inside the rectangle.

    Example:
        >>> heaviside_step(torch.tensor([[0.4, 0.6]]), torch.tensor([0.5, 0.5]), 0.1)
        tensor([[0., 1.]])
    """
    return _HeavisideStep.apply(pre, threshold, bandwidth)


def auxk_loss(residual: Tensor, pre: Tensor, dead: Tensor, dictionary: Tensor, aux_k: int) -> Tensor:
    """The AuxK loss of Gao et al. (2024): reconstruct the residual from the top-``aux_k`` dead latents.

    ``ê = Σ_{i ∈ TopK_aux(relu(pre) over dead latents)} relu(pre_i) W_i`` (no decoder bias), loss
    ``mean_b ‖e − ê‖²``; ``k_aux = min(aux_k, #dead)``; zero when no latent is dead.

    Args:
        residual: ``(B, d)`` reconstruction error ``x − x̂`` (detached by the caller).
        pre: ``(B, n)`` pre-activations.
        dead: ``(n,)`` boolean mask of dead latents.
        dictionary: ``(n, d)`` atoms.
        aux_k: number of dead latents used per sample.

    Example:
        >>> W = torch.eye(3); pre = torch.tensor([[5.0, 1.0, 2.0]]); e = torch.tensor([[0.0, 1.0, 1.0]])
        >>> auxk_loss(e, pre, torch.tensor([False, True, True]), W, aux_k=1)  # ê = (0, 0, 2)
        tensor(2.)
    """
    n_dead = int(dead.sum())
    if n_dead == 0 or aux_k < 1:
        return pre.new_zeros(())
    k = min(aux_k, n_dead)
    masked = pre.masked_fill(~dead, float("-inf"))
    vals, idx = masked.topk(k, dim=-1)
    vals = vals.clamp_min(0)
    recon = F.embedding_bag(idx, dictionary, per_sample_weights=vals, mode="sum")
    return (residual - recon).pow(2).sum(-1).mean()


def geometric_median(x: Tensor, max_iter: int = 100, eps: float = 1e-8) -> Tensor:
    """Geometric median of the rows of ``x`` by Weiszfeld's algorithm.

    Example:
        >>> geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])).round(decimals=2)
        tensor([0.5000, 0.5000])
    """
    x = x.double()
    m = x.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        m_new = (w[:, None] * x).sum(0) / w.sum()
        if (m_new - m).norm() <= 1e-10 * (1 + m.norm()):
            m = m_new
            break
        m = m_new
    return m.float()
