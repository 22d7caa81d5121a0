import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lit_repr.data.latent import (
    InvertibleMLP,
    LatentVariableDataModule,
    sample_von_mises_fisher,
    uniform_on_sphere,
    vmf_mean_resultant_length,
)
from lit_repr.metrics.ridge import StreamingRidge, moments_score


@pytest.mark.parametrize("num_features,kappa", [(2, 0.5), (3, 1.0), (5, 10.0), (5, 500.0)])
def test_vmf_mean_resultant_length_and_direction(num_features, kappa):
    rng = np.random.default_rng(0)
    mu = uniform_on_sphere(1, num_features, rng).repeat(20_000, 0)
    z = sample_von_mises_fisher(mu, kappa, rng)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)
    assert abs((z * mu).sum(1).mean() - vmf_mean_resultant_length(kappa, num_features)) < 0.015
    m = z.mean(0)
    assert np.allclose(m / np.linalg.norm(m), mu[0], atol=0.05)


def test_vmf_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "vonmises_fisher"):
        pytest.skip("scipy < 1.11")
    mu = np.array([0.0, 0.6, 0.8, 0.0, 0.0])
    ours = sample_von_mises_fisher(np.tile(mu, (20_000, 1)), 10.0, np.random.default_rng(1)) @ mu
    ref = stats.vonmises_fisher(mu, 10.0).rvs(20_000, random_state=2) @ mu
    assert stats.ks_2samp(ours, ref).pvalue > 1e-3


def test_vmf_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unit vectors"):
        sample_von_mises_fisher(np.ones((3, 4)), 1.0, rng)
    with pytest.raises(ValueError, match="NaN"):
        sample_von_mises_fisher(np.full((3, 4), np.nan), 1.0, rng)
    with pytest.raises(ValueError, match="kappa"):
        sample_von_mises_fisher(np.eye(3), -1.0, rng)
    with pytest.raises(ValueError, match="shape"):
        sample_von_mises_fisher(np.ones(3), 1.0, rng)


def test_invertible_mlp_conditioning_and_inverse():
    g = InvertibleMLP(6, num_layers=4, negative_slope=0.1, condition_number=3.0, seed=1)
    for layer in g:
        if isinstance(layer, torch.nn.Linear):
            assert torch.linalg.cond(layer.weight).item() == pytest.approx(3.0, rel=1e-6)
            assert not layer.weight.requires_grad
    z = torch.randn(100, 6, dtype=torch.float64)
    assert torch.allclose(g.inverse(g(z)), z, atol=1e-9)
    with pytest.raises(ValueError, match="negative_slope"):
        InvertibleMLP(3, negative_slope=0.0)
    with pytest.raises(ValueError, match="condition_number"):
        InvertibleMLP(3, condition_number=0.5)


def test_datamodule_batches_and_ground_truth():
    dm = LatentVariableDataModule(latent_dim=4, num_classes=7, kappa=5.0, num_train=300, num_val=50,
                                  num_test=60, batch_size=32, seed=3)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "y", "latents", "index"}
    assert b["x"].shape == (32, 4) and b["x"].dtype == torch.float32
    assert b["latents"].shape == (32, 4) and b["y"].dtype == torch.int64
    assert torch.allclose(b["latents"].norm(dim=1), torch.ones(32), atol=1e-5)
    assert dm.class_vectors.shape == (7, 4)
    assert torch.allclose(dm.class_vectors.norm(dim=1), torch.ones(7), atol=1e-5)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 300, "val": 50, "test": 60}
    # x is the mixing of the latents, and the mixing inverts exactly
    tr = dm.datasets["train"].tensors
    assert torch.allclose(dm.mixing(tr["latents"]).float(), tr["x"], atol=1e-5)
    assert torch.allclose(dm.mixing.inverse(tr["x"]).float(), tr["latents"], atol=1e-4)
    # latents concentrate around their class vector
    cos = (tr["latents"] * dm.class_vectors[tr["y"]]).sum(1).mean().item()
    assert cos == pytest.approx(vmf_mean_resultant_length(5.0, 4), abs=0.05)


