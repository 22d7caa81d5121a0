"""The loaders of readouts: which ones frozen passes read (:func:`probe_loaders_for`), each process's
part of them (:func:`shard`), and the padding duplicates of Lightning's distributed evaluation
loaders, dropped from online readouts (:func:`padding_filter`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Subset

__all__ = ["probe_loaders_for", "shard", "padding_filter", "PaddingFilter"]

PADDING_WARNING = (
    "{name}: under DDP, Lightning's DistributedSampler pads this evaluation loader of {n} samples to {total} "
    "with duplicates, and its batches carry no 'index' to drop them by: online scores include the {pad} "
    "duplicate(s). Give batches an 'index' entry (a dict batch; lit_repr's DataModules do) for exact "
    "online scores, or use mode='frozen', which is exact under DDP."
)


class PaddingFilter:
    """Drop the duplicates a padding ``DistributedSampler`` adds to this process's share of a loader.

    Built by :func:`padding_filter`. ``allowed`` counts how often each dataset index belongs to this
    process (the padded positions excluded); a row of a batch is kept while its ``index`` has been seen
    fewer times than that, so exactly the padding duplicates are dropped, in whatever order batches
    come. Batches without an ``index`` pass unchanged and one warning says so.

    Args:
        allowed: ``{dataset index: occurrences on this process without padding}``.
        num_samples: samples of the dataset.
        total_size: samples after padding, over all processes.

    Example:
        >>> flt = PaddingFilter({0: 1, 1: 1}, num_samples=3, total_size=4)  # process 1 of 2: indices 1, then 0 again
        >>> feats, batch = flt({"s": torch.ones(2, 3)}, {"x": torch.ones(2, 3), "index": torch.tensor([1, 0])}, "probe")
        >>> feats["s"].shape[0], batch["index"].tolist()
        (2, [1, 0])
        >>> flt.allowed[0] = 0  # had 0 been this process's padding, it would go
        >>> flt.seen.clear(); flt({"s": torch.ones(2, 3)}, {"index": torch.tensor([1, 0])}, "probe")[1]["index"]
        tensor([1])
    """

    def __init__(self, allowed: Mapping[int, int], num_samples: int, total_size: int) -> None:
        self.allowed = Counter(allowed)
        self.seen: Counter = Counter()
        self.num_samples, self.total_size = num_samples, total_size
        self.warned = False

    def __call__(self, features: Mapping[str, Tensor], batch: Any, name: str) -> tuple[Mapping[str, Tensor], Any]:
        index = batch.get("index") if isinstance(batch, Mapping) else None
        if not isinstance(index, Tensor) or index.ndim != 1 or (index.numel() and index.is_floating_point()):
            if not self.warned:
                self.warned = True
                rank_zero_warn(PADDING_WARNING.format(name=name, n=self.num_samples, total=self.total_size,
                                                      pad=self.total_size - self.num_samples))
            return features, batch
        keep = []
        for i in index.tolist():
            keep.append(self.seen[i] < self.allowed[i])
            self.seen[i] += 1
        if all(keep):
            return features, batch
        mask = torch.tensor(keep, device=index.device)
        rows = index.shape[0]
        features = {s: f[mask.to(f.device)] for s, f in features.items()}
        batch = {k: (v[mask.to(v.device)] if isinstance(v, Tensor) and v.ndim and v.shape[0] == rows else v)
                 for k, v in batch.items()}
        return features, batch


def padding_filter(loader: Any) -> PaddingFilter | None:
    """A :class:`PaddingFilter` for ``loader`` if its sampler is a ``DistributedSampler`` that pads
    (Lightning's default for evaluation loaders under DDP when the size does not divide); else ``None``."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, torch.utils.data.DistributedSampler) or sampler.drop_last:
        return None
    n, world, rank = len(sampler.dataset), sampler.num_replicas, sampler.rank  # type: ignore[arg-type]
    if sampler.total_size <= n:
        return None
    from lit_repr.features import preserved_rng

    with preserved_rng():  # a wrapped sampler may draw from the global generators
        local = list(iter(sampler))
    allowed = Counter(int(i) for k, i in enumerate(local) if rank + k * world < n)
    return PaddingFilter(allowed, n, sampler.total_size)


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
