"""ISIC 2019 dermoscopy images from the official training folder and ground-truth CSV (no download).

The ISIC 2019 challenge training data are ``ISIC_2019_Training_Input/`` (JPEGs named
``ISIC_0000000.jpg`` …, from ``ISIC_2019_Training_Input.zip``) and
``ISIC_2019_Training_GroundTruth.csv`` with columns ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``, one-hot.
``UNK`` (none of the others) has no training images, so the data have 8 classes; rows marked ``UNK``
are left out (with a warning) if a file has any.

Images are centre-cropped to a square and resized with PIL to ``size``×``size``; the resized images
can be cached as ``isic2019_{size}.npz`` next to the CSV, so later runs skip decoding the JPEGs.
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_int
from lit_repr.data.base import ArrayDataModule, check_split_fractions

__all__ = [
    "ISIC2019DataModule",
    "read_isic2019_labels",
    "load_isic2019_image",
    "ISIC2019_CLASSES",
    "ISIC2019_COLUMNS",
    "ISIC2019_URL",
]

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
ISIC2019_COLUMNS = ("image",) + ISIC2019_CLASSES + ("UNK",)
ISIC2019_URL = "https://challenge.isic-archive.com/data/#2019"
_IMAGES_ZIP = "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_Input.zip"
_CSV_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_GroundTruth.csv"
_CSV = "ISIC_2019_Training_GroundTruth.csv"
_FOLDER = "ISIC_2019_Training_Input"


def read_isic2019_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Image names and class indices (``int64`` in ``[0, 8)``, in :data:`ISIC2019_CLASSES` order) of the CSV.

    Rows marked ``UNK`` are left out with a warning (the official training CSV has none).

    Example:
        >>> import tempfile; path = f"{tempfile.mkdtemp()}/gt.csv"
        >>> with open(path, "w") as f:
        ...     _ = f.write("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\\n")
        ...     _ = f.write("ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\\n")
        >>> read_isic2019_labels(path)
        (['ISIC_0000000'], array([1]))
    """
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(c.strip() for c in rows[0]) != ISIC2019_COLUMNS:
        got = rows[0] if rows else "an empty file"
        raise ValueError(f"{path} must start with the official header {','.join(ISIC2019_COLUMNS)}; got {got}")
    names, labels, unknown = [], [], 0
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(ISIC2019_COLUMNS):
            raise ValueError(f"{path} line {line}: expected {len(ISIC2019_COLUMNS)} columns, got {len(row)}")
        try:
            onehot = np.array([float(v) for v in row[1:]])
        except ValueError:
            raise ValueError(f"{path} line {line}: class columns must be 0 or 1, got {row[1:]}") from None
        if not (np.isin(onehot, (0.0, 1.0)).all() and onehot.sum() == 1):
            raise ValueError(f"{path} line {line}: exactly one class column must be 1 (one-hot), got {row[1:]}")
        cls = int(np.argmax(onehot))
        if cls == len(ISIC2019_CLASSES):  # UNK
            unknown += 1
            continue
        names.append(row[0].strip())
        labels.append(cls)
    if len(set(names)) != len(names):
        raise ValueError(f"{path} names some images more than once")
    if unknown:
        warnings.warn(
            f"{path}: left out {unknown} row(s) marked UNK: the 8 classes are {', '.join(ISIC2019_CLASSES)}",
            UserWarning,
            stacklevel=2,
        )
    if not names:
        raise ValueError(f"{path} lists no image of the 8 classes {', '.join(ISIC2019_CLASSES)}")
    return names, np.asarray(labels, dtype=np.int64)


def load_isic2019_image(path: str | Path, size: int) -> np.ndarray:
    """One image as ``(size, size, 3)`` ``uint8``: centre-cropped to a square, resized with PIL (Lanczos).

    Example:
        >>> import tempfile; from PIL import Image; path = f"{tempfile.mkdtemp()}/ISIC_0000000.jpg"
        >>> Image.new("RGB", (60, 40), (200, 100, 50)).save(path)
        >>> load_isic2019_image(path, 28).shape
        (28, 28, 3)
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at a reduced scale still >= 2*size
        img = img.convert("RGB")
        return np.asarray(ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS), dtype=np.uint8)


def _stratified(labels: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, seeded random parts with the given fractions (the rest goes last)."""
    out: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for part, f in enumerate(fractions):
            k = int(round(f * idx.size))
            out[part].append(idx[start : start + k])
            start += k
        out[-1].append(idx[start:])
    return [np.sort(np.concatenate(parts)) for parts in out]


