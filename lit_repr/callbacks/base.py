"""Shared wiring of lit_repr's callbacks: a Tap on the model, frozen passes, figures, state keys.

No science lives here; it only moves features from a :class:`~lit_repr.taps.Tap` to readouts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lit_repr.taps import Reduction, Tap
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = ["TapCallback", "default_forward", "frozen_mode", "probe_loaders_for"]

Mode = Literal["online", "frozen"]


def default_forward(input_key: TargetSpec) -> Callable[[nn.Module, Any], Any]:
    """A forward function that feeds ``batch[input_key]`` to the module."""

    def forward(module: nn.Module, batch: Any) -> Any:
        return module(get_target(batch, input_key, "input_key"))

    return forward


@contextmanager
def frozen_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the duration; every submodule's own mode is restored after.

    BatchNorm running statistics and dropout masks are therefore untouched by what runs inside.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _shard(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """The part of ``loader`` that process ``rank`` of ``world`` reads (no padding, no overlap)."""
    if world <= 1:
        return loader
    dataset = loader.dataset
    if not hasattr(dataset, "__len__") or isinstance(dataset, torch.utils.data.IterableDataset):
        return loader if rank == 0 else DataLoader([], batch_size=1)
    idx = list(range(rank, len(dataset), world))  # type: ignore[arg-type]
    return DataLoader(
        Subset(dataset, idx),
        batch_size=loader.batch_size or 1,
        collate_fn=loader.collate_fn,
        num_workers=0,
        shuffle=False,
    )


def probe_loaders_for(trainer: pl.Trainer, given: Mapping[str, DataLoader] | None) -> dict[str, DataLoader]:
    """Named loaders for a frozen pass: ``given``, else the datamodule's ``probe_dataloaders()``,
    else the trainer's train and validation loaders."""
    if given:
        return dict(given)
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and hasattr(dm, "probe_dataloaders"):
        return dict(dm.probe_dataloaders())
    loaders: dict[str, DataLoader] = {}
    src = trainer.fit_loop._data_source if hasattr(trainer, "fit_loop") else None
    train = src.dataloader() if src is not None and src.is_defined() else None
    if isinstance(train, DataLoader):
        loaders["train"] = train
    val = trainer.val_dataloaders
    if isinstance(val, DataLoader):
        loaders["val"] = val
    elif isinstance(val, Sequence):
        for i, v in enumerate(val):
            loaders["val" if i == 0 else f"val_{i}"] = v
    if "train" not in loaders:
        raise ValueError(
            "frozen probing needs a 'train' loader: pass probe_loaders={'train': ..., 'val': ...}, "
            "or give the datamodule a probe_dataloaders() method"
        )
    return loaders


class TapCallback(Callback):
    """Base of callbacks that read features at named sites of the model being trained.

    Subclasses say what to do with features; this class owns the :class:`~lit_repr.taps.Tap`,
    enables it only while the batches it wants pass through, runs frozen passes over named
    loaders (sharded across DDP processes), and logs figures to TensorBoard.

    Args:
        sites: submodule names or globs of the LightningModule.
        reduction: how features become matrices (see :func:`lit_repr.taps.reduce_features`).
        input_key: where the model input sits in a batch (frozen passes call
            ``module(batch[input_key])``).
        forward_fn: replaces that call: ``forward_fn(module, batch)``.
        name: prefix of logged metrics.

    Example:
        A new readout is a subclass that says which hook feeds it and what it computes:

        >>> class MeanNorm(TapCallback):
        ...     def on_validation_epoch_end(self, trainer, pl_module):
        ...         norms = {}
        ...         def on_batch(feats, batch):
        ...             for site, f in feats.items():
        ...                 norms.setdefault(site, []).append(f.norm(dim=1))
        ...         self.run_frozen(trainer, pl_module, trainer.val_dataloaders, on_batch)
        ...         for site, v in norms.items():
        ...             pl_module.log(f"{self.name}/{site}/mean_norm", torch.cat(v).mean())
        >>> MeanNorm(sites=["backbone.0"], name="norm").sites
        ['backbone.0']
    """

    def __init__(
        self,
        sites: str | Sequence[str],
        reduction: Reduction = "flatten",
        input_key: TargetSpec = "x",
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        name: str = "readout",
    ) -> None:
        super().__init__()
        if isinstance(sites, str):
            sites = [sites]
        if not sites:
            raise ValueError("sites must name at least one submodule")
        check_target_spec(input_key, "input_key")
        if forward_fn is not None and not callable(forward_fn):
            raise ValueError(f"forward_fn must be callable(module, batch), got {forward_fn!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.site_patterns = list(sites)
        self.reduction = reduction
        self.input_key = input_key
        self.forward_fn = forward_fn or default_forward(input_key)
        self.name = name
        self.tap: Tap | None = None

    # ------------------------------------------------------------------ taps
    @property
    def sites(self) -> list[str]:
        return self.tap.sites if self.tap is not None else list(self.site_patterns)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.tap is None or self.tap.model is not pl_module:
            if self.tap is not None:
                self.tap.remove()
            self.tap = Tap(pl_module, self.site_patterns, reduction=self.reduction)
            self.tap.enabled = False

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    @contextmanager
    def capturing(self) -> Iterator[Tap]:
        """Enable the tap for the duration (features are cleared on entry)."""
        assert self.tap is not None, "setup() has not run"
        self.tap.clear()
        self.tap.enabled = True
        try:
            yield self.tap
        finally:
            self.tap.enabled = False

    def run_frozen(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        loader: DataLoader,
        on_batch: Callable[[dict[str, Tensor], Any], None],
    ) -> None:
        """Run ``pl_module`` in eval mode without grad over ``loader`` (this process's shard), calling
        ``on_batch(features, batch)`` after each forward pass; restore every module's mode after."""
        loader = _shard(loader, trainer.global_rank, trainer.world_size)
        with frozen_mode(pl_module), torch.inference_mode(False), self.capturing() as tap:
            for batch in loader:
                batch = move_data_to_device(batch, pl_module.device)
                tap.clear()
                self.forward_fn(pl_module, batch)
                on_batch(tap.read(), batch)

    # ------------------------------------------------------------------ logging
    @staticmethod
    def add_figure(trainer: pl.Trainer, tag: str, figure: Any) -> bool:
        """Send a matplotlib figure to every TensorBoard logger; close it. Returns whether logged."""
        import matplotlib.pyplot as plt

        logged = False
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)
                    logged = True
        plt.close(figure)
        return logged
