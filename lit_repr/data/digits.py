"""scikit-learn's handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_choice
from lit_repr.data.base import ArrayDataModule, check_split_fractions, split_indices

__all__ = ["DigitsDataModule"]


class DigitsDataModule(ArrayDataModule):
    """The 1,797 8×8 handwritten digits that ship with scikit-learn, as dict batches.

    Pixels are scaled to ``[0, 1]``. Batches carry ``x`` (flat 64-vectors or ``1×8×8`` images),
    ``y`` (the digit) and ``index``.

    Args:
        batch_size: samples per batch.
        val_fraction: fraction of samples held out for validation.
        test_fraction: fraction of samples held out for testing.
        layout: ``"flat"`` for ``(64,)`` vectors (MLPs), ``"image"`` for ``(1, 8, 8)`` (CNNs),
            ``"image3"`` for ``(3, 8, 8)`` (timm models that expect RGB).
        standardize: subtract the training mean and divide by the training std per pixel.
        num_workers: DataLoader workers.
        seed: split seed (and seed of the training shuffle).
        eval_batch_size: batch size of evaluation and probe loaders (default ``batch_size``).

    Example:
        >>> dm = DigitsDataModule(batch_size=32); dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader())); b["x"].shape, b["y"].shape
        (torch.Size([32, 64]), torch.Size([32]))
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        layout: Literal["flat", "image", "image3"] = "flat",
        standardize: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.layout = check_choice("layout", layout, ("flat", "image", "image3"))
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)
        self.standardize = check_bool("standardize", standardize)

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = data.data.astype(np.float32) / 16.0
        y = data.target.astype(np.int64)
        val_idx, test_idx, train_idx = split_indices(len(y), (self.val_fraction, self.test_fraction), self.seed)
        if self.standardize:
            mu, sd = x[train_idx].mean(0), x[train_idx].std(0) + 1e-3
            x = (x - mu) / sd
        x_t = torch.from_numpy(x)
        if self.layout == "image":
            x_t = x_t.view(-1, 1, 8, 8)
        elif self.layout == "image3":
            x_t = x_t.view(-1, 1, 8, 8).expand(-1, 3, 8, 8).contiguous()
        y_t = torch.from_numpy(y)
        splits = {"train": train_idx, "val": val_idx, "test": test_idx}
        return {name: {"x": x_t[idx], "y": y_t[idx]} for name, idx in splits.items() if len(idx)}
