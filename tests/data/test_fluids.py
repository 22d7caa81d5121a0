import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lit_repr.callbacks import LinearProbe
from lit_repr.data import FluidsDataModule
from lit_repr.data.fluids import (
    FLUID_FACTORS,
    dealiased_wavenumber,
    flow_diagnostics,
    random_vorticity,
    simulate_vorticity,
)

# A 16x16 grid keeps wavenumbers up to 5: band (1, 3) and viscosities >= 0.13 are resolved at these energies.
SMALL = dict(num_train=16, num_val=4, num_test=4, num_ood=4, grid=16, num_steps=4, band=(1.0, 3.0),
             viscosity=(0.15, 0.2), ood_viscosity=(0.25, 0.3), batch_size=4)


def _grid(n):
    x = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return x[None, :], x[:, None]  # x varies along the last axis, y along the first


def test_inviscid_limit_conserves_energy_and_enstrophy():
    # Several eddy turnovers (vorticity rms ~ 2, turnover ~ 0.5) of the dealiased Euler equations.
    w0 = random_vorticity(4, 32, 0.5, (1, 4), np.random.default_rng(1))
    w = simulate_vorticity(w0, 0.0, num_steps=21, dt=0.2, substeps=8)
    d = flow_diagnostics(w)
    energy_err = np.abs(d["kinetic_energy"] / d["kinetic_energy"][:, :1] - 1).max()
    enstrophy_err = np.abs(d["enstrophy"] / d["enstrophy"][:, :1] - 1).max()
    assert energy_err < 1e-5, energy_err
    assert enstrophy_err < 1e-3, enstrophy_err
    # the flow really evolves nonlinearly
    change = np.linalg.norm(w[:, -1] - w[:, 0], axis=(-2, -1)) / np.linalg.norm(w[:, 0], axis=(-2, -1))
    assert change.min() > 0.5


def test_inviscid_datamodule_batches_conserve_energy():
    dm = FluidsDataModule(**{**SMALL, "num_ood": 0, "viscosity": (0.0, 0.0), "ood_viscosity": None, "num_steps": 8},
                          check_resolution=False)
    dm.setup()
    t = dm.arrays("train")
    ke, z = t["kinetic_energy_t"].double(), t["enstrophy_t"].double()
    assert float((ke / ke[:, :1] - 1).abs().max()) < 1e-5
    assert float((z / z[:, :1] - 1).abs().max()) < 1e-3


@pytest.mark.parametrize("nu", [0.05, 0.2])
def test_taylor_green_energy_decays_exactly(nu):
    x, y = _grid(16)
    w0 = 2 * np.sin(x) * np.sin(y)  # psi = sin x sin y, |k|^2 = 2
    w = simulate_vorticity(w0[None], nu, num_steps=11, dt=0.3, substeps=3)
    t = 0.3 * np.arange(11)
    ke = flow_diagnostics(w)["kinetic_energy"][0]
    np.testing.assert_allclose(ke, 0.25 * np.exp(-2 * nu * 2 * t), rtol=1e-10)
    np.testing.assert_allclose(w[0], w0[None] * np.exp(-nu * 2 * t)[:, None, None], atol=1e-10)


def test_single_shell_flow_is_an_exact_nonlinear_solution():
    # Any combination of modes of one shell |k|^2 = 25 has u . grad w = 0: advection is computed (its products
    # are not zero pointwise) and cancels, and the energy decays as exp(-2 nu |k|^2 t).
    x, y = _grid(32)
    rng = np.random.default_rng(0)
    w0 = sum(3 * rng.normal() * np.cos(kx * x + ky * y + rng.uniform(0, 2 * np.pi))
             for kx, ky in [(3, 4), (4, 3), (5, 0), (0, 5), (3, -4), (4, -3)])
    nu = 0.01
    w = simulate_vorticity(w0[None], nu, num_steps=11, dt=0.5, substeps=10)
    t = 0.5 * np.arange(11)
    d = flow_diagnostics(w)
    assert d["max_speed"][0, 0] > 1
    np.testing.assert_allclose(d["kinetic_energy"][0], d["kinetic_energy"][0, 0] * np.exp(-2 * nu * 25 * t), rtol=1e-10)


def test_advection_matches_the_analytic_term():
    # psi = sin x + cos 2y: w = sin x + 4 cos 2y, u = -2 sin 2y, v = -cos x,
    # so dw/dt = -(u w_x + v w_y) = -6 cos x sin 2y
    x, y = _grid(32)
    w0 = np.sin(x) + 4 * np.cos(2 * y)
    h = 1e-4
    w = simulate_vorticity(w0[None], 0.0, num_steps=2, dt=h)
    dwdt = (w[0, 1] - w[0, 0]) / h
    np.testing.assert_allclose(dwdt, -6 * np.cos(x) * np.sin(2 * y), atol=1e-3)


