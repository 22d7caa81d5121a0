import lightning.pytorch as pl
import pytest
import torch

from lit_repr.callbacks import IdentifiabilityMetrics, RepresentationSimilarity
from lit_repr.data import DigitsDataModule
from lit_repr.data.latent import LatentVariableDataModule
from lit_repr.models import Classifier


def _latent_dm():
    return LatentVariableDataModule(latent_dim=3, num_classes=20, kappa=10.0, num_train=1500, num_val=400,
                                    num_test=200, batch_size=128)


def test_identifiability_on_a_real_run(tmp_path, trainer_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pl.seed_everything(0)
    cb = IdentifiabilityMetrics(sites=["backbone", "backbone.0"], metrics=["linear_r2", "mcc", "kernel_r2", "dci"],
                                max_samples=300)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], **{**trainer_kwargs, "logger": logger})
    trainer.fit(Classifier(num_classes=20, in_features=3, hidden=[64, 64], lr=3e-3), _latent_dm())
    m = trainer.callback_metrics
    prefix = "ident/backbone/latents/val"
    assert 0.5 < float(m[f"{prefix}/linear_r2"]) <= 1.0
    assert f"{prefix}/linear_r2_factor2" in m
    assert 0.0 < float(m[f"{prefix}/mcc"]) <= 1.0
    assert f"{prefix}/kernel_r2" in m
    for k in ("disentanglement", "completeness", "informativeness"):
        assert f"{prefix}/dci_{k}" in m
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert f"{prefix}/mcc_matrix" in acc.Tags()["images"]
    # the linear map of a trained encoder beats the one of raw inputs' nonlinear mixing? at least it is
    # well above chance and never NaN
    assert all(torch.isfinite(torch.as_tensor(v)) for k, v in m.items() if k.startswith("ident/"))


def test_identifiability_errors(trainer_kwargs):
    with pytest.raises(ValueError, match="metrics must be"):
        IdentifiabilityMetrics("backbone", metrics=["mig"])
    with pytest.raises(ValueError, match="must differ"):
        IdentifiabilityMetrics("backbone", fit_split="val", eval_split="val")
    cb = IdentifiabilityMetrics("backbone")
    trainer = pl.Trainer(max_epochs=1, callbacks=[cb], **trainer_kwargs)
    with pytest.raises(KeyError, match="'latents' is not a key"):
        trainer.fit(Classifier(in_features=64, hidden=[8]), DigitsDataModule())


def test_similarity_to_init_decreases_and_self_is_one(trainer_kwargs):
    pl.seed_everything(0)
    cb = RepresentationSimilarity(sites=["backbone.0", "backbone"], reference="init", max_samples=300, k=5)
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb], **trainer_kwargs)
    model = Classifier(in_features=64, hidden=[32, 32], lr=1e-2)
    trainer.fit(model, DigitsDataModule())
    s = trainer.callback_metrics
    assert 0 < float(s["similarity/backbone/init/val/cka"]) < 0.999
    assert 0 <= float(s["similarity/backbone/init/val/mutual_knn"]) <= 1
    # a model compared with itself is perfectly similar
    same = RepresentationSimilarity(sites=["backbone"], reference=model, max_samples=200, k=5)
    scores = same.compare.__func__  # noqa: B018 - make sure the public method exists
    trainer2 = pl.Trainer(callbacks=[same], **trainer_kwargs)
    trainer2.validate(model, DigitsDataModule(), verbose=False)
    assert same.scores["similarity/backbone/reference/val/cka"] == pytest.approx(1.0, abs=1e-6)
    assert same.scores["similarity/backbone/reference/val/mutual_knn"] == pytest.approx(1.0)
    del scores


def test_similarity_bad_args():
    with pytest.raises(ValueError, match="k must be"):
        RepresentationSimilarity("a", k=0)
    with pytest.raises(ValueError, match="reference must be"):
        RepresentationSimilarity("a", reference=3)  # type: ignore[arg-type]


def test_similarity_reference_checkpoint_and_resume(tmp_path, trainer_kwargs):
    pl.seed_everything(0)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = RepresentationSimilarity(sites=["backbone"], reference="init", max_samples=200, k=5)
    model = Classifier(in_features=64, hidden=[16], lr=1e-2)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    kw = {**trainer_kwargs, "enable_checkpointing": True}
    pl.Trainer(max_epochs=1, callbacks=[first, ckpt_cb], **kw).fit(model, DigitsDataModule())
    last = str(tmp_path / "ckpt" / "last.ckpt")

    # resuming restores the model at initialisation as the reference, not the resumed weights
    resumed = RepresentationSimilarity(sites=["backbone"], reference="init", max_samples=200, k=5)
    fresh = Classifier(in_features=64, hidden=[16], lr=1e-2)
    pl.Trainer(max_epochs=2, callbacks=[resumed], **trainer_kwargs).fit(fresh, DigitsDataModule(), ckpt_path=last)
    for k, v in init_state.items():
        torch.testing.assert_close(resumed.reference.state_dict()[k], v)

    # a checkpoint path as the reference: the checkpointed model compared with itself
    same = RepresentationSimilarity(sites=["backbone"], reference=last, max_samples=200, k=5)
    loaded = Classifier.load_from_checkpoint(last)
    pl.Trainer(callbacks=[same], **trainer_kwargs).validate(loaded, DigitsDataModule(), verbose=False)
    assert same.scores["similarity/backbone/checkpoint/val/cka"] == pytest.approx(1.0, abs=1e-9)
    assert same.scores["similarity/backbone/checkpoint/val/cka_debiased"] == pytest.approx(1.0, abs=1e-9)
