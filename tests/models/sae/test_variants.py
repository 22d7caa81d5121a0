"""Variants: the registry, arguments declared by each variant (also from YAML), capabilities, losses."""

import pytest
import torch
import yaml

from lit_repr.cli import LitReprCLI
from lit_repr.models.sae import (
    SAE_VARIANTS,
    BatchTopKVariant,
    JumpReLUVariant,
    ReLUVariant,
    SparseAutoencoder,
    TopKVariant,
    auxk_loss,
    build_variant,
    register_variant,
    variant_arguments,
)


class TopKL1(TopKVariant):
    """TopK plus an L1 penalty on the codes: a variant with an argument no built-in variant has."""

    def __init__(self, k: int = 32, code_l1: float = 0.0, aux_coefficient: float = 0.0, num_latents=None):
        if code_l1 < 0:
            raise ValueError(f"code_l1 must be >= 0, got {code_l1!r}")
        self.code_l1 = code_l1
        super().__init__(k=k, aux_coefficient=aux_coefficient, num_latents=num_latents)

    def losses(self, sae, pre, codes, residual):
        return {**super().losses(sae, pre, codes, residual), "code_l1": self.code_l1 * codes.sum(-1).mean()}


@pytest.fixture
def topk_l1():
    register_variant("topk_l1")(TopKL1)
    yield TopKL1
    del SAE_VARIANTS["topk_l1"]


def test_builtin_variants_registered_with_their_arguments():
    assert {"relu", "topk", "batchtopk", "jumprelu"} <= set(SAE_VARIANTS)
    assert variant_arguments(ReLUVariant) == ["l1_coefficient"]
    assert variant_arguments(BatchTopKVariant) == ["k", "aux_k", "aux_coefficient", "threshold_momentum"]
    assert variant_arguments(JumpReLUVariant) == ["threshold_init", "bandwidth", "l0_coefficient"]
    with pytest.raises(ValueError, match="SAEVariant subclass"):
        register_variant("bad")(dict)


def test_registered_variant_with_a_new_argument(topk_l1):
    sae = SparseAutoencoder(8, 16, variant="topk_l1", variant_args={"k": 3, "code_l1": 0.5}, init_seed=0)
    assert isinstance(sae.variant, TopKL1) and sae.variant.code_l1 == 0.5 and sae.variant.k == 3
    assert sae.uses_sparse_kernels()  # a subclass of TopK that keeps its activation keeps the sparse kernels
    x = torch.randn(20, 8)
    out = sae.compute_losses(x)
    assert float(out["code_l1"].detach()) == pytest.approx(0.5 * float(out["codes"].detach().sum(1).mean()))
    assert set(sae.train_step(x, sae.configure_optimizers())) == {"loss", "mse_loss", "code_l1"}
    assert sae.hparams.variant_args == {"k": 3, "code_l1": 0.5}  # a checkpoint rebuilds it by name


def test_unknown_variant_argument_names_variant_argument_and_allowed(topk_l1):
    with pytest.raises(ValueError, match=r"variant 'topk_l1' \(TopKL1\) has no argument 'l1_coefficient'; "
                       r"its arguments are \['k', 'code_l1', 'aux_coefficient'\]"):  # fmt: skip
        SparseAutoencoder(8, 16, variant="topk_l1", variant_args={"l1_coefficient": 0.1})
    with pytest.raises(ValueError, match="num_latents is the SAE's"):
        build_variant("topk", 16, {"num_latents": 4})
    with pytest.raises(ValueError, match=r"variant must be an SAEVariant or one of \[.*'relu'.*\], got 'gated\?'"):
        SparseAutoencoder(8, 16, variant="gated?")
    with pytest.raises(ValueError, match="instance carries its own arguments"):
        SparseAutoencoder(8, 16, variant=TopKVariant(k=2), variant_args={"k": 3})
    with pytest.raises(ValueError, match="code_l1 must be >= 0"):
        SparseAutoencoder(8, 16, variant="topk_l1", variant_args={"code_l1": -1.0})


