"""WorldModel: shapes, causality, the SSL objectives, the EMA target, tappable sites, argument checks."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from phyip_oscillators import OscillatorDataModule  # noqa: E402

import lit_repr  # noqa: E402
from lit_repr.callbacks import LinearProbe  # noqa: E402
from lit_repr.models import WorldModel  # noqa: E402
from lit_repr.models.world_model import covariance_loss, variance_loss  # noqa: E402

VECTOR = [("mlp", [16]), ("conv1d", [16, 16]), ("gru", [16])]


@pytest.mark.parametrize("encoder,hidden", VECTOR)
def test_vector_encoders_give_states_and_a_per_sample_representation(encoder, hidden):
    model = WorldModel(obs_shape=[4], encoder=encoder, hidden=hidden, representation_dim=6, context=4)
    x = torch.randn(3, 10, 4)
    assert model.states(x).shape == (3, 10, 6)
    assert model(x).shape == (3, 6)


def test_fields_get_the_conv2d_encoder_by_default():
    model = WorldModel(obs_shape=[1, 16, 16], hidden=[4, 8], representation_dim=5, context=3)
    assert model.hparams.encoder == "conv2d"
    x = torch.randn(2, 6, 1, 16, 16)
    assert model(x).shape == (2, 5)
    loss = model.ssl_loss(x)["loss"]
    loss.backward()
    assert model.encoder.frame[0].weight.grad is not None


@pytest.mark.parametrize("encoder,hidden", VECTOR + [("conv2d", [4])])
def test_states_are_causal(encoder, hidden):
    shape = [1, 8, 8] if encoder == "conv2d" else [4]
    model = WorldModel(obs_shape=shape, encoder=encoder, hidden=hidden, representation_dim=6, context=4)
    x = torch.randn(2, 9, *shape)
    y = x.clone()
    y[:, 6:] += torch.randn_like(y[:, 6:])
    h, g = model.states(x), model.states(y)
    torch.testing.assert_close(h[:, :6], g[:, :6])
    assert not torch.allclose(h[:, 6:], g[:, 6:])


def test_conv1d_receptive_field_covers_the_context():
    for context in (1, 2, 5, 8, 13):
        model = WorldModel(obs_shape=[4], encoder="conv1d", hidden=[8, 8], context=context)
        assert model.encoder.receptive_field >= context


def test_variance_and_covariance_terms_match_their_definitions():
    z = torch.randn(50, 3) * torch.tensor([0.5, 1.0, 2.0])
    std = torch.sqrt(z.var(0) + 1e-4)
    torch.testing.assert_close(variance_loss(z), torch.relu(1 - std).mean())
    c = torch.cov(z.T)
    torch.testing.assert_close(covariance_loss(z), (c.pow(2).sum() - c.diagonal().pow(2).sum()) / 3)
    with pytest.raises(ValueError, match="variance_loss needs"):
        variance_loss(torch.zeros(1, 3))


class _EpochLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


@pytest.mark.parametrize("objective", ["latent", "observation"])
def test_the_ssl_loss_decreases(objective, trainer_kwargs):
    pl.seed_everything(0)
    losses = _EpochLosses()
    model = WorldModel(obs_shape=[4], objective=objective, hidden=[32, 32], representation_dim=16, context=4,
                       lr=3e-3)
    trainer = pl.Trainer(max_epochs=6, callbacks=[losses], **trainer_kwargs)
    trainer.fit(model, OscillatorDataModule(num_train=256, batch_size=32))
    assert losses.losses[-1] < 0.7 * losses.losses[0], losses.losses
    assert "val/loss" in trainer.callback_metrics
    if objective == "latent":
        assert {"train/prediction", "train/variance", "train/covariance"} <= set(trainer.callback_metrics)


def test_target_encoder_is_an_ema_of_the_encoder_without_gradients():
    model = WorldModel(obs_shape=[4], hidden=[8], representation_dim=4, context=2, ema_decay=0.9)
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    before = [p.clone() for p in model.target_encoder.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.update_target_encoder()
    for b, t, o in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    opt = model.configure_optimizers()
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in model.target_encoder.parameters()}
    assert WorldModel(obs_shape=[4], objective="observation", hidden=[8]).target_encoder is None


def test_representation_network_is_a_detached_copy_of_encoder_and_pool():
    model = WorldModel(obs_shape=[4], hidden=[8, 8], representation_dim=4, context=3)
    net = model.representation_network()
    x = torch.randn(2, 7, 4)
    torch.testing.assert_close(net(x), model(x))
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert not torch.allclose(net(x), model(x))


def test_sites_are_tappable_by_a_frozen_probe_and_features(trainer_kwargs):
    pl.seed_everything(0)
    dm = OscillatorDataModule(num_train=128, batch_size=64)
    model = WorldModel(obs_shape=[4], hidden=[16, 16], representation_dim=8, context=4)
    probe = LinearProbe(sites=["representation", "encoder", "encoder.layers.0"], targets={"latents": "latents"},
                        task="regression", mode="frozen", log_figures=False)
    trainer = pl.Trainer(max_epochs=1, callbacks=[probe], **trainer_kwargs)
    trainer.fit(model, dm)
    for site in ("representation", "encoder", "encoder.layers.0"):
        for split in ("val", "test", "ood"):
            assert f"probe/{site}/latents/{split}/r2" in trainer.callback_metrics
    feats = lit_repr.features(model, ["representation", "encoder"], dm.probe_dataloaders()["test"])
    assert feats["representation"].shape == (64, 8)
    assert feats["encoder"].shape == (64, 24 * 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"obs_shape": 4}, "obs_shape must be"),
        ({"obs_shape": [4, 4]}, "obs_shape must be"),
        ({"obs_shape": [0]}, "obs_shape must be a positive int"),
        ({"encoder": "transformer"}, "encoder must be one of"),
        ({"encoder": "conv2d"}, "conv2d"),
        ({"obs_shape": [1, 8, 8], "encoder": "gru"}, "vector observations"),
        ({"objective": "pixels"}, "objective must be one of"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"context": 0}, "context must be a positive int"),
        ({"hidden": 8}, "hidden must be a list"),
        ({"hidden": [8, 16], "encoder": "gru"}, "all equal"),
        ({"pool": "max"}, "pool must be one of"),
        ({"lr": 0}, "lr must be"),
        ({"variance_weight": -1}, "variance_weight"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldModel(**kwargs)


def test_bad_input_raises_before_any_computation():
    model = WorldModel(obs_shape=[4], hidden=[8])
    with pytest.raises(ValueError, match=r"sequences of shape \(batch, time >= 2, 4\), got \(2, 5, 3\)"):
        model(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="time >= 2"):
        model.ssl_loss(torch.randn(2, 1, 4))
    x = torch.randn(2, 5, 4)
    x[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.ssl_loss(x)
    with pytest.raises(ValueError, match="must be a tensor"):
        model([[1.0]])
