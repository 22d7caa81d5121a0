import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.models.encoders import AmortisedEncoder, FISTAEncoder, InferenceTimeOptimisation, MLPEncoder
from lit_repr.models.sae import (
    SAE_VARIANTS,
    JumpReLUVariant,
    ReLUVariant,
    SparseAutoencoder,
    auxk_loss,
    flops_per_sample,
    geometric_median,
    register_variant,
)

VARIANTS = ["relu", "topk", "batchtopk", "jumprelu"]


def _fit(sae, dm, trainer_kwargs, **kw):
    trainer = pl.Trainer(**{**trainer_kwargs, "max_epochs": 1, **kw})
    trainer.fit(sae, dm)
    return trainer


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_forward_backward(variant):
    sae = SparseAutoencoder(d_in=8, n_latents=16, variant=variant, k=3, init_seed=0)
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


def test_variants_registered_by_name():
    assert set(VARIANTS) <= set(SAE_VARIANTS)

    @register_variant("relu_test_copy")
    class Copy(ReLUVariant):
        pass

    sae = SparseAutoencoder(d_in=4, n_latents=8, variant="relu_test_copy")
    assert isinstance(sae.variant, Copy)
    del SAE_VARIANTS["relu_test_copy"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_atoms_unit_norm_after_training_steps(variant, trainer_kwargs):
    dm = SparseCodingDataModule(num_train=256, num_val=64, num_test=64, batch_size=32)
    sae = SparseAutoencoder(8, 16, variant=variant, k=3, lr=0.05, codes_key=None)
    _fit(sae, dm, trainer_kwargs, limit_val_batches=0)
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones(16), atol=1e-5)


def test_gradient_projection_removes_component_along_atoms():
    sae = SparseAutoencoder(8, 16, variant="relu", init_seed=0)
    sae.compute_losses(torch.randn(16, 8))["loss"].backward()
    sae.on_before_optimizer_step(None)
    radial = (sae.W_dec.grad * sae.W_dec.detach()).sum(1)
    assert radial.abs().max() < 1e-6


def test_topk_exactly_k_active():
    sae = SparseAutoencoder(8, 16, variant="topk", k=3, init_seed=0)
    with torch.no_grad():
        sae.encoder.linear.bias.fill_(10.0)  # all pre-activations positive: exactly k survive
    codes = sae.encode(torch.randn(50, 8))
    assert ((codes != 0).sum(1) == 3).all()
    # and the sparse decoder equals the dense one
    c, _, support = sae.encode_with_hidden_pre(torch.randn(5, 8))
    assert torch.allclose(sae.decode(c, support), sae.decode(c), atol=1e-5)


def test_auxk_matches_hand_computation():
    torch.manual_seed(0)
    n, d, b = 6, 4, 5
    W = torch.nn.functional.normalize(torch.randn(n, d), dim=1)
    pre = torch.randn(b, n)
    e = torch.randn(b, d)
    dead = torch.tensor([True, False, True, True, False, False])
    aux_k = 2
    expected = 0.0
    for i in range(b):
        cand = [(float(pre[i, j]), j) for j in range(n) if dead[j]]
        cand.sort(reverse=True)
        ehat = torch.zeros(d)
        for v, j in cand[:aux_k]:
            ehat += max(v, 0.0) * W[j]  # no decoder bias: e carries none
        expected += float(((e[i] - ehat) ** 2).sum())
    expected /= b
    assert float(auxk_loss(e, pre, dead, W, aux_k)) == pytest.approx(expected, rel=1e-5)
    # k_aux is capped at the number of dead latents; no dead latent means no loss
    assert float(auxk_loss(e, pre, dead, W, 100)) == pytest.approx(float(auxk_loss(e, pre, dead, W, 3)))
    assert float(auxk_loss(e, pre, torch.zeros(n, dtype=torch.bool), W, 2)) == 0.0


