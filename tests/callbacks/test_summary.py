import json
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks.summary import RunSummary, collect_scores, format_summary, parse_tag, summary_rows


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.net(batch[0]).pow(2).mean())
        self.log("mine/enc.0/y/val/r2", 0.5)  # a readout of the right shape logged by the module itself

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.net(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FakeReadout(Callback):
    """Keeps ``scores`` like lit_repr's readout callbacks, with some tags of other shapes."""

    def __init__(self):
        self.scores = {}

    def on_validation_epoch_end(self, trainer, pl_module):
        self.scores = {
            "probe/encoder.layers.3/digit/val/acc": 0.91,
            "probe/encoder.layers.3/digit/val/auroc": torch.tensor(0.99),
            "probe/encoder.layers.3/digit/train/acc": 0.97,
            "probe/encoder.layers.3/digit/alpha": 10.0,  # 4 parts
            "similarity/a/b/c/d/val/cka": 0.8,  # a site with slashes cannot be told apart: still parsed
            "weird": "not a number",
            "vector": torch.ones(3),
        }


def _loader():
    return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=8)


def _trainer(tmp_path, **kwargs):
    defaults = dict(
        max_epochs=1,
        logger=TensorBoardLogger(tmp_path, name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def test_parse_tag_shapes():
    assert parse_tag("probe/enc.3/energy/val/r2") == {
        "callback": "probe", "site": "enc.3", "target": "energy", "split": "val", "quantity": "r2"
    }  # fmt: skip
    assert parse_tag("a/b/c/d/e/f")["site"] == "b/c"
    for other in ("val/acc", "probe/enc/digit/alpha", "a//c/d/e", ""):
        assert parse_tag(other) is None


def test_rows_and_table_group_by_readout():
    rows = summary_rows({"p/s/t/val/mcc": 0.5, "p/s/t/val/r2": 0.25, "p/s/t/test/r2": 0.2, "x/y": 1.0})
    assert [(r["split"], list(r["scores"])) for r in rows] == [("val", ["r2", "mcc"]), ("test", ["r2"])]
    text = format_summary(rows, {"val/loss": 0.1, "p/s/t/val/r2_factor0": 0.3}, title="T")
    assert text.splitlines() == [
        "T",
        "callback  site  target  split     r2    mcc",
        "p         s     t       val    0.250  0.500",
        "p         s     t       test   0.200      -",
        "other: val/loss=0.100",
    ]
    undefined = format_summary(summary_rows({"p/s/t/val/r2": math.nan, "p/s/t/val/mse": 0.5}))
    assert undefined.splitlines()[1].split() == ["p", "s", "t", "val", "undefined", "0.500"]


def test_fit_prints_the_table_and_writes_summary_json(tmp_path, capsys):
    trainer = _trainer(tmp_path, callbacks=[FakeReadout(), RunSummary()])
    trainer.fit(Tiny(), _loader(), _loader())
    out = capsys.readouterr().out
    assert "Final readouts (fit, epoch 1, step 2)" in out
    assert "probe     encoder.layers.3  digit   val    0.910  0.990" in out
    assert "callback  site   target  split     r2\nmine      enc.0  y       val    0.500" in out  # callback_metrics
    path = tmp_path / "run" / "version_0" / "summary.json"
    assert out.rstrip().endswith(f"saved: {path}")
    fit = json.loads(path.read_text())["fit"]
    assert fit["scores"]["probe/encoder.layers.3/digit/val/auroc"] == pytest.approx(0.99)
    assert fit["scores"]["mine/enc.0/y/val/r2"] == 0.5
    assert fit["scores"]["similarity/a/b/c/d/val/cka"] == 0.8
    assert fit["other"]["probe/encoder.layers.3/digit/alpha"] == 10.0 and "val/loss" in fit["other"]
    assert "weird" not in fit["other"] and "vector" not in fit["other"]
    assert fit["global_step"] == 2 and fit["stage"] == "fit"

    trainer.validate(Tiny(), _loader())
    trainer.test(Tiny(), _loader())
    stages = json.loads(path.read_text())
    assert set(stages) == {"fit", "validate", "test"}  # one run directory keeps every stage
    assert "test/loss" in stages["test"]["other"]
    assert "Final readouts (validate" in capsys.readouterr().out


def test_without_logger_or_filename_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    summary = RunSummary(print_table=False)
    _trainer(tmp_path, logger=False, callbacks=[summary]).fit(Tiny(), _loader(), _loader())
    assert summary.path is None and summary.last["scores"] == {"mine/enc.0/y/val/r2": 0.5}
    assert not list(tmp_path.rglob("summary.json")) and capsys.readouterr().out == ""
    _trainer(tmp_path, callbacks=[RunSummary(filename=None)]).fit(Tiny(), _loader(), _loader())
    assert not list(tmp_path.rglob("summary.json"))


def test_collect_scores_prefers_the_callbacks_values(tmp_path):
    trainer = _trainer(tmp_path, callbacks=[FakeReadout()])
    trainer.fit(Tiny(), _loader(), _loader())
    readouts, other = collect_scores(trainer)
    assert readouts["probe/encoder.layers.3/digit/train/acc"] == 0.97
    assert set(other) == {"probe/encoder.layers.3/digit/alpha", "train/loss", "val/loss"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="filename must be a plain file name"):
        RunSummary(filename="a/b.json")
    with pytest.raises(ValueError, match="print_table must be True or False"):
        RunSummary(print_table="yes")
