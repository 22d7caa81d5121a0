"""Sparse autoencoders with a learned unit-norm dictionary and decoupled sparse inference.

``x ≈ x̂ = b_dec + s·W_dec``: the dictionary ``W_dec`` (``(n_latents, d_in)``) keeps unit-norm rows
(atoms): the gradient component along each atom is projected out before every optimiser step
and atoms are renormalised after it. The decoder bias is initialised from the training data
(mean or geometric median) at the start of training.

Codes come from two swappable pieces:

- an *encoder* (:mod:`lit_repr.models.encoders`) mapping ``x − b_dec`` to pre-activations: the
  amortised linear encoder, an MLP, ISTA/FISTA on the current dictionary, or inference-time
  optimisation;
- a *variant* (:data:`SAE_VARIANTS`, extended with :func:`register_variant`) applying the
  nonlinearity and adding its named losses: ``"relu"`` (L1 penalty), ``"topk"`` (with the AuxK
  dead-latent loss), ``"batchtopk"`` (batch-level top ``k·B``, a threshold kept for inference)
  and ``"jumprelu"`` (learned thresholds trained by straight-through estimators, L0 penalty).

Losses (all per sample, averaged over the batch): ``mse_loss = ‖x − x̂‖²`` summed over features;
``l1 = l1_coefficient·Σ_i s_i‖W_i‖``; ``auxk = aux_coefficient·‖e − ê‖²`` with ``e = x − x̂``
(detached) and ``ê = Σ_{i ∈ top-k_aux dead} s_i W_i`` (no decoder bias: ``e`` has none);
``l0 = l0_coefficient·Σ_i H(pre_i − θ_i)``.

Ground truth: when a batch carries true codes under ``codes_key`` the module logs the code MCC;
when a true dictionary is known (argument ``true_dictionary`` or the DataModule's
``dictionary`` attribute, see :meth:`SparseAutoencoder.true_dictionary`) it logs the dictionary MCC.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_repr.metrics.sae import FiringFrequency, FractionOfVarianceExplained, MeanL0
from lit_repr.models.encoders import AmortisedEncoder, SparseEncoder, build_encoder
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = [
    "SparseAutoencoder",
    "SAEVariant",
    "ReLUVariant",
    "TopKVariant",
    "BatchTopKVariant",
    "JumpReLUVariant",
    "SAE_VARIANTS",
    "register_variant",
    "geometric_median",
    "auxk_loss",
]

SAE_VARIANTS: dict[str, type["SAEVariant"]] = {}


def register_variant(name: str) -> Callable[[type["SAEVariant"]], type["SAEVariant"]]:
    """Class decorator registering an :class:`SAEVariant` under ``name`` (for YAML ``variant:``).

    Example:
        >>> @register_variant("relu_copy")
        ... class ReLUCopy(ReLUVariant):
        ...     pass
        >>> SAE_VARIANTS["relu_copy"].__name__
        'ReLUCopy'
    """

    def deco(cls: type[SAEVariant]) -> type[SAEVariant]:
        if not (isinstance(cls, type) and issubclass(cls, SAEVariant)):
            raise ValueError(f"register_variant expects an SAEVariant subclass, got {cls!r}")
        SAE_VARIANTS[name] = cls
        cls.name = name
        return cls

    return deco


def geometric_median(x: Tensor, iters: int = 100, eps: float = 1e-8) -> Tensor:
    """Geometric median of the rows of ``x`` by Weiszfeld's algorithm.

    Example:
        >>> geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])).round(decimals=2)
        tensor([0.5000, 0.5000])
    """
    x = x.double()
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        m_new = (w[:, None] * x).sum(0) / w.sum()
        if (m_new - m).norm() <= 1e-10 * (1 + m.norm()):
            m = m_new
            break
        m = m_new
    return m.float()


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


# ---------------------------------------------------------------------------------------- sparse TopK kernels
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


def _gather_dot(table: Tensor, idx: Tensor, vec: Tensor, chunk: int = 256) -> Tensor:
    """``out[b, s] = table[idx[b, s]] · vec[b]`` in chunks (no ``(B, k, d)`` tensor held at once)."""
    out = torch.empty(idx.shape, dtype=vec.dtype, device=vec.device)
    for i in range(0, idx.shape[0], chunk):
        out[i : i + chunk] = torch.bmm(table[idx[i : i + chunk]], vec[i : i + chunk, :, None])[..., 0]
    return out


class _TopKEncode(torch.autograd.Function):
    """``vals, idx = topk(relu(x_c W_encᵀ + b_enc), k)`` with a sparse backward: only the ``k``
    selected latents of each sample receive gradient, so the weight gradient costs ``O(B·k·d)``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, k: int):
        pre = torch.addmm(bias, x, weight.T) if bias is not None else x @ weight.T
        vals, idx = pre.topk(k, dim=-1)
        pos = vals > 0
        vals = vals * pos
        ctx.save_for_backward(x, weight, idx, pos)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(idx, pre)
        return vals, idx, pre

    @staticmethod
    def backward(ctx, g_vals: Tensor, g_idx: Any, g_pre: Any):
        x, weight, idx, pos = ctx.saved_tensors
        g = g_vals * pos
        n = weight.shape[0]
        g_x = F.embedding_bag(idx, weight, per_sample_weights=g, mode="sum") if ctx.needs_input_grad[0] else None
        g_w = _segment_sum(idx, g, x, n) if ctx.needs_input_grad[1] else None
        g_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        return g_x, g_w, g_b, None