def test_time_stepping_is_fourth_order():
    w0 = random_vorticity(2, 16, 0.5, (1, 3), np.random.default_rng(2))
    ref = simulate_vorticity(w0, 0.05, num_steps=2, dt=0.5, substeps=64)[:, -1]
    errors = [np.abs(simulate_vorticity(w0, 0.05, 2, 0.5, substeps=s)[:, -1] - ref).max() for s in (4, 8)]
    assert 10 < errors[0] / errors[1] < 24, errors  # 2^4 = 16


def test_chunks_do_not_change_the_result():
    w0 = random_vorticity(5, 16, 0.3, (1, 3), np.random.default_rng(4))
    nu = np.linspace(0.1, 0.3, 5)
    a = simulate_vorticity(w0, nu, 3, 0.2, 4, chunk_size=2)
    b = simulate_vorticity(w0, nu, 3, 0.2, 4, chunk_size=5)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a[2:3], simulate_vorticity(w0[2:3], nu[2], 3, 0.2, 4), rtol=0, atol=1e-12)


def test_energy_budget_with_viscosity():
    # dE/dt = -2 nu Z on the periodic domain: advection moves energy between scales, viscosity removes it.
    w0 = random_vorticity(3, 32, 0.3, (1, 4), np.random.default_rng(3))
    nu = np.array([0.02, 0.05, 0.1])
    w = simulate_vorticity(w0, nu, num_steps=41, dt=0.025, substeps=2)
    d = flow_diagnostics(w)
    z = d["enstrophy"]
    integral = 0.025 * (z[:, 1:-1].sum(1) + 0.5 * (z[:, 0] + z[:, -1]))  # trapezoid
    lost = d["kinetic_energy"][:, 0] - d["kinetic_energy"][:, -1]
    np.testing.assert_allclose(lost, 2 * nu * integral, rtol=2e-3)