def test_auxk_loss_in_module_scaled_and_only_over_dead_latents():
    sae = SparseAutoencoder(8, 16, variant="topk", k=2, aux_k=3, aux_coefficient=0.5, init_seed=0)
    sae.train()
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[1, 5, 7, 11]] = True
    sae.samples_since_fired[dead] = sae.hparams.dead_after
    x = torch.randn(10, 8)
    out = sae.compute_losses(x)
    residual = (x - out["recon"]).detach()
    expected = 0.5 * auxk_loss(residual, out["pre"].detach(), dead, sae.W_dec.detach(), 3)
    assert float(out["auxk"].detach()) == pytest.approx(float(expected), rel=1e-5)
    sae.zero_grad()
    out["auxk"].backward()
    g = sae.encoder.linear.weight.grad
    assert g[~dead].abs().max() == 0  # only dead latents' encoder rows learn from AuxK
    assert g[dead].abs().max() > 0


def test_relu_l1_loss_by_hand():
    sae = SparseAutoencoder(8, 16, variant="relu", l1_coefficient=0.3, init_seed=0)
    x = torch.randn(7, 8)
    out = sae.compute_losses(x)
    codes = torch.relu((x - sae.b_dec) @ sae.encoder.linear.weight.T + sae.encoder.linear.bias)
    recon = codes @ sae.W_dec + sae.b_dec
    assert float(out["mse_loss"]) == pytest.approx(float(((x - recon) ** 2).sum(1).mean()), rel=1e-5)
    assert float(out["l1"]) == pytest.approx(float(0.3 * codes.sum(1).mean()), rel=1e-5)


def test_batchtopk_training_budget_and_inference_threshold():
    sae = SparseAutoencoder(8, 16, variant="batchtopk", k=3, init_seed=0)
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


def test_jumprelu_straight_through_gradient():
    v = JumpReLUVariant(2, threshold_init=0.5, bandwidth=0.2, l0_coefficient=1.0)
    pre = torch.tensor([[0.55, 0.1], [0.45, 0.9]], requires_grad=True)
    codes, _ = v.activate(pre)
    assert torch.equal(codes.detach(), torch.tensor([[0.55, 0.0], [0.0, 0.9]]))
    codes.sum().backward()
    # d/dθ of pre·H(pre−θ) ≈ −(θ/ε)·1[|pre−θ|<ε/2]; chain rule through θ = exp(log θ) multiplies by θ
    theta = 0.5
    expected = torch.tensor([-(theta / 0.2) * 2, 0.0]) * theta
    assert torch.allclose(v.log_threshold.grad, expected, atol=1e-5)
    assert torch.equal(pre.grad, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_decoder_bias_initialised_from_data(trainer_kwargs):
    dm = SparseCodingDataModule(num_train=128, num_val=32, num_test=32, batch_size=32)
    dm.setup()
    x = dm.datasets["train"].tensors["x"]
    for init, expected in (("mean", x.mean(0)), ("geometric_median", geometric_median(x))):
        sae = SparseAutoencoder(8, 16, decoder_bias_init=init, bias_init_batches=100, lr=1e-9, codes_key=None)
        _fit(sae, dm, trainer_kwargs, limit_val_batches=0, max_steps=1)
        assert torch.allclose(sae.b_dec.detach(), expected, atol=1e-4)
        assert bool(sae.bias_initialised)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="k must be <= n_latents=16"):
        SparseAutoencoder(8, 16, variant="topk", k=17)
    with pytest.raises(ValueError, match="l1_coefficient"):
        SparseAutoencoder(8, 16, l1_coefficient=-0.1)
    with pytest.raises(ValueError, match="variant must be one of"):
        SparseAutoencoder(8, 16, variant="gated?")
    with pytest.raises(ValueError, match="decoder_bias_init"):
        SparseAutoencoder(8, 16, decoder_bias_init="median")
    with pytest.raises(ValueError, match="image_shape"):
        SparseAutoencoder(8, 16, image_shape=(3, 3))
    sae = SparseAutoencoder(8, 16)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(ValueError, match=r"d_in=8.*\(batch, 8\).*\(4, 9\)"):
        sae.encode(torch.randn(4, 9))
    bad = torch.randn(4, 8)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sae.training_step({"x": bad}, 0)
    assert all(torch.equal(before[k], v) for k, v in sae.state_dict().items())


