"""InterventionReport logs the effects of configured interventions and a patching heat map."""

import lightning.pytorch as pl
import pytest
import torch

from lit_repr.callbacks import LinearProbe
from lit_repr.data import DigitsDataModule
from lit_repr.interventions import (
    InterventionReport,
    MeanAblation,
    PatchingSweep,
    Steering,
    ZeroAblation,
)
from lit_repr.interventions.effects import LossChange
from lit_repr.models import Classifier


def test_effects_match_a_hand_computation_and_the_heat_map_is_logged(tmp_path, trainer_kwargs):
    from lightning.pytorch.loggers import TensorBoardLogger

    pl.seed_everything(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    reference = dm.datasets["train"].tensors["x"][:200]
    report = InterventionReport(
        {"zero": {"backbone.0": ZeroAblation()}, "mean": {"backbone.0.0": MeanAblation(reference)},
         "steer": {"backbone": Steering(torch.ones(16), scale=2.0)}},
        eval_splits=["val"],
        patching=PatchingSweep(["backbone.0.0", "backbone.0.1"], corrupt=lambda b: {**b, "x": b["x"].flip(0)},
                               axis="unit", index=range(4)),
    )
    model = Classifier(in_features=64, hidden=[16], lr=1e-2)
    kw = {**trainer_kwargs, "logger": TensorBoardLogger(str(tmp_path), name="run")}
    trainer = pl.Trainer(max_epochs=2, callbacks=[report], **kw)
    trainer.fit(model, dm)
    # the logged loss change of the zero ablation, by hand over the validation split
    val = next(iter(torch.utils.data.DataLoader(dm.val_dataloader().dataset, batch_size=10_000)))
    hand = LossChange(seed=0)
    with torch.no_grad():
        model.eval()
        clean = model(val["x"])
        edited = model.head(model.backbone[0][1](torch.zeros_like(model.backbone[0][0](val["x"]))))
    hand.update(clean, edited, val["y"])
    e = hand.compute()
    tag = "interventions/zero/y/val/loss_change"
    assert report.scores[tag] == pytest.approx(e.value, abs=1e-9)
    assert report.scores[tag + "_ci_low"] < report.scores[tag] < report.scores[tag + "_ci_high"]
    assert {k.split("/")[1] for k in report.scores} == {"zero", "mean", "steer"}
    assert {(e.method, e.rung) for e in report.evidence} == {("zero ablation", 2), ("mean ablation", 2),
                                                             ("steering", 2)}
    assert report.patching_result.patched.shape == (2, 4)
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "run").glob("version_*"))))
    acc.Reload()
    assert "interventions/patching/val/heatmap" in acc.Tags()["images"]
    assert not any(m._forward_hooks for m in model.modules())


def test_alongside_a_probe_and_in_validate(trainer_kwargs):
    pl.seed_everything(0)
    probe = LinearProbe("backbone.0", mode="frozen")
    report = InterventionReport({"zero": {"backbone.0": ZeroAblation()}}, quantities=["accuracy"])
    trainer = pl.Trainer(callbacks=[probe, report], **trainer_kwargs)
    trainer.validate(Classifier(in_features=64, hidden=[16]), DigitsDataModule(), verbose=False)
    assert "interventions/zero/y/val/accuracy_change" in report.scores
    assert any(k.startswith("probe/backbone.0/") for k in probe.scores)


def test_bad_input(trainer_kwargs):
    with pytest.raises(ValueError, match="must be an Edit"):
        InterventionReport({"zero": {"backbone.0": "zero"}})
    with pytest.raises(ValueError, match="non-empty"):
        InterventionReport({})
    with pytest.raises(ValueError, match="quantities must be"):
        InterventionReport({"z": {"backbone.0": ZeroAblation()}}, quantities=["kl"])
    with pytest.raises(ValueError, match="without '/'"):
        InterventionReport({"a/b": {"backbone.0": ZeroAblation()}})
    report = InterventionReport({"z": {"backbone.9": ZeroAblation()}})
    trainer = pl.Trainer(max_epochs=1, callbacks=[report], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"site 'backbone.9' matches no submodule.*closest valid names"):
        trainer.fit(Classifier(in_features=64, hidden=[16]), DigitsDataModule())
