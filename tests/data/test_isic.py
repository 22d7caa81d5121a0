import numpy as np
import pytest
import torch
from PIL import Image

from lit_repr.data import ISIC2019DataModule
from lit_repr.data.isic import ISIC2019_CLASSES, ISIC2019_URL, load_isic2019_image, read_isic2019_labels

HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"


def _row(name, cls):
    return name + "," + ",".join("1.0" if j == cls else "0.0" for j in range(9))


def _write(root, per_class=5, unk=0, seed=0):
    """The official layout: root/ISIC_2019_Training_Input/*.jpg and root/ISIC_2019_Training_GroundTruth.csv."""
    folder = root / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, labels = [HEADER], {}
    for i in range(per_class * 8 + unk):
        cls = i % 8 if i < per_class * 8 else 8
        name = f"ISIC_{i:07d}" + ("_downsampled" if i == 3 else "")
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        colour = np.array([20 + 25 * (cls % 8), 120, 200 - 20 * (cls % 8)], dtype=np.uint8)
        pixels = np.clip(colour + rng.integers(-10, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.jpg", quality=95)
        rows.append(_row(name, cls))
        labels[name] = cls
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return labels


def test_reads_the_official_layout_with_stratified_splits(tmp_path):
    labels = _write(tmp_path, per_class=10)
    dm = ISIC2019DataModule(root=str(tmp_path), size=28, val_fraction=0.2, test_fraction=0.3, batch_size=4)
    dm.setup("fit")
    x, y = dm.arrays("train")
    assert x.shape == (40, 3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    for split, per_class in (("train", 5), ("val", 2), ("test", 3)):
        assert torch.bincount(dm.arrays(split)[1], minlength=8).tolist() == [per_class] * 8
    # the images keep their class colour (red channel rises with the class index)
    red = x[:, 0].mean((1, 2))
    for cls in range(8):
        np.testing.assert_allclose(red[y == cls].mean().item() * 255, 20 + 25 * cls, atol=6)
    assert dm.num_classes == 8 and dm.class_names == list(ISIC2019_CLASSES)
    assert sorted(labels.values()).count(0) == 10
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (4, 3, 28, 28)


def test_cache_is_written_and_reused_without_the_images(tmp_path):
    _write(tmp_path, per_class=3)
    first = ISIC2019DataModule(root=str(tmp_path), size=16, num_samples=10, seed=0)
    x0 = first.arrays("train")[0]
    cache = tmp_path / "isic2019_16.npz"
    with np.load(cache) as npz:
        assert npz["images"].shape == (10, 16, 16, 3)
    whole = dict(size=16, val_fraction=0.0, test_fraction=0.0)
    x_full = ISIC2019DataModule(root=str(tmp_path), **whole).arrays("train")[0]  # decodes the 14 missing images
    with np.load(cache) as npz:
        assert len(npz["names"]) == 24
    for p in (tmp_path / "ISIC_2019_Training_Input").iterdir():
        p.unlink()
    (tmp_path / "ISIC_2019_Training_Input").rmdir()
    again = ISIC2019DataModule(root=str(tmp_path), **whole)  # all from the cache
    assert x_full.shape[0] == 24 and torch.equal(again.arrays("train")[0], x_full)
    assert torch.equal(ISIC2019DataModule(root=str(tmp_path), size=16, num_samples=10).arrays("train")[0], x0)
    with pytest.raises(FileNotFoundError, match="ISIC_2019_Training_Input/"):
        ISIC2019DataModule(root=str(tmp_path), size=28).setup()  # no 28px cache, no images


def test_no_cache_writes_nothing(tmp_path):
    _write(tmp_path, per_class=2)
    ISIC2019DataModule(root=str(tmp_path), size=8, cache=False, val_fraction=0, test_fraction=0).setup()
    assert not list(tmp_path.glob("*.npz"))


def test_unknown_rows_are_dropped_and_said(tmp_path):
    _write(tmp_path, per_class=2, unk=2)
    with pytest.warns(UserWarning, match=r"left out 2 row\(s\) marked UNK: the 8 classes are MEL, NV"):
        names, labels = read_isic2019_labels(tmp_path / "ISIC_2019_Training_GroundTruth.csv")
    assert len(names) == 16 and labels.max() == 7


def test_seeds_and_subsets(tmp_path):
    _write(tmp_path, per_class=4)
    a = ISIC2019DataModule(root=str(tmp_path), size=8, num_samples=20, seed=3, cache=False)
    b = ISIC2019DataModule(root=str(tmp_path), size=8, num_samples=20, seed=3, cache=False)
    c = ISIC2019DataModule(root=str(tmp_path), size=8, num_samples=20, seed=4, cache=False)
    assert torch.equal(a.arrays("train")[0], b.arrays("train")[0])
    assert not torch.equal(a.arrays("train")[0], c.arrays("train")[0])
    assert sum(len(ds) for ds in a.datasets.values()) == 20
    with pytest.raises(ValueError, match="num_samples must be at most the 32 images listed, got 33"):
        ISIC2019DataModule(root=str(tmp_path), num_samples=33, cache=False).setup()


def test_missing_folder_csv_or_image_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ISIC2019DataModule(root=str(tmp_path)).setup()
    msg = str(err.value)
    assert "ISIC_2019_Training_Input/" in msg and "ISIC_2019_Training_GroundTruth.csv" in msg and ISIC2019_URL in msg
    _write(tmp_path, per_class=1)
    (tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed in .* are not in .*ISIC_0000002\.jpg"):
        ISIC2019DataModule(root=str(tmp_path)).setup()
    assert not list(tmp_path.glob("*.npz"))  # nothing written before the error


def test_bad_csv(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV\nISIC_0000000,1.0,0.0\n")
    with pytest.raises(ValueError, match="must start with the official header image,MEL,NV,BCC"):
        read_isic2019_labels(path)
    path.write_text(HEADER + "\nISIC_0000000,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    with pytest.raises(ValueError, match="line 2: exactly one class column must be 1"):
        read_isic2019_labels(path)
    path.write_text(HEADER + "\n" + _row("ISIC_0000000", 1) + "\n" + _row("ISIC_0000000", 2) + "\n")
    with pytest.raises(ValueError, match="more than once"):
        read_isic2019_labels(path)


def test_image_is_centre_cropped(tmp_path):
    pixels = np.zeros((40, 120, 3), np.uint8)
    pixels[:, 40:80] = 255  # a white centre square between black side bands
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = load_isic2019_image(tmp_path / "a.png", 10)
    assert out.shape == (10, 10, 3) and out.min() > 200 and out.mean() > 245  # squashing would keep the black bands


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        ISIC2019DataModule(root=str(tmp_path), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="size must be a positive int"):
        ISIC2019DataModule(root=str(tmp_path), size=-1)
    with pytest.raises(ValueError, match="cache must be True or False"):
        ISIC2019DataModule(root=str(tmp_path), cache="yes")
