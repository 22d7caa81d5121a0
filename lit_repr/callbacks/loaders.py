"""The loaders of frozen passes: which ones (:func:`probe_loaders_for`) and each process's part (:func:`shard`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Subset

__all__ = ["probe_loaders_for", "shard"]


def shard(loader: Any, rank: int, world: int) -> Any:
    """The part of ``loader`` that process ``rank`` of ``world`` reads (no padding, no overlap)."""
    if world <= 1 or not isinstance(loader, DataLoader):
        return loader
    dataset = loader.dataset
    if not hasattr(dataset, "__len__") or isinstance(dataset, torch.utils.data.IterableDataset):
        return loader if rank == 0 else []
    idx = list(range(rank, len(dataset), world))  # type: ignore[arg-type]
    return DataLoader(Subset(dataset, idx), batch_size=loader.batch_size or 1, collate_fn=loader.collate_fn,
                      num_workers=0, shuffle=False)


def probe_loaders_for(trainer: pl.Trainer, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Named loaders for frozen passes: ``given``, else the datamodule's ``probe_dataloaders()``,
    else the trainer's train and validation loaders (the datamodule's when the trainer has none yet)."""
    if given:
        return dict(given)
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and hasattr(dm, "probe_dataloaders"):
        return dict(dm.probe_dataloaders())
    loaders: dict[str, Any] = {}
    train = trainer.train_dataloader if trainer.state.fn == "fit" else None
    if train is None and dm is not None:
        train = dm.train_dataloader()
    if train is not None:
        loaders["train"] = train
    val = trainer.val_dataloaders
    if isinstance(val, DataLoader):
        loaders["val"] = val
    elif isinstance(val, Sequence):
        for i, v in enumerate(val):
            loaders["val" if i == 0 else f"val_{i}"] = v
    if "train" not in loaders:
        raise ValueError(
            "frozen passes need a 'train' loader: pass probe_loaders={'train': ..., 'val': ...}, "
            "or give the datamodule a probe_dataloaders() method"
        )
    return loaders
