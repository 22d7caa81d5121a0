import os
import pickle

import numpy as np
import pytest
import torch

from lit_repr.data import Cifar10DataModule
from lit_repr.data.cifar10 import CIFAR10_FILES, CIFAR10_URL, load_cifar10_batch

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _write(root, per_batch=6, num_test=4, seed=0):
    """The official layout: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in CIFAR10_FILES[:-1]:
        n = num_test if name == "test_batch" else per_batch
        d = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        written[name] = d
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f, protocol=2)
    return written


def test_reads_the_official_layout(tmp_path):
    written = _write(tmp_path)
    dm = Cifar10DataModule(root=str(tmp_path), val_fraction=0.2, batch_size=4)
    dm.setup("fit")
    x, y, index = dm.arrays("train", keys=("x", "y", "index"))
    vx, vy = dm.arrays("val")
    tx, ty = dm.arrays("test")
    assert x.shape == (24, 3, 32, 32) and vx.shape == (6, 3, 32, 32) and tx.shape == (4, 3, 32, 32)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert dm.class_names[0] == "airplane" and dm.num_classes == 10
    # every training image is in exactly one of train/val, with its label; channels are the R, G, B planes
    data = np.concatenate([written[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    both = torch.cat([x, vx]).flatten(1).mul(255).round().to(torch.uint8).numpy()
    order = [int(np.flatnonzero((data == row).all(1))[0]) for row in both]
    assert sorted(order) == list(range(30))
    np.testing.assert_array_equal(torch.cat([y, vy]).numpy(), labels[order])
    red = written["test_batch"][b"data"][0, :1024].reshape(32, 32)
    np.testing.assert_allclose(tx[0, 0].numpy(), red / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ty.numpy(), written["test_batch"][b"labels"])
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (4, 3, 32, 32) and b["y"].shape == (4,)


def test_root_may_be_the_batch_folder_itself(tmp_path):
    _write(tmp_path)
    dm = Cifar10DataModule(root=str(tmp_path / "cifar-10-batches-py"), val_fraction=0.0)
    assert dm.arrays("train")[0].shape[0] == 30 and "val" not in dm.datasets


def test_resize_subsets_and_seeds(tmp_path):
    _write(tmp_path, per_batch=10, num_test=8)
    dm = Cifar10DataModule(root=str(tmp_path), size=8, num_train=12, num_test=5, seed=1)
    x, y = dm.arrays("train")
    assert x.shape == (12, 3, 8, 8) and dm.arrays("test")[0].shape == (5, 3, 8, 8)
    assert dm.arrays("val")[0].shape == (5, 3, 8, 8)
    again = Cifar10DataModule(root=str(tmp_path), size=8, num_train=12, num_test=5, seed=1)
    assert torch.equal(again.arrays("train")[0], x)
    other = Cifar10DataModule(root=str(tmp_path), size=8, num_train=12, num_test=5, seed=2)
    assert not torch.equal(other.arrays("train")[0], x)
    # resizing keeps a constant image constant and the mean of each image close
    full = Cifar10DataModule(root=str(tmp_path), size=32, num_train=12, num_test=5, seed=1).arrays("train")[0]
    torch.testing.assert_close(x.mean((2, 3)), full.mean((2, 3)), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="num_train must be at most the 45 samples available, got 46"):
        Cifar10DataModule(root=str(tmp_path), num_train=46).setup()


def test_missing_files_say_where_and_how(tmp_path):
    dm = Cifar10DataModule(root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and CIFAR10_URL in msg and "tar -xzf" in msg
    assert "data_batch_1" in msg
    _write(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(FileNotFoundError, match=r"\['test_batch'\]"):
        Cifar10DataModule(root=str(tmp_path)).setup()


def test_refuses_pickles_that_are_not_arrays(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": Boom(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="not an official CIFAR-10 batch: refusing to load"):
        load_cifar10_batch(path)


def test_bad_batch_content(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"b'data' must be uint8 of shape \(N, 3072\)"):
        load_cifar10_batch(path)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f)
    with pytest.raises(ValueError, match=r"b'labels' must be in \[0, 9\]"):
        load_cifar10_batch(path)
    with open(path, "wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match="lacks the entry 'data'"):
        load_cifar10_batch(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        Cifar10DataModule(root=str(tmp_path), size=0)
    with pytest.raises(ValueError, match=r"val_fraction must be a finite number in \[0, 1\)"):
        Cifar10DataModule(root=str(tmp_path), val_fraction=1.0)
    with pytest.raises(ValueError, match="num_test must be a positive int"):
        Cifar10DataModule(root=str(tmp_path), num_test=0)


def test_classifier_trains_on_cifar_files(tmp_path, trainer_kwargs):
    import lightning.pytorch as pl

    from lit_repr.models import Classifier

    _write(tmp_path)
    dm = Cifar10DataModule(root=str(tmp_path), size=8, batch_size=8)
    model = Classifier(num_classes=10, in_features=3 * 8 * 8, hidden=[8])
    pl.Trainer(max_epochs=1, **trainer_kwargs).fit(model, dm)


def test_reads_batches_pickled_by_numpy_1(tmp_path):
    """The official files name numpy.core.multiarray (numpy 1.x); numpy 2 calls it numpy._core.multiarray."""
    data = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [4, 2]}, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    x, y = load_cifar10_batch(path)
    np.testing.assert_array_equal(x.reshape(2, 3072), data)
    assert y.tolist() == [4, 2]
