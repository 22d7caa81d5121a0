"""The sparse autoencoder LightningModule: a unit-norm dictionary, a swappable encoder, a named variant.

(About 540 lines, over the project's ~450: the Lightning hooks and the public ``train_step`` share
the atom constraint and the counters, so they stay in one class; kernels, variants, figures and the
input whitening (:class:`~lit_repr.models.sae.input_whitening.WhitenedInputs`) live in their own modules.)

``x ≈ x̂ = b_dec + s·W_dec``: the dictionary ``W_dec`` (``(num_latents, in_features)``) has unit-norm
rows (atoms), restored after every optimizer step (``atom_norm``):

- ``"fold"`` (default): the step is unconstrained, then each atom is divided by its norm and the
  encoder's latent is multiplied by it (:meth:`~lit_repr.models.encoders.SparseEncoder.scale_latents`),
  so the reconstruction is kept and what the step taught about each latent's scale stays in the
  model; this is the parametrization of SAELens's ``rescale_acts_by_decoder_norm``. Encoders
  that cannot absorb a scale (the iterative solvers) fall back to ``"project"``;
- ``"project"``: the gradient component along each atom is removed before the step and atoms
  are renormalized after it (the scale information of the decoder's gradient is discarded);
- ``"none"``: a free decoder.

The decoder bias is initialized from the training data (mean or geometric median) when training
starts. Codes come from an *encoder* (:mod:`lit_repr.models.encoders`) applied to ``x − b_dec`` and
a *variant* (:mod:`lit_repr.models.sae.variants`) applying the nonlinearity and adding its named
losses. Losses (per sample, averaged over the batch): ``mse_loss = ‖x − x̂‖²`` summed over
features, plus the variant's (``l1``, ``auxk``, ``l0``).

Ground truth: when a batch carries true codes under ``codes_key`` the module logs the code MCC
(:class:`~lit_repr.metrics.mcc.MeanCorrelationCoefficient`, exact under DDP); when a true dictionary
is known (argument ``true_dictionary`` or the DataModule's ``dictionary`` attribute) it logs the
dictionary MCC.

Whitened inputs (Saraswatula & Klindt, 2025): with a fitted
:class:`~lit_repr.models.whitening.PCAWhitening` as ``whitening`` (the argument, or installed by the
:class:`~lit_repr.callbacks.Whitening` callback) the SAE encodes and reconstructs whitened inputs;
see :mod:`lit_repr.models.sae.input_whitening` for the spaces, the loss space and checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_repr.metrics.mcc import MeanCorrelationCoefficient, mean_correlation_coefficient
from lit_repr.metrics.sae import FiringFrequency, FractionOfVarianceExplained, MeanL0
from lit_repr.models.encoders import SparseEncoder, build_encoder
from lit_repr.models.sae.figures import atom_figure, log_atom_figure, log_firing_histogram
from lit_repr.models.sae.input_whitening import LOSS_SPACES, WhitenedInputs, check_whitening
from lit_repr.models.sae.kernels import geometric_median, sparse_decode, topk_encode
from lit_repr.models.sae.variants import SAEVariant, _check, build_variant
from lit_repr.models.whitening import PCAWhitening
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = ["SparseAutoencoder", "flops_per_sample"]

_ATOM_NORMS = ("fold", "project", "none")
_BIAS_INITS = ("geometric_median", "mean", "zeros")
_OUTPUTS = ("codes", "recon", "pre", "support")  # what compute_losses returns beside the losses


class SparseAutoencoder(WhitenedInputs, pl.LightningModule):
    """A sparse autoencoder with a unit-norm dictionary, a swappable encoder and a named variant.

    Tappable sites: ``"latents"`` (the codes), ``"encoder"`` (pre-activations). Logs
    ``<stage>/loss``, ``<stage>/mse`` (per element), ``<stage>/fve`` (fraction of variance
    explained), ``<stage>/l0``, each named loss (``train/l1``, ``train/auxk``, ``train/l0_loss``),
    ``<stage>/dead_fraction``, ``<stage>/dense_fraction``, and with ground truth
    ``<stage>/code_mcc`` and ``<stage>/dictionary_mcc``. On TensorBoard it adds the firing-frequency
    histogram and, given ``image_shape``, a figure of atoms. Outside a Trainer, :meth:`train_step`
    is the same training step.

    With a ``whitening``, inputs (of width ``whitening.in_features``) are whitened before encoding,
    the dictionary lives in the whitened space (``in_features == whitening.out_features``) and
    :meth:`forward` and :meth:`decode` return reconstructions in the original space. The logged
    ``mse`` and ``fve`` then name their space: ``<stage>/mse_whitened``, ``<stage>/mse_original``,
    ``<stage>/fve_whitened``, ``<stage>/fve_original``; the dictionary MCC compares the atoms mapped
    to the original space (:func:`~lit_repr.models.sae.input_whitening.input_space_atoms`).

    Args:
        in_features: input dimension.
        num_latents: dictionary size.
        variant: a name in :data:`~lit_repr.models.sae.variants.SAE_VARIANTS` (``"relu"``,
            ``"topk"``, ``"batchtopk"``, ``"jumprelu"`` or any registered one) or an
            :class:`~lit_repr.models.sae.variants.SAEVariant` instance (YAML: ``class_path``); a name
            is saved in the hyperparameters, so ``load_from_checkpoint`` rebuilds it.
        variant_args: the named variant's arguments, e.g. ``{"k": 32}`` for ``"topk"``; unknown
            names raise ``ValueError`` listing the allowed ones.
        encoder: a :class:`~lit_repr.models.encoders.SparseEncoder` or a name (``"amortized"``,
            ``"mlp"``, ``"ista"``, ``"fista"``, ``"ito"``); default the amortized linear encoder.
        dead_after: a latent is dead after this many training samples without firing.
        dense_threshold: a latent is dense when it fires on more than this fraction of samples.
        decoder_bias_init: ``"geometric_median"``, ``"mean"`` or ``"zeros"``.
        num_bias_init_batches: training batches used to initialize the decoder bias.
        atom_norm: ``"fold"``, ``"project"`` or ``"none"`` (see the module docstring).
        lr: Adam learning rate.
        input_key: where the input lives in a batch.
        codes_key: where true codes live in a batch (the code MCC is logged if present).
        true_dictionary: optional ``(n_true, in_features)`` ground-truth dictionary.
        image_shape: ``(H, W)`` or ``(C, H, W)`` to log atoms as images.
        init_seed: seed of the dictionary initialization (``None``: the global RNG).
        sparse_kernels: when the variant and the encoder support it (TopK with the amortized
            linear encoder), decode from the ``k`` active atoms only and backpropagate into the
            ``k`` selected latents only (``O(B·k·d)`` instead of ``O(B·n·d)``).
        whitening: a fitted :class:`~lit_repr.models.whitening.PCAWhitening` applied to the inputs,
            or ``None`` (none, or one set later as ``sae.whitening``, e.g. by the
            :class:`~lit_repr.callbacks.Whitening` callback). Not a hyperparameter: it is saved in
            the ``state_dict``.
        loss_space: where the reconstruction loss of a whitened SAE is measured: ``"whitened"``
            (``‖z − ẑ‖²``) or ``"original"`` (``‖x − W⁺ẑ − μ‖²``, through the exact inverse).

    Example:
        >>> sae = SparseAutoencoder(in_features=8, num_latents=16, variant="topk", variant_args={"k": 3})
        >>> codes = sae.encode(torch.randn(5, 8))
        >>> codes.shape, int((codes != 0).sum(1).max()) <= 3
        (torch.Size([5, 16]), True)
        >>> losses = sae.train_step(torch.randn(32, 8), sae.configure_optimizers())
        >>> sorted(losses)
        ['auxk', 'loss', 'mse_loss']
        >>> from lit_repr.models import PCAWhitening
        >>> x = torch.randn(256, 8) * torch.logspace(0, 2, 8)
        >>> white = SparseAutoencoder(8, 16, whitening=PCAWhitening.from_data(x), loss_space="original")
        >>> white(x).shape  # reconstructions in the original space
        torch.Size([256, 8])
    """

    def __init__(
        self,
        in_features: int = 8,
        num_latents: int = 16,
        variant: str | SAEVariant = "relu",
        variant_args: dict[str, Any] | None = None,
        encoder: SparseEncoder | str | None = None,
        dead_after: int = 10_000,
        dense_threshold: float = 0.1,
        decoder_bias_init: str = "geometric_median",
        num_bias_init_batches: int = 8,
        atom_norm: str = "fold",
        lr: float = 1e-3,
        input_key: TargetSpec = "x",
        codes_key: TargetSpec | None = "codes",
        true_dictionary: Tensor | None = None,
        image_shape: Sequence[int] | None = None,
        init_seed: int | None = None,
        sparse_kernels: bool = True,
        whitening: PCAWhitening | None = None,
        loss_space: str = "whitened",
    ) -> None:
        super().__init__()
        _check("in_features", in_features, "positive_int")
        _check("num_latents", num_latents, "positive_int")
        _check("dead_after", dead_after, "positive_int")
        _check("num_bias_init_batches", num_bias_init_batches, "positive_int")
        if not (isinstance(dense_threshold, (int, float)) and 0 < dense_threshold <= 1):
            raise ValueError(f"dense_threshold must be in (0, 1], got {dense_threshold!r}")
        _check("lr", lr, "positive")
        if decoder_bias_init not in _BIAS_INITS:
            raise ValueError(f"decoder_bias_init must be one of {_BIAS_INITS}, got {decoder_bias_init!r}")
        if atom_norm not in _ATOM_NORMS:
            raise ValueError(f"atom_norm must be one of {_ATOM_NORMS}, got {atom_norm!r}")
        check_target_spec(input_key, "input_key")
        if codes_key is not None:
            check_target_spec(codes_key, "codes_key")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            if len(image_shape) not in (2, 3) or math.prod(image_shape) != in_features:
                raise ValueError(
                    f"image_shape must be (H, W) or (C, H, W) with product in_features={in_features}, got {image_shape}"
                )
        if true_dictionary is not None:
            true_dictionary = torch.as_tensor(true_dictionary, dtype=torch.float32)
            if true_dictionary.ndim != 2 or true_dictionary.shape[1] != in_features:
                raise ValueError(
                    f"true_dictionary must have shape (n_true, {in_features}), got {tuple(true_dictionary.shape)}"
                )
        if loss_space not in LOSS_SPACES:
            raise ValueError(f"loss_space must be one of {LOSS_SPACES}, got {loss_space!r}")
        check_whitening(whitening, in_features)
        ignore = ["encoder", "true_dictionary", "whitening"] + ([] if isinstance(variant, str) else ["variant"])
        self.save_hyperparameters(ignore=ignore)
        self.in_features, self.num_latents = in_features, num_latents
        self.input_key, self.codes_key = input_key, codes_key
        self.dead_after, self.num_bias_init_batches, self.lr = dead_after, num_bias_init_batches, lr
        self.atom_norm = atom_norm
        self.sparse_kernels = sparse_kernels
        self.decoder_bias_init = decoder_bias_init
        self.image_shape = image_shape
        self._true_dictionary = true_dictionary

        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        W = torch.randn(num_latents, in_features, generator=gen)
        self.W_dec = nn.Parameter(W / W.norm(dim=1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(in_features))
        self.register_buffer("bias_initialized", torch.tensor(decoder_bias_init == "zeros"))
        self.register_buffer("samples_since_fired", torch.zeros(num_latents, dtype=torch.long))

        self.variant = build_variant(variant, num_latents, variant_args)
        self.encoder = build_encoder(encoder)
        self.encoder.build(in_features, num_latents, self.W_dec.detach().clone())
        self.latents = nn.Identity()  # tappable site for the codes
        self.stat_metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": m
                for stage in ("train", "val", "test")
                for name, m in (
                    ("fve", FractionOfVarianceExplained(in_features)),
                    ("l0", MeanL0()),
                    ("firing", FiringFrequency(num_latents, dense_threshold=dense_threshold)),
                )
            }
        )
        #: code MCC per evaluation stage, created at the first batch with true codes (their width is the data's)
        self.code_mcc = nn.ModuleDict()
        self.loss_space = loss_space
        self._init_whitening(whitening)

    # ------------------------------------------------------------------ model
    def swap_encoder(self, encoder: SparseEncoder | str) -> SparseEncoder:
        """Replace the encoder (e.g. FISTA or inference-time optimization on a trained dictionary)."""
        enc = build_encoder(encoder)
        enc.build(self.in_features, self.num_latents, self.W_dec.detach().clone())
        self.encoder = enc.to(self.W_dec.device)
        return self.encoder

    def _prepare_input(self, x: Tensor) -> Tensor:
        """``x`` flattened to ``(B, input_features)`` in the model's dtype; shape and finiteness checked."""
        x = x.flatten(1) if x.ndim > 2 else x
        x = x.to(self.W_dec.dtype)
        d = self.input_features
        if x.ndim != 2 or x.shape[1] != d:
            what = (f"with a whitening of {d} input features" if self.whitening is not None
                    else "; set in_features to the data's dimension")
            raise ValueError(
                f"SparseAutoencoder(in_features={self.in_features}) expects inputs of shape (batch, {d}), got "
                f"{tuple(x.shape)} {what}"
            )
        if not bool(torch.isfinite(x).all()):
            n_bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"input contains {n_bad} non-finite values (NaN or inf) out of {x.numel()}")
        return x


    def uses_sparse_kernels(self) -> bool:
        """Whether encoding and decoding run the sparse TopK kernels (see ``sparse_kernels``)."""
        return self.sparse_kernels and self.variant.supports_sparse_kernels and self.encoder.supports_sparse_kernels

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """``(codes, pre-activations, top-k support or None)`` for inputs ``x`` of shape ``(B, input_features)``.

        On the sparse TopK path (:meth:`uses_sparse_kernels`) the pre-activations are returned
        without gradient; only the ``k`` selected latents backpropagate.
        """
        return self._encode(self._inputs(x)[1])

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        x_c = x - self.b_dec
        if self.uses_sparse_kernels():
            lin = self.encoder.linear
            vals, idx, pre = topk_encode(x_c, lin.weight, lin.bias, self.variant.k)
            codes = torch.zeros_like(pre).scatter_(-1, idx, vals)
            return self.latents(codes), pre, (vals, idx)
        pre = self.encoder(x_c, self.W_dec)
        codes, support = self.variant.activate(pre)
        return self.latents(codes), pre, support

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, num_latents)``."""
        return self.encode_with_hidden_pre(x)[0]

    def decode(self, codes: Tensor, support: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``b_dec + codes·W_dec`` in the input space (mapped back through the whitening's inverse if
        there is one); with a top-k ``support`` only the ``k`` active atoms are read."""
        return self._to_input_space(self._decode(codes, support))

    def _decode(self, codes: Tensor, support: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if support is not None:
            return sparse_decode(*support, self.W_dec, self.b_dec)
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (``(B, input_features)``), in the input space."""
        codes, _, support = self.encode_with_hidden_pre(x)
        return self.decode(codes, support)

    def dead_latents(self) -> Tensor:
        """Boolean mask of latents that have not fired for ``dead_after`` training samples."""
        return self.samples_since_fired >= self.dead_after

    def compute_losses(self, x: Tensor) -> dict[str, Tensor]:
        """Named losses (``loss``, ``mse_loss``, the variant's) and the batch's ``codes``, ``recon``, ``pre``
        and top-k ``support`` (``(values, indices)`` or ``None``). With a whitening, ``recon`` is in the
        whitened space and ``mse_loss`` in ``loss_space``."""
        return self._losses(*self._inputs(x))

    def _losses(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Losses of raw inputs ``x`` whose dictionary-space version (whitened, or ``x`` itself) is ``z``."""
        codes, pre, support = self._encode(z)
        recon = self._decode(codes, support)
        residual = z - recon  # the variant's losses (e.g. AuxK) live in the dictionary's space
        if not pre.requires_grad and self.training and self.variant.uses_dead_latents and torch.is_grad_enabled():
            dead = self.dead_latents()
            if bool(dead.any()):  # sparse path: recompute the dead latents' pre-activations with gradient
                lin = self.encoder.linear
                b = lin.bias[dead] if lin.bias is not None else None
                pre = pre.detach().clone()
                pre[:, dead] = F.linear(z - self.b_dec, lin.weight[dead], b)
        if self.whitening is not None and self.loss_space == "original":
            out = {"mse_loss": (x - self.whitening.inverse(recon)).pow(2).sum(-1).mean()}
        else:
            out = {"mse_loss": residual.pow(2).sum(-1).mean()}
        out.update(self.variant.losses(self, pre, codes, residual))
        out["loss"] = sum(out.values())
        out["codes"], out["recon"], out["pre"], out["support"] = codes, recon, pre, support
        return out

    # ------------------------------------------------------------------ training outside a Trainer
    def train_step(self, x: Tensor, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One training step without a Trainer, exactly what :meth:`training_step` and the module's
        Lightning hooks do: losses, backward, the atom constraint (``atom_norm``), the optimizer
        step, the dead-latent counters. The decoder bias is first initialized from ``x`` if it
        has not been. Puts the module in training mode.

        Args:
            x: a batch ``(B, input_features)`` (or ``(B, *image_shape)``).
            optimizer: an optimizer over the module's parameters, e.g. :meth:`configure_optimizers`.

        Returns:
            The detached losses: ``loss``, ``mse_loss`` and the variant's (``l1``, ``auxk``, ``l0``).
        """
        self.train()
        x, z = self._inputs(x)
        if not bool(self.bias_initialized):
            self._initialize_decoder_bias(z)
        out = self._losses(x, z)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.on_before_optimizer_step(optimizer)
        optimizer.step()
        self.on_train_batch_end(None, None, 0)
        self._count_firing(out["codes"], out["support"])
        return {name: v.detach() for name, v in out.items() if name not in _OUTPUTS}

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
        """Set ``b_dec`` to the mean or geometric median of ``x`` (``(N, input_features)``; whitened first
        if the SAE has a whitening)."""
        self._initialize_decoder_bias(self._inputs(x.detach())[1])

    @torch.no_grad()
    def _initialize_decoder_bias(self, x: Tensor) -> None:
        x = x.detach().float()
        if self.decoder_bias_init == "zeros":
            val = torch.zeros(self.in_features)
        elif self.decoder_bias_init == "mean":
            val = x.mean(0)
        else:
            val = geometric_median(x)
        self.b_dec.copy_(val.to(self.b_dec))
        self.bias_initialized.fill_(True)

    def on_train_start(self) -> None:
        if bool(self.bias_initialized):
            return
        loader = self.trainer.train_dataloader
        if loader is None:
            return
        xs = []
        for i, batch in enumerate(loader):
            if i >= self.num_bias_init_batches:
                break
            xs.append(get_target(batch, self.input_key, "input_key").flatten(1))
        if xs:
            self.initialize_decoder_bias(torch.cat(xs).to(self.device))
            # every process starts from rank 0's bias (DDP does not re-broadcast parameters after setup)
            with torch.no_grad():
                self.b_dec.copy_(self.trainer.strategy.broadcast(self.b_dec.detach().clone(), src=0))

    # ------------------------------------------------------------------ unit-norm atoms
    def _folds_atom_norms(self) -> bool:
        return self.atom_norm == "fold" and self.encoder.can_scale_latents

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.atom_norm != "none" and not self._folds_atom_norms() and self.W_dec.grad is not None:
            with torch.no_grad():  # "project": the gradient loses its component along each atom
                W, g = self.W_dec, self.W_dec.grad
                g.sub_((g * W).sum(-1, keepdim=True) * W / W.pow(2).sum(-1, keepdim=True).clamp_min(1e-12))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.atom_norm != "none":
            self.renormalize_atoms(fold=self._folds_atom_norms())

    @torch.no_grad()
    def renormalize_atoms(self, fold: bool = False) -> None:
        """Rescale every atom to unit norm; with ``fold`` multiply the encoder's (and the variant's)
        latents by the old norms so that the reconstruction is unchanged."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec.div_(norms[:, None])
        if fold:
            self.encoder.scale_latents(norms)
            self.variant.scale_latents(norms)

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def _count_firing(self, codes: Tensor, support: tuple[Tensor, Tensor] | None = None) -> None:
        self.samples_since_fired.add_(codes.shape[0])
        if support is not None:  # the top-k support names the candidates: no pass over (B, n) codes
            vals, idx = support
            self.samples_since_fired[idx[vals != 0]] = 0
        else:
            self.samples_since_fired[(codes != 0).any(0)] = 0

    def _shared_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        x, z = self._inputs(get_target(batch, self.input_key, "input_key"))
        out = self._losses(x, z)
        codes = out["codes"].detach()
        bs = x.shape[0]
        if stage == "train":
            self._count_firing(codes, out["support"])
        log_kw = dict(batch_size=bs, on_epoch=True, on_step=stage == "train", sync_dist=stage != "train")
        self.log(f"{stage}/loss", out["loss"], prog_bar=True, **log_kw)
        recon = out["recon"].detach()
        if self.whitening is None:
            self.log(f"{stage}/mse", out["mse_loss"].detach() / self.in_features, **log_kw)
        else:  # both spaces, each named
            recon_x = self.whitening.inverse(recon)
            self.log(f"{stage}/mse_whitened", (z - recon).pow(2).mean().detach(), **log_kw)
            self.log(f"{stage}/mse_original", (x - recon_x).pow(2).mean().detach(), **log_kw)
            fve_x = self.original_fve[f"{stage}_fve"]
            fve_x.update(x.detach(), recon_x)
            self.log(f"{stage}/fve_original", fve_x, on_epoch=True, on_step=False, batch_size=bs)
        for name, v in out.items():
            if name not in ("loss", "mse_loss", *_OUTPUTS):
                self.log(f"{stage}/{name}" if name != "l0" else f"{stage}/l0_loss", v, **log_kw)
        fve, l0, firing = (self.stat_metrics[f"{stage}_{n}"] for n in ("fve", "l0", "firing"))
        fve.update(z.detach(), recon)
        l0.update(codes)
        firing.update(codes)
        self.log(f"{stage}/fve" if self.whitening is None else f"{stage}/fve_whitened", fve, on_epoch=True,
                 on_step=False, batch_size=bs)
        self.log(f"{stage}/l0", l0, on_epoch=True, on_step=False, batch_size=bs)
        if stage != "train" and self.codes_key is not None:
            try:
                true = get_target(batch, self.codes_key, "codes_key")
            except (KeyError, IndexError):
                true = None
            if true is not None:
                true = true.detach().flatten(1)
                if stage not in self.code_mcc:
                    self.code_mcc[stage] = MeanCorrelationCoefficient(true.shape[1], self.num_latents).to(self.device)
                self.code_mcc[stage].update(true, codes)
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
                log_firing_histogram(self, f"{stage}/firing_frequency_log10", res["frequency"])
            firing.reset()
        if stage == "train":
            return
        if stage in self.code_mcc:
            metric = self.code_mcc[stage]
            try:  # states are summed over processes: every process computes the same value
                self.log(f"{stage}/code_mcc", float(metric.compute().mean))
            except ValueError as err:  # e.g. a true code constant over the split
                rank_zero_warn(f"{stage}/code_mcc not logged: {err}")
            metric.reset()
        true_dict = self.true_dictionary()
        if true_dict is not None:
            atoms = self.input_space_atoms().detach()
            res = mean_correlation_coefficient(true_dict.to(self.W_dec.device), atoms, method="cosine")
            self.log(f"{stage}/dictionary_mcc", float(res.mean))
        if self.image_shape is not None and stage == "val":
            log_atom_figure(self, "val/atoms", self.W_dec, self.image_shape)

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def atom_figure(self, max_atoms: int = 64) -> Any:
        """A matplotlib figure of the first ``max_atoms`` atoms as images (needs ``image_shape``)."""
        if self.image_shape is None:
            raise ValueError("atom_figure needs image_shape, e.g. (8, 8) for 64-dimensional inputs")
        return atom_figure(self.W_dec, self.image_shape, max_atoms)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)


def flops_per_sample(sae: SparseAutoencoder) -> float:
    """Inference FLOPs per sample of ``sae``: its encoder, nonlinearity and (sparse or dense) decoder.

    Example:
        >>> flops_per_sample(SparseAutoencoder(4, 8, variant="topk", variant_args={"k": 2}))
        104.0
    """
    enc = sae.encoder.flops_per_sample()
    n, d = sae.num_latents, sae.in_features
    dec = 2 * sae.variant.k * d + d if sae.variant.supports_sparse_kernels else 2 * n * d + d
    return float(enc + d + n + dec)

