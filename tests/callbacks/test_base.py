"""The readout contract as TapCallback drives it: a new readout in a few lines (exact under DDP,
resumable), metrics logged are the exported Metrics, callbacks never change the run, early errors."""

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import IdentifiabilityMetrics, LinearProbe, RepresentationSimilarity
from lit_repr.data import DigitsDataModule, LatentVariableDataModule
from lit_repr.models import Classifier

sys.path.insert(0, str(Path(__file__).parent))
from readout_examples import NormMonitor  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_base_script.py")


def test_new_readout_exact_under_ddp(run_ddp_script):
    one, two = run_ddp_script(SCRIPT, 1), run_ddp_script(SCRIPT, 2)
    assert set(one) == set(two)
    expected = {"online/backbone.0/val/mean_norm", "online/backbone/val/mean_norm", "frozen/backbone.0/val/mean_norm"}
    assert expected <= set(one)
    for k, v in one.items():  # float32 features of batches of another size: rounding-level differences
        assert two[k] == pytest.approx(v, rel=1e-6), k


def test_new_readout_resumes_through_the_base(tmp_path, trainer_kwargs):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(epochs, ckpt=None, save=False):
        pl.seed_everything(0)
        monitor = NormMonitor(["backbone.0"], mode="online", name="norm")
        cbs = [monitor] + ([ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)] if save else [])
        kw = {**trainer_kwargs, "enable_checkpointing": save}
        trainer = pl.Trainer(max_epochs=epochs, callbacks=cbs, **kw)
        trainer.fit(Classifier(in_features=64, hidden=[16]), DigitsDataModule(batch_size=64), ckpt_path=ckpt)
        return monitor

    straight = run(3)
    saved = run(2, save=True)
    resumed = run(3, ckpt=str(tmp_path / "last.ckpt"))
    assert resumed.scores == pytest.approx(straight.scores, rel=1e-12)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    fresh = NormMonitor(["backbone.0"], mode="online", name="norm")
    fresh.load_state_dict(ckpt["callbacks"][saved.state_key])
    a, b = saved.readout("backbone.0", None, "mean_norm"), fresh.readout("backbone.0", None, "mean_norm")
    assert torch.equal(a.splits["val"].total, b.splits["val"].total)


def test_sentinel_metric_is_what_is_logged(monkeypatch, trainer_kwargs):
    import lit_repr.callbacks.identifiability as ident_module
    from lit_repr.metrics import LinearIdentifiability

    class Sentinel(LinearIdentifiability):
        def compute(self, split="eval"):
            return {} if split == "fit" else {"r2": torch.tensor(0.123456)}

    class SentinelCKA(ident_module.LinearCKA):
        def compute(self):
            return torch.tensor(0.654321)

    monkeypatch.setattr(ident_module, "LinearIdentifiability", Sentinel)
    monkeypatch.setattr(ident_module, "LinearCKA", SentinelCKA)
    ident = IdentifiabilityMetrics("backbone", metrics=["linear_r2"])
    sim = RepresentationSimilarity("backbone", max_samples=100, k=3)
    trainer = pl.Trainer(max_epochs=1, callbacks=[ident, sim], **trainer_kwargs)
    dm = LatentVariableDataModule(latent_dim=3, num_classes=10, num_train=300, num_val=100, num_test=0, batch_size=50)
    trainer.fit(Classifier(num_classes=10, in_features=3, hidden=[8]), dm)
    m = trainer.callback_metrics
    assert float(m["ident/backbone/latents/val/linear_r2"]) == pytest.approx(0.123456)
    assert float(m["similarity/backbone/init/val/cka"]) == pytest.approx(0.654321)


def _tuple_loaders():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    train = DataLoader(TensorDataset(x[:1200], y[:1200]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[1200:], y[1200:]), batch_size=128)
    return train, val


CALLBACKS = {
    "probe-online": lambda: LinearProbe(["backbone.0", "backbone"], targets=1, mode="online", num_classes=10),
    "probe-frozen": lambda: LinearProbe(["backbone.0"], targets=1, mode="frozen", num_classes=10),
    "ident-frozen": lambda: IdentifiabilityMetrics("backbone", latents=1, metrics=["linear_r2", "mcc", "dci"],
                                                   max_samples=200),
    "ident-online": lambda: IdentifiabilityMetrics("backbone", latents=1, mode="online"),
    "similarity-frozen": lambda: RepresentationSimilarity("backbone", reference="init", max_samples=200, k=3),
    "similarity-online": lambda: RepresentationSimilarity("backbone", mode="online", max_samples=200, k=3),
    "norm-online": lambda: NormMonitor("backbone.1", mode="online"),
}


def _train(callbacks, trainer_kwargs):
    pl.seed_everything(0)
    train, val = _tuple_loaders()
    model = Classifier(in_features=64, hidden=[32, 32], dropout=0.2, batch_norm=True, input_key=0, target_key=1)
    trainer = pl.Trainer(max_epochs=2, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(model, train, val)
    return model, trainer


@pytest.fixture(scope="module")
def baseline():
    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False)
    return _train([], kw)[0].state_dict()


@pytest.mark.parametrize("which", sorted(CALLBACKS))
def test_callbacks_never_change_the_run(which, baseline, trainer_kwargs):
    # tuple (x, y) batches, a shuffled train loader, dropout and BatchNorm: every way a reader could
    # perturb training (global RNG draws, module modes, BN statistics) would show in the weights
    cb = CALLBACKS[which]()
    model, trainer = _train([cb], trainer_kwargs)
    assert cb.scores, "the callback logged nothing"
    for k, v in model.state_dict().items():
        assert torch.equal(v, baseline[k]), f"{which} changed {k}"


def test_wrong_specs_fail_before_training(trainer_kwargs):
    model = Classifier(in_features=64, hidden=[8])
    for cb in (
        IdentifiabilityMetrics("backbone"),  # digits batches carry no 'latents'
        LinearProbe("backbone", targets="label", mode="frozen"),
        LinearProbe("backbone", input_key="image", mode="frozen"),
    ):
        trainer = pl.Trainer(max_epochs=1, callbacks=[cb], **trainer_kwargs)
        with pytest.raises(KeyError, match="not a key of the batch"):
            trainer.fit(model, DigitsDataModule())
        assert trainer.global_step == 0
    trainer = pl.Trainer(max_epochs=1, callbacks=[LinearProbe("backbon")], **trainer_kwargs)
    with pytest.raises(ValueError, match="backbone"):
        trainer.fit(model, DigitsDataModule())
    assert trainer.global_step == 0


def test_warnings_once_per_site_and_named(trainer_kwargs):
    probe = LinearProbe("backbone.0", mode="frozen", probe_loaders=None)
    trainer = pl.Trainer(max_epochs=3, callbacks=[probe], **trainer_kwargs)
    dm = DigitsDataModule(batch_size=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 64 raw pixels -> 2048 features, fitted on ~1,200 samples: fewer samples than features
        trainer.fit(Classifier(in_features=64, hidden=[2048]), dm)
    ridge = [str(w.message) for w in caught if "fewer samples than" in str(w.message)]
    assert len(ridge) == 1 and "site 'backbone.0'" in ridge[0]
