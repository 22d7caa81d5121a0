"""World models trained self-supervised by next-step prediction, whose representations PhyIP reads.

A :class:`WorldModel` encodes a sequence of observations ``x`` of shape ``(B, T, *obs_shape)`` into a
causal sequence of states ``h`` of shape ``(B, T, D)`` (``h_t`` sees only ``x_{<=t}``, within a
window of ``context`` steps for the convolutional and MLP encoders), and a predictor maps ``h_t``
to the next step:

- ``objective="latent"`` (JEPA-style): the predictor's output is compared with the state of
  ``x_{<=t+1}`` under a target encoder that is an exponential moving average of the encoder and
  receives no gradient (stop-gradient); a VICReg variance and covariance penalty on ``h`` keeps
  the representation from collapsing to a constant.
- ``objective="observation"``: the predictor decodes the next observation ``x_{t+1}`` itself.

The per-sample representation is the temporal mean (or last) of ``h`` over the steps that see a
full context window, at the ``representation`` site: ``(B, D)``. The plain functions
:func:`variance_loss`, :func:`covariance_loss` and :func:`build_sequence_encoder` hold the research
and are tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_repr.checks import check_choice, check_int, check_number
from lit_repr.targets import TargetSpec, check_finite, check_target_spec, get_target

__all__ = [
    "WorldModel", "WindowMLPEncoder", "CausalConvEncoder", "GRUEncoder", "FrameConvEncoder", "TemporalPool",
    "build_sequence_encoder", "variance_loss", "covariance_loss", "SEQUENCE_ENCODERS",
]

SEQUENCE_ENCODERS = ("mlp", "conv1d", "gru", "conv2d")
POOLS = ("mean", "first", "last")


def variance_loss(z: Tensor, target_std: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg's variance term: mean over features of ``relu(target_std - std)`` of ``z`` (rows: samples).

    Example:
        >>> variance_loss(torch.zeros(8, 3))  # a collapsed representation pays the full price
        tensor(0.9900)
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"variance_loss needs a (N >= 2, D) matrix, got shape {tuple(z.shape)}")
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(target_std - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """VICReg's covariance term: the sum of squared off-diagonal covariances of ``z``, divided by ``D``.

    Example:
        >>> z = torch.randn(1000, 2); float(covariance_loss(torch.cat([z[:, :1], z[:, :1]], 1))) > 0.5
        True
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"covariance_loss needs a (N >= 2, D) matrix, got shape {tuple(z.shape)}")
    n, d = z.shape
    zc = z - z.mean(0)
    cov = zc.T @ zc / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def _window(x: Tensor, context: int) -> Tensor:
    """``(B, T, F)`` -> ``(B, T, context * F)``: the last ``context`` steps at each step (x_0 repeated before t=0)."""
    pad = x[:, :1].expand(-1, context - 1, -1)
    xp = torch.cat([pad, x], dim=1)
    return xp.unfold(1, context, 1).transpose(2, 3).reshape(x.shape[0], x.shape[1], -1)


class WindowMLPEncoder(nn.Module):
    """An MLP on the last ``context`` observations at every step: ``(B, T, F)`` -> ``(B, T, D)``.

    Sites ``net.0``, ``net.1``, ... (linear layers and activations), each ``(B, T, width)``.

    Args:
        in_features: observation width ``F``.
        out_features: state width ``D``.
        hidden: widths of the hidden layers.
        context: steps each state sees.

    Example:
        >>> WindowMLPEncoder(4, 8, hidden=[16], context=3)(torch.randn(2, 10, 4)).shape
        torch.Size([2, 10, 8])
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64,), context: int = 8) -> None:
        super().__init__()
        self.context = check_int("context", context)
        widths = [in_features * context, *[check_int("hidden", h) for h in hidden], out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_window(x, self.context))


class _CausalConv1d(nn.Module):
    """A 1D convolution over time (``(B, C, T)``) that sees only the present and the past."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.left, 0), mode="replicate") if self.left else x)


