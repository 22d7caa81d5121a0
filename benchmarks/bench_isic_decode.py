"""ISIC2019DataModule: time to turn one dermoscopy JPEG into a small square image, against peers.

Three ways to centre-crop and resize a JPEG to ``size``×``size`` (default 32):

1. ``load_isic2019_image`` (lit_repr): PIL ``draft`` (the JPEG decoder skips to a reduced scale still
   >= 2*size) then ``ImageOps.fit`` with Lanczos;
2. PIL without ``draft``: full-size decode, then the same ``ImageOps.fit``;
3. torchvision: ``decode_jpeg`` then ``center_crop`` and antialiased bilinear ``resize``.

The JPEGs are synthetic (smoothed noise, quality 90) at the two sizes most ISIC 2019 images have
(1024×1024 from BCN_20000, 600×450 from HAM10000). Also printed: the largest pixel difference of (1)
against (2), i.e. what the reduced-scale decode changes.

    python benchmarks/bench_isic_decode.py [--size 32] [--repeats 20]

Runs on one thread (``torch.set_num_threads(1)``).

Measured on a shared 2-core CPU (defaults, 26 Nov 2026)::

    1024x1024 -> 32px  lit_repr (PIL draft)   5.53 ms  PIL full decode  29.63 ms  torchvision   9.73 ms  ratio full/ours  5.4  torchvision/ours  1.8  max |ours - full| 1 grey levels
    600x450 -> 32px  lit_repr (PIL draft)   1.96 ms  PIL full decode   7.05 ms  torchvision   3.01 ms  ratio full/ours  3.6  torchvision/ours  1.5  max |ours - full| 3 grey levels

At these rates the 25,331 training images decode in about 1-2 minutes once; later runs read the
``isic2019_{size}.npz`` cache.
"""  # noqa: E501

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from lit_repr.data.isic import load_isic2019_image


def pil_full(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS))


def torchvision_way(path: Path, size: int) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    side = min(img.shape[-2:])
    img = TF.resize(TF.center_crop(img, [side, side]), [size, size], antialias=True)
    return img.permute(1, 2, 0).numpy()


def timed(fn, path: Path, size: int, repeats: int) -> float:
    fn(path, size)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(path, size)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in ((1024, 1024), (600, 450)):
            pixels = ndimage.uniform_filter(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (9, 9, 1))
            path = Path(tmp) / f"ISIC_{w}x{h}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            ours = timed(load_isic2019_image, path, args.size, args.repeats)
            full = timed(pil_full, path, args.size, args.repeats)
            tv = timed(torchvision_way, path, args.size, args.repeats)
            diff = np.abs(load_isic2019_image(path, args.size).astype(int) - pil_full(path, args.size)).max()
            print(
                f"{w}x{h} -> {args.size}px  lit_repr (PIL draft) {ours:6.2f} ms  PIL full decode {full:6.2f} ms  "
                f"torchvision {tv:6.2f} ms  ratio full/ours {full / ours:4.1f}  torchvision/ours {tv / ours:4.1f}  "
                f"max |ours - full| {diff} grey levels"
            )


if __name__ == "__main__":
    main()
