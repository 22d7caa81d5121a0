import math
import time

import numpy as np
import pytest
import torch

from lit_repr.data.sprites import SHAPES, SpritesDataModule, render_sprites, sample_sprite_factors

pytestmark = pytest.mark.usefixtures("num_threads")


def _centroid(img):
    h, w = img.shape[-2:]
    m = img.reshape(h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return float((m * xs).sum() / m.sum()), float((m * ys).sum() / m.sum())


def test_render_geometry():
    # square at scale 1 is 2 * 0.15 * 64 = 19.2 pixels wide
    img = render_sprites([0], [1.0], [0.0], [0.5], [0.5])[0, 0]
    assert img.sum().item() == pytest.approx(19.2**2, rel=0.1)
    assert _centroid(img) == pytest.approx((31.5, 31.5), abs=0.6)
    # halving the scale quarters the area
    small = render_sprites([0], [0.5], [0.0], [0.5], [0.5])[0, 0]
    assert small.sum().item() == pytest.approx(img.sum().item() / 4, rel=0.15)
    # position moves the centroid left-right and top-bottom
    left_top = render_sprites([1], [0.7], [0.3], [0.0], [0.0])[0]
    right_bottom = render_sprites([1], [0.7], [0.3], [1.0], [1.0])[0]
    (lx, ly), (rx, ry) = _centroid(left_top), _centroid(right_bottom)
    assert lx < 20 and ly < 20 and rx > 44 and ry > 44
    # rotating the ellipse by pi/2 transposes it; the square by pi/2 is unchanged
    e0 = render_sprites([1], [1.0], [0.0], [0.5], [0.5])[0, 0]
    e90 = render_sprites([1], [1.0], [math.pi / 2], [0.5], [0.5])[0, 0]
    assert (e0 != e90.T).float().mean() < 0.01 and (e0 != e90).float().mean() > 0.02
    s90 = render_sprites([0], [1.0], [math.pi / 2], [0.5], [0.5])[0, 0]
    assert (img != s90).float().mean() < 0.01


def test_every_shape_stays_inside_and_differs():
    n = len(SHAPES)
    imgs = render_sprites(list(range(n)), [1.0] * n, [0.7] * n, [0.0] * n, [1.0] * n, shapes=SHAPES)
    for im in imgs:
        assert im.sum() > 50
        border = torch.cat([im[0, 0], im[0, -1], im[0, :, 0], im[0, :, -1]])
        assert border.sum() == 0
    flat = imgs.flatten(1)
    for i in range(n):
        for j in range(i + 1, n):
            assert (flat[i] != flat[j]).float().mean() > 0.01


def test_color_supersample_and_ranges():
    img = render_sprites([2], [1.0], [0.0], [0.5], [0.5], hue=[0.0], supersample=3)
    assert img.shape == (1, 3, 64, 64)
    assert img.min() >= 0 and img.max() <= 1
    assert img[0, 0].sum() > 0 and img[0, 1].sum() == 0 and img[0, 2].sum() == 0  # hue 0 is red
    edge = img[0, 0][(img[0, 0] > 0) & (img[0, 0] < 1)]
    assert edge.numel() > 10  # anti-aliased edge pixels
    green = render_sprites([2], [1.0], [0.0], [0.5], [0.5], hue=[1 / 3])
    assert green[0, 1].sum() > 0 and green[0, 0].sum() == 0


def test_render_is_fast():
    f = sample_sprite_factors(5000, np.random.default_rng(0))
    t = time.perf_counter()
    x = render_sprites(f["shape"], f["scale"], f["orientation"], f["pos_x"], f["pos_y"])
    assert x.shape == (5000, 1, 64, 64)
    assert time.perf_counter() - t < 10  # ~1 s on one core; 20k images take a few seconds


@pytest.mark.parametrize(
    "kw,match",
    [({"shape": [3]}, "shape must hold integer"), ({"shape": [0.5]}, "shape must hold integer"),
     ({"scale": [0.0]}, "scale"), ({"pos_x": [1.5]}, "pos_x"), ({"orientation": [float("nan")]}, "orientation"),
     ({"pos_y": [0.1, 0.2]}, "lengths"), ({"image_size": 2}, "image_size"), ({"shapes": ("star", "square")}, "star"),
     ({"supersample": 0}, "supersample")],
)
def test_render_bad_input(kw, match):
    args = {"shape": [0], "scale": [1.0], "orientation": [0.0], "pos_x": [0.5], "pos_y": [0.5], **kw}
    with pytest.raises(ValueError, match=match):
        render_sprites(**args)


def test_datamodule_batches_and_determinism():
    dm = SpritesDataModule(num_train=200, num_val=40, num_test=0, batch_size=50, color=True, seed=4)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "y", "latents", "index"}
    assert b["x"].shape == (50, 3, 64, 64) and b["x"].dtype == torch.float32
    assert b["latents"].shape == (50, 6) and dm.factor_names[-1] == "hue"
    assert torch.equal(b["latents"][:, 0].long(), b["y"])
    assert set(dm.datasets) == {"train", "val"} and dm.num_classes == 3
    # images are exactly the render of the factors in the batch
    lat = b["latents"].double()
    again = render_sprites(lat[:, 0].long(), lat[:, 1], lat[:, 2], lat[:, 3], lat[:, 4], hue=lat[:, 5])
    assert ((again - b["x"]).abs() > 0.5 / 255 + 1e-6).float().mean() < 1e-3  # byte rounding only
    # stored as bytes, served as float
    assert dm.datasets["train"].tensors["x"].dtype == torch.uint8
    other = SpritesDataModule(num_train=200, num_val=40, num_test=0, color=True, seed=4)
    other.setup()
    assert torch.equal(other.datasets["train"].tensors["x"], dm.datasets["train"].tensors["x"])
    flat = SpritesDataModule(num_train=10, num_val=0, num_test=0, layout="flat", image_size=16)
    flat.setup()
    a = flat.arrays("train")
    assert a["x"].shape == (10, 256) and a["x"].dtype == torch.float32 and flat.in_features == 256