class CausalConvEncoder(nn.Module):
    """Causal dilated 1D convolutions over time: ``(B, T, F)`` -> ``(B, T, D)``.

    The dilations double from layer to layer until the receptive field covers ``context`` steps.
    Sites ``layers.0``, ``layers.1``, ... (each ``(B, width, T)``) and ``out`` (``(B, T, D)``).

    Args:
        in_features: observation width ``F`` (channels, for fields flattened per step).
        out_features: state width ``D``.
        hidden: channels of the hidden layers (one layer per entry).
        context: steps each state should see (sets the kernel and dilations).

    Example:
        >>> CausalConvEncoder(4, 8, hidden=[16, 16], context=8)(torch.randn(2, 10, 4)).shape
        torch.Size([2, 10, 8])
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64, 64), context: int = 8) -> None:
        super().__init__()
        self.context = check_int("context", context)
        hidden = [check_int("hidden", h) for h in hidden]
        if not hidden:
            raise ValueError("hidden must list at least one width for the conv1d encoder, got []")
        # kernel k and dilations 1, 2, 4, ...: receptive field 1 + (k - 1)(2^L - 1) >= context
        span = 2 ** len(hidden) - 1
        kernel = max(2, 1 + math.ceil((context - 1) / span)) if context > 1 else 1
        blocks, width = [], in_features
        for i, h in enumerate(hidden):
            blocks.append(nn.Sequential(_CausalConv1d(width, h, kernel, dilation=2**i), nn.GELU()))
            width = h
        self.layers = nn.Sequential(*blocks)
        self.out = nn.Linear(width, out_features)
        self.receptive_field = 1 + (kernel - 1) * span

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.layers(x.transpose(1, 2)).transpose(1, 2))


class GRUEncoder(nn.Module):
    """A GRU over time followed by a linear map: ``(B, T, F)`` -> ``(B, T, D)`` (causal, unbounded memory).

    Sites ``gru`` (its output is a tuple: taps read its first tensor) and ``out``.

    Args:
        in_features: observation width ``F``.
        out_features: state width ``D``.
        hidden: the GRU's width (first entry) and number of layers (number of entries).
        context: unused by the recurrence (kept for a uniform signature).

    Example:
        >>> GRUEncoder(4, 8, hidden=[16])(torch.randn(2, 10, 4)).shape
        torch.Size([2, 10, 8])
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64,), context: int = 8) -> None:
        super().__init__()
        hidden = [check_int("hidden", h) for h in hidden]
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(f"hidden of the gru encoder must list one width per layer, all equal, got {hidden}")
        self.gru = nn.GRU(in_features, hidden[0], num_layers=len(hidden), batch_first=True)
        self.out = nn.Linear(hidden[0], out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.gru(x)[0])


