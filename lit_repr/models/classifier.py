"""Classifiers trained with cross-entropy: the models whose representations lit_repr reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from lit_repr.checks import check_bool, check_choice, check_int, check_number
from lit_repr.models.backbones import build_backbone
from lit_repr.targets import TargetSpec, check_finite, check_target_spec, get_target

__all__ = ["Classifier"]


class Classifier(pl.LightningModule):
    """A backbone (MLP or timm architecture) and a linear head trained with cross-entropy.

    Tappable sites: ``"backbone"`` (penultimate features), the backbone's own submodules
    (``"backbone.0"``, ``"backbone.layer3"``, ...) and ``"head"`` (logits). Logs ``train/loss``,
    ``train/acc``, ``val/loss``, ``val/acc``, ``val/auroc`` (and ``test/...``).

    Args:
        num_classes: number of classes (or labels, for ``task="multilabel"``).
        backbone: ``"mlp"`` or a timm model name (no pretrained weights are loaded).
        in_features: flattened input dimension (MLP backbone).
        in_channels: input channels (timm backbone).
        hidden: MLP hidden widths.
        activation: MLP activation.
        dropout: MLP dropout.
        batch_norm: MLP batch norm.
        head_bias: whether the linear head has a bias.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        task: ``"multiclass"`` (integer labels) or ``"multilabel"`` (multi-hot labels, BCE loss).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs_hint: if set, use a cosine schedule over this many epochs.
        input_key: where the input lives in a batch (target spec: key, position or callable).
        target_key: where the label lives in a batch.
        timm_kwargs: extra keyword arguments for ``timm.create_model``.

    Example:
        >>> model = Classifier(num_classes=10, in_features=64, hidden=[32])
        >>> model(torch.randn(4, 64)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        backbone: str = "mlp",
        in_features: int | None = 64,
        in_channels: int = 3,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        head_bias: bool = True,
        label_smoothing: float = 0.0,
        task: Literal["multiclass", "multilabel"] = "multiclass",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs_hint: int | None = None,
        input_key: TargetSpec = "x",
        target_key: TargetSpec = "y",
        timm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_choice("task", task, ("multiclass", "multilabel"))
        check_int("num_classes", num_classes, low=2 if task == "multiclass" else 1)
        check_number("label_smoothing", label_smoothing, low=0, high=1, high_open=True)
        check_number("lr", lr, low=0, low_open=True)
        check_number("weight_decay", weight_decay, low=0)
        if max_epochs_hint is not None:
            check_int("max_epochs_hint", max_epochs_hint)
        check_bool("head_bias", head_bias)
        if not isinstance(backbone, str):
            raise ValueError(f"backbone must be 'mlp' or a timm model name, got {backbone!r}")
        check_target_spec(input_key, "input_key")
        check_target_spec(target_key, "target_key")
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.task = task
        self.label_smoothing = label_smoothing
        self.input_key = input_key
        self.target_key = target_key
        self.backbone = build_backbone(
            backbone,
            in_features=in_features,
            in_channels=in_channels,
            hidden=hidden,
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            timm_kwargs=timm_kwargs,
        )
        self.head = nn.Linear(self.backbone.num_features, num_classes, bias=head_bias)
        metric_kw: dict[str, Any] = (
            {"task": "multiclass", "num_classes": num_classes}
            if task == "multiclass"
            else {"task": "multilabel", "num_labels": num_classes}
        )
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": metric
                for stage in ("train", "val", "test")
                for name, metric in (
                    ("acc", torchmetrics.Accuracy(**metric_kw)),
                    ("auroc", torchmetrics.AUROC(**metric_kw)),
                )
                if not (stage == "train" and name == "auroc")
            }
        )

    # ------------------------------------------------------------------ model
    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (the backbone's output)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    # ------------------------------------------------------------------ steps
    def get_targets(self, batch: Any) -> Tensor:
        """The label the loss is computed against (``DIET`` overrides this with the sample index)."""
        return get_target(batch, self.target_key, "target_key")

    def loss_fn(self, logits: Tensor, y: Tensor) -> Tensor:
        if self.task == "multilabel":
            y = y.float()
            if self.label_smoothing:
                y = y * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            return F.binary_cross_entropy_with_logits(logits, y)
        return F.cross_entropy(logits, y.long(), label_smoothing=self.label_smoothing)

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        x = get_target(batch, self.input_key, "input_key")
        y = self.get_targets(batch)
        if self.task == "multiclass" and y.ndim > 1:
            y = y.reshape(-1) if y.numel() == y.shape[0] else y
            if y.ndim > 1:
                raise ValueError(f"multiclass targets must be class indices of shape (batch,), got {tuple(y.shape)}")
        logits = self(x)
        check_finite(logits, f"{stage} logits")
        loss = self.loss_fn(logits, y)
        bs = x.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=bs, sync_dist=stage != "train")
        self._log_metrics(logits.detach(), y, stage, bs)
        return loss

    def _log_metrics(self, logits: Tensor, y: Tensor, stage: str, bs: int) -> None:
        probs = logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()
        y_int = y.long()
        acc = self.metrics[f"{stage}_acc"]
        acc.update(probs, y_int)  # (logged per epoch only: no per-batch value to compute, as forward would)
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=bs, on_epoch=True, on_step=False)
        if f"{stage}_auroc" in self.metrics:
            auroc = self.metrics[f"{stage}_auroc"]
            auroc.update(probs, y_int)
            self.log(f"{stage}/auroc", auroc, batch_size=bs, on_epoch=True, on_step=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = get_target(batch, self.input_key, "input_key")
        logits = self(x)
        return logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.max_epochs_hint:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs_hint)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt
