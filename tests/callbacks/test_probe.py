import io
import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from sklearn.linear_model import RidgeCV
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import LinearProbe
from lit_repr.data import DigitsDataModule
from lit_repr.metrics.ridge import DEFAULT_ALPHAS
from lit_repr.models import Classifier


def _fit(probe, trainer_kwargs, epochs=2, model=None, dm=None, **kw):
    pl.seed_everything(0)
    model = model or Classifier(in_features=64, hidden=[32, 32], batch_norm=True)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[probe], **{**trainer_kwargs, **kw})
    trainer.fit(model, dm or DigitsDataModule(batch_size=64))
    return trainer, model


def test_online_probe_logs_and_does_no_second_forward(trainer_kwargs):
    calls = {"n": 0}
    probe = LinearProbe(["backbone.0", "backbone.1"], targets={"digit": "y"})
    model = Classifier(in_features=64, hidden=[32, 32])
    model.backbone.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    trainer, _ = _fit(probe, trainer_kwargs, model=model, num_sanity_val_steps=0)
    m = trainer.callback_metrics
    assert m["probe/backbone.1/digit/val/acc"] > 0.75
    assert 0 < m["probe/backbone.1/digit/val/auroc"] <= 1
    assert "probe/backbone.0/digit/train/alpha" in m
    # one forward per training batch and per validation batch: no extra pass
    n_train, n_val = len(trainer.train_dataloader), len(trainer.val_dataloaders)
    assert calls["n"] == 2 * (n_train + n_val)


def test_frozen_probe_all_splits_and_batchnorm_untouched(trainer_kwargs):
    probe = LinearProbe(
        ["backbone.1"],
        targets={"digit": "y", "ink": lambda b: b["x"].sum(1)},
        task={"digit": "classification", "ink": "regression"},
        mode="frozen",
    )
    trainer, model = _fit(probe, trainer_kwargs, epochs=1)
    m = trainer.callback_metrics
    for split in ("val", "test"):
        assert m[f"probe/backbone.1/digit/{split}/acc"] > 0.7
        assert m[f"probe/backbone.1/ink/{split}/r2"] > 0.3
    # frozen probing must not move BatchNorm statistics nor leave the model in eval mode
    bn = model.backbone[0][1]
    before = bn.running_mean.clone()
    model.train()
    probe.probe_frozen(trainer, model)
    torch.testing.assert_close(bn.running_mean, before)
    assert model.training and bn.training


def test_frozen_probe_equals_sklearn_on_same_features(trainer_kwargs):
    probe = LinearProbe("backbone.0", targets={"ink": lambda b: b["x"][:, 30]}, task="regression", mode="frozen")
    trainer, model = _fit(probe, trainer_kwargs, epochs=1)
    dm = trainer.datamodule
    model.eval()
    with torch.no_grad():
        feats = {s: model.backbone[0](dm.datasets[s].tensors["x"]).numpy() for s in ("train", "val")}
    y = {s: dm.datasets[s].tensors["x"][:, 30].numpy() for s in ("train", "val")}
    sk = RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode="eigen").fit(feats["train"], y["train"])
    r = probe.readout("backbone.0", "ink")
    assert r.alpha == pytest.approx(sk.alpha_)
    r2 = trainer.callback_metrics["probe/backbone.0/ink/val/r2"]
    assert abs(float(r2) - sk.score(feats["val"], y["val"])) < 1e-3