class _SparseDecode(torch.autograd.Function):
    """``x̂ = Σ_s vals[b, s] · W_dec[idx[b, s]] + b_dec``, reading only the ``k`` active atoms."""

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


# ---------------------------------------------------------------------------------------- variants
class SAEVariant(nn.Module):
    """A nonlinearity plus the losses that go with it. Subclass and :func:`register_variant` to add one.

    Extension points: :meth:`activate` (pre-activations to codes, may return the top-k support
    as ``(values, indices)`` for a sparse decoder), :meth:`losses` (named extra losses).

    Args:
        n_latents: number of latents.

    Example:
        >>> v = ReLUVariant(n_latents=4, l1_coefficient=0.1)
        >>> v.activate(torch.tensor([[1.0, -1.0, 0.5, 0.0]]))[0]
        tensor([[1.0000, 0.0000, 0.5000, 0.0000]])
    """

    name = "base"
    uses_dead_latents = False

    def __init__(self, n_latents: int) -> None:
        super().__init__()
        self.n_latents = n_latents

    def activate(self, pre: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        raise NotImplementedError

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        return {}


@register_variant("relu")
class ReLUVariant(SAEVariant):
    """ReLU codes with an L1 penalty ``l1_coefficient·Σ_i s_i‖W_i‖``.

    Args:
        n_latents: number of latents.
        l1_coefficient: L1 penalty weight (``>= 0``).

    Example:
        >>> ReLUVariant(3, l1_coefficient=1.0).activate(torch.tensor([[-1.0, 2.0, 0.0]]))[0]
        tensor([[0., 2., 0.]])
    """

    def __init__(self, n_latents: int, l1_coefficient: float = 1e-3) -> None:
        super().__init__(n_latents)
        self.l1_coefficient = l1_coefficient

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        return F.relu(pre), None

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        norms = sae.W_dec.norm(dim=1)
        return {"l1": self.l1_coefficient * (codes * norms).sum(-1).mean()}


@register_variant("topk")
class TopKVariant(SAEVariant):
    """TopK (Gao et al., 2024): keep the ``k`` largest pre-activations (ReLU'd) per sample, AuxK loss.

    Args:
        n_latents: number of latents.
        k: active latents per sample.
        aux_k: dead latents used by the AuxK loss (default ``2·k``, capped at ``n_latents``).
        aux_coefficient: weight of the AuxK loss (Gao et al. use 1/32).

    Example:
        >>> codes, (vals, idx) = TopKVariant(4, k=2).activate(torch.tensor([[0.1, 3.0, -1.0, 2.0]]))
        >>> codes
        tensor([[0., 3., 0., 2.]])
    """

    uses_dead_latents = True

    def __init__(self, n_latents: int, k: int = 32, aux_k: int | None = None, aux_coefficient: float = 1 / 32) -> None:
        super().__init__(n_latents)
        self.k = k
        self.aux_k = min(aux_k if aux_k is not None else 2 * k, n_latents)
        self.aux_coefficient = aux_coefficient

    def activate(self, pre: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        vals, idx = pre.topk(self.k, dim=-1)
        vals = F.relu(vals)
        codes = torch.zeros_like(pre).scatter_(-1, idx, vals)
        return codes, (vals, idx)

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        if self.aux_coefficient == 0 or not self.training:
            return {}
        dead = sae.dead_latents()
        return {"auxk": self.aux_coefficient * auxk_loss(residual.detach(), pre, dead, sae.W_dec, self.aux_k)}


@register_variant("batchtopk")
class BatchTopKVariant(TopKVariant):
    """BatchTopK (Bussmann et al., 2024): the top ``k·B`` activations of the whole batch in training;
    at inference a fixed threshold, the running mean of the smallest kept activation.

    Args:
        n_latents: number of latents.
        k: mean active latents per sample.
        aux_k: dead latents used by the AuxK loss (default ``2·k``).
        aux_coefficient: weight of the AuxK loss.
        threshold_momentum: EMA momentum of the inference threshold.

    Example:
        >>> v = BatchTopKVariant(3, k=1)
        >>> v.activate(torch.tensor([[3.0, 2.0, 0.0], [1.0, 0.0, 0.5]]))[0]
        tensor([[3., 2., 0.],
                [0., 0., 0.]])
    """

    def __init__(
        self,
        n_latents: int,
        k: int = 32,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        threshold_momentum: float = 0.01,
    ) -> None:
        super().__init__(n_latents, k, aux_k, aux_coefficient)
        self.threshold_momentum = threshold_momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        if not self.training:
            if float(self.threshold) < 0:
                return TopKVariant.activate(self, pre)[0], None
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre)), None
        acts = F.relu(pre)
        flat = acts.flatten()
        kb = min(self.k * pre.shape[0], flat.numel())
        vals, idx = flat.topk(kb)
        codes = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
        with torch.no_grad():
            pos = vals[vals > 0]
            if pos.numel():
                m = pos.min()
                if float(self.threshold) < 0:
                    self.threshold.copy_(m)
                else:
                    self.threshold.lerp_(m, self.threshold_momentum)
        return codes, None


