"""DIET: unsupervised representation learning with the datum index as the target.

DIET (Ibrahim, Balestriero et al., "Unsupervised learning on a DIET: datum index as target
free of self-supervision, reconstruction, projector head", 2023) trains a backbone and a
bias-free linear head with cross-entropy where the "class" of a sample is its index in the
training set, with strong label smoothing (0.8 in the paper). Nothing else: no pairs, no
projector, no negatives beyond the softmax. Its representation is read with linear probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from lit_repr.checks import check_bool, check_int, check_number
from lit_repr.models.classifier import Classifier
from lit_repr.targets import TargetSpec, check_finite, get_target

__all__ = ["DIET", "RowNormalizedLinear"]


class RowNormalizedLinear(nn.Linear):
    """A bias-free linear layer whose weight rows are divided by their norm in every forward
    pass, so each logit is the projection of the features on a unit direction.

    Args:
        in_features: input dimension.
        out_features: number of rows (classes).
        eps: floor of the row norms.

    Example:
        >>> layer = RowNormalizedLinear(4, 3)
        >>> torch.allclose(layer.normalized_weight.norm(dim=1), torch.ones(3))
        True
    """

    def __init__(self, in_features: int, out_features: int, eps: float = 1e-8) -> None:
        super().__init__(check_int("in_features", in_features), check_int("out_features", out_features), bias=False)
        self.eps = check_number("eps", eps, low=0, low_open=True)

    @property
    def normalized_weight(self) -> Tensor:
        return F.normalize(self.weight, dim=1, eps=self.eps)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, self.normalized_weight)


class _UnbuiltHead(nn.Module):
    """Placeholder until :meth:`DIET.setup` knows the training set size."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(
            "DIET(num_samples=None) builds its head in setup(), once the training set size is known; "
            "fit it with a Trainer and a DataModule, or pass num_samples"
        )