def test_random_vorticity_band_and_energy():
    w = random_vorticity(5, 32, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), (2, 4), np.random.default_rng(0))
    np.testing.assert_allclose(flow_diagnostics(w)["kinetic_energy"], [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-12)
    spec = np.abs(np.fft.fft2(w)) ** 2
    k = np.sqrt(np.fft.fftfreq(32, 1 / 32)[:, None] ** 2 + np.fft.fftfreq(32, 1 / 32)[None, :] ** 2)
    outside = spec[:, (k < 2) | (k > 4)].sum() / spec.sum()
    assert outside < 1e-20
    assert dealiased_wavenumber(32) == 10 and dealiased_wavenumber(16) == 5


def test_latents_consistent_with_fields():
    dm = FluidsDataModule(**SMALL)
    dm.setup()
    assert dm.factor_names == FLUID_FACTORS and dm.num_factors == 3
    ranges = {"train": (dm.energy, dm.viscosity), "ood": (dm.ood_energy, dm.ood_viscosity)}
    for split, (e_range, nu_range) in ranges.items():
        t = dm.arrays(split)
        assert t["x"].shape == (dm.num_train if split == "train" else 4, 4, 1, 16, 16) and t["x"].dtype == torch.float32
        d = flow_diagnostics(t["x"][:, :, 0].double())
        np.testing.assert_allclose(t["kinetic_energy_t"].numpy(), d["kinetic_energy"], rtol=1e-5)
        np.testing.assert_allclose(t["enstrophy_t"].numpy(), d["enstrophy"], rtol=1e-5)
        torch.testing.assert_close(t["kinetic_energy"], t["kinetic_energy_t"][:, 0])
        torch.testing.assert_close(t["enstrophy"], t["enstrophy_t"][:, 0])
        for i, k in enumerate(FLUID_FACTORS):
            assert torch.equal(t["latents"][:, i], t[k])
        ke = t["kinetic_energy"]
        assert e_range[0] - 1e-6 <= float(ke.min()) <= float(ke.max()) <= e_range[1] + 1e-6
        assert nu_range[0] - 1e-6 <= float(t["viscosity"].min()) <= float(t["viscosity"].max()) <= nu_range[1] + 1e-6
        # energy and enstrophy decay at every frame
        assert bool((t["kinetic_energy_t"].diff(dim=1) < 0).all()) and bool((t["enstrophy_t"].diff(dim=1) < 0).all())


def test_noise_keeps_latents_clean():
    clean, noisy = FluidsDataModule(**SMALL), FluidsDataModule(**SMALL, noise_std=0.1)
    clean.setup()
    noisy.setup()
    c, n = clean.arrays("train"), noisy.arrays("train")
    assert torch.equal(c["latents"], n["latents"])
    assert 0.08 < float((n["x"] - c["x"]).std()) < 0.12


def test_deterministic_per_seed_and_different_across_seeds(check_seeded):
    check_seeded(lambda seed: FluidsDataModule(**SMALL, seed=seed), splits=("train", "ood"))


def test_ood_ranges_really_outside():
    dm = FluidsDataModule(**{**SMALL, "num_ood": 16, "num_steps": 2})
    dm.setup()
    t, o = dm.arrays("train"), dm.arrays("ood")
    assert float(o["viscosity"].min()) > float(t["viscosity"].max())
    assert float(o["kinetic_energy"].min()) > float(t["kinetic_energy"].max())
    assert dm.ood_energy[0] > dm.energy[1] and dm.ood_viscosity[0] > dm.viscosity[1]
    only_viscosity = FluidsDataModule(**SMALL, ood_energy=None)
    assert only_viscosity.ood_energy == only_viscosity.energy


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"energy": (0.3, 0.1)}, r"energy must be a \(low, high\) range with low <= high"),
        ({"energy": (0.0, 0.1)}, r"energy .* both > 0"),
        ({"viscosity": (-0.1, 0.2)}, r"viscosity .* both >= 0"),
        ({"viscosity": [0.2]}, "viscosity must be a"),
        ({"band": (1, 6)}, r"band .* both in \(0, 5\]"),
        ({"band": (3, 2)}, "band must be a"),
        ({"ood_energy": (0.2, 0.5)}, r"ood_energy=\(0.2, 0.5\) overlaps the training range energy=\(0.1, 0.3\)"),
        ({"ood_viscosity": (0.18, 0.3)}, r"ood_viscosity=\(0.18, 0.3\) overlaps .* below 0.15 or above 0.2"),
        ({"ood_energy": None, "ood_viscosity": None}, "'ood' split would be in distribution"),
        ({"grid": 15}, "grid must be an even int"),
        ({"grid": 4}, "grid"),
        ({"num_steps": 1}, "num_steps"),
        ({"num_train": 0}, "num_train"),
        ({"dt": -0.1}, "dt"),
        ({"substeps": 0}, "substeps"),
        ({"cfl": 2.0}, "cfl"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"check_resolution": 1}, "check_resolution"),
        # resolution: a 16x16 grid keeps k <= 5; viscosity 0.01 needs about a 64x64 grid here
        ({"viscosity": (0.01, 0.02)}, r"the 16x16 grid cannot resolve the 'train' flows: at viscosity=0.01 .* "
                                      r"limit is viscosity >= .* grid >= \d+"),
        ({"ood_viscosity": (0.0, 0.1)},
         r"the 16x16 grid cannot resolve the 'ood' flows: at ood_viscosity=0 .* inviscid limit"),
        # CFL: one step of 1.0 per frame on the 16x16 grid
        ({"dt": 1.0, "substeps": 1}, r"dt/substeps = 1/1 = 1 violates the advective CFL limit on the 16x16 grid "
                                     r"for the 'train' flows .* viscosity from 0.15.*use substeps >= \d+"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        FluidsDataModule(**{**SMALL, **kw})


def test_peak_speed_cfl_checked_before_data_is_kept():
    # The rms speed passes the CFL limit but the peak speed of the drawn fields does not.
    dm = FluidsDataModule(**{**SMALL, "dt": 0.2, "substeps": 1}, cfl=0.6)
    with pytest.raises(ValueError, match=r"flows violate the advective CFL limit on the 16x16 grid .* > cfl=0.6"):
        dm.setup()
    assert dm.datasets == {}


def test_overlap_allowed_with_warning():
    with pytest.warns(UserWarning, match="ood_energy=.* overlaps the training range energy"):
        dm = FluidsDataModule(**SMALL, ood_energy=(0.2, 0.5), allow_overlap=True)
    assert dm.ood_energy == (0.2, 0.5)


class _Frames(pl.LightningModule):
    """Features: the mean square vorticity of each frame (linear in the enstrophy)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Identity()
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.encoder(x.pow(2).mean((2, 3, 4))))

    def training_step(self, batch, batch_idx):
        return self(batch["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_linear_probe_selects_factors_by_name(trainer_kwargs):
    dm = FluidsDataModule(**{**SMALL, "num_train": 32, "num_val": 8, "num_test": 8, "num_ood": 8})
    probe = LinearProbe("encoder", targets={"enstrophy": "enstrophy", "viscosity": "viscosity"}, task="regression",
                        mode="frozen", alphas=(1e-8,), log_figures=False)
    trainer = pl.Trainer(max_epochs=1, callbacks=[probe], **trainer_kwargs)
    trainer.fit(_Frames(), dm)
    m = trainer.callback_metrics
    for split in ("val", "test", "ood"):
        assert float(m[f"probe/encoder/enstrophy/{split}/r2"]) > 0.999  # frame 0's mean square is 2 Z
    assert float(m["probe/encoder/viscosity/val/r2"]) < 0.999