class _JumpReLUFn(torch.autograd.Function):
    """``pre·H(pre − θ)``; gradient to ``pre`` on the support, straight-through to ``θ``."""

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


class _StepFn(torch.autograd.Function):
    """``H(pre − θ)``; no gradient to ``pre``, straight-through (rectangle kernel) to ``θ``."""

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


@register_variant("jumprelu")
class JumpReLUVariant(SAEVariant):
    """JumpReLU (Rajamanoharan et al., 2024): ``s = pre·H(pre − θ)`` with learned ``θ = exp(log θ)``,
    trained through straight-through estimators (rectangle kernel of width ``bandwidth``), and an
    L0 penalty ``l0_coefficient·Σ_i H(pre_i − θ_i)``.

    Args:
        n_latents: number of latents.
        threshold_init: initial threshold (``> 0``).
        bandwidth: kernel width of the straight-through estimators (``> 0``).
        l0_coefficient: L0 penalty weight (``>= 0``).

    Example:
        >>> JumpReLUVariant(3, threshold_init=0.5).activate(torch.tensor([[0.4, 0.6, -1.0]]))[0]
        tensor([[0.0000, 0.6000, 0.0000]], grad_fn=<_JumpReLUFnBackward>)
    """

    def __init__(
        self, n_latents: int, threshold_init: float = 0.001, bandwidth: float = 0.001, l0_coefficient: float = 1e-3
    ) -> None:
        super().__init__(n_latents)
        self.bandwidth = bandwidth
        self.l0_coefficient = l0_coefficient
        self.log_threshold = nn.Parameter(torch.full((n_latents,), math.log(threshold_init)))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        return _JumpReLUFn.apply(pre, self.threshold, self.bandwidth), None

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        l0 = _StepFn.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()
        return {"l0": self.l0_coefficient * l0}


