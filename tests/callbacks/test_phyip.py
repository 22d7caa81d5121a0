"""PhyIPReport: the whole protocol on a tiny world model run, its outputs, and its checks."""

import json
import math
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from phyip_oscillators import LATENT_NAMES, OscillatorDataModule  # noqa: E402

from lit_repr.callbacks import LinearProbe, PhyIPReport  # noqa: E402
from lit_repr.models import Classifier, WorldModel  # noqa: E402
from lit_repr.phyip import METHODS  # noqa: E402


def _probe(**kw):
    return LinearProbe(sites="representation", targets={"latents": "latents"}, task="regression", mode="frozen",
                       log_figures=False, **kw)


def _model():
    return WorldModel(obs_shape=[4], hidden=[16, 16], representation_dim=8, context=4)


def _trainer(tmp_path, callbacks, epochs=2, logger=True):
    return pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path),
        logger=TensorBoardLogger(str(tmp_path), name="runs") if logger else False,
    )


def test_the_protocol_produces_every_row_and_column(tmp_path):
    pl.seed_everything(0)
    report = PhyIPReport(finetune_epochs=2, mlp_hidden=[16], mlp_epochs=2)
    trainer = _trainer(tmp_path, [_probe(), report], epochs=3)
    trainer.fit(_model(), OscillatorDataModule(num_train=128, batch_size=32))
    # one (SSL loss, rho) record per validation epoch, on every probe split
    assert [h["epoch"] for h in report.history] == [0, 1, 2]
    assert all(h["ssl_loss"] > 0 and set(h["scores"]) == {"val", "test", "ood"} for h in report.history)
    assert set(report.results) == set(METHODS)
    for method, per_split in report.results.items():
        for split in ("test", "ood"):
            assert set(per_split[split]) == set(LATENT_NAMES), (method, split)
            for q in LATENT_NAMES:
                s = per_split[split][q]
                assert set(s) == {"pearson", "r2"} and -1 <= s["pearson"] <= 1 and not math.isnan(s["r2"])
    # the frozen-linear record is the probe's own measurement, per output
    r = trainer.callback_metrics
    mean_r2 = sum(report.results["frozen_linear"]["ood"][q]["r2"] for q in LATENT_NAMES) / 3
    assert float(r["probe/representation/latents/ood/r2"]) == pytest.approx(mean_r2, abs=1e-5)
    run = Path(trainer.logger.log_dir)
    saved = json.loads((run / "phyip.json").read_text())
    assert saved["latent_names"] == LATENT_NAMES and len(saved["history"]) == 3
    assert set(saved["results"]) == set(METHODS) and "rho > 0.90" in saved["paper"]["frozen_linear"]
    assert (run / "phyip_rho_vs_loss.png").stat().st_size > 1000
    lines = report.table.splitlines()
    assert len(lines) == 1 + 3 * len(METHODS) and "energy" in report.table
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()
    assert "phyip/rho_vs_loss" in acc.Tags()["images"]
    assert "phyip/table/text_summary" in acc.Tags()["tensors"]
    assert "phyip/fine_tuned/energy/ood/pearson" in acc.Tags()["scalars"]


def test_without_adaptation_only_the_frozen_probe_is_reported(tmp_path):
    report = PhyIPReport(adaptation=False, latent_names=["E", "L", "w"], output_dir=str(tmp_path / "out"))
    _trainer(tmp_path, [_probe(), report], epochs=1, logger=False).fit(_model(), OscillatorDataModule(num_train=64))
    assert set(report.results) == {"frozen_linear"} and set(report.results["frozen_linear"]["ood"]) == {"E", "L", "w"}
    assert (tmp_path / "out" / "phyip.json").exists()


def test_history_resumes_from_the_state_dict():
    report = PhyIPReport()
    report.history = [{"epoch": 0, "ssl_loss": 1.0, "scores": {}}]
    other = PhyIPReport()
    other.load_state_dict(report.state_dict())
    assert other.history == report.history


@pytest.mark.parametrize(
    "callbacks,model,match",
    [
        (lambda: [PhyIPReport()], _model, "needs a LinearProbe named 'probe'"),
        (lambda: [_probe(name="other"), PhyIPReport()], _model, r"named \['other'\]"),
        (lambda: [LinearProbe(sites="representation", targets="latents", task="regression"), PhyIPReport()],
         _model, "mode='frozen'"),
        (lambda: [_probe(), PhyIPReport(site="encoder")], _model, "not among the probe's sites"),
        (lambda: [_probe(), PhyIPReport(target="y")], _model, "not a target of the probe"),
        (lambda: [LinearProbe(sites="backbone", targets="latents", task="regression", mode="frozen"), PhyIPReport()],
         lambda: Classifier(in_features=96, hidden=[8]), "representation_network"),
    ],
)
def test_bad_setups_raise_at_setup(tmp_path, callbacks, model, match):
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, callbacks(), logger=False).fit(model(), OscillatorDataModule(num_train=32))


def test_wrong_number_of_latent_names_raises(tmp_path):
    report = PhyIPReport(latent_names=["E"], adaptation=False)
    with pytest.raises(ValueError, match="latent_names has 1 names"):
        _trainer(tmp_path, [_probe(), report], epochs=1, logger=False).fit(_model(), OscillatorDataModule(num_train=32))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"latent_names": "energy"}, "latent_names must be a list"),
        ({"latent_names": ["a", "a"]}, "distinct"),
        ({"finetune_epochs": 0}, "finetune_epochs"),
        ({"mlp_hidden": 8}, "mlp_hidden must be a list"),
        ({"mlp_lr": -1.0}, "mlp_lr"),
        ({"adaptation": "yes"}, "adaptation must be True or False"),
        ({"monitor": ""}, "monitor must be a non-empty string"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PhyIPReport(**kwargs)
