"""Procedural dSprites-like images with every generative factor in the batch.

:func:`render_sprites` is a pure, vectorized renderer: given per-image factors (shape, scale,
orientation, position, optionally hue) it draws white (or colored) shapes on a black canvas by
evaluating each shape's implicit inequality on the pixel grid, in chunks, with optional
supersampling for anti-aliased edges. Twenty thousand 64×64 images take a few seconds on a CPU.

:class:`SpritesDataModule` samples the factors independently and uniformly from a seed and serves
dict batches ``{"x", "y" (= shape), "latents" (all factors), "index"}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_choice, check_int, check_number
from lit_repr.data.base import ArrayDataModule, TensorDictDataset

__all__ = ["SpritesDataModule", "render_sprites", "SHAPES", "sample_sprite_factors"]

SHAPES: tuple[str, ...] = ("square", "ellipse", "heart", "triangle")
_BASE_RADIUS = 0.15  # half-size of a scale-1 sprite, as a fraction of the image width
_MARGIN = _BASE_RADIUS * math.sqrt(2) + 0.02  # every rotated scale-1 sprite stays inside the image


def _inside(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Whether canonical coordinates ``(u, v)`` (``v`` pointing down) fall inside ``shape``.

    Every shape fits in the square ``[-1, 1]²`` of its canonical frame.
    """
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 1.0
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1.0
    if shape == "heart":
        # (X² + Y² − 1)³ − X² Y³ ≤ 0, lobes up (Y up = −v), recentered and scaled into [-1, 1]².
        X = 1.14 * u
        Y = -1.12 * v + 0.12
        return (X**2 + Y**2 - 1.0) ** 3 - X**2 * Y**3 <= 0.0
    if shape == "triangle":
        # Equilateral, apex up, circumradius 1, centered on its centroid: inside all three edges.
        Y = -v
        inside = Y >= -0.5
        for angle in (math.pi / 6, 5 * math.pi / 6):
            inside &= math.cos(angle) * u + math.sin(angle) * Y <= 0.5
        return inside
    raise ValueError(f"unknown shape {shape!r}; allowed: {SHAPES}")