class ISIC2019DataModule(ArrayDataModule):
    """ISIC 2019 (8 skin-lesion classes) from the official training images and CSV under ``root``.

    Batches carry ``x`` (float images ``(3, size, size)`` in ``[0, 1]``), ``y`` (``int64`` index into
    :data:`ISIC2019_CLASSES`: MEL, NV, BCC, AK, BKL, DF, VASC, SCC) and ``index``. The ``val`` and
    ``test`` splits are seeded, stratified parts of the official training set (its test labels were
    not released with the challenge).

    Args:
        root: folder holding ``ISIC_2019_Training_Input/`` and ``ISIC_2019_Training_GroundTruth.csv``.
        size: image side after centre-cropping and resizing (e.g. 28 or 32).
        val_fraction: fraction of each class held out for validation.
        test_fraction: fraction of each class held out for testing.
        num_samples: if set, use a seeded random subset of this many images (only those are decoded).
        cache: keep the resized images in ``root/isic2019_{size}.npz`` (keyed by image name) and reuse
            them; with a cache holding every image needed, the image folder is not read (delete the
            file if the images change).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        seed: seed of the subset, the splits and the training shuffle.
        eval_batch_size: batch size of evaluation and probe loaders (default ``batch_size``).

    Example:
        A folder in the official layout (a stand-in of eight images, one per class):

        >>> import tempfile; from PIL import Image; root = Path(tempfile.mkdtemp())
        >>> (root / "ISIC_2019_Training_Input").mkdir()
        >>> rows = ["image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"]
        >>> for i in range(8):
        ...     Image.new("RGB", (64, 48), (30 * i, 60, 90)).save(root / f"ISIC_2019_Training_Input/ISIC_{i:07d}.jpg")
        ...     rows.append(f"ISIC_{i:07d}," + ",".join("1.0" if j == i else "0.0" for j in range(9)))
        >>> _ = (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\\n".join(rows) + "\\n")
        >>> dm = ISIC2019DataModule(root=str(root), size=28, val_fraction=0.0, test_fraction=0.0, cache=False)
        >>> t = dm.arrays("train"); t["x"].shape, t["y"].tolist()
        (torch.Size([8, 3, 28, 28]), [0, 1, 2, 3, 4, 5, 6, 7])
        >>> import shutil; shutil.rmtree(root)
    """

    num_classes = len(ISIC2019_CLASSES)
    num_channels = 3
    class_names = list(ISIC2019_CLASSES)

    def __init__(
        self,
        root: str = "~/data/isic2019",
        size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_samples: int | None = None,
        cache: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.root = Path(root).expanduser()
        self.size = check_int("size", size)
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)
        self.num_samples = None if num_samples is None else check_int("num_samples", num_samples)
        self.cache = check_bool("cache", cache)

    @property
    def csv_path(self) -> Path:
        return self.root / _CSV

    @property
    def image_folder(self) -> Path:
        return self.root / _FOLDER

    @property
    def cache_path(self) -> Path:
        return self.root / f"isic2019_{self.size}.npz"

    def _how_to_get(self) -> str:
        return (
            f"Get the ISIC 2019 training data from the ISIC challenge site {ISIC2019_URL} "
            f"({_IMAGES_ZIP} and {_CSV_URL}), then `unzip ISIC_2019_Training_Input.zip -d {self.root}` and put "
            f"{_CSV} in {self.root}."
        )

    def prepare_data(self) -> None:
        """Check that the CSV is there, and the image folder too unless a cache of resized images is."""
        missing = [] if self.csv_path.is_file() else [str(self.csv_path)]
        if not self.image_folder.is_dir() and not (self.cache and self.cache_path.is_file()):
            missing.insert(0, f"{self.image_folder}/")
        if missing:
            raise FileNotFoundError(f"ISIC 2019 not found: missing {' and '.join(missing)}. {self._how_to_get()}")

    def _read_cache(self) -> dict[str, np.ndarray]:
        if not (self.cache and self.cache_path.is_file()):
            return {}
        try:
            with np.load(self.cache_path, allow_pickle=False) as npz:
                names, images = npz["names"], npz["images"]
        except (OSError, KeyError, ValueError) as err:
            warnings.warn(f"ignoring the unreadable cache {self.cache_path} ({err}); rebuilding it", stacklevel=2)
            return {}
        if images.shape[1:] != (self.size, self.size, 3) or len(names) != len(images):
            warnings.warn(f"ignoring the cache {self.cache_path}: it does not hold {self.size}px images", stacklevel=2)
            return {}
        return {str(n): img for n, img in zip(names, images)}

    def _write_cache(self, images: dict[str, np.ndarray]) -> None:
        names = sorted(images)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.root)
        os.close(fd)
        try:
            np.savez(tmp, names=np.array(names), images=np.stack([images[n] for n in names]))
            os.replace(tmp, self.cache_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, images ``(N, size, size, 3)`` ``uint8`` and labels ``(N,)`` of the images used (subset applied)."""
        self.prepare_data()
        names, labels = read_isic2019_labels(self.csv_path)
        rng = np.random.default_rng(self.seed)
        if self.num_samples is not None:
            if self.num_samples > len(names):
                raise ValueError(f"num_samples must be at most the {len(names)} images listed, got {self.num_samples}")
            keep = np.sort(rng.choice(len(names), size=self.num_samples, replace=False))
            names, labels = [names[i] for i in keep], labels[keep]
        cached = self._read_cache()
        todo = [n for n in names if n not in cached]
        absent = [n for n in todo if not (self.image_folder / f"{n}.jpg").is_file()]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} image(s) listed in {self.csv_path} are not in {self.image_folder}, e.g. "
                f"{', '.join(a + '.jpg' for a in absent[:3])}. {self._how_to_get()}"
            )
        for n in todo:
            cached[n] = load_isic2019_image(self.image_folder / f"{n}.jpg", self.size)
        if todo and self.cache:
            try:
                self._write_cache(cached)
            except OSError as err:
                warnings.warn(f"could not write the cache {self.cache_path} ({err}); going on without", stacklevel=2)
        return names, np.stack([cached[n] for n in names]), labels

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        _, images, labels = self.load()
        rng = np.random.default_rng([self.seed, 1])
        val_idx, test_idx, train_idx = _stratified(labels, (self.val_fraction, self.test_fraction), rng)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(labels)
        splits = {"train": train_idx, "val": val_idx, "test": test_idx}
        return {name: {"x": x[idx].contiguous(), "y": y[idx]} for name, idx in splits.items() if len(idx)}