# ---------------------------------------------------------------------------------------- module
def _positive_int(name: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _nonneg(name: str, v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


class SparseAutoencoder(pl.LightningModule):
    """A sparse autoencoder with a unit-norm dictionary, a swappable encoder and a named variant.

    Tappable sites: ``"latents"`` (the codes), ``"encoder"`` (pre-activations). Logs
    ``<stage>/loss``, ``<stage>/mse`` (per element), ``<stage>/fve`` (fraction of variance
    explained), ``<stage>/l0``, each named loss (``train/l1``, ``train/auxk``, ``train/l0_loss``),
    ``<stage>/dead_fraction``, ``<stage>/dense_fraction``, and with ground truth
    ``<stage>/code_mcc`` and ``<stage>/dictionary_mcc``. On TensorBoard it adds the firing-frequency
    histogram and, given ``image_shape``, a figure of atoms.

    Args:
        d_in: input dimension.
        n_latents: dictionary size.
        variant: a name in :data:`SAE_VARIANTS` (``"relu"``, ``"topk"``, ``"batchtopk"``, ``"jumprelu"``).
        encoder: a :class:`~lit_repr.models.encoders.SparseEncoder` or a name (``"amortised"``,
            ``"mlp"``, ``"ista"``, ``"fista"``, ``"ito"``); default the amortised linear encoder.
        k: active latents per sample (TopK, BatchTopK); ``1 <= k <= n_latents``.
        l1_coefficient: L1 penalty (ReLU variant), ``>= 0``.
        aux_k: dead latents used by AuxK (default ``2·k``).
        aux_coefficient: AuxK weight.
        dead_after: a latent is dead after this many training samples without firing.
        dense_threshold: a latent is dense when it fires on more than this fraction of samples.
        threshold_init: JumpReLU initial threshold.
        bandwidth: JumpReLU straight-through kernel width.
        l0_coefficient: JumpReLU L0 penalty.
        decoder_bias_init: ``"geometric_median"``, ``"mean"`` or ``"zeros"``.
        bias_init_batches: training batches used to initialise the decoder bias.
        normalize_atoms: keep atoms unit norm (gradient projection and renormalisation).
        lr: Adam learning rate.
        input_key: where the input lives in a batch.
        codes_key: where true codes live in a batch (the code MCC is logged if present).
        true_dictionary: optional ``(n_true, d_in)`` ground-truth dictionary.
        mcc_max_samples: evaluation samples kept for the code MCC.
        image_shape: ``(H, W)`` or ``(C, H, W)`` to log atoms as images.
        init_seed: seed of the dictionary initialisation (``None``: the global RNG).
        sparse_kernels: for the TopK variant with the amortised linear encoder, decode from the
            ``k`` active atoms only and backpropagate into the ``k`` selected latents only
            (``O(B·k·d)`` instead of ``O(B·n·d)`` for everything but the encoder's forward matmul).

    Example:
        >>> sae = SparseAutoencoder(d_in=8, n_latents=16, variant="topk", k=3)
        >>> codes = sae.encode(torch.randn(5, 8))
        >>> codes.shape, int((codes != 0).sum(1).max()) <= 3
        (torch.Size([5, 16]), True)
    """

    def __init__(
        self,
        d_in: int = 8,
        n_latents: int = 16,
        variant: str = "relu",
        encoder: SparseEncoder | str | None = None,
        k: int = 32,
        l1_coefficient: float = 1e-3,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        dead_after: int = 10_000,
        dense_threshold: float = 0.1,
        threshold_init: float = 0.001,
        bandwidth: float = 0.001,
        l0_coefficient: float = 1e-3,
        decoder_bias_init: str = "geometric_median",
        bias_init_batches: int = 8,
        normalize_atoms: bool = True,
        lr: float = 1e-3,
        input_key: TargetSpec = "x",
        codes_key: TargetSpec | None = "codes",
        true_dictionary: Tensor | None = None,
        mcc_max_samples: int = 4096,
        image_shape: Sequence[int] | None = None,
        init_seed: int | None = None,
        sparse_kernels: bool = True,
    ) -> None:
        super().__init__()
        _positive_int("d_in", d_in)
        _positive_int("n_latents", n_latents)
        if variant not in SAE_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(SAE_VARIANTS)}, got {variant!r}")
        _positive_int("k", k)
        if k > n_latents and "k" in inspect.signature(SAE_VARIANTS[variant].__init__).parameters:
            raise ValueError(
                f"k must be <= n_latents={n_latents} (a TopK code cannot have more active latents), got {k}"
            )
        _nonneg("l1_coefficient", l1_coefficient)
        if aux_k is not None:
            _positive_int("aux_k", aux_k)
        _nonneg("aux_coefficient", aux_coefficient)
        _positive_int("dead_after", dead_after)
        if not 0 < dense_threshold <= 1:
            raise ValueError(f"dense_threshold must be in (0, 1], got {dense_threshold!r}")
        for name, v in (("threshold_init", threshold_init), ("bandwidth", bandwidth), ("lr", lr)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v!r}")
        _nonneg("l0_coefficient", l0_coefficient)
        if decoder_bias_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(
                f"decoder_bias_init must be 'geometric_median', 'mean' or 'zeros', got {decoder_bias_init!r}"
            )
        _positive_int("bias_init_batches", bias_init_batches)
        check_target_spec(input_key, "input_key")
        if codes_key is not None:
            check_target_spec(codes_key, "codes_key")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            if len(image_shape) not in (2, 3) or math.prod(image_shape) != d_in:
                raise ValueError(f"image_shape must be (H, W) or (C, H, W) with product d_in={d_in}, got {image_shape}")
        if true_dictionary is not None:
            true_dictionary = torch.as_tensor(true_dictionary, dtype=torch.float32)
            if true_dictionary.ndim != 2 or true_dictionary.shape[1] != d_in:
                raise ValueError(
                    f"true_dictionary must have shape (n_true, {d_in}), got {tuple(true_dictionary.shape)}"
                )
        self.save_hyperparameters(ignore=["encoder", "true_dictionary"])
        self.d_in, self.n_latents = d_in, n_latents
        self.input_key, self.codes_key = input_key, codes_key
        self.normalize_atoms = normalize_atoms
        self.sparse_kernels = sparse_kernels
        self.decoder_bias_init = decoder_bias_init
        self.image_shape = image_shape
        self._true_dictionary = true_dictionary

        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        W = torch.randn(n_latents, d_in, generator=gen)
        self.W_dec = nn.Parameter(W / W.norm(dim=1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("bias_initialised", torch.tensor(decoder_bias_init == "zeros"))
        self.register_buffer("samples_since_fired", torch.zeros(n_latents, dtype=torch.long))

        self.encoder = build_encoder(encoder)
        self.encoder.build(d_in, n_latents, self.W_dec.detach().clone())
        kwargs = dict(
            n_latents=n_latents, k=k, l1_coefficient=l1_coefficient, aux_k=aux_k, aux_coefficient=aux_coefficient,
            threshold_init=threshold_init, bandwidth=bandwidth, l0_coefficient=l0_coefficient,
        )  # fmt: skip
        cls = SAE_VARIANTS[variant]
        accepted = inspect.signature(cls.__init__).parameters
        self.variant = cls(**{key: v for key, v in kwargs.items() if key in accepted})
        self.latents = nn.Identity()  # tappable site for the codes
        self.stat_metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": m
                for stage in ("train", "val", "test")
                for name, m in (
                    ("fve", FractionOfVarianceExplained(d_in)),
                    ("l0", MeanL0()),
                    ("firing", FiringFrequency(n_latents, dense_threshold=dense_threshold)),
                )
            }
        )
        self._mcc_buffers: dict[str, list[Tensor]] = {}

    # ------------------------------------------------------------------ model
    def swap_encoder(self, encoder: SparseEncoder | str) -> SparseEncoder:
        """Replace the encoder (e.g. FISTA or inference-time optimisation on a trained dictionary)."""
        enc = build_encoder(encoder)
        enc.build(self.d_in, self.n_latents, self.W_dec.detach().clone())
        self.encoder = enc.to(self.W_dec.device)
        return self.encoder

    def _check_input(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(
                f"SparseAutoencoder(d_in={self.d_in}) expects inputs of shape (batch, {self.d_in}), "
                f"got {tuple(x.shape)}; set d_in to the data's dimension"
            )
        if not bool(torch.isfinite(x).all()):
            n_bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"input contains {n_bad} non-finite values (NaN or inf) out of {x.numel()}")
        return x

    def _sparse_path(self) -> bool:
        return (
            self.sparse_kernels
            and type(self.variant) is TopKVariant
            and isinstance(self.encoder, AmortisedEncoder)
            and type(self.encoder) is AmortisedEncoder
        )

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """``(codes, pre-activations, top-k support or None)`` for inputs ``x`` of shape ``(B, d_in)``.

        On the sparse TopK path (``sparse_kernels=True``, TopK variant, amortised linear encoder) the
        pre-activations are returned without gradient; only the ``k`` selected latents backpropagate.
        """
        x = self._check_input(x.to(self.W_dec.dtype))
        x_c = x - self.b_dec
        if self._sparse_path():
            lin = self.encoder.linear
            vals, idx, pre = _TopKEncode.apply(x_c, lin.weight, lin.bias, self.variant.k)
            codes = torch.zeros_like(pre).scatter_(-1, idx, vals)
            return self.latents(codes), pre, (vals, idx)
        pre = self.encoder(x_c, self.W_dec)
        codes, support = self.variant.activate(pre)
        return self.latents(codes), pre, support

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, n_latents)``."""
        return self.encode_with_hidden_pre(x)[0]

    def decode(self, codes: Tensor, support: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``b_dec + codes·W_dec``; with a top-k ``support`` only the ``k`` active atoms are read."""
        if support is not None:
            vals, idx = support
            return _SparseDecode.apply(vals, idx, self.W_dec, self.b_dec)
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        codes, _, support = self.encode_with_hidden_pre(x)
        return self.decode(codes, support)

    def dead_latents(self) -> Tensor:
        """Boolean mask of latents that have not fired for ``dead_after`` training samples."""
        return self.samples_since_fired >= self.hparams.dead_after

    def compute_losses(self, x: Tensor) -> dict[str, Tensor]:
        """All named losses and intermediate tensors for a batch: ``loss``, ``mse_loss``, variant losses."""
        codes, pre, support = self.encode_with_hidden_pre(x)
        recon = self.decode(codes, support)
        residual = x - recon
        if not pre.requires_grad and self.training and self.variant.uses_dead_latents and torch.is_grad_enabled():
            dead = self.dead_latents()
            if bool(dead.any()):  # sparse path: recompute the dead latents' pre-activations with gradient
                lin = self.encoder.linear
                b = lin.bias[dead] if lin.bias is not None else None
                pre_dead = F.linear(x.to(self.W_dec.dtype) - self.b_dec, lin.weight[dead], b)
                pre = pre.detach().clone()
                pre[:, dead] = pre_dead
        out = {"mse_loss": residual.pow(2).sum(-1).mean()}
        out.update(self.variant.losses(self, pre, codes, residual))
        out["loss"] = sum(out.values())
        out["codes"], out["recon"], out["pre"] = codes, recon, pre
        return out

    # ------------------------------------------------------------------ ground truth
    def true_dictionary(self) -> Tensor | None:
        """The ground-truth dictionary: the ``true_dictionary`` argument, else the DataModule's
        ``dictionary`` attribute (e.g. :class:`~lit_repr.data.sparse_coding.SparseCodingDataModule`)."""
        if self._true_dictionary is not None:
            return self._true_dictionary
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        d = getattr(dm, "dictionary", None) if dm is not None else None
        return torch.as_tensor(d, dtype=torch.float32) if d is not None else None

    # ------------------------------------------------------------------ decoder bias
    @torch.no_grad()
    def initialize_decoder_bias(self, x: Tensor) -> None:
        """Set ``b_dec`` to the mean or geometric median of ``x`` (``(N, d_in)``)."""
        x = self._check_input(x.detach().float())
        if self.decoder_bias_init == "zeros":
            val = torch.zeros(self.d_in)
        elif self.decoder_bias_init == "mean":
            val = x.mean(0)
        else:
            val = geometric_median(x)
        self.b_dec.copy_(val.to(self.b_dec))
        self.bias_initialised.fill_(True)

    def on_train_start(self) -> None:
        if bool(self.bias_initialised):
            return
        loader = self.trainer.train_dataloader
        if loader is None:
            return
        xs = []
        for i, batch in enumerate(loader):
            if i >= self.hparams.bias_init_batches:
                break
            xs.append(get_target(batch, self.input_key, "input_key").flatten(1))
        if xs:
            self.initialize_decoder_bias(torch.cat(xs).to(self.device))
            # every process starts from rank 0's bias (DDP does not re-broadcast parameters after setup)
            with torch.no_grad():
                self.b_dec.copy_(self.trainer.strategy.broadcast(self.b_dec.detach().clone(), src=0))

    # ------------------------------------------------------------------ unit-norm atoms
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.normalize_atoms and self.W_dec.grad is not None:
            with torch.no_grad():
                W, g = self.W_dec, self.W_dec.grad
                g.sub_((g * W).sum(-1, keepdim=True) * W / W.pow(2).sum(-1, keepdim=True).clamp_min(1e-12))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.normalize_atoms:
            self.renormalize_atoms()

    @torch.no_grad()
    def renormalize_atoms(self) -> None:
        """Rescale every atom to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ------------------------------------------------------------------ steps
    def _shared_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        x = get_target(batch, self.input_key, "input_key")
        x = self._check_input(x.flatten(1).to(self.W_dec.dtype) if x.ndim > 2 else x.to(self.W_dec.dtype))
        out = self.compute_losses(x)
        codes = out["codes"].detach()
        bs = x.shape[0]
        if stage == "train":
            with torch.no_grad():
                fired = (codes != 0).any(0)
                self.samples_since_fired.add_(bs)
                self.samples_since_fired[fired] = 0
        log_kw = dict(batch_size=bs, on_epoch=True, on_step=stage == "train", sync_dist=stage != "train")
        self.log(f"{stage}/loss", out["loss"], prog_bar=True, **log_kw)
        self.log(f"{stage}/mse", out["mse_loss"].detach() / self.d_in, **log_kw)
        for name, v in out.items():
            if name not in ("loss", "mse_loss", "codes", "recon", "pre"):
                self.log(f"{stage}/{name}" if name != "l0" else f"{stage}/l0_loss", v, **log_kw)
        fve, l0, firing = (self.stat_metrics[f"{stage}_{n}"] for n in ("fve", "l0", "firing"))
        fve.update(x.detach(), out["recon"].detach())
        l0.update(codes)
        firing.update(codes)
        self.log(f"{stage}/fve", fve, on_epoch=True, on_step=False, batch_size=bs)
        self.log(f"{stage}/l0", l0, on_epoch=True, on_step=False, batch_size=bs)
        if stage != "train" and self.codes_key is not None:
            try:
                true = get_target(batch, self.codes_key, "codes_key")
            except (KeyError, IndexError):
                true = None
            if true is not None:
                buf = self._mcc_buffers.setdefault(stage, [])
                if sum(b.shape[0] for b in buf) < self.hparams.mcc_max_samples:
                    buf.append(torch.cat([true.detach().float().flatten(1).cpu(), codes.float().cpu()], 1))
        return out

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.encode(get_target(batch, self.input_key, "input_key"))

    def _epoch_end(self, stage: str) -> None:
        firing = self.stat_metrics[f"{stage}_firing"]
        if int(firing.n) > 0:
            res = firing.compute()
            self.log(f"{stage}/dead_fraction", res["dead_fraction"])
            self.log(f"{stage}/dense_fraction", res["dense_fraction"])
            if stage != "train":
                self._log_histogram(f"{stage}/firing_frequency_log10", res["frequency"])
            firing.reset()
        buf = self._mcc_buffers.pop(stage, [])
        if stage == "train":
            return
        if buf:
            from lit_repr.metrics.mcc import mean_correlation_coefficient

            data = torch.cat(buf)[: self.hparams.mcc_max_samples]
            n_true = data.shape[1] - self.n_latents
            res = mean_correlation_coefficient(data[:, :n_true], data[:, n_true:], method="pearson")
            self.log(f"{stage}/code_mcc", float(res.mean))
        true_dict = self.true_dictionary()
        if true_dict is not None:
            from lit_repr.metrics.mcc import mean_correlation_coefficient

            res = mean_correlation_coefficient(true_dict.to(self.W_dec.device), self.W_dec.detach(), method="cosine")
            self.log(f"{stage}/dictionary_mcc", float(res.mean))
        if self.image_shape is not None and stage == "val":
            self._log_atoms()

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # ------------------------------------------------------------------ TensorBoard
    def _tensorboard(self) -> Any:
        from lightning.pytorch.loggers import TensorBoardLogger

        if self._trainer is None:
            return None
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _log_histogram(self, tag: str, freq: Tensor) -> None:
        tb = self._tensorboard()
        if tb is not None and self.trainer.is_global_zero:
            tb.add_histogram(tag, torch.log10(freq.float().cpu() + 1e-10), global_step=self.global_step)

    def atom_figure(self, max_atoms: int = 64) -> Any:
        """A matplotlib figure of the first ``max_atoms`` atoms as images (needs ``image_shape``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if self.image_shape is None:
            raise ValueError("atom_figure needs image_shape, e.g. (8, 8) for 64-dimensional inputs")
        W = self.W_dec.detach().float().cpu()[:max_atoms]
        n = W.shape[0]
        cols = int(math.ceil(math.sqrt(n)))
        rows = int(math.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= n:
                continue
            img = W[i].reshape(self.image_shape)
            if img.ndim == 3:
                img = img.permute(1, 2, 0)
                img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
                ax.imshow(img.numpy())
            else:
                lim = float(img.abs().max()) or 1.0
                ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(str(i), fontsize=7)
        fig.suptitle("SAE dictionary atoms")
        fig.tight_layout()
        return fig

    def _log_atoms(self) -> None:
        tb = self._tensorboard()
        if tb is not None and self.trainer.is_global_zero:
            import matplotlib.pyplot as plt

            fig = self.atom_figure()
            tb.add_figure("val/atoms", fig, global_step=self.global_step)
            plt.close(fig)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr)


def flops_per_sample(sae: SparseAutoencoder) -> float:
    """Inference FLOPs per sample of ``sae``: its encoder, nonlinearity and (sparse or dense) decoder."""
    enc = sae.encoder.flops_per_sample()
    n, d = sae.n_latents, sae.d_in
    if isinstance(sae.variant, TopKVariant) and not isinstance(sae.variant, BatchTopKVariant):
        dec = 2 * sae.variant.k * d + d
    else:
        dec = 2 * n * d + d
    return float(enc + d + n + dec)


__all__.append("flops_per_sample")
_ = AmortisedEncoder  # re-exported type for isinstance checks in user code