def _hue_to_rgb(hue: Tensor) -> Tensor:
    """Fully saturated, full-value colors for hues in ``[0, 1)``: ``(N,) -> (N, 3)``."""
    k = (hue[:, None] * 6.0 + torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype)) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def render_sprites(
    shape: Sequence[int] | np.ndarray | Tensor,
    scale: Sequence[float] | np.ndarray | Tensor,
    orientation: Sequence[float] | np.ndarray | Tensor,
    pos_x: Sequence[float] | np.ndarray | Tensor,
    pos_y: Sequence[float] | np.ndarray | Tensor,
    hue: Sequence[float] | np.ndarray | Tensor | None = None,
    image_size: int = 64,
    shapes: Sequence[str] = ("square", "ellipse", "heart"),
    supersample: int = 1,
    chunk_size: int = 1024,
) -> Tensor:
    """Render one sprite per row of factors; a pure function of its arguments.

    Geometry: a scale-1 sprite spans ``2 × 0.15`` of the image width; ``pos_x``/``pos_y`` in
    ``[0, 1]`` move its center from ``0.23`` to ``0.77`` of the width/height (left to right, top
    to bottom), so rotated sprites stay inside the canvas; ``orientation`` (radians) rotates
    counter-clockwise on screen.

    Args:
        shape: index into ``shapes`` per image.
        scale: size per image, ``> 0`` (dSprites uses ``[0.5, 1]``).
        orientation: rotation in radians per image.
        pos_x: horizontal position in ``[0, 1]`` per image.
        pos_y: vertical position in ``[0, 1]`` per image (0 is the top).
        hue: if given, color per image as a hue in ``[0, 1)`` (saturation and value 1), and the
            images have 3 channels; otherwise they are white on black with 1 channel.
        image_size: height and width in pixels.
        shapes: the shape vocabulary, names from ``SHAPES``.
        supersample: evaluate ``supersample²`` points per pixel and average (anti-aliasing);
            ``1`` gives binary images.
        chunk_size: images rendered at once (bounds memory).

    Returns:
        ``(N, C, image_size, image_size)`` float32 images in ``[0, 1]``.

    Example:
        >>> imgs = render_sprites([0, 1], [1.0, 0.5], [0.0, 1.0], [0.5, 0.0], [0.5, 1.0])
        >>> imgs.shape, float(imgs.max())
        (torch.Size([2, 1, 64, 64]), 1.0)
    """
    for name in shapes:
        if name not in SHAPES:
            raise ValueError(f"shapes must be names from {SHAPES}, got {name!r}")
    check_int("image_size", image_size, low=4)
    check_int("supersample", supersample)
    check_int("chunk_size", chunk_size)
    named = {"shape": shape, "scale": scale, "orientation": orientation, "pos_x": pos_x, "pos_y": pos_y}
    if hue is not None:
        named["hue"] = hue
    f = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64).reshape(-1) if not isinstance(v, Tensor)
         else v.detach().to(torch.float64).reshape(-1) for k, v in named.items()}
    lengths = {k: v.numel() for k, v in f.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every factor needs one value per image; got lengths {lengths}")
    for k, v in f.items():
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"factor {k!r} contains NaN or inf")
    s = f["shape"]
    if bool((s != s.round()).any()) or (s.numel() and (int(s.min()) < 0 or int(s.max()) >= len(shapes))):
        raise ValueError(f"shape must hold integer indices in [0, {len(shapes)}) into shapes={tuple(shapes)}")
    if bool((f["scale"] <= 0).any()):
        raise ValueError("scale must be > 0 for every image")
    for k in ("pos_x", "pos_y"):
        if bool(((f[k] < 0) | (f[k] > 1)).any()):
            raise ValueError(f"{k} must lie in [0, 1] for every image")
    n = lengths["shape"]
    channels = 3 if hue is not None else 1
    out = torch.empty(n, channels, image_size, image_size, dtype=torch.float32)
    # Sub-pixel sample positions, in units of the image width.
    ss = supersample
    offsets = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    grid = (torch.arange(image_size, dtype=torch.float32)[:, None] + offsets[None, :]).reshape(-1) / image_size
    py, px = grid[None, :, None], grid[None, None, :]  # (1, S, 1), (1, 1, S) with S = H * ss
    span = 1.0 - 2.0 * _MARGIN
    shape_idx = s.long()
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        cx = (_MARGIN + span * f["pos_x"][sl]).float()[:, None, None]
        cy = (_MARGIN + span * f["pos_y"][sl]).float()[:, None, None]
        r = (_BASE_RADIUS * f["scale"][sl]).float()[:, None, None]
        th = f["orientation"][sl]
        cos, sin = th.cos().float()[:, None, None], th.sin().float()[:, None, None]
        dx, dy = px - cx, py - cy
        # Counter-clockwise on screen (y down) by θ: rotate the sampling points by −θ.
        u = (cos * dx - sin * dy) / r
        v = (sin * dx + cos * dy) / r
        mask = torch.zeros(u.shape, dtype=torch.bool)
        idx = shape_idx[sl]
        for k, name in enumerate(shapes):
            sel = idx == k
            if bool(sel.any()):
                mask[sel] = _inside(name, u[sel], v[sel])
        img = mask.float()
        if ss > 1:
            img = img.view(-1, image_size, ss, image_size, ss).mean((2, 4))
        if hue is None:
            out[sl, 0] = img
        else:
            rgb = _hue_to_rgb(f["hue"][sl].float())
            out[sl] = img[:, None] * rgb[:, :, None, None]
    return out


def sample_sprite_factors(
    n: int,
    rng: np.random.Generator,
    num_shapes: int = 3,
    scale_range: tuple[float, float] = (0.5, 1.0),
    color: bool = False,
) -> dict[str, np.ndarray]:
    """Independent uniform factors: shape index, scale, orientation in ``[0, 2π)``, positions in
    ``[0, 1]`` and (if ``color``) hue in ``[0, 1)``.

    Example:
        >>> sorted(sample_sprite_factors(3, np.random.default_rng(0)))
        ['orientation', 'pos_x', 'pos_y', 'scale', 'shape']
    """
    out = {
        "shape": rng.integers(0, num_shapes, size=n),
        "scale": rng.uniform(*scale_range, size=n),
        "orientation": rng.uniform(0.0, 2 * math.pi, size=n),
        "pos_x": rng.uniform(0.0, 1.0, size=n),
        "pos_y": rng.uniform(0.0, 1.0, size=n),
    }
    if color:
        out["hue"] = rng.uniform(0.0, 1.0, size=n)
    return out


class _ByteImageDataset(TensorDictDataset):
    """Keeps ``x`` as uint8 in memory (a quarter of float32) and serves it as float in ``[0, 1]``."""

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = super().__getitem__(i)
        item["x"] = item["x"].float().div_(255.0)
        return item