def test_factor_ranges():
    dm = SpritesDataModule(num_train=2000, num_val=0, num_test=0, image_size=16, scale_range=(0.6, 0.9))
    lat = dm.arrays("train")["latents"]
    assert dm.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert set(lat[:, 0].long().tolist()) == {0, 1, 2}
    assert 0.6 <= lat[:, 1].min() and lat[:, 1].max() <= 0.9
    assert 0 <= lat[:, 2].min() and lat[:, 2].max() < 2 * math.pi
    assert 0 <= lat[:, 3:].min() and lat[:, 3:].max() <= 1


@pytest.mark.parametrize(
    "kw,match",
    [({"num_train": 0}, "num_train"), ({"shapes": ("square",)}, "shapes"), ({"shapes": ("square", "star")}, "shapes"),
     ({"scale_range": (0.0, 1.0)}, "scale_range"), ({"scale_range": (1.0, 0.5)}, "scale_range"),
     ({"layout": "grid"}, "layout"), ({"image_size": 3}, "image_size"), ({"supersample": 0}, "supersample")],
)
def test_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        SpritesDataModule(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"scale_range": (0.5,)}, r"scale_range must be \(low, high\) with 0 < low <= high, got \(0.5,\)"),
        ({"scale_range": "0.5"}, r"scale_range must be \(low, high\) with 0 < low <= high, got '0.5'"),
        ({"scale_range": (0.5, float("inf"))}, r"scale_range must be \(low, high\)"),
        ({"scale_range": 0.5}, r"scale_range must be \(low, high\) with 0 < low <= high, got 0.5"),
        ({"scale_range": (0.5, 0.7, 0.9)}, r"scale_range must be \(low, high\)"),
        ({"color": "yes"}, "color must be True or False, got 'yes'"),
        ({"num_val": -1}, "num_val must be an int >= 0, got -1"),
        ({"layout": "grid"}, r"layout must be one of \('image', 'flat'\), got 'grid'"),
    ],
)
def test_bad_args_name_argument_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        SpritesDataModule(**kw)


def test_arrays_of_a_missing_split_names_the_splits():
    dm = SpritesDataModule(num_train=8, num_val=0, num_test=0, image_size=8)
    with pytest.raises(ValueError, match=r"no 'test' split \(arrays\(\) asked for it\); it has \['train'\]"):
        dm.arrays("test")
