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
    "{name}: under DDP, Lightning's DistributedSampler pads this {role} loader of {n} samples to {total} "
    "with duplicates, and its batches carry no 'index' to drop them by: online {what} include the {pad} "
    "duplicate(s). Give batches an 'index' entry (a dict batch; lit_repr's DataModules do) for exact "
    "online {what}, or use mode='frozen', which is exact under DDP."
)


class PaddingFilter:
    """Drop the duplicates a padding ``DistributedSampler`` adds to this process's share of a loader.

    Built by :func:`padding_filter`. Of the dataset indices this process reads (``local``, in sampler
    order), those at padded positions are duplicates; a row of a batch is kept while its ``index`` has
    been seen fewer times than it occurs unpadded here, so exactly the duplicates are dropped, in
    whatever order batches come. Batches without a usable ``index`` (none, or values that are not the
    sampler's indices) pass unchanged and one warning says so.

    Args:
        local: the dataset indices this process reads, in order (padding included).
        rank: this process.
        world: the number of processes.
        num_samples: samples of the dataset.
        role: ``"evaluation"`` or ``"training"``: which loader the warning names.

    Example:
        >>> flt = PaddingFilter([1, 0], rank=1, world=2, num_samples=3)  # reads 1, then 0 again as padding
        >>> feats, batch = flt({"s": torch.ones(2, 3)}, {"x": torch.ones(2, 3), "index": torch.tensor([1, 0])}, "probe")
        >>> feats["s"].shape[0], batch["index"].tolist()
        (1, [1])
    """

    def __init__(self, local: Sequence[int], rank: int, world: int, num_samples: int, role: str = "evaluation") -> None:
        self.allowed = Counter(int(i) for k, i in enumerate(local) if rank + k * world < num_samples)
        self.known = {int(i) for i in local}
        self.seen: Counter = Counter()
        self.num_samples, self.total_size = num_samples, -(-num_samples // world) * world
        self.usable = True
        self.role = role

    def _unusable(self, name: str) -> None:
        if self.usable:
            self.usable = False
            what = "fitting statistics" if self.role == "training" else "scores"
            rank_zero_warn(PADDING_WARNING.format(name=name, role=self.role, what=what, n=self.num_samples,
                                                  total=self.total_size, pad=self.total_size - self.num_samples))

    def __call__(self, features: Mapping[str, Tensor], batch: Any, name: str) -> tuple[Mapping[str, Tensor], Any]:
        index = batch.get("index") if isinstance(batch, Mapping) else None
        if not self.usable or not isinstance(index, Tensor) or index.ndim != 1 or index.is_floating_point():
            self._unusable(name)
            return features, batch
        values = index.tolist()
        if not self.known.issuperset(values):  # not the sampler's indices: cannot tell duplicates
            self._unusable(name)
            return features, batch
        keep = []
        for i in values:
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


def padding_filter(loader: Any, role: str = "evaluation") -> PaddingFilter | None:
    """A :class:`PaddingFilter` for ``loader`` if its sampler is a ``DistributedSampler`` that pads
    (Lightning's default under DDP when the size does not divide); else ``None``.

    A shuffling sampler's order is that of its current epoch: build the filter after ``set_epoch``
    (Lightning calls it before ``on_train_epoch_start``). ``role`` names the loader in the warning.
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, torch.utils.data.DistributedSampler) or sampler.drop_last:
        return None
    n = len(sampler.dataset)  # type: ignore[arg-type]
    if sampler.total_size <= n:
        return None
    from lit_repr.features import preserved_rng

    with preserved_rng():  # a wrapped sampler may draw from the global generators
        local = [int(i) for i in iter(sampler)]
    return PaddingFilter(local, sampler.rank, sampler.num_replicas, n, role)


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
