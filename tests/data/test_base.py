import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_repr.data import ArrayDataModule, TensorDictDataset, split_indices


class Splits(ArrayDataModule):
    """Eight training samples and whichever of ``val``/``test`` are asked for (four each)."""

    def __init__(self, splits=("train", "val", "test"), **kwargs):
        super().__init__(**kwargs)
        self.names = splits

    def build_splits(self):
        sizes = {"train": 8, "val": 4, "test": 4}
        return {name: {"x": torch.full((sizes[name], 2), float(i))} for i, name in enumerate(self.names)}


class Counting(pl.LightningModule):
    """Counts the validation and test batches it sees."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.seen = {"val": 0, "test": 0}

    def training_step(self, batch, batch_idx):
        return self.net(batch["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.seen["val"] += 1

    def test_step(self, batch, batch_idx):
        self.seen["test"] += 1

    def predict_step(self, batch, batch_idx):
        return self.net(batch["x"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_loaders_serve_their_own_split():
    dm = Splits(batch_size=4)
    assert next(iter(dm.val_dataloader()))["x"][0, 0] == 1.0
    assert next(iter(dm.test_dataloader()))["x"][0, 0] == 2.0
    assert next(iter(dm.predict_dataloader()))["x"][0, 0] == 2.0
    assert set(dm.probe_dataloaders()) == {"train", "val", "test"}


def test_missing_val_split_is_not_replaced_by_train():
    dm = Splits(splits=("train", "test"), batch_size=4)
    with pytest.warns(UserWarning, match=r"no 'val' split \(validation is skipped\); it has \['test', 'train'\]"):
        assert dm.val_dataloader() == []
    assert set(dm.probe_dataloaders()) == {"train", "test"}


def test_missing_test_split_raises_naming_the_splits():
    dm = Splits(splits=("train", "val"), batch_size=4)
    with pytest.raises(ValueError, match=r"Splits has no 'test' split \(testing needs it\); it has \['train', 'val'\]"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match=r"no 'test' split \(prediction reads it\)"):
        dm.predict_dataloader()


def test_fit_without_val_split_skips_validation(trainer_kwargs):
    model = Counting()
    trainer = pl.Trainer(max_epochs=2, **trainer_kwargs)
    with pytest.warns(UserWarning, match="validation is skipped"):
        trainer.fit(model, Splits(splits=("train", "test"), batch_size=4))
    assert trainer.state.finished and trainer.global_step == 4
    assert model.seen["val"] == 0  # neither the sanity check nor the epochs validated on training data


def test_fit_with_val_split_validates_on_it(trainer_kwargs):
    model = Counting()
    pl.Trainer(max_epochs=1, num_sanity_val_steps=0, **trainer_kwargs).fit(model, Splits(batch_size=4))
    assert model.seen["val"] == 1


def test_validate_and_test_without_the_split_raise(trainer_kwargs):
    trainer = pl.Trainer(**trainer_kwargs)
    with pytest.raises(ValueError, match=r"no 'val' split \(trainer.validate\(\) needs it\)"):
        trainer.validate(Counting(), Splits(splits=("train", "test"), batch_size=4))
    with pytest.raises(ValueError, match="no 'test' split"):
        trainer.test(Counting(), Splits(splits=("train", "val"), batch_size=4))
    model = Counting()
    trainer.test(model, Splits(batch_size=4))
    assert model.seen["test"] == 1


def test_build_splits_needs_train():
    with pytest.raises(ValueError, match="must return a 'train' split"):
        Splits(splits=("val",)).setup()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"eval_batch_size": -1}, "eval_batch_size must be a positive int, got -1"),
        ({"num_workers": -1}, "num_workers must be an int >= 0, got -1"),
        ({"batch_size": True}, "batch_size must be a positive int, got True"),
        ({"seed": -1}, "seed must be an int >= 0, got -1"),
        ({"drop_last": "yes"}, "drop_last must be True or False, got 'yes'"),
    ],
)
def test_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        Splits(**kw)


def test_tensor_dict_dataset_checks_lengths():
    with pytest.raises(ValueError, match="share their first dimension"):
        TensorDictDataset({"x": torch.zeros(3, 2), "y": torch.zeros(4)})
    with pytest.raises(ValueError, match="at least one entry"):
        TensorDictDataset({})
    with pytest.raises(ValueError, match=r"first \(sample\) dimension; \['y'\] are scalars"):
        TensorDictDataset({"x": torch.zeros(3, 2), "y": torch.tensor(1.0)})


def test_split_indices_are_disjoint_and_cover():
    parts = split_indices(20, (0.25, 0.25), seed=1)
    assert [len(p) for p in parts] == [5, 5, 10]
    assert sorted(int(i) for p in parts for i in p) == list(range(20))


def test_a_subclass_collate_fn_builds_every_loaders_batches():
    def count_items(items):
        batch = torch.utils.data.default_collate(items)
        batch["size"] = torch.tensor(len(items))
        return batch

    class Collated(Splits):
        collate_fn = staticmethod(count_items)

    dm = Collated(("train", "val"))
    loaders = [dm.train_dataloader(), dm.val_dataloader(), *dm.probe_dataloaders().values()]
    assert all("size" in next(iter(loader)) for loader in loaders)
    assert "size" not in next(iter(Splits(("train",)).train_dataloader()))


def test_arrays_give_a_whole_split():
    dm = Splits(batch_size=4)
    (x,) = dm.arrays("val", keys=("x",))
    assert x.shape == (4, 2) and float(x[0, 0]) == 1.0
    x, index = dm.arrays("train", keys=("x", "index"))
    assert x.shape == (8, 2) and index.tolist() == list(range(8))
    with pytest.raises(ValueError, match=r"keys \['y'\] are not in the 'train' split, which has \['index', 'x'\]"):
        dm.arrays("train")
    with pytest.raises(ValueError, match=r"no 'ood' split"):
        dm.arrays("ood", keys=("x",))
