import numpy as np
import pytest
import torch

from lit_repr.data import MedMNISTDataModule
from lit_repr.data.medmnist import medmnist_filename


def _write(path, num_channels, label_dim, n=(12, 4, 6), size=28, num_classes=9):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        shape = (k, size, size) if num_channels == 1 else (k, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if label_dim == 1:
            arrays[f"{split}_labels"] = rng.integers(0, num_classes, size=(k, 1))
        else:
            arrays[f"{split}_labels"] = rng.integers(0, 2, size=(k, label_dim))
    np.savez(path, **arrays)
    return arrays


def test_pathmnist_rgb_single_label(tmp_path):
    arrays = _write(tmp_path / "pathmnist.npz", 3, 1)
    dm = MedMNISTDataModule("pathmnist", root=str(tmp_path), batch_size=5)
    dm.setup("fit")
    b = next(iter(dm.val_dataloader()))
    assert b["x"].shape == (4, 3, 28, 28) and b["x"].dtype == torch.float32
    assert b["y"].shape == (4,) and b["y"].dtype == torch.int64
    np.testing.assert_array_equal(b["y"].numpy(), arrays["val_labels"][:, 0])
    np.testing.assert_allclose(b["x"][0].permute(1, 2, 0).numpy(), arrays["val_images"][0] / 255.0, rtol=1e-6)
    assert dm.num_classes == 9 and dm.num_channels == 3 and len(dm.datasets["train"]) == 12


def test_chestmnist_multilabel_and_size(tmp_path):
    _write(tmp_path / medmnist_filename("chestmnist", 64), 1, 14, size=64)
    dm = MedMNISTDataModule("chestmnist", root=str(tmp_path), size=64, as_rgb=True, batch_size=3)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (3, 3, 64, 64)
    assert b["y"].shape == (3, 14) and b["y"].dtype == torch.float32


def test_missing_file_says_where(tmp_path):
    dm = MedMNISTDataModule("dermamnist", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dermamnist\.npz.*download=True"):
        dm.setup()


def test_bad_flag_and_size(tmp_path):
    with pytest.raises(ValueError, match="2D MedMNIST flag"):
        MedMNISTDataModule("organmnist3d", root=str(tmp_path))
    with pytest.raises(ValueError, match="size must be one of"):
        MedMNISTDataModule("pathmnist", root=str(tmp_path), size=32)  # type: ignore[arg-type]


def test_classifier_trains_on_medmnist_files(tmp_path, trainer_kwargs):
    import lightning.pytorch as pl

    from lit_repr.models import Classifier

    _write(tmp_path / "bloodmnist.npz", 3, 1, num_classes=8)
    dm = MedMNISTDataModule("bloodmnist", root=str(tmp_path), batch_size=4)
    model = Classifier(num_classes=8, in_features=3 * 28 * 28, hidden=[8])
    pl.Trainer(max_epochs=1, **trainer_kwargs).fit(model, dm)


def test_bad_flags_name_argument_and_value(tmp_path):
    with pytest.raises(ValueError, match="as_rgb must be True or False, got 'yes'"):
        MedMNISTDataModule("pathmnist", root=str(tmp_path), as_rgb="yes")
    with pytest.raises(ValueError, match=r"size must be one of \(28, 64, 128, 224\), got 32"):
        MedMNISTDataModule("pathmnist", root=str(tmp_path), size=32)  # type: ignore[arg-type]


@pytest.mark.parametrize("flag,num_channels,num_classes", [("bloodmnist", 3, 8), ("pathmnist", 3, 9),
                                                           ("dermamnist", 3, 7)])
def test_federated_flags_give_images_in_unit_range_and_int_labels(tmp_path, flag, num_channels, num_classes):
    arrays = _write(tmp_path / f"{flag}.npz", num_channels, 1, num_classes=num_classes)
    dm = MedMNISTDataModule(flag, root=str(tmp_path))
    x, y = dm.arrays("train")
    assert x.shape == (12, num_channels, 28, 28) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.int64 and y.tolist() == arrays["train_labels"][:, 0].tolist()
    assert dm.num_classes == num_classes
