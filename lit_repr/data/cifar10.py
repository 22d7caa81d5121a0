"""CIFAR-10 from the official python batches in a local folder (no download at run time).

The official archive ``cifar-10-python.tar.gz`` extracts to ``cifar-10-batches-py/`` holding
``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``: Python pickles of dicts with
``b"data"`` (``uint8``, ``(N, 3072)``, the red, green then blue 32×32 planes of each image) and
``b"labels"``. Reading them unpickles them, as ``torchvision`` does, but through an unpickler that
only rebuilds numpy arrays and plain containers: a file asking for anything else is refused.
(``torchvision.datasets.CIFAR10`` is not reused: it insists on the official files' md5 sums, which
rules out subsets and re-saved copies.)
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_repr.checks import check_int, check_number
from lit_repr.data.base import ArrayDataModule

__all__ = ["Cifar10DataModule", "load_cifar10_batch", "CIFAR10_URL", "CIFAR10_FILES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_FOLDER = "cifar-10-batches-py"

# what the official pickles (numpy 1.x, Python 2) and numpy 2 re-saves of them may name
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and builtin containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, lists and dicts"
            )
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core.", "numpy._core.", 1)
        return getattr(importlib.import_module(module), name)


def _key(d: dict, name: str, path: Path) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise ValueError(f"{path} lacks the entry {name!r}; an official CIFAR-10 batch has b'data' and b'labels'")


def _read_dict(path: Path, what: str) -> dict:
    """The dict pickled in one official CIFAR-10 file, read with :class:`_ArraysOnly`; ``what`` names the file."""
    with open(path, "rb") as f:
        try:
            d = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path} is not {what}: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a dict ({what}), got {type(d).__name__}")
    return d


def load_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` ``uint8`` and labels ``(N,)`` ``int64`` of one official CIFAR-10 batch file.

    Example:
        >>> import pickle, tempfile
        >>> path = f"{tempfile.mkdtemp()}/data_batch_1"
        >>> with open(path, "wb") as f:
        ...     pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}, f, protocol=2)
        >>> x, y = load_cifar10_batch(path); x.shape, y.tolist()
        ((2, 3, 32, 32), [3, 7])
    """
    path = Path(path)
    d = _read_dict(path, "an official CIFAR-10 batch")
    data = np.asarray(_key(d, "data", path))
    labels = np.asarray(_key(d, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: b'labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: b'labels' must be in [0, 9], got [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(path: Path) -> list[str]:
    meta = _read_dict(path, "the official CIFAR-10 batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _key(meta, "label_names", path)]
    if len(names) != 10:
        raise ValueError(f"{path}: b'label_names' must name 10 classes, got {len(names)}")
    return names


class Cifar10DataModule(ArrayDataModule):
    """CIFAR-10 read from the official python batches under ``root``, as dict batches.

    Batches carry ``x`` (float images ``(3, size, size)`` in ``[0, 1]``), ``y`` (``int64`` class
    index) and ``index``. The ``val`` split is a seeded random part of the five training batches,
    the ``test`` split is ``test_batch``. Images are resized (bilinear, antialiased) when ``size`` is
    not 32, e.g. to 8 or 16 for quick runs on a CPU.

    Args:
        root: the ``cifar-10-batches-py`` folder, or the folder that holds it.
        size: image side after resizing (default 32: the original images).
        val_fraction: fraction of the training batches held out for validation, in ``[0, 1)``.
        num_train: if set, keep a seeded random subset of this many training samples (after the
            ``val`` split is taken out).
        num_test: if set, keep a seeded random subset of this many test samples.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        seed: seed of the splits, the subsets and the training shuffle.
        eval_batch_size: batch size of evaluation and probe loaders (default ``batch_size``).

    Example:
        A folder in the official layout (a stand-in of four images per batch):

        >>> import pickle, tempfile; root = Path(tempfile.mkdtemp()) / "cifar-10-batches-py"; root.mkdir()
        >>> for name in CIFAR10_FILES[:-1]:
        ...     with open(root / name, "wb") as f:
        ...         pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, f)
        >>> with open(root / "batches.meta", "wb") as f:
        ...     pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
        ...                                   b"dog", b"frog", b"horse", b"ship", b"truck"]}, f)
        >>> dm = Cifar10DataModule(root=str(root.parent), size=16, val_fraction=0.25, batch_size=5)
        >>> t = dm.arrays("train"); t["x"].shape, t["y"].dtype, dm.class_names[:2]
        (torch.Size([15, 3, 16, 16]), torch.int64, ['airplane', 'automobile'])
        >>> import shutil; shutil.rmtree(root.parent)
    """

    num_classes = 10
    num_channels = 3

    def __init__(
        self,
        root: str = "~/data/cifar10",
        size: int = 32,
        val_fraction: float = 0.1,
        num_train: int | None = None,
        num_test: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.root = Path(root).expanduser()
        self.size = check_int("size", size)
        self.val_fraction = check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
        self.num_train = None if num_train is None else check_int("num_train", num_train)
        self.num_test = None if num_test is None else check_int("num_test", num_test)
        self.class_names: list[str] = []

    @property
    def folder(self) -> Path:
        """The folder holding the batch files: ``root`` itself if it holds them, else ``root/cifar-10-batches-py``."""
        if (self.root / CIFAR10_FILES[0]).exists() and not (self.root / _FOLDER).is_dir():
            return self.root
        return self.root / _FOLDER

    def prepare_data(self) -> None:
        folder = self.folder
        missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 files not found in {folder}: {missing}. Download the official python version "
                f"{CIFAR10_URL} and extract it with `tar -xzf cifar-10-python.tar.gz -C {self.root}` "
                f"(it creates {_FOLDER}/ with {', '.join(CIFAR10_FILES)})."
            )

    def _images(self, images: np.ndarray) -> Tensor:
        x = torch.from_numpy(images).float().div_(255.0)
        if self.size != 32:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 1.0)
        return x.contiguous()

    def _subset(self, n: int | None, total: int, rng: np.random.Generator, name: str) -> np.ndarray:
        if n is None:
            return np.arange(total)
        if n > total:
            raise ValueError(f"{name} must be at most the {total} samples available, got {n}")
        return np.sort(rng.choice(total, size=n, replace=False))

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        self.prepare_data()
        folder = self.folder
        parts = [load_cifar10_batch(folder / name) for name in CIFAR10_FILES[:5]]
        train_x = np.concatenate([p[0] for p in parts])
        train_y = np.concatenate([p[1] for p in parts])
        test_x, test_y = load_cifar10_batch(folder / "test_batch")
        self.class_names = _class_names(folder / "batches.meta")
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(train_y))
        num_val = int(round(self.val_fraction * len(train_y)))
        val_idx, train_idx = np.sort(perm[:num_val]), np.sort(perm[num_val:])
        train_idx = train_idx[self._subset(self.num_train, train_idx.size, rng, "num_train")]
        test_idx = self._subset(self.num_test, len(test_y), rng, "num_test")
        splits = {
            "train": (train_x[train_idx], train_y[train_idx]),
            "val": (train_x[val_idx], train_y[val_idx]),
            "test": (test_x[test_idx], test_y[test_idx]),
        }
        return {
            name: {"x": self._images(x), "y": torch.from_numpy(y)} for name, (x, y) in splits.items() if len(y)
        }