def test_variant_arguments_checked_where_declared():
    with pytest.raises(ValueError, match=r"k must be <= num_latents=16 .*got 17"):
        SparseAutoencoder(8, 16, variant="topk", variant_args={"k": 17})
    with pytest.raises(ValueError, match="l1_coefficient must be a finite number >= 0, got -0.1"):
        SparseAutoencoder(8, 16, variant_args={"l1_coefficient": -0.1})
    with pytest.raises(ValueError, match="threshold_momentum must be in"):
        BatchTopKVariant(threshold_momentum=0.0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        JumpReLUVariant(bandwidth=0.0)
    v = TopKVariant(k=4)  # built lazily by the SAE, then bound to its size
    assert v.num_latents is None and SparseAutoencoder(8, 16, variant=v).variant is v and v.num_latents == 16
    with pytest.raises(ValueError, match="built for num_latents=16"):
        v.build(32)


def test_sparse_kernel_capability_is_declared_and_inherited():
    class Renamed(TopKVariant):  # only losses change: the codes are still the per-sample top-k
        pass

    class Shifted(TopKVariant):  # a new nonlinearity: the TopK kernels would compute something else
        def activate(self, pre):
            return super().activate(pre - 1.0)

    assert Renamed.supports_sparse_kernels and not Shifted.supports_sparse_kernels
    assert not BatchTopKVariant.supports_sparse_kernels and not ReLUVariant.supports_sparse_kernels
    assert SparseAutoencoder(8, 16, variant=Renamed(k=2)).uses_sparse_kernels()
    shifted = SparseAutoencoder(8, 16, variant=Shifted(k=2), init_seed=0)
    assert not shifted.uses_sparse_kernels()
    x = torch.randn(5, 8)
    pre = shifted.encode_with_hidden_pre(x)[1]
    assert torch.equal(shifted.encode(x), shifted.variant.activate(pre)[0])


def _config(tmp_path, model_args):
    cfg = {
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "logger": False,
                    "enable_progress_bar": False, "enable_checkpointing": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path)},
        "model": {"class_path": "SparseAutoencoder", "init_args": {"in_features": 8, "num_latents": 16, **model_args}},
        "data": {"class_path": "SparseCodingDataModule", "init_args": {"num_train": 64, "num_val": 32, "num_test": 0,
                                                                      "batch_size": 32}},
    }  # fmt: skip
    path = tmp_path / "sae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_registered_variant_with_new_argument_from_yaml_and_cli(topk_l1, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, {"variant": "topk_l1", "variant_args": {"k": 3, "code_l1": 0.25}})
    cli = LitReprCLI(args=["fit", "--config", config])
    assert isinstance(cli.model.variant, TopKL1) and cli.model.variant.code_l1 == 0.25
    assert cli.trainer.state.finished and "train/code_l1" in cli.trainer.callback_metrics
    cli = LitReprCLI(args=["--config", config, '--model.init_args.variant_args={"k": 2, "code_l1": 0.5}'], run=False)
    assert (cli.model.variant.k, cli.model.variant.code_l1) == (2, 0.5)
    bad = _config(tmp_path, {"variant": "topk_l1", "variant_args": {"k": 3, "code_ll": 0.25}})
    with pytest.raises(ValueError, match="has no argument 'code_ll'"):
        LitReprCLI(args=["--config", bad], run=False)


def test_variant_instance_from_yaml_class_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    variant = {"class_path": "lit_repr.models.sae.BatchTopKVariant", "init_args": {"k": 2, "threshold_momentum": 0.1}}
    cli = LitReprCLI(args=["--config", _config(tmp_path, {"variant": variant})], run=False)
    assert isinstance(cli.model.variant, BatchTopKVariant)
    assert (cli.model.variant.k, cli.model.variant.threshold_momentum, cli.model.variant.num_latents) == (2, 0.1, 16)


def test_auxk_loss_in_module_scaled_and_only_over_dead_latents():
    sae = SparseAutoencoder(
        8, 16, variant="topk", init_seed=0, variant_args={"k": 2, "aux_k": 3, "aux_coefficient": 0.5}
    )
    sae.train()
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[1, 5, 7, 11]] = True
    sae.samples_since_fired[dead] = sae.dead_after
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
    sae = SparseAutoencoder(8, 16, variant="relu", init_seed=0, variant_args={"l1_coefficient": 0.3})
    x = torch.randn(7, 8)
    out = sae.compute_losses(x)
    codes = torch.relu((x - sae.b_dec) @ sae.encoder.linear.weight.T + sae.encoder.linear.bias)
    recon = codes @ sae.W_dec + sae.b_dec
    assert float(out["mse_loss"]) == pytest.approx(float(((x - recon) ** 2).sum(1).mean()), rel=1e-5)
    assert float(out["l1"]) == pytest.approx(float(0.3 * codes.sum(1).mean()), rel=1e-5)


def test_jumprelu_straight_through_gradient():
    v = JumpReLUVariant(threshold_init=0.5, bandwidth=0.2, l0_coefficient=1.0, num_latents=2)
    pre = torch.tensor([[0.55, 0.1], [0.45, 0.9]], requires_grad=True)
    codes, _ = v.activate(pre)
    assert torch.equal(codes.detach(), torch.tensor([[0.55, 0.0], [0.0, 0.9]]))
    codes.sum().backward()
    # d/dθ of pre·H(pre−θ) ≈ −(θ/ε)·1[|pre−θ|<ε/2]; chain rule through θ = exp(log θ) multiplies by θ
    theta = 0.5
    expected = torch.tensor([-(theta / 0.2) * 2, 0.0]) * theta
    assert torch.allclose(v.log_threshold.grad, expected, atol=1e-5)
    assert torch.equal(pre.grad, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
