import lightning.pytorch as pl
import pytest
import torch

from lit_repr.data import DigitsDataModule
from lit_repr.models import Classifier
from lit_repr.taps import Tap


def test_digits_reaches_90_percent(trainer_kwargs):
    pl.seed_everything(0)
    model = Classifier(num_classes=10, in_features=64, hidden=[64], lr=3e-3)
    trainer = pl.Trainer(max_epochs=8, **trainer_kwargs)
    dm = DigitsDataModule(batch_size=64)
    trainer.fit(model, dm)
    val = trainer.validate(model, dm, verbose=False)[0]
    assert val["val/acc"] > 0.9
    assert val["val/auroc"] > 0.98


def test_timm_backbone_and_sites():
    pytest.importorskip("timm")
    model = Classifier(num_classes=10, backbone="resnet10t", in_channels=3)
    x = torch.randn(2, 3, 16, 16)
    with Tap(model, ["backbone.layer1", "backbone", "head"], reduction="mean") as tap:
        out = model(x)
        f = tap.read()
    assert out.shape == (2, 10) and f["head"].shape == (2, 10)
    assert f["backbone"].shape == (2, model.backbone.num_features)


def test_label_smoothing_and_multilabel():
    m = Classifier(num_classes=3, in_features=4, hidden=[5], task="multilabel", label_smoothing=0.1)
    loss = m.loss_fn(torch.zeros(2, 3), torch.tensor([[1, 0, 1], [0, 0, 1]]))
    assert torch.isfinite(loss)
    m2 = Classifier(num_classes=3, in_features=4, hidden=[5], label_smoothing=0.2)
    l_s = m2.loss_fn(torch.tensor([[10.0, 0, 0]]), torch.tensor([0]))
    l_0 = torch.nn.functional.cross_entropy(torch.tensor([[10.0, 0, 0]]), torch.tensor([0]))
    assert l_s > l_0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"backbone": "resnet_does_not_exist"}, "timm"),
        ({"hidden": []}, "hidden"),
        ({"lr": 0}, "lr"),
    ],
)
def test_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        Classifier(**{"in_features": 4, **kw})


def test_nan_input_raises():
    m = Classifier(num_classes=3, in_features=4, hidden=[5])
    with pytest.raises(ValueError, match="non-finite"):
        m.training_step({"x": torch.full((2, 4), float("nan")), "y": torch.tensor([0, 1])}, 0)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
        ({"num_classes": 0, "task": "multilabel"}, "num_classes must be a positive int, got 0"),
        ({"task": "binary"}, r"task must be one of \('multiclass', 'multilabel'\), got 'binary'"),
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0, got -0.0001"),
        ({"max_epochs_hint": 0}, "max_epochs_hint must be a positive int, got 0"),
        ({"head_bias": None}, "head_bias must be True or False, got None"),
        ({"backbone": 3}, "backbone must be 'mlp' or a timm model name, got 3"),
        ({"backbone": "resnet10t", "in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"in_features": None}, "backbone='mlp' needs in_features"),
        ({"hidden": 32}, "hidden must be a non-empty list of positive ints, got 32"),
        ({"activation": "swish"}, r"activation must be one of \('relu', .*\), got 'swish'"),
        ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ],
)
def test_bad_args_name_argument_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        Classifier(**{"in_features": 4, **kw})