class SpritesDataModule(ArrayDataModule):
    """dSprites-like images rendered procedurally, with every generative factor in the batch.

    Factors are drawn independently and uniformly: shape (from ``shapes``), scale in
    ``scale_range``, orientation in ``[0, 2π)`` radians, ``pos_x`` and ``pos_y`` in ``[0, 1]``
    and, with ``color=True``, hue in ``[0, 1)``. Batches are ``{"x": images, "y": shape index,
    "latents": (B, F) float factors in the order of factor_names, "index"}`` with
    ``factor_names = ("shape", "scale", "orientation", "pos_x", "pos_y"[, "hue"])``. Images are
    stored as bytes and served as float32 in ``[0, 1]``. Note that the square is invariant to
    rotations by π/2 and the ellipse by π, so orientation is only defined modulo those angles.
    Everything is a deterministic function of ``seed``.

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        image_size: height and width in pixels.
        shapes: shape vocabulary, names from ``SHAPES`` (``square``, ``ellipse``, ``heart``,
            ``triangle``).
        scale_range: ``(low, high)`` of the uniform scale, ``0 < low <= high``.
        color: render colored sprites (3 channels) with a hue factor; otherwise white on black.
        supersample: anti-aliasing factor (``1``: binary images, as dSprites).
        layout: ``"image"`` for ``(C, H, W)`` tensors (CNNs), ``"flat"`` for vectors (MLPs).
        batch_size: samples per batch.
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of the factors (and so of the images).

    Example:
        >>> dm = SpritesDataModule(num_train=64, num_val=16, num_test=16, batch_size=32)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["latents"].shape, dm.factor_names
        (torch.Size([32, 1, 64, 64]), torch.Size([32, 5]), ('shape', 'scale', 'orientation', 'pos_x', 'pos_y'))
    """

    def __init__(
        self,
        num_train: int = 20_000,
        num_val: int = 2_000,
        num_test: int = 5_000,
        image_size: int = 64,
        shapes: Sequence[str] = ("square", "ellipse", "heart"),
        scale_range: tuple[float, float] = (0.5, 1.0),
        color: bool = False,
        supersample: int = 1,
        layout: Literal["image", "flat"] = "image",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.num_train = check_int("num_train", num_train)
        self.num_val = check_int("num_val", num_val, low=0)
        self.num_test = check_int("num_test", num_test, low=0)
        self.image_size = check_int("image_size", image_size, low=4)
        shapes = tuple(shapes)
        if len(shapes) < 2 or len(set(shapes)) != len(shapes) or any(s not in SHAPES for s in shapes):
            raise ValueError(f"shapes must be at least two distinct names from {SHAPES}, got {shapes}")
        self.shapes = shapes
        try:  # two finite numbers, 0 < low <= high
            lo_s, hi_s = (check_number("scale_range", v, low=0, low_open=True) for v in scale_range)
            ok = lo_s <= hi_s
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")
        self.scale_range = (lo_s, hi_s)
        self.color = check_bool("color", color)
        self.supersample = check_int("supersample", supersample)
        self.layout = check_choice("layout", layout, ("image", "flat"))
        self.factor_names: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y") + (
            ("hue",) if self.color else ()
        )

    @property
    def num_classes(self) -> int:
        """Number of shapes (the classes of ``y``)."""
        return len(self.shapes)

    @property
    def num_channels(self) -> int:
        """Image channels: 3 with ``color=True``, else 1."""
        return 3 if self.color else 1

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        rng = np.random.default_rng([self.seed, 5])
        out: dict[str, dict[str, Tensor]] = {}
        for split, n in (("train", self.num_train), ("val", self.num_val), ("test", self.num_test)):
            if n == 0:
                continue
            f = sample_sprite_factors(n, rng, len(self.shapes), self.scale_range, self.color)
            x = render_sprites(
                f["shape"], f["scale"], f["orientation"], f["pos_x"], f["pos_y"], f.get("hue"),
                image_size=self.image_size, shapes=self.shapes, supersample=self.supersample,
            )
            x = x.mul_(255.0).round_().to(torch.uint8)
            if self.layout == "flat":
                x = x.flatten(1)
            latents = torch.from_numpy(np.stack([f[k] for k in self.factor_names], 1)).float()
            out[split] = {"x": x, "y": torch.from_numpy(f["shape"]).long(), "latents": latents}
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        self.datasets = {k: _ByteImageDataset(d.tensors) for k, d in self.datasets.items()}

    def arrays(self, split: str) -> dict[str, Tensor]:
        """A whole split at once: ``{"x": float images, "y", "latents", "index"}``."""
        if not self.datasets:
            self.setup()
        if split not in self.datasets:
            raise ValueError(self._missing(split, "arrays() asked for it"))
        t = dict(self.datasets[split].tensors)
        t["x"] = t["x"].float() / 255.0
        return t
