"""The SparseAutoencoder module: losses, the atom constraint, train_step, Lightning logging, ground truth."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.metrics.mcc import mean_correlation_coefficient
from lit_repr.models.encoders import AmortizedEncoder, FISTAEncoder, InferenceTimeOptimization, MLPEncoder
from lit_repr.models.sae import SparseAutoencoder, flops_per_sample, geometric_median

VARIANTS = {"relu": {}, "topk": {"k": 3}, "batchtopk": {"k": 3}, "jumprelu": {}}


def _fit(sae, dm, trainer_kwargs, **kw):
    trainer = pl.Trainer(**{**trainer_kwargs, "max_epochs": 1, **kw})
    trainer.fit(sae, dm)
    return trainer


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_forward_backward(variant):
    sae = SparseAutoencoder(in_features=8, num_latents=16, variant=variant, init_seed=0, variant_args=VARIANTS[variant])
    sae.train()
    sae.samples_since_fired.fill_(10**6)  # everything dead: AuxK active too
    x = torch.randn(32, 8)
    out = sae.compute_losses(x)
    assert out["codes"].shape == (32, 16) and out["recon"].shape == (32, 8)
    out["loss"].backward()
    assert sae.W_dec.grad is not None and torch.isfinite(sae.W_dec.grad).all()
    assert sae.encoder.linear.weight.grad is not None
    if variant == "jumprelu":
        assert sae.variant.log_threshold.grad is not None
    assert sae(x).shape == (32, 8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_atoms_unit_norm_after_training_steps(variant, trainer_kwargs):
    dm = SparseCodingDataModule(num_train=256, num_val=64, num_test=64, batch_size=32)
    for atom_norm in ("fold", "project"):
        sae = SparseAutoencoder(8, 16, variant, VARIANTS[variant], lr=0.05, codes_key=None, atom_norm=atom_norm)
        _fit(sae, dm, trainer_kwargs, limit_val_batches=0)
        norms = sae.W_dec.detach().norm(dim=1)
        assert torch.allclose(norms, torch.ones(16), atol=1e-5)


def test_gradient_projection_removes_component_along_atoms():
    sae = SparseAutoencoder(8, 16, variant="relu", init_seed=0, atom_norm="project")
    sae.compute_losses(torch.randn(16, 8))["loss"].backward()
    sae.on_before_optimizer_step(None)
    radial = (sae.W_dec.grad * sae.W_dec.detach()).sum(1)
    assert radial.abs().max() < 1e-6


@pytest.mark.parametrize("variant", ["relu", "jumprelu"])
@pytest.mark.parametrize("encoder", ["amortized", "mlp"])
def test_fold_keeps_the_reconstruction_and_keeps_the_gradient(variant, encoder):
    sae = SparseAutoencoder(8, 16, variant, {"threshold_init": 0.05} if variant == "jumprelu" else None,
                            encoder=encoder, init_seed=0)  # fmt: skip
    x = torch.randn(64, 8)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 16)[:, None])  # atoms off the sphere, as after a free step
        before = sae(x)
    sae.compute_losses(x)["loss"].backward()
    g = sae.W_dec.grad.clone()
    sae.on_before_optimizer_step(None)
    assert torch.equal(sae.W_dec.grad, g)  # the radial component is kept: it moves the atom's norm
    sae.on_train_batch_end(None, None, 0)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)
    torch.testing.assert_close(sae(x), before, rtol=1e-5, atol=1e-5)


def test_fold_falls_back_to_projection_for_iterative_encoders():
    sae = SparseAutoencoder(8, 16, encoder="fista", init_seed=0)
    assert not sae.encoder.can_scale_latents
    sae.compute_losses(torch.randn(16, 8))["loss"].backward()
    sae.on_before_optimizer_step(None)
    assert (sae.W_dec.grad * sae.W_dec.detach()).sum(1).abs().max() < 1e-6


def test_train_step_is_the_lightning_training_step(trainer_kwargs):
    data = torch.randn(96, 8) + 1.0
    loader = torch.utils.data.DataLoader([{"x": row} for row in data], batch_size=32)
    kw = dict(variant="topk", variant_args={"k": 3, "aux_k": 2}, dead_after=40, lr=0.01, init_seed=0, codes_key=None)
    fitted, stepped = SparseAutoencoder(8, 16, **kw), SparseAutoencoder(8, 16, **kw, num_bias_init_batches=1)
    fitted.num_bias_init_batches = 1  # both initialize the decoder bias from the first batch
    pl.Trainer(**trainer_kwargs, max_epochs=2).fit(fitted, loader)
    opt = stepped.configure_optimizers()
    for _ in range(2):
        for batch in loader:
            losses = stepped.train_step(batch["x"], opt)
    assert set(losses) == {"loss", "mse_loss", "auxk"} and not losses["loss"].requires_grad
    for (name, p), q in zip(fitted.state_dict().items(), stepped.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    stepped.samples_since_fired.fill_(5)  # the dead-latent counters run in train_step too
    codes = stepped.encode(data[:32])
    stepped.train_step(data[:32], opt)
    assert torch.equal(stepped.samples_since_fired == 0, (codes != 0).any(0))


def test_topk_exactly_k_active():
    sae = SparseAutoencoder(8, 16, variant="topk", init_seed=0, variant_args={"k": 3})
    with torch.no_grad():
        sae.encoder.linear.bias.fill_(10.0)  # all pre-activations positive: exactly k survive
    codes = sae.encode(torch.randn(50, 8))
    assert ((codes != 0).sum(1) == 3).all()
    # and the sparse decoder equals the dense one
    c, _, support = sae.encode_with_hidden_pre(torch.randn(5, 8))
    assert torch.allclose(sae.decode(c, support), sae.decode(c), atol=1e-5)


def test_batchtopk_training_budget_and_inference_threshold():
    sae = SparseAutoencoder(8, 16, variant="batchtopk", init_seed=0, variant_args={"k": 3})
    with torch.no_grad():
        sae.encoder.linear.bias.fill_(5.0)
    sae.train()
    codes = sae.encode(torch.randn(20, 8))
    assert int((codes != 0).sum()) == 3 * 20
    thr = float(sae.variant.threshold)
    assert thr > 0
    sae.eval()
    pre = sae.encode_with_hidden_pre(torch.randn(20, 8))[1]
    codes = sae.encode(torch.randn(20, 8))
    assert bool(((codes == 0) | (codes > thr)).all())
    assert pre.shape == codes.shape


def test_decoder_bias_initialized_from_data(trainer_kwargs):
    dm = SparseCodingDataModule(num_train=128, num_val=32, num_test=32, batch_size=32)
    dm.setup()
    x = dm.datasets["train"].tensors["x"]
    for init, expected in (("mean", x.mean(0)), ("geometric_median", geometric_median(x))):
        sae = SparseAutoencoder(8, 16, decoder_bias_init=init, num_bias_init_batches=100, lr=1e-9, codes_key=None)
        _fit(sae, dm, trainer_kwargs, limit_val_batches=0, max_steps=1)
        assert torch.allclose(sae.b_dec.detach(), expected, atol=1e-4)
        assert bool(sae.bias_initialized)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got 0"):
        SparseAutoencoder(0, 16)
    with pytest.raises(ValueError, match=r"decoder_bias_init must be one of \('geometric_median', .*got 'median'"):
        SparseAutoencoder(8, 16, decoder_bias_init="median")
    with pytest.raises(ValueError, match=r"atom_norm must be one of \('fold', 'project', 'none'\), got 'unit'"):
        SparseAutoencoder(8, 16, atom_norm="unit")
    with pytest.raises(ValueError, match="image_shape"):
        SparseAutoencoder(8, 16, image_shape=(3, 3))
    sae = SparseAutoencoder(8, 16)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(ValueError, match=r"in_features=8.*\(batch, 8\).*\(4, 9\)"):
        sae.encode(torch.randn(4, 9))
    bad = torch.randn(4, 8)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sae.training_step({"x": bad}, 0)
    with pytest.raises(ValueError, match="non-finite"):
        sae.train_step(bad, sae.configure_optimizers())
    assert all(torch.equal(before[k], v) for k, v in sae.state_dict().items())


def test_swappable_encoders_and_flops():
    sae = SparseAutoencoder(8, 16, variant="relu", encoder=MLPEncoder([32]), init_seed=0)
    assert sae.encode(torch.randn(3, 8)).shape == (3, 16)
    assert flops_per_sample(sae) == sae.encoder.flops_per_sample() + 8 + 16 + 2 * 16 * 8 + 8
    fista = sae.swap_encoder(FISTAEncoder(penalty=0.1, max_iter=20))
    codes = sae.encode(torch.randn(3, 8))
    assert bool((codes >= 0).all()) and fista.flops_per_sample() > 0
    sae.swap_encoder(InferenceTimeOptimization(steps=5, init=AmortizedEncoder()))
    assert sae.encode(torch.randn(3, 8)).shape == (3, 16)
    topk = SparseAutoencoder(8, 16, variant="topk", variant_args={"k": 3})
    assert flops_per_sample(topk) == (2 * 8 * 16 + 16) + 8 + 16 + (2 * 3 * 8 + 8)


def test_dictionary_learning_with_fista_encoder_trains_the_dictionary(trainer_kwargs):
    dm = SparseCodingDataModule(num_train=256, num_val=64, num_test=64, batch_size=64)
    sae = SparseAutoencoder(
        8, 16, encoder=FISTAEncoder(penalty=0.05, max_iter=30), lr=0.01, codes_key=None, init_seed=0
    )
    W0 = sae.W_dec.detach().clone()
    _fit(sae, dm, trainer_kwargs, limit_val_batches=0, max_epochs=2)
    assert not torch.allclose(W0, sae.W_dec.detach())


def test_ground_truth_metrics_and_tensorboard(tmp_path, trainer_kwargs):
    dm = SparseCodingDataModule(num_train=256, num_val=128, num_test=64, batch_size=64)
    sae = SparseAutoencoder(8, 16, variant="topk", image_shape=(2, 4), lr=0.01, variant_args={"k": 3})
    logger = TensorBoardLogger(str(tmp_path), name="sae")
    trainer = _fit(sae, dm, {**trainer_kwargs, "logger": logger}, max_epochs=2)
    m = trainer.callback_metrics
    for key in (
        "val/mse",
        "val/fve",
        "val/l0",
        "val/dead_fraction",
        "val/dense_fraction",
        "val/code_mcc",
        "val/dictionary_mcc",
        "train/auxk",
        "train/loss",
    ):
        assert key in m, key
    assert 0 < float(m["val/code_mcc"]) <= 1 and 0 < float(m["val/dictionary_mcc"]) <= 1
    # the code MCC streams over the whole split: the value of the one-shot function on all of it
    val = dm.datasets["val"].tensors
    with torch.no_grad():
        expected = mean_correlation_coefficient(val["codes"], sae.eval().encode(val["x"])).mean
    assert float(m["val/code_mcc"]) == pytest.approx(expected, abs=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(logger.log_dir), size_guidance={"histograms": 0, "images": 0})
    ev.Reload()
    assert "val/firing_frequency_log10" in ev.Tags()["histograms"]
    assert "val/atoms" in ev.Tags()["images"]


def test_state_round_trip_keeps_bias_dead_counters_and_threshold():
    sae = SparseAutoencoder(8, 16, variant="batchtopk", decoder_bias_init="mean", variant_args={"k": 2})
    sae.initialize_decoder_bias(torch.randn(50, 8) + 3.0)
    sae.train()
    sae.encode(torch.randn(10, 8))  # sets the BatchTopK threshold
    sae.samples_since_fired.fill_(7)
    other = SparseAutoencoder(8, 16, variant="batchtopk", decoder_bias_init="mean", variant_args={"k": 2})
    other.load_state_dict(sae.state_dict())
    assert bool(other.bias_initialized)  # a resumed run does not re-initialise the decoder bias
    assert torch.equal(other.b_dec, sae.b_dec)
    assert torch.equal(other.samples_since_fired, sae.samples_since_fired)
    assert float(other.variant.threshold) == float(sae.variant.threshold) > 0
    assert other.predict_step({"x": torch.randn(3, 8)}, 0).shape == (3, 16)
