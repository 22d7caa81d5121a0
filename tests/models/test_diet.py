import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from lit_repr.data.digits import DigitsDataModule
from lit_repr.models.classifier import Classifier
from lit_repr.models.diet import DIET, RowNormalizedLinear

pytestmark = pytest.mark.usefixtures("num_threads")


def test_targets_are_indices_and_head_is_bias_free():
    m = DIET(num_samples=50, in_features=6, hidden=[8])
    assert isinstance(m, Classifier)
    assert m.head.bias is None and m.head.weight.shape == (50, 8)
    assert m.label_smoothing == 0.8
    batch = {"x": torch.randn(3, 6), "y": torch.tensor([1, 1, 1]), "index": torch.tensor([4, 0, 49])}
    assert m.get_targets(batch).tolist() == [4, 0, 49]
    # the loss is cross-entropy against the index with label smoothing 0.8
    logits = m(batch["x"])
    expected = F.cross_entropy(logits, batch["index"], label_smoothing=0.8)
    assert torch.allclose(m.loss_fn(logits, m.get_targets(batch)), expected)
    # other target specs work, e.g. tuples (x, index)
    m2 = DIET(num_samples=5, in_features=2, hidden=[4], target_key=1)
    assert m2.get_targets((torch.zeros(2, 2), torch.tensor([3, 4]))).tolist() == [3, 4]


def test_normalized_head():
    m = DIET(num_samples=20, in_features=4, hidden=[8], normalize_head=True)
    assert isinstance(m.head, RowNormalizedLinear) and m.head.bias is None
    with torch.no_grad():
        m.head.weight.mul_(torch.rand(20, 1) * 10 + 0.1)
    assert torch.allclose(m.head_rows.norm(dim=1), torch.ones(20), atol=1e-5)
    x = torch.randn(3, 4)
    f = m.features(x)
    assert torch.allclose(m(x), f @ F.normalize(m.head.weight, dim=1).T, atol=1e-5)


def test_bad_indices_raise_clearly():
    m = DIET(num_samples=10, in_features=4, hidden=[8])
    with pytest.raises(ValueError, match="num_samples=10"):
        m.get_targets({"x": torch.zeros(2, 4), "index": torch.tensor([3, 10])})
    with pytest.raises(ValueError, match="integer"):
        m.get_targets({"x": torch.zeros(2, 4), "index": torch.tensor([0.0, 1.0])})
    with pytest.raises(KeyError, match="index"):
        m.get_targets({"x": torch.zeros(2, 4)})


@pytest.mark.parametrize(
    "kw,match",
    [({"num_samples": 1}, "num_samples"), ({"num_samples": 3.5}, "num_samples"),
     ({"label_smoothing": 1.0}, "label_smoothing"), ({"normalize_head": "yes"}, "normalize_head"),
     ({"target_key": None}, "target_key")],
)
def test_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        DIET(**{"num_samples": 10, "in_features": 4, **kw})


def test_trains_on_digits_and_features_carry_class_information(trainer_kwargs, tmp_path):
    pl.seed_everything(0)
    dm = DigitsDataModule(batch_size=128)
    dm.setup("fit")
    n = len(dm.datasets["train"])
    model = DIET(num_samples=n, in_features=64, hidden=[128, 64], lr=3e-3, weight_decay=0.0)
    trainer = pl.Trainer(max_epochs=15, **{**trainer_kwargs, "enable_checkpointing": True})
    trainer.fit(model, dm)
    assert trainer.callback_metrics["train/acc"] > 0.3  # it learns to tell instances apart
    assert "val/feature_rank" in trainer.callback_metrics and "val/acc" not in trainer.callback_metrics
    val = trainer.validate(model, dm, verbose=False)[0]
    assert val["val/feature_rank"] > 2
    # a nearest-class-mean readout of the (never label-supervised) features beats chance by far
    model.eval()
    with torch.no_grad():
        tr, te = dm.datasets["train"].tensors, dm.datasets["test"].tensors
        f_tr, f_te = F.normalize(model.features(tr["x"]), dim=1), F.normalize(model.features(te["x"]), dim=1)
    means = torch.stack([f_tr[tr["y"] == c].mean(0) for c in range(10)])
    acc = ((f_te @ means.T).argmax(1) == te["y"]).float().mean().item()
    assert acc > 0.7
    preds = trainer.predict(model, dm)
    assert preds[0].shape[1] == 64
    # checkpoints rebuild a DIET with the same arguments
    ckpt = tmp_path / "diet.ckpt"
    trainer.save_checkpoint(ckpt)
    again = DIET.load_from_checkpoint(ckpt)
    assert again.num_samples == n and again.head.bias is None
    assert torch.equal(again.head.weight, model.head.weight)


def test_num_samples_from_the_datamodule(trainer_kwargs, tmp_path):
    dm = DigitsDataModule(batch_size=256)
    model = DIET(in_features=64, hidden=[16])
    with pytest.raises(RuntimeError, match="setup"):
        model(torch.zeros(2, 64))
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, **trainer_kwargs)
    trainer.fit(model, dm)
    n = len(dm.datasets["train"])
    assert model.num_samples == n and model.head.weight.shape == (n, 16) and model.head.bias is None
    ckpt = tmp_path / "lazy.ckpt"
    trainer.save_checkpoint(ckpt)
    again = DIET.load_from_checkpoint(ckpt)
    assert again.num_samples == n and torch.equal(again.head.weight, model.head.weight)
    # a head smaller than the training set is a clear error before training starts
    small = DIET(num_samples=10, in_features=64, hidden=[16])
    with pytest.raises(ValueError, match=f"set num_samples={n}"):
        pl.Trainer(max_epochs=1, **trainer_kwargs).fit(small, DigitsDataModule(batch_size=256))


def test_row_normalized_linear_bad_args():
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0"):
        RowNormalizedLinear(4, 3, eps=0)
    with pytest.raises(ValueError, match="out_features must be a positive int, got 0"):
        RowNormalizedLinear(4, 0)