def test_swappable_encoders_and_flops():
    sae = SparseAutoencoder(8, 16, variant="relu", encoder=MLPEncoder([32]), init_seed=0)
    assert sae.encode(torch.randn(3, 8)).shape == (3, 16)
    assert flops_per_sample(sae) == sae.encoder.flops_per_sample() + 8 + 16 + 2 * 16 * 8 + 8
    fista = sae.swap_encoder(FISTAEncoder(penalty=0.1, max_iter=20))
    codes = sae.encode(torch.randn(3, 8))
    assert bool((codes >= 0).all()) and fista.flops_per_sample() > 0
    sae.swap_encoder(InferenceTimeOptimisation(steps=5, init=AmortisedEncoder()))
    assert sae.encode(torch.randn(3, 8)).shape == (3, 16)
    topk = SparseAutoencoder(8, 16, variant="topk", k=3)
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
    sae = SparseAutoencoder(8, 16, variant="topk", k=3, image_shape=(2, 4), lr=0.01)
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
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(logger.log_dir), size_guidance={"histograms": 0, "images": 0})
    ev.Reload()
    assert "val/firing_frequency_log10" in ev.Tags()["histograms"]
    assert "val/atoms" in ev.Tags()["images"]


@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_topk_kernels_match_dense_gradients(with_dead):
    torch.manual_seed(0)
    kw = dict(d_in=12, n_latents=40, variant="topk", k=5, aux_k=4, init_seed=1)
    sparse, dense = SparseAutoencoder(**kw, sparse_kernels=True), SparseAutoencoder(**kw, sparse_kernels=False)
    dense.load_state_dict(sparse.state_dict())
    with torch.no_grad():
        for m in (sparse, dense):
            m.b_dec.copy_(torch.linspace(-0.5, 0.5, 12))
            m.encoder.linear.bias.copy_(torch.linspace(-0.2, 0.2, 40))
    if with_dead:
        for m in (sparse, dense):
            m.samples_since_fired[::3] = m.hparams.dead_after
    x = torch.randn(30, 12)
    for m in (sparse, dense):
        m.train()
        m.zero_grad()
        out = m.compute_losses(x)
        out["loss"].backward()
        m._out = out
    assert sparse._sparse_path() and not dense._sparse_path()
    assert torch.allclose(sparse._out["loss"], dense._out["loss"], atol=1e-5)
    assert ("auxk" in sparse._out) == ("auxk" in dense._out)
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_state_round_trip_keeps_bias_dead_counters_and_threshold():
    sae = SparseAutoencoder(8, 16, variant="batchtopk", k=2, decoder_bias_init="mean")
    sae.initialize_decoder_bias(torch.randn(50, 8) + 3.0)
    sae.train()
    sae.encode(torch.randn(10, 8))  # sets the BatchTopK threshold
    sae.samples_since_fired.fill_(7)
    other = SparseAutoencoder(8, 16, variant="batchtopk", k=2, decoder_bias_init="mean")
    other.load_state_dict(sae.state_dict())
    assert bool(other.bias_initialised)  # a resumed run does not re-initialise the decoder bias
    assert torch.equal(other.b_dec, sae.b_dec)
    assert torch.equal(other.samples_since_fired, sae.samples_since_fired)
    assert float(other.variant.threshold) == float(sae.variant.threshold) > 0
    assert other.predict_step({"x": torch.randn(3, 8)}, 0).shape == (3, 16)