def test_deterministic_per_seed():
    a = LatentVariableDataModule(num_classes=5, num_train=50, num_val=0, num_test=0, seed=1)
    b = LatentVariableDataModule(num_classes=5, num_train=50, num_val=0, num_test=0, seed=1)
    c = LatentVariableDataModule(num_classes=5, num_train=50, num_val=0, num_test=0, seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.datasets["train"].tensors["x"], b.datasets["train"].tensors["x"])
    assert not torch.equal(a.datasets["train"].tensors["x"], c.datasets["train"].tensors["x"])
    assert set(a.datasets) == {"train"}


def test_mixing_is_nonlinear_but_linear_slope_is_linear():
    def raw_r2(slope):
        dm = LatentVariableDataModule(num_classes=10, num_train=2000, num_test=1000, num_val=0,
                                      negative_slope=slope, seed=0)
        dm.setup()
        tr, te = dm.datasets["train"].tensors, dm.datasets["test"].tensors
        fit_stats, test_stats = StreamingRidge(5, 5), StreamingRidge(5, 5)
        fit_stats.update(tr["x"], tr["latents"])
        test_stats.update(te["x"], te["latents"])
        return moments_score(fit_stats.compute(), test_stats)["r2"].mean().item()

    assert raw_r2(1.0) > 0.999
    assert raw_r2(0.2) < 0.9


def test_views_during_training_only(trainer_kwargs):
    dm = LatentVariableDataModule(num_classes=4, num_train=64, num_val=16, num_test=0, batch_size=16,
                                  view_kappa=50.0)
    seen = {}

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, i):
            seen.setdefault("train", batch)
            return (self.w * batch["x"].sum()).sum()

        def validation_step(self, batch, i):
            seen.setdefault("val", batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    pl.Trainer(max_epochs=1, **trainer_kwargs).fit(Probe(), dm)
    tr, va = seen["train"], seen["val"]
    assert "anchor_latents" in tr and "anchor_latents" not in va
    cos = (tr["latents"] * tr["anchor_latents"]).sum(1)
    assert bool((cos < 0.9999).all()) and cos.mean() > 0.9
    assert torch.allclose(dm.mixing(tr["latents"]).float(), tr["x"], atol=1e-5)
    assert torch.allclose(va["x"], dm.datasets["val"].tensors["x"][:16])


@pytest.mark.parametrize(
    "kw,match",
    [({"latent_dim": 1}, "latent_dim"), ({"num_classes": 0}, "num_classes"), ({"kappa": -1.0}, "kappa"),
     ({"kappa": float("nan")}, "kappa"), ({"num_train": 1}, "num_train"), ({"num_val": -1}, "num_val"),
     ({"view_kappa": 0.0}, "view_kappa"), ({"negative_slope": 2.0}, "negative_slope"),
     ({"condition_number": 0.1}, "condition_number"), ({"num_mixing_layers": 0}, "num_mixing_layers"),
     ({"batch_size": 0}, "batch_size")],
)
def test_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        LatentVariableDataModule(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"num_classes": True}, "num_classes must be a positive int, got True"),
        ({"num_train": 1}, "num_train must be an int >= 2, got 1"),
        ({"kappa": float("inf")}, "kappa must be a finite number >= 0, got inf"),
        ({"view_kappa": float("nan")}, r"view_kappa must be a finite number > 0 \(or None: no views\), got nan"),
        ({"negative_slope": 0.0}, r"negative_slope must be a finite number in \(0, 1\] so the LeakyReLU is invertible"),
        ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ],
)
def test_bad_args_name_argument_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        LatentVariableDataModule(**kw)


def test_invertible_mlp_bad_args():
    with pytest.raises(ValueError, match="bias_scale must be a finite number >= 0, got nan"):
        InvertibleMLP(3, bias_scale=float("nan"))
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        InvertibleMLP(0)