class PlainModule(pl.LightningModule):
    """A LightningModule with no lit_repr base class, trained on (x, y) tuples."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.encoder(x))

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _tuple_loaders():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    return (
        DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True),
        DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=128),
    )


@pytest.mark.parametrize("mode", ["online", "frozen"])
def test_foreign_module_and_tuple_batches(trainer_kwargs, mode):
    train, val = _tuple_loaders()
    probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, mode=mode, input_key=0)
    trainer = pl.Trainer(max_epochs=2, callbacks=[probe], **trainer_kwargs)
    trainer.fit(PlainModule(), train, val)
    assert trainer.callback_metrics["probe/encoder/digit/val/acc"] > 0.75


def test_bad_inputs(trainer_kwargs):
    with pytest.raises(ValueError, match="closest valid names"):
        _fit(LinearProbe("backbone.7"), trainer_kwargs, epochs=1)
    with pytest.raises(
        KeyError, match=r"'latents' is not a key of the batch; the batch has keys \['index', 'x', 'y'\]"
    ):
        _fit(LinearProbe("backbone.0", targets={"z": "latents"}, task="regression"), trainer_kwargs, epochs=1)
    with pytest.raises(ValueError, match="num_classes"):
        train, val = _tuple_loaders()
        pl.Trainer(
            max_epochs=1, callbacks=[LinearProbe("encoder", targets={"d": 1}, input_key=0)], **trainer_kwargs
        ).fit(PlainModule(), train, val)
    with pytest.raises(ValueError, match=r"target 'digit' must hold class indices|class indices"):
        _fit(LinearProbe("backbone.0", targets={"digit": "x"}), trainer_kwargs, epochs=1)
    with pytest.raises(ValueError, match="mode must be"):
        LinearProbe("a", mode="offline")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task for target"):
        LinearProbe("a", task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alphas"):
        LinearProbe("a", alphas=[])


def test_nan_features_raise_clearly(trainer_kwargs):
    class Diverging(nn.Module):
        def forward(self, h):
            return h if self.training else h * float("nan")

    class NaNModel(Classifier):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.bad = Diverging()

        def forward(self, x):
            return self.head(torch.nan_to_num(self.bad(self.backbone(x))))

    probe = LinearProbe("bad", mode="frozen")
    with pytest.raises(ValueError, match="NaN"):
        _fit(probe, trainer_kwargs, model=NaNModel(in_features=64, hidden=[8]), epochs=1)


def test_checkpoint_resume_identical(tmp_path, trainer_kwargs):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(epochs, ckpt=None, save=False):
        pl.seed_everything(0)
        probe = LinearProbe(
            ["backbone.0"],
            targets={"digit": "y", "ink": lambda b: b["x"].sum(1)},
            task={"digit": "classification", "ink": "regression"},
        )
        cbs = [probe]
        kw = dict(trainer_kwargs)
        if save:
            cbs.append(ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0))
            kw["enable_checkpointing"] = True
        trainer = pl.Trainer(max_epochs=epochs, callbacks=cbs, **kw)
        trainer.fit(Classifier(in_features=64, hidden=[16]), DigitsDataModule(batch_size=64), ckpt_path=ckpt)
        return probe, trainer

    straight, t_straight = run(3)
    run(2, save=True)
    resumed, t_resumed = run(3, ckpt=str(tmp_path / "last.ckpt"))
    for key in ("digit", "ink"):
        a, b = straight.readout("backbone.0", key), resumed.readout("backbone.0", key)
        torch.testing.assert_close(a.weight, b.weight)
        torch.testing.assert_close(a.bias, b.bias)
    torch.testing.assert_close(
        t_straight.callback_metrics["probe/backbone.0/ink/val/r2"],
        t_resumed.callback_metrics["probe/backbone.0/ink/val/r2"],
    )
    # the checkpoint alone restores the fitted probe (state keyed per configuration)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    key = next(k for k in ckpt["callbacks"] if k.startswith("LinearProbe"))
    fresh = LinearProbe(
        ["backbone.0"],
        targets={"digit": "y", "ink": lambda b: b["x"].sum(1)},
        task={"digit": "classification", "ink": "regression"},
    )
    fresh.load_state_dict(ckpt["callbacks"][key])
    assert fresh.readout("backbone.0", "digit").fitted
    saved = next(e for e in ckpt["callbacks"][key]["readouts"] if e["target"] == "digit")
    assert int(fresh.readout("backbone.0", "digit").stats.n) == int(saved["state"]["stats.n"])
    # a changed configuration on resume warns and names what it drops
    other = LinearProbe(["backbone.0"], targets={"digit": "y"}, task="classification")
    with pytest.warns(UserWarning, match=r"dropped: \['backbone.0/ink'\]"):
        other.load_state_dict(ckpt["callbacks"][key])
    assert other.readout("backbone.0", "digit").fitted


def test_logistic_and_high_dimensional_projection(trainer_kwargs):
    probe = LinearProbe("backbone.0", classifier="logistic", mode="frozen")
    trainer, _ = _fit(probe, trainer_kwargs, epochs=1)
    assert trainer.callback_metrics["probe/backbone.0/y/val/acc"] > 0.8
    probe = LinearProbe("backbone.0", projection_dim=16, mode="frozen")
    trainer, _ = _fit(probe, trainer_kwargs, epochs=1, model=Classifier(in_features=64, hidden=[512]))
    assert probe.readout("backbone.0", "y").weight.shape == (512, 10)
    assert trainer.callback_metrics["probe/backbone.0/y/val/acc"] > 0.7


def test_figure_logged_to_tensorboard(tmp_path, trainer_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    probe = LinearProbe("backbone.0", targets={"ink": lambda b: b["x"].sum(1)}, task="regression", mode="frozen")
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    _fit(probe, {**trainer_kwargs, "logger": logger}, epochs=1)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert any(t.endswith("pred_vs_true") for t in acc.Tags()["images"])
    assert "probe/backbone.0/ink/val/r2" in acc.Tags()["scalars"]


def test_heldout_selection_frozen(trainer_kwargs):
    probe = LinearProbe(
        "backbone.0",
        targets={"ink": lambda b: b["x"][:, 30]},
        task="regression",
        mode="frozen",
        selection="heldout",
        heldout_split="val",
    )
    trainer, model = _fit(probe, trainer_kwargs, epochs=1)
    r = probe.readout("backbone.0", "ink")
    scores = r.stats.alphas.numel()
    assert scores == len(DEFAULT_ALPHAS) and r.alpha in DEFAULT_ALPHAS
    assert trainer.callback_metrics["probe/backbone.0/ink/test/r2"] > 0.3
    with pytest.raises(ValueError, match="needs mode='frozen'"):
        LinearProbe("a", selection="heldout")


class _Offset(nn.Module):
    def forward(self, h):
        return h + 1e5


class OffsetSite(Classifier):
    """A classifier with a probed site whose output is its hidden features plus 1e5 (a large constant
    direction, as residual streams have)."""

    def __init__(self):
        super().__init__(in_features=64, hidden=[32])
        self.site = _Offset()

    def forward(self, x):
        out = super().forward(x)
        self.site(self.backbone(x))
        return out


def test_probe_accuracy_on_features_with_a_large_constant_equals_sklearn(trainer_kwargs):
    from sklearn.linear_model import RidgeClassifierCV

    probe = LinearProbe("site", targets={"digit": "y"}, mode="frozen")
    trainer, model = _fit(probe, trainer_kwargs, epochs=1, model=OffsetSite())
    dm = trainer.datamodule
    model.eval()
    with torch.no_grad():
        feats = {s: model.site(model.backbone(dm.datasets[s].tensors["x"])).double().numpy() for s in ("train", "val")}
    y = {s: dm.datasets[s].tensors["y"].numpy() for s in ("train", "val")}
    sk = RidgeClassifierCV(alphas=DEFAULT_ALPHAS).fit(feats["train"], y["train"])
    acc = float(trainer.callback_metrics["probe/site/digit/val/acc"])
    assert acc == pytest.approx(sk.score(feats["val"], y["val"]), abs=0.01)
    assert acc > 0.8


# ---------------------------------------------------------------------- undefined scores, reuse, test, errors
def _digits_tensors():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


def _ink(b):
    return b[0].sum(1)


@pytest.mark.parametrize("case", ["one_sample_regression", "single_class_auroc", "empty_probe_loader"])
def test_undefined_scores_are_nan_with_one_named_warning_and_training_continues(case, tmp_path, trainer_kwargs):
    from lightning.pytorch.loggers import CSVLogger

    from lit_repr.callbacks import RunSummary

    x, y = _digits_tensors()
    train = DataLoader(TensorDataset(x[:1000], y[:1000]), batch_size=100)
    if case == "one_sample_regression":  # online: the validation split has one sample
        probe = LinearProbe("encoder", targets={"ink": _ink}, task="regression", mode="online", input_key=0)
        val, quantity = DataLoader(TensorDataset(x[1000:1001], y[1000:1001]), batch_size=1), "r2"
    elif case == "single_class_auroc":  # online: every validation sample is a 3
        threes = (y[1000:] == 3).nonzero()[:, 0] + 1000
        probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, mode="online", input_key=0)
        val, quantity = DataLoader(TensorDataset(x[threes], y[threes]), batch_size=50), "auroc"
    else:  # frozen: the probe loader of the evaluation split is empty
        empty = DataLoader(TensorDataset(x[:0], y[:0]), batch_size=50)
        probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, mode="frozen", input_key=0,
                            probe_loaders={"train": train, "val": empty})
        val, quantity = DataLoader(TensorDataset(x[1000:1100], y[1000:1100]), batch_size=50), "acc"
    summary = RunSummary(stream=io.StringIO())
    kw = {**trainer_kwargs, "logger": CSVLogger(tmp_path), "num_sanity_val_steps": 0}
    trainer = pl.Trainer(max_epochs=2, callbacks=[probe, summary], **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(PlainModule(), train, val)
    assert trainer.current_epoch == 2 and trainer.global_step == 20  # training ran to the end
    target = next(iter(probe.targets))
    tag = f"probe/encoder/{target}/val/{quantity}"
    assert math.isnan(float(trainer.callback_metrics[tag])) and math.isnan(probe.scores[tag])
    undefined = [str(w.message) for w in caught if "undefined" in str(w.message)]
    assert len(undefined) == 1, undefined
    for part in ("probe", "site 'encoder'", f"target {target!r}", "split 'val'", "NaN"):
        assert part in undefined[0], (part, undefined[0])
    row = next(r for r in summary.last["rows"] if r["split"] == "val")
    assert math.isnan(row["scores"][quantity])
    assert "undefined" in summary.stream.getvalue()  # the printed table


class Widths(pl.LightningModule):
    """An encoder of a chosen width on (x, y) tuples."""

    def __init__(self, width):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, width), nn.ReLU())
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        return self.out(self.encoder(x))

    def training_step(self, batch, i):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, i):
        self(batch[0])

    def test_step(self, batch, i):
        self(batch[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@pytest.mark.parametrize("mode", ["online", "frozen"])
def test_reused_callback_on_a_model_of_another_width(mode, trainer_kwargs):
    train, val = _tuple_loaders()
    probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, mode=mode, input_key=0)
    for width in (32, 16):
        pl.seed_everything(0)
        trainer = pl.Trainer(max_epochs=1, callbacks=[probe], **trainer_kwargs)
        trainer.fit(Widths(width), train, val)
        assert probe.readout("encoder", "digit").weight.shape == (width, 10)
        assert trainer.callback_metrics["probe/encoder/digit/val/acc"] > 0.5  # chance: 0.1


@pytest.mark.parametrize("mode", ["online", "frozen"])
def test_trainer_test_scores_the_test_split(mode, trainer_kwargs):
    x, y = _digits_tensors()
    train = DataLoader(TensorDataset(x[:1200], y[:1200]), batch_size=64)
    val = DataLoader(TensorDataset(x[1200:1500], y[1200:1500]), batch_size=128)
    test = DataLoader(TensorDataset(x[1500:], y[1500:]), batch_size=128)
    pl.seed_everything(0)
    probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, mode=mode, input_key=0,
                        probe_loaders={"train": train, "val": val} if mode == "frozen" else None)
    model = Widths(32)
    trainer = pl.Trainer(max_epochs=2, callbacks=[probe], **trainer_kwargs)
    trainer.fit(model, train, val)
    trainer.test(model, test, verbose=False)
    tag = "probe/encoder/digit/test/acc"
    assert tag in trainer.callback_metrics and tag in probe.scores
    # the logged value is the fitted probe's accuracy on the test features (online: the readout fitted on
    # training; frozen: fitted on the train loader at the end of the model's training)
    readout = probe.readout("encoder", "digit")
    with torch.no_grad():
        feats = model.encoder(x[1500:])
    expected = (readout.predict(feats).argmax(1) == y[1500:]).double().mean()
    assert float(trainer.callback_metrics[tag]) == pytest.approx(float(expected), abs=1e-6)
    assert float(expected) > 0.7


def test_zero_dim_site_output_names_the_site(trainer_kwargs):
    class Scalar(nn.Module):
        def forward(self, h):
            return h.mean()

    class WithScalar(Widths):
        def __init__(self):
            super().__init__(16)
            self.summary = Scalar()

        def forward(self, x):
            h = self.encoder(x)
            self.summary(h)
            return self.out(h)

    train, val = _tuple_loaders()
    trainer = pl.Trainer(max_epochs=1, callbacks=[
        LinearProbe("summary", targets={"digit": 1}, num_classes=10, input_key=0)], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"site 'summary' produced a 0-d tensor"):
        trainer.fit(WithScalar(), train, val)


def test_target_errors_name_the_target(trainer_kwargs):
    with pytest.raises(ValueError, match=r"classification target 'pixels' must hold"):
        _fit(LinearProbe("backbone.0", targets={"pixels": "x"}), trainer_kwargs, epochs=1)
    with pytest.raises(ValueError, match=r"class indices.*target 'digit'|target 'digit' has class indices"):
        _fit(LinearProbe("backbone.0", targets={"digit": "y"}, num_classes=5), trainer_kwargs, epochs=1)


def _parity(b):
    return b[1] % 2


def test_resume_with_a_redefined_target_starts_that_readout_fresh(tmp_path, trainer_kwargs):
    from lightning.pytorch.callbacks import ModelCheckpoint

    train, val = _tuple_loaders()

    def run(epochs, probe, ckpt=None):
        pl.seed_everything(0)
        cbs = [probe] + ([] if ckpt else [ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)])
        trainer = pl.Trainer(max_epochs=epochs, callbacks=cbs, **{**trainer_kwargs, "enable_checkpointing": not ckpt})
        trainer.fit(Widths(32), train, val, ckpt_path=ckpt)
        return trainer

    run(2, LinearProbe("encoder", targets={"digit": 1}, num_classes=10, input_key=0))
    ckpt = str(tmp_path / "last.ckpt")
    with pytest.warns(UserWarning, match=r"target 'digit' were made for another configuration") as caught:
        resumed = run(3, LinearProbe("encoder", targets={"digit": _parity}, num_classes=2, input_key=0), ckpt)
    message = next(str(w.message) for w in caught if "another configuration" in str(w.message))
    assert "num_classes 10 -> 2" in message and "target '1' -> '_parity#" in message
    # the same resume with a probe the checkpoint knows nothing of: the fresh readout
    fresh = run(3, LinearProbe("encoder", targets={"digit": _parity}, num_classes=2, input_key=0, name="fresh"), ckpt)
    auroc = float(resumed.callback_metrics["probe/encoder/digit/val/auroc"])
    assert auroc == pytest.approx(float(fresh.callback_metrics["fresh/encoder/digit/val/auroc"]), abs=1e-9)
    assert auroc > 0.9
    # a changed task is named as such
    other = LinearProbe("encoder", targets={"digit": 1}, task="regression", input_key=0)
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    key = next(k for k in state if k.startswith("LinearProbe"))
    with pytest.warns(UserWarning, match=r"task 'classification' -> 'regression'"):
        other.load_state_dict(state[key])
    assert not other.readouts


def test_restored_readouts_of_another_feature_width_start_fresh(trainer_kwargs):
    train, val = _tuple_loaders()
    old = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, input_key=0)
    pl.Trainer(max_epochs=1, callbacks=[old], **trainer_kwargs).fit(Widths(32), train, val)
    probe = LinearProbe("encoder", targets={"digit": 1}, num_classes=10, input_key=0)
    probe.load_state_dict(old.state_dict())
    assert probe.readout("encoder", "digit").weight.shape == (32, 10)
    changed = r"target 'digit' were made for another configuration \(feature width 32 -> 16"
    with pytest.warns(UserWarning, match=changed):
        pl.Trainer(max_epochs=1, callbacks=[probe], **trainer_kwargs).fit(Widths(16), train, val)
    assert probe.readout("encoder", "digit").weight.shape == (16, 10)


def test_scores_reach_callback_metrics_loggers_checkpoints_and_validate_results(tmp_path, trainer_kwargs):
    # while fitting the scores bypass LightningModule.log (its bookkeeping costs ~0.2 ms per value):
    # they must still reach callback_metrics, logged_metrics, the loggers (with step and epoch) and the
    # checkpoint monitor; trainer.validate returns them in its results
    import csv

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    tag = "probe/backbone.1/digit/val/acc"
    probe = LinearProbe(["backbone.1"], targets={"digit": "y"})
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=tag, mode="max", save_top_k=1)
    kw = {**trainer_kwargs, "logger": CSVLogger(tmp_path), "enable_checkpointing": True, "num_sanity_val_steps": 2}
    pl.seed_everything(0)
    model = Classifier(in_features=64, hidden=[32, 32])
    dm = DigitsDataModule(batch_size=64)
    trainer = pl.Trainer(max_epochs=2, callbacks=[probe, ckpt], **kw)
    trainer.fit(model, dm)
    assert trainer.callback_metrics[tag].dtype == torch.float32
    assert float(trainer.callback_metrics[tag]) == pytest.approx(probe.scores[tag])
    assert float(trainer.logged_metrics[tag]) == pytest.approx(probe.scores[tag])
    assert float(ckpt.best_model_score) == pytest.approx(max(r for r in _csv_column(tmp_path, tag)))
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get(tag)]
    own = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("val/acc")]
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in own]  # as the module's own
    assert [r["epoch"] for r in rows] == ["0", "1"]
    results = trainer.validate(model, dm, verbose=False)
    assert tag in results[0] and 0.5 < results[0][tag] <= 1


def _csv_column(root, tag):
    import csv

    return [float(r[tag]) for r in csv.DictReader(open(next(root.rglob("metrics.csv")))) if r.get(tag)]


def test_the_last_training_batch_of_an_epoch_accumulates_every_buffered_row(trainer_kwargs):
    # the rows held back for larger blocks reach the statistics in the last training step of the epoch,
    # so the validation only solves; the fit is the same as with a flush at validation
    seen = []

    class Look(pl.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            r = probe.readout("backbone.1", "digit")
            seen.append((r._fit_rows, int(r.stats.n), r.buffer_rows))

    probe = LinearProbe(["backbone.1"], targets={"digit": "y"})
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=2, callbacks=[Look(), probe], num_sanity_val_steps=0, **trainer_kwargs)
    trainer.fit(Classifier(in_features=64, hidden=[32, 32]), DigitsDataModule(batch_size=64))
    rows = len(trainer.train_dataloader.dataset)
    assert rows % seen[0][2] != 0  # a partial block is left at the end of each epoch
    assert [s[:2] for s in seen] == [(0, rows), (0, rows)]
