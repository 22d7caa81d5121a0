"""MedMNIST v2 (2D) from the official ``.npz`` files in a local folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_choice
from lit_repr.data.base import ArrayDataModule

__all__ = ["MedMNISTDataModule", "medmnist_filename", "load_medmnist_npz"]

_SIZES = (28, 64, 128, 224)


def _info() -> dict:
    import medmnist

    return medmnist.INFO


def medmnist_flags_2d() -> list[str]:
    """The 2D MedMNIST flags known to the installed ``medmnist`` package."""
    return sorted(k for k in _info() if not k.endswith("3d"))


def medmnist_filename(flag: str, size: int = 28) -> str:
    """Official file name: ``pathmnist.npz`` for 28×28, ``pathmnist_64.npz`` for larger sizes.

    Example:
        >>> medmnist_filename("pathmnist", 64)
        'pathmnist_64.npz'
    """
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def load_medmnist_npz(path: str | Path, flag: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``{split}_images`` and ``{split}_labels`` from an official MedMNIST ``.npz``.

    Reads the file directly (medmnist's own classes assert the official sample counts, which
    rules out subsets).
    """
    path = Path(path)
    with np.load(path) as npz:
        keys = (f"{split}_images", f"{split}_labels")
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; an official MedMNIST file has {sorted(npz.files)}")
        return npz[keys[0]], npz[keys[1]]


class MedMNISTDataModule(ArrayDataModule):
    """Any 2D MedMNIST data set, at any official size, read from ``root``.

    Batches carry ``x`` (float images ``(C, H, W)`` scaled to ``[0, 1]``), ``y`` and ``index``.
    Single-label tasks get ``y`` squeezed to class indices (``int64``, shape ``(B,)``);
    ChestMNIST (multi-label) keeps its multi-hot ``(B, 14)`` labels as ``float32``.

    Args:
        flag: MedMNIST flag, e.g. ``"pathmnist"``, ``"chestmnist"``, ``"dermamnist"``.
        root: folder holding ``{flag}.npz`` (28×28) or ``{flag}_{size}.npz``.
        size: image size, one of 28, 64, 128, 224.
        download: if the file is missing, let ``medmnist`` download it into ``root`` (needs
            internet).
        as_rgb: repeat grayscale images to 3 channels (for ImageNet-style backbones).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        seed: seed of the training shuffle.
        eval_batch_size: batch size of evaluation and probe loaders (default ``batch_size``).

    Example:
        A file with the official layout (here a stand-in of four 28×28 RGB images per split):

        >>> import tempfile; root = tempfile.mkdtemp()
        >>> fake = {f"{s}_images": np.zeros((4, 28, 28, 3), np.uint8) for s in ("train", "val", "test")}
        >>> fake.update({f"{s}_labels": np.zeros((4, 1), np.int64) for s in ("train", "val", "test")})
        >>> np.savez(f"{root}/bloodmnist.npz", **fake)
        >>> dm = MedMNISTDataModule("bloodmnist", root=root, batch_size=2); dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader())); b["x"].shape, b["y"].shape, dm.num_classes
        (torch.Size([2, 3, 28, 28]), torch.Size([2]), 8)
        >>> import shutil; shutil.rmtree(root)
    """

    def __init__(
        self,
        flag: str = "pathmnist",
        root: str = "~/.medmnist",
        size: Literal[28, 64, 128, 224] = 28,
        download: bool = False,
        as_rgb: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        flags = medmnist_flags_2d()
        if flag not in flags:
            raise ValueError(f"flag must be a 2D MedMNIST flag, one of {flags}; got {flag!r}")
        self.flag = flag
        self.root = Path(root).expanduser()
        self.size = check_choice("size", size, _SIZES)
        self.download = check_bool("download", download)
        self.as_rgb = check_bool("as_rgb", as_rgb)
        info = _info()[flag]
        self.task: str = info["task"]
        self.num_classes = len(info["label"])
        self.num_channels = 3 if as_rgb else int(info["n_channels"])

    @property
    def path(self) -> Path:
        return self.root / medmnist_filename(self.flag, self.size)

    def prepare_data(self) -> None:
        if self.path.exists():
            return
        if self.download:
            import medmnist

            self.root.mkdir(parents=True, exist_ok=True)
            cls = getattr(medmnist, _info()[self.flag]["python_class"])
            cls(split="train", root=str(self.root), size=self.size, download=True)
            return
        raise FileNotFoundError(
            f"MedMNIST file not found: {self.path}. Put the official "
            f"{medmnist_filename(self.flag, self.size)} there (from the MedMNIST release on "
            f"Zenodo, or `python -m medmnist download --flag {self.flag} --size {self.size} "
            f"--root {self.root}`), or pass download=True to fetch it."
        )

    def _convert(self, images: np.ndarray, labels: np.ndarray) -> dict[str, Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
        if x.ndim == 3:  # (N, H, W) grayscale
            x = x.unsqueeze(1)
        elif x.ndim == 4:  # (N, H, W, C)
            x = x.permute(0, 3, 1, 2).contiguous()
        else:
            raise ValueError(f"{self.path}: images must be (N, H, W) or (N, H, W, C), got {images.shape}")
        if self.as_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        if self.task == "multi-label, binary-class":
            y = torch.from_numpy(labels.astype(np.float32)).reshape(len(labels), -1)
        else:
            y = torch.from_numpy(labels.astype(np.int64)).reshape(len(labels))
        return {"x": x, "y": y}

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        self.prepare_data()
        return {
            split: self._convert(*load_medmnist_npz(self.path, self.flag, split)) for split in ("train", "val", "test")
        }
