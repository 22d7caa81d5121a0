import pytest
import torch

from lit_repr.data import DigitsDataModule


def test_splits_and_batches():
    dm = DigitsDataModule(batch_size=32, val_fraction=0.2, test_fraction=0.1)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["val"] == round(0.2 * 1797)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "y", "index"}
    assert b["x"].shape == (32, 64) and b["x"].max() <= 1.0 and b["y"].dtype == torch.int64
    # splits are disjoint and deterministic per seed
    idx = [set(map(tuple, dm.datasets[s].tensors["x"].tolist())) for s in ("train", "test")]
    dm2 = DigitsDataModule(batch_size=32)
    dm2.setup("fit")
    torch.testing.assert_close(dm.datasets["val"].tensors["x"], dm2.datasets["val"].tensors["x"])
    assert set(dm.probe_dataloaders()) == {"train", "val", "test"}
    del idx


def test_image_layout():
    dm = DigitsDataModule(layout="image3")
    dm.setup()
    assert dm.datasets["train"].tensors["x"].shape[1:] == (3, 8, 8)


@pytest.mark.parametrize(
    "kw", [{"batch_size": 0}, {"val_fraction": 1.2}, {"layout": "cube"}, {"val_fraction": 0.6, "test_fraction": 0.5}]
)
def test_bad_args(kw):
    with pytest.raises(ValueError):
        DigitsDataModule(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"val_fraction": -0.1}, r"val_fraction must be a finite number in \[0, 1\), got -0.1"),
        ({"test_fraction": float("nan")}, r"test_fraction must be a finite number in \[0, 1\), got nan"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction \+ test_fraction must be < 1"),
        ({"layout": "cube"}, r"layout must be one of \('flat', 'image', 'image3'\), got 'cube'"),
        ({"standardize": "yes"}, "standardize must be True or False, got 'yes'"),
        ({"eval_batch_size": 0}, "eval_batch_size must be a positive int, got 0"),
    ],
)
def test_bad_args_name_argument_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kw)


def test_eval_batch_size_and_no_test_split():
    dm = DigitsDataModule(batch_size=16, eval_batch_size=100, test_fraction=0.0)
    assert next(iter(dm.val_dataloader()))["x"].shape[0] == 100
    assert set(dm.probe_dataloaders()) == {"train", "val"}
    with pytest.raises(ValueError, match=r"no 'test' split \(testing needs it\); it has \['train', 'val'\]"):
        dm.test_dataloader()