class DIET(Classifier):
    """Instance discrimination with the datum index as target (DIET).

    A :class:`~lit_repr.models.classifier.Classifier` whose targets are the samples' positions in
    the training set (``batch["index"]`` by default), whose head is bias-free with one row per
    training sample, and whose cross-entropy uses label smoothing (``0.8``, as in the DIET paper).
    Tappable sites are the classifier's: ``"backbone"`` (the representation), its submodules, and
    ``"head"``.

    Logged quantities: ``train/loss`` and ``train/acc``, the *instance* accuracy (how well the
    model tells training samples apart: a memorization score, not a class accuracy). DIET never
    sees class labels, so it logs no class-label accuracy; in validation and test it logs
    ``val/feature_norm`` and ``val/feature_rank`` (effective rank of the batch's centered features,
    ``exp`` of the entropy of the normalized singular values) and leaves class information to
    linear probes (:class:`lit_repr.callbacks.LinearProbe`). Instance indices of held-out splits
    name other samples, so no held-out loss is computed.

    Args:
        num_samples: size of the training set (rows of the head); every ``index`` in training
            batches must lie in ``[0, num_samples)``. ``None`` reads it from the DataModule's
            training split when the Trainer calls :meth:`setup` (the head is built then).
        normalize_head: divide each head row by its norm in the forward pass
            (:class:`RowNormalizedLinear`).
        label_smoothing: cross-entropy label smoothing in ``[0, 1)`` (paper: 0.8).
        target_key: where the instance index lives in a batch (target spec; default ``"index"``).
        backbone, in_features, in_channels, hidden, activation, dropout, batch_norm, lr,
            weight_decay, max_epochs_hint, input_key, timm_kwargs: as for
            :class:`~lit_repr.models.classifier.Classifier`.

    Example:
        >>> model = DIET(num_samples=100, in_features=8, hidden=[16])
        >>> batch = {"x": torch.randn(4, 8), "index": torch.tensor([0, 5, 7, 99])}
        >>> model.get_targets(batch).tolist(), model.head.bias is None
        ([0, 5, 7, 99], True)
        >>> loss = model.loss_fn(model(batch["x"]), model.get_targets(batch))
        >>> bool(torch.isfinite(loss))
        True
    """

    def __init__(
        self,
        num_samples: int | None = None,
        normalize_head: bool = False,
        label_smoothing: float = 0.8,
        target_key: TargetSpec = "index",
        backbone: str = "mlp",
        in_features: int | None = 64,
        in_channels: int = 3,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs_hint: int | None = None,
        input_key: TargetSpec = "x",
        timm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2
        ):
            raise ValueError(
                f"num_samples must be an int >= 2 (the training set size: one head row per sample) or "
                f"None (read from the DataModule in setup), got {num_samples!r}"
            )
        check_bool("normalize_head", normalize_head)
        super().__init__(
            num_classes=num_samples or 2, backbone=backbone, in_features=in_features, in_channels=in_channels,
            hidden=hidden, activation=activation, dropout=dropout, batch_norm=batch_norm,
            head_bias=False, label_smoothing=label_smoothing, task="multiclass", lr=lr,
            weight_decay=weight_decay, max_epochs_hint=max_epochs_hint, input_key=input_key,
            target_key=target_key, timm_kwargs=timm_kwargs,
        )
        # keep only DIET's own arguments, so that load_from_checkpoint rebuilds a DIET
        self.save_hyperparameters(ignore=["num_classes", "head_bias", "task"])
        self.normalize_head = normalize_head
        self.num_samples: int | None = None
        if num_samples is not None:
            self._build_head(num_samples)
        else:
            self.head = _UnbuiltHead()
            self.metrics = nn.ModuleDict()

    def _build_head(self, num_samples: int) -> None:
        self.num_samples = self.num_classes = num_samples
        d = self.backbone.num_features
        if self.normalize_head:
            self.head = RowNormalizedLinear(d, num_samples)
        else:
            self.head = nn.Linear(d, num_samples, bias=False)
        # Only the training instance accuracy is meaningful (no AUROC over thousands of "classes").
        self.metrics = nn.ModuleDict(
            {"train_acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_samples)}
        )

    def _train_set_size(self) -> int | None:
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        datasets = getattr(dm, "datasets", None)
        if isinstance(datasets, dict) and "train" in datasets:
            return len(datasets["train"])
        return None

    def setup(self, stage: str) -> None:
        """Build the head from the training set size if ``num_samples=None``; check it otherwise."""
        n = self._train_set_size()
        if self.num_samples is None:
            if n is None:
                raise ValueError(
                    "DIET(num_samples=None) reads the training set size from the DataModule "
                    "(datamodule.datasets['train']); pass num_samples explicitly for other data sources"
                )
            self._build_head(n)
            self.hparams["num_samples"] = n  # so that checkpoints rebuild the same head
        elif n is not None and n > self.num_samples:
            raise ValueError(
                f"DIET has num_samples={self.num_samples} head rows but the training set has {n} samples; "
                f"set num_samples={n} (or None to read it from the DataModule)"
            )

    @property
    def head_rows(self) -> Tensor:
        """The head's rows as used in the forward pass (normalized if ``normalize_head``)."""
        w = self.head.normalized_weight if self.normalize_head else self.head.weight
        return w.detach()

    def get_targets(self, batch: Any) -> Tensor:
        """The instance indices of the batch (checked to lie in ``[0, num_samples)``)."""
        idx = get_target(batch, self.target_key, "target_key")
        if idx.is_floating_point():
            raise ValueError(f"DIET targets must be integer sample indices, got dtype {idx.dtype}")
        idx = idx.reshape(-1).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise ValueError(
                f"DIET got sample indices in [{int(idx.min())}, {int(idx.max())}] but num_samples="
                f"{self.num_samples}; set num_samples to the training set size"
            )
        return idx

    def _eval_step(self, batch: Any, stage: str) -> None:
        x = get_target(batch, self.input_key, "input_key")
        feats = check_finite(self.features(x).flatten(1), f"{stage} features")
        bs = feats.shape[0]
        self.log(f"{stage}/feature_norm", feats.norm(dim=1).mean(), batch_size=bs, sync_dist=True)
        if bs > 1:
            s = torch.linalg.svdvals(feats - feats.mean(0))
            p = s / s.sum().clamp_min(1e-12)
            rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
            self.log(f"{stage}/feature_rank", rank, batch_size=bs, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The representation (backbone features): DIET's output of interest."""
        return self.features(get_target(batch, self.input_key, "input_key"))