class FrameConvEncoder(nn.Module):
    """A small 2D CNN per frame, then causal convolutions over time: ``(B, T, C, H, W)`` -> ``(B, T, D)``.

    Sites ``frame.0``, ``frame.1``, ... (per frame: ``B * T`` rows, stride-2 convolutions), ``frame``
    (``(B * T, width)`` after global average pooling) and ``temporal.*`` (``(B, T, D)`` per sample).

    Args:
        in_channels: channels of a frame (1 for vorticity).
        out_features: state width ``D``.
        hidden: channels of the stride-2 convolutions (one per entry).
        context: steps each state sees (the temporal convolutions' receptive field).

    Example:
        >>> FrameConvEncoder(1, 8, hidden=[4, 8], context=4)(torch.randn(2, 5, 1, 16, 16)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, in_channels: int, out_features: int, hidden: Sequence[int] = (16, 32), context: int = 8) -> None:
        super().__init__()
        hidden = [check_int("hidden", h) for h in hidden]
        if not hidden:
            raise ValueError("hidden must list at least one channel count for the conv2d encoder, got []")
        layers: list[nn.Module] = []
        width = in_channels
        for h in hidden:
            layers += [nn.Conv2d(width, h, 3, stride=2, padding=1, padding_mode="circular"), nn.GELU()]
            width = h
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.frame = nn.Sequential(*layers)
        self.temporal = CausalConvEncoder(width, out_features, hidden=[width], context=context)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        f = self.frame(x.reshape(b * t, *x.shape[2:]))
        return self.temporal(f.reshape(b, t, -1))


def build_sequence_encoder(
    kind: str, obs_shape: Sequence[int], out_features: int, hidden: Sequence[int], context: int
) -> nn.Module:
    """The encoder ``kind`` (one of :data:`SEQUENCE_ENCODERS`) for observations of ``obs_shape``.

    ``"mlp"``, ``"conv1d"`` and ``"gru"`` read vector observations (``obs_shape=(F,)``); ``"conv2d"``
    reads fields (``obs_shape=(C, H, W)``).

    Example:
        >>> build_sequence_encoder("conv2d", (1, 8, 8), 4, [4], 2)(torch.randn(3, 6, 1, 8, 8)).shape
        torch.Size([3, 6, 4])
    """
    check_choice("encoder", kind, SEQUENCE_ENCODERS)
    if kind == "conv2d":
        if len(obs_shape) != 3:
            raise ValueError(f"encoder='conv2d' reads fields of obs_shape (C, H, W), got obs_shape={list(obs_shape)}")
        return FrameConvEncoder(obs_shape[0], out_features, hidden=hidden, context=context)
    if len(obs_shape) != 1:
        raise ValueError(
            f"encoder={kind!r} reads vector observations of obs_shape (F,), got obs_shape={list(obs_shape)}; "
            f"use encoder='conv2d' for (C, H, W) fields"
        )
    cls = {"mlp": WindowMLPEncoder, "conv1d": CausalConvEncoder, "gru": GRUEncoder}[kind]
    return cls(obs_shape[0], out_features, hidden=hidden, context=context)


class TemporalPool(nn.Module):
    """A per-sample representation from a sequence of states: ``(B, T, D)`` -> ``(B, D)``.

    Args:
        mode: ``"mean"`` over the steps from ``skip`` on, ``"first"`` (the state at step ``skip``,
            the first that sees a full window from ``t = 0``) or ``"last"`` (the final state).
        skip: leading steps left out of the mean (those that see less than a full window).

    Example:
        >>> TemporalPool("mean", skip=1)(torch.arange(6.0).reshape(1, 3, 2))
        tensor([[3., 4.]])
    """

    def __init__(self, mode: Literal["mean", "first", "last"] = "mean", skip: int = 0) -> None:
        super().__init__()
        self.mode = check_choice("pool", mode, POOLS)
        self.skip = check_int("skip", skip, low=0)

    def forward(self, h: Tensor) -> Tensor:
        if self.mode == "last":
            return h[:, -1]
        start = min(self.skip, h.shape[1] - 1)
        return h[:, start] if self.mode == "first" else h[:, start:].mean(1)


class WorldModel(pl.LightningModule):
    """An encoder and a predictor trained self-supervised by next-step prediction (latent or observation space).

    The encoder maps observations ``x`` of shape ``(B, T, *obs_shape)`` to causal states ``(B, T, D)``;
    ``forward(x)`` returns the per-sample representation ``(B, D)`` (the ``representation`` site).
    With ``objective="latent"`` the predictor maps the state at ``t`` to the stop-gradient state of
    an EMA target encoder at ``t + 1`` (mean squared error) and a VICReg variance/covariance penalty
    on the states prevents collapse; with ``objective="observation"`` it decodes ``x_{t+1}``.

    Tappable sites: ``encoder`` (``(B, T, D)``), the encoder's layers (``encoder.net.*``,
    ``encoder.layers.*``, ``encoder.gru``, ``encoder.frame.*`` — per frame, ``B * T`` rows — and
    ``encoder.temporal.*``), ``representation`` (``(B, D)``) and ``predictor.*``. Logs
    ``train/loss`` (the SSL loss) and ``val/loss``, with its parts ``train/prediction``,
    ``train/variance``, ``train/covariance`` (latent objective).

    Args:
        obs_shape: shape of one observation: ``[F]`` for vectors (orbits: ``[4]``), ``[C, H, W]``
            for fields (fluids: ``[1, N, N]``).
        encoder: ``"mlp"``, ``"conv1d"``, ``"gru"``, ``"conv2d"`` or ``"auto"`` (``conv1d`` for
            vectors, ``conv2d`` for fields).
        objective: ``"latent"`` (JEPA-style) or ``"observation"`` (next-observation regression).
        representation_dim: state and representation width ``D``.
        hidden: the encoder's hidden widths (channels for convolutions).
        context: steps each state sees (window of the MLP and convolutional encoders).
        predictor_hidden: hidden width of the predictor MLP.
        pool: ``"mean"`` (over steps that see a full window), ``"first"`` (the first such step) or
            ``"last"``.
        ema_decay: decay of the target encoder's moving average, in ``[0, 1)`` (latent objective).
        variance_weight: weight of the variance penalty (latent objective).
        covariance_weight: weight of the covariance penalty (latent objective).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs_hint: if set, a cosine learning-rate schedule over this many epochs.
        input_key: where the observation sequence sits in a batch.

    Example:
        >>> model = WorldModel(obs_shape=[4], representation_dim=8, hidden=[16], context=4)
        >>> x = torch.randn(5, 12, 4)
        >>> model(x).shape
        torch.Size([5, 8])
        >>> bool(model.ssl_loss(x)["loss"] > 0)
        True
    """

    def __init__(
        self,
        obs_shape: Sequence[int] = (4,),
        encoder: Literal["auto", "mlp", "conv1d", "gru", "conv2d"] = "auto",
        objective: Literal["latent", "observation"] = "latent",
        representation_dim: int = 32,
        hidden: Sequence[int] = (64, 64),
        context: int = 8,
        predictor_hidden: int = 64,
        pool: Literal["mean", "first", "last"] = "mean",
        ema_decay: float = 0.99,
        variance_weight: float = 1.0,
        covariance_weight: float = 0.04,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_epochs_hint: int | None = None,
        input_key: TargetSpec = "x",
    ) -> None:
        super().__init__()
        if isinstance(obs_shape, int) or not isinstance(obs_shape, Sequence) or len(obs_shape) not in (1, 3):
            raise ValueError(f"obs_shape must be [F] (vectors) or [C, H, W] (fields), got {obs_shape!r}")
        obs_shape = tuple(check_int("obs_shape", s) for s in obs_shape)
        check_choice("encoder", encoder, ("auto", *SEQUENCE_ENCODERS))
        check_choice("objective", objective, ("latent", "observation"))
        check_int("representation_dim", representation_dim)
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise ValueError(f"hidden must be a list of widths, got {hidden!r}")
        check_int("context", context)
        check_int("predictor_hidden", predictor_hidden)
        check_choice("pool", pool, POOLS)
        check_number("ema_decay", ema_decay, low=0, high=1, high_open=True)
        check_number("variance_weight", variance_weight, low=0)
        check_number("covariance_weight", covariance_weight, low=0)
        check_number("lr", lr, low=0, low_open=True)
        check_number("weight_decay", weight_decay, low=0)
        if max_epochs_hint is not None:
            check_int("max_epochs_hint", max_epochs_hint)
        check_target_spec(input_key, "input_key")
        if encoder == "auto":
            encoder = "conv2d" if len(obs_shape) == 3 else "conv1d"
        self.save_hyperparameters()
        self.hparams.encoder = encoder
        self.hparams.obs_shape = list(obs_shape)
        self.obs_shape = obs_shape
        self.objective = objective
        self.input_key = input_key
        self.encoder = build_sequence_encoder(encoder, obs_shape, representation_dim, list(hidden), context)
        self.representation = TemporalPool(pool, skip=context - 1)
        out = representation_dim if objective == "latent" else math.prod(obs_shape)
        self.predictor = nn.Sequential(
            nn.Linear(representation_dim, predictor_hidden), nn.GELU(), nn.Linear(predictor_hidden, out)
        )
        self.target_encoder: nn.Module | None = None
        if objective == "latent":
            self.target_encoder = build_sequence_encoder(encoder, obs_shape, representation_dim, list(hidden), context)
            self.target_encoder.load_state_dict(self.encoder.state_dict())
            self.target_encoder.requires_grad_(False)

    # ------------------------------------------------------------------ model
    def check_input(self, x: Any) -> Tensor:
        """``x`` as a float tensor of shape ``(B, T >= 2, *obs_shape)``; ``ValueError`` otherwise."""
        if not isinstance(x, Tensor):
            raise ValueError(f"WorldModel input must be a tensor (B, T, {', '.join(map(str, self.obs_shape))}), "
                             f"got {type(x).__name__}")
        if x.ndim != 2 + len(self.obs_shape) or tuple(x.shape[2:]) != self.obs_shape or x.shape[1] < 2:
            raise ValueError(
                f"WorldModel(obs_shape={list(self.obs_shape)}) reads sequences of shape (batch, time >= 2, "
                f"{', '.join(map(str, self.obs_shape))}), got {tuple(x.shape)}"
            )
        return check_finite(x.float(), "WorldModel input")

    def states(self, x: Tensor) -> Tensor:
        """The causal states ``(B, T, D)`` of the encoder."""
        return self.encoder(self.check_input(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.representation(self.states(x))

    def representation_network(self) -> nn.Module:
        """A fresh copy of encoder + pooling (``x -> (B, D)``) with the current weights, detached from this module."""
        hp = self.hparams
        enc = build_sequence_encoder(hp.encoder, self.obs_shape, hp.representation_dim, list(hp.hidden), hp.context)
        enc.load_state_dict(self.encoder.state_dict())
        pool = TemporalPool(hp.pool, skip=hp.context - 1)
        return nn.Sequential(enc, pool).to(self.device)

    # ------------------------------------------------------------------ objective
    def ssl_loss(self, x: Tensor) -> dict[str, Tensor]:
        """The self-supervised loss of a batch of sequences and its parts (``loss``, ``prediction``, ...)."""
        x = self.check_input(x)
        h = self.encoder(x)
        pred = self.predictor(h[:, :-1])
        if self.objective == "observation":
            target = x[:, 1:].reshape(*pred.shape)
            return {"loss": F.mse_loss(pred, target), "prediction": F.mse_loss(pred, target).detach()}
        assert self.target_encoder is not None
        with torch.no_grad():
            target = self.target_encoder(x)[:, 1:]
        prediction = F.mse_loss(pred, target)
        z = h.reshape(-1, h.shape[-1])
        var = variance_loss(z)
        cov = covariance_loss(z)
        loss = prediction + self.hparams.variance_weight * var + self.hparams.covariance_weight * cov
        return {"loss": loss, "prediction": prediction.detach(), "variance": var.detach(), "covariance": cov.detach()}

    def _step(self, batch: Any, stage: str) -> Tensor:
        x = get_target(batch, self.input_key, "input_key")
        parts = self.ssl_loss(x)
        check_finite(parts["loss"].detach(), f"{stage} SSL loss")
        bs = x.shape[0]
        sync = stage != "train"
        self.log(f"{stage}/loss", parts["loss"], prog_bar=True, batch_size=bs, sync_dist=sync,
                 on_epoch=True, on_step=stage == "train")
        for k, v in parts.items():
            if k != "loss":
                self.log(f"{stage}/{k}", v, batch_size=bs, sync_dist=sync, on_epoch=True, on_step=False)
        return parts["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self(get_target(batch, self.input_key, "input_key"))

    @torch.no_grad()
    def update_target_encoder(self) -> None:
        """Move the target encoder towards the encoder: ``target <- decay * target + (1 - decay) * online``."""
        if self.target_encoder is None:
            return
        decay = self.hparams.ema_decay
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(o.detach(), 1.0 - decay)
        for t, o in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            t.copy_(o)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.update_target_encoder()

    def configure_optimizers(self) -> Any:
        params = [p for n, p in self.named_parameters() if not n.startswith("target_encoder.")]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.max_epochs_hint:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs_hint)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt
