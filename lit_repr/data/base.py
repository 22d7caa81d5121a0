"""The data contract: DataModules yield dict batches carrying every piece of ground truth.

A batch is a ``dict`` of tensors: ``"x"`` (the input), ``"y"`` (the label, if any), ``"index"`` (the
sample's position in its split) and whatever ground truth the data has (``"latents"``,
``"codes"``, ...). :class:`TensorDictDataset` serves one such dict per sample; the default collate
stacks them into batches.

:class:`ArrayDataModule` is the base of lit_repr's DataModules whose data fits in memory: a
subclass implements :meth:`ArrayDataModule.build_splits` and gets loaders for ``train``/``val``/
``test``, ``predict`` (the test split) and :meth:`ArrayDataModule.probe_dataloaders` (unshuffled
loaders over every split, used by frozen-feature probes). A split of size 0 does not exist: no
split stands in for another (without ``val``, ``fit`` skips validation and says so; without
``test``, testing and prediction raise ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_repr.checks import check_bool, check_int, check_number

__all__ = ["TensorDictDataset", "ArrayDataModule", "EpochSeededSampler", "split_indices", "check_split_fractions"]


class TensorDictDataset(Dataset):
    """A dataset over a dict of equally long tensors; item ``i`` is ``{key: value[i]}`` + ``index``.

    Args:
        tensors: mapping of names to tensors (or arrays) sharing their first dimension.
        add_index: add an ``"index"`` entry holding the sample's position (default ``True``).

    Example:
        >>> ds = TensorDictDataset({"x": torch.zeros(3, 2), "y": torch.tensor([0, 1, 0])})
        >>> sorted(ds[1].keys()), len(ds)
        (['index', 'x', 'y'], 3)
    """

    def __init__(self, tensors: Mapping[str, Tensor | np.ndarray], add_index: bool = True) -> None:
        if not tensors:
            raise ValueError("tensors must hold at least one entry, e.g. {'x': ...}")
        self.tensors = {k: torch.as_tensor(v) for k, v in tensors.items()}
        scalars = [k for k, v in self.tensors.items() if v.ndim == 0]
        if scalars:
            raise ValueError(f"every tensor needs a first (sample) dimension; {scalars} are scalars")
        lengths = {k: v.shape[0] for k, v in self.tensors.items()}
        n = next(iter(lengths.values()))
        if any(length != n for length in lengths.values()):
            raise ValueError(f"all tensors must share their first dimension; got lengths {lengths}")
        self.n = n
        if check_bool("add_index", add_index) and "index" not in self.tensors:
            self.tensors["index"] = torch.arange(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Random disjoint index sets of ``n`` samples with the given fractions (the rest goes last).

    Example:
        >>> [len(s) for s in split_indices(10, (0.2, 0.3), seed=0)]
        [2, 3, 5]
    """
    check_int("n", n, low=0)
    if any(not 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"split fractions must be >= 0 and sum to < 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for f in fractions:
        k = int(round(f * n))
        out.append(perm[start : start + k])
        start += k
    out.append(perm[start:])
    return out


def check_split_fractions(val_fraction: Any, test_fraction: Any) -> tuple[float, float]:
    """``(val_fraction, test_fraction)`` as floats, each in ``[0, 1)`` and summing to ``< 1`` (the rest trains).

    Args:
        val_fraction: share of the samples in the ``val`` split.
        test_fraction: share of the samples in the ``test`` split.

    Example:
        >>> check_split_fractions(0.1, 0.2)
        (0.1, 0.2)
        >>> check_split_fractions(0.5, 0.5)
        Traceback (most recent call last):
        ...
        ValueError: val_fraction + test_fraction must be < 1 (the rest is the training split), got 0.5 + 0.5 = 1.0
    """
    val = check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
    test = check_number("test_fraction", test_fraction, low=0, high=1, high_open=True)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (the rest is the training split), got "
            f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}"
        )
    return val, test


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """A random permutation per epoch drawn from ``seed + epoch``: resuming from a checkpoint
    replays exactly the order an uninterrupted run would have seen (Lightning calls
    :meth:`set_epoch` at the start of every epoch).

    Args:
        num_samples: size of the dataset.
        seed: base seed.

    Example:
        >>> s = EpochSeededSampler(4, seed=0); s.set_epoch(1)
        >>> sorted(s) == [0, 1, 2, 3]
        True
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = check_int("num_samples", num_samples, low=0)
        self.seed = check_int("seed", seed, low=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """The generator of this epoch's order: seeded by ``seed`` and the epoch."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def __iter__(self):
        return iter(torch.randperm(self.num_samples, generator=self.generator()).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ArrayDataModule(pl.LightningDataModule):
    """Base DataModule for in-memory data with dict batches.

    Subclasses implement :meth:`build_splits`, returning ``{split: {key: tensor}}`` with at least
    ``"train"`` (and usually ``"val"``, ``"test"``, and any extra evaluation split such as
    ``"ood"``). Everything else (datasets, loaders, probe loaders) is handled here. A missing
    ``val`` split skips validation during ``fit`` (with a warning); a missing ``test`` split makes
    :meth:`test_dataloader` and :meth:`predict_dataloader` raise ``ValueError``.

    A subclass may set the class attribute ``collate_fn`` (a function of the list of sample dicts, as
    in ``DataLoader``) to build its batches; ``None`` (default) stacks them.

    Args:
        batch_size: samples per batch for every loader.
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: seed for splitting and any randomness in building the data.
        eval_batch_size: batch size of evaluation and probe loaders (default: ``batch_size``).
        drop_last: drop the last incomplete training batch.

    Example:
        >>> class Ones(ArrayDataModule):
        ...     def build_splits(self):
        ...         return {"train": {"x": torch.ones(8, 2)}, "val": {"x": torch.ones(4, 2)}}
        >>> dm = Ones(batch_size=4); dm.setup("fit")
        >>> next(iter(dm.train_dataloader()))["x"].shape
        torch.Size([4, 2])
    """

    collate_fn: Callable[[list[dict[str, Tensor]]], Any] | None = None

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size)
        self.eval_batch_size = batch_size if eval_batch_size is None else check_int("eval_batch_size", eval_batch_size)
        self.num_workers = check_int("num_workers", num_workers, low=0)
        self.seed = check_int("seed", seed, low=0)
        self.drop_last = check_bool("drop_last", drop_last)
        self.datasets: dict[str, TensorDictDataset] = {}

    # -------------------------------------------------------------- subclass API
    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        """Return ``{split: {key: tensor}}``; must contain ``"train"``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_splits()")

    # -------------------------------------------------------------- Lightning API
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.build_splits()
        if "train" not in splits:
            raise ValueError(f"{type(self).__name__}.build_splits() must return a 'train' split, got {list(splits)}")
        self.datasets = {name: TensorDictDataset(t) for name, t in splits.items()}

    def _splits(self) -> dict[str, TensorDictDataset]:
        if not self.datasets:
            self.setup()
        return self.datasets

    def _missing(self, split: str, consequence: str) -> str:
        return (
            f"{type(self).__name__} has no {split!r} split ({consequence}); it has {sorted(self.datasets)}. "
            f"Splits of size 0 are left out: give the {split!r} split a size > 0"
        )

    def _loader(
        self, split: str, shuffle: bool, batch_size: int, drop_last: bool = False, needed_by: str = "asked for"
    ) -> DataLoader:
        if split not in self._splits():
            raise ValueError(self._missing(split, needed_by))
        sampler = EpochSeededSampler(len(self.datasets[split]), self.seed) if shuffle else None
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=type(self).collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader | list:
        """The ``val`` split, unshuffled.

        Without a ``val`` split, validation during ``fit`` is skipped: this returns no loader and
        warns, naming the splits there are. ``trainer.validate`` raises ``ValueError`` instead.
        """
        if "val" in self._splits():
            return self._loader("val", False, self.eval_batch_size)
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == TrainerFn.VALIDATING:
            raise ValueError(self._missing("val", "trainer.validate() needs it"))
        rank_zero_warn(self._missing("val", "validation is skipped"), category=UserWarning)
        return []

    def test_dataloader(self) -> DataLoader:
        """The ``test`` split, unshuffled; ``ValueError`` if there is none."""
        return self._loader("test", False, self.eval_batch_size, needed_by="testing needs it")

    def predict_dataloader(self) -> DataLoader:
        """The ``test`` split, unshuffled; ``ValueError`` if there is none."""
        return self._loader("test", False, self.eval_batch_size, needed_by="prediction reads it")

    def probe_dataloaders(self) -> dict[str, DataLoader]:
        """Unshuffled loaders over every split there is, keyed by split name (``train`` fits a probe)."""
        return {name: self._loader(name, False, self.eval_batch_size) for name in self._splits()}

    # -------------------------------------------------------------- info
    def arrays(self, split: str = "train") -> dict[str, Tensor]:
        """The whole of one split at once: every key of its batches, for all its samples (sets the data up if needed).

        The tensors are those the loaders serve (not copies): do not modify them in place. Subclasses
        that store a compact form (e.g. ``uint8`` images) give what their batches give.

        Args:
            split: a split the DataModule has (``"train"``, ``"val"``, ``"test"``, ``"ood"``, ...).
        """
        if split not in self._splits():
            raise ValueError(self._missing(split, "arrays() asked for it"))
        return dict(self.datasets[split].tensors)

    @property
    def in_features(self) -> int:
        """Flattened dimension of ``x``: the ``in_features`` of a model that reads it (sets the data up if needed)."""
        return int(self._splits()["train"].tensors["x"][0].numel())
