import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lit_repr.callbacks import LinearProbe
from lit_repr.data import OrbitsDataModule
from lit_repr.data.orbits import ORBIT_FACTORS, kepler_initial_state, orbital_elements, simulate_kepler

SMALL = dict(num_train=32, num_val=8, num_test=8, num_ood=8, num_steps=8, batch_size=8)


def _long_rollout(integrator="yoshida4", substeps=40, energy_tol=1e-5):
    # Periods 2 pi sqrt(a^3 / mu) are at most 6.8 here; 140 observations 0.5 apart span > 10 orbits of each.
    dm = OrbitsDataModule(num_train=16, num_val=0, num_test=0, num_ood=0, num_steps=140, dt=0.5, substeps=substeps,
                          integrator=integrator, energy_tol=energy_tol, eccentricity=(0.3, 0.6), radius=(1.0, 1.2),
                          mu=(1.5, 2.0))
    dm.setup()
    return dm.arrays("train")


def test_energy_and_angular_momentum_conserved_over_ten_orbits():
    t = _long_rollout()
    a, mu = t["semi_major_axis"].double(), t["mu"].double()
    period = 2 * math.pi * torch.sqrt(a**3 / mu)
    assert float((139 * 0.5 / period).min()) > 10
    # From positions, velocities and mu alone (float32 arrays): relative errors below 1e-5 at every step.
    pos, vel = t["positions"].double(), t["velocities"].double()
    r = pos.norm(dim=-1)
    energy = 0.5 * (vel**2).sum(-1) - mu[:, None] / r
    ang = pos[..., 0] * vel[..., 1] - pos[..., 1] * vel[..., 0]
    assert float(((energy - energy[:, :1]).abs() / energy[:, :1].abs()).max()) < 1e-5
    assert float(((ang - ang[:, :1]).abs() / ang[:, :1].abs()).max()) < 1e-5
    # The orbits really move: each sweeps its whole range of radii.
    e = t["eccentricity"].double()
    assert torch.allclose(r.min(1).values, a * (1 - e), rtol=0.05)
    assert torch.allclose(r.max(1).values, a * (1 + e), rtol=0.05)


def test_verlet_energy_error_is_bounded_not_drifting():
    t = _long_rollout("verlet", substeps=200, energy_tol=2e-4)
    el = orbital_elements(t["positions"], t["velocities"], t["mu"])
    err = np.abs(el["energy"] / el["energy"][:, :1] - 1)
    assert err.max() < 2e-4
    # symplectic: the error over the last quarter is no larger than over the first (no secular drift)
    assert err[:, -35:].max() < 2 * err[:, :35].max() + 1e-7


def test_trajectory_matches_the_exact_kepler_solution():
    rng = np.random.default_rng(0)
    n = 20
    a, e, mu = rng.uniform(1, 2, n), rng.uniform(0, 0.7, n), rng.uniform(0.5, 2, n)
    m0, w = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    cw = rng.uniform(size=n) < 0.5
    r0, v0 = kepler_initial_state(a, e, mu, m0, w, cw)
    pos, vel = simulate_kepler(r0, v0, mu, 50, 0.4, substeps=40)
    times = 0.4 * np.arange(50)
    n_motion = np.sqrt(mu / a**3)
    for k in (0, 17, 49):
        r_exact, v_exact = kepler_initial_state(a, e, mu, m0 + n_motion * times[k], w, cw)
        np.testing.assert_allclose(pos[:, k], r_exact, atol=1e-4)  # global error O(h^4)
        np.testing.assert_allclose(vel[:, k], v_exact, atol=1e-4)


def test_latents_consistent_with_trajectory():
    dm = OrbitsDataModule(**SMALL)
    dm.setup()
    assert dm.factor_names == ORBIT_FACTORS and dm.num_factors == 6
    for split in ("train", "ood"):
        t = dm.arrays(split)
        el = orbital_elements(t["positions"][:, 0], t["velocities"][:, 0], t["mu"])
        for k in ("energy", "angular_momentum", "semi_major_axis", "eccentricity", "force"):
            np.testing.assert_allclose(t[k].numpy(), el[k], rtol=1e-5, atol=1e-6, err_msg=k)
        for i, k in enumerate(ORBIT_FACTORS):
            assert torch.equal(t["latents"][:, i], t[k])
        # a and e from energy and angular momentum; |L| = sqrt(mu a (1 - e^2))
        E, L, mu = t["energy"].double(), t["angular_momentum"].double(), t["mu"].double()
        torch.testing.assert_close(t["semi_major_axis"].double(), -mu / (2 * E), rtol=1e-5, atol=0)
        torch.testing.assert_close(t["eccentricity"].double(), torch.sqrt(1 + 2 * E * L**2 / mu**2), rtol=0, atol=1e-4)
        torch.testing.assert_close(L.abs(), torch.sqrt(mu * t["semi_major_axis"] * (1 - t["eccentricity"] ** 2)),
                                   rtol=1e-5, atol=0)
        # force_t is mu / r^2 at every observation, force its first value
        r = t["positions"].double().norm(dim=-1)
        torch.testing.assert_close(t["force_t"].double(), mu[:, None] / r**2, rtol=1e-5, atol=0)
        torch.testing.assert_close(t["force"], t["force_t"][:, 0])
        # x is the state sequence
        torch.testing.assert_close(t["x"], torch.cat([t["positions"], t["velocities"]], -1))
    assert (dm.arrays("train")["angular_momentum"] < 0).any() and (dm.arrays("train")["angular_momentum"] > 0).any()
    assert max(dm.energy_error.values()) < 1e-5


def test_observation_and_noise():
    clean = OrbitsDataModule(**SMALL, observation="positions")
    clean.setup()
    t = clean.arrays("train")
    assert t["x"].shape == (32, 8, 2) and torch.equal(t["x"], t["positions"])
    noisy = OrbitsDataModule(**SMALL, noise_std=0.1)
    noisy.setup()
    n = noisy.arrays("train")
    assert torch.equal(n["positions"], t["positions"])  # same seed: same orbits; ground truth stays clean
    resid = n["x"] - torch.cat([n["positions"], n["velocities"]], -1)
    assert 0.08 < float(resid.std()) < 0.12


def test_deterministic_per_seed_and_different_across_seeds(check_seeded):
    check_seeded(lambda seed: OrbitsDataModule(**SMALL, seed=seed), splits=("train", "ood"))


def test_ood_ranges_really_outside():
    dm = OrbitsDataModule(num_train=64, num_val=0, num_test=0, num_ood=64, num_steps=2)
    dm.setup()
    t, o = dm.arrays("train"), dm.arrays("ood")
    tol = 1e-5
    for key, train_range, ood_range in (("eccentricity", dm.eccentricity, dm.ood_eccentricity),
                                        ("semi_major_axis", dm.radius, dm.ood_radius), ("mu", dm.mu, dm.ood_mu)):
        assert train_range[0] - tol <= float(t[key].min()) and float(t[key].max()) <= train_range[1] + tol
        assert ood_range[0] - tol <= float(o[key].min()) and float(o[key].max()) <= ood_range[1] + tol
        assert float(o[key].min()) > float(t[key].max())  # the default OOD ranges lie above training
    # an unshifted factor (None) keeps the training range
    only_mass = OrbitsDataModule(num_train=8, num_val=0, num_test=0, num_ood=8, num_steps=2,
                                 ood_eccentricity=None, ood_radius=None)
    assert only_mass.ood_eccentricity == only_mass.eccentricity and only_mass.ood_mu == (2.5, 4.0)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"eccentricity": (0.5, 0.2)}, r"eccentricity must be a \(low, high\) range with low <= high"),
        ({"eccentricity": (0.5, 1.0)}, r"eccentricity .* both in \[0, 1\)"),  # unbound orbit
        ({"eccentricity": (-0.1, 0.2)}, "eccentricity"),
        ({"radius": (0.0, 1.0)}, r"radius .* both > 0"),
        ({"radius": (2.0,)}, "radius"),
        ({"mu": "big"}, "mu must be a"),
        ({"mu": (1.0, float("nan"))}, "mu must be a"),
        ({"ood_mu": (3.0, 2.5)}, "ood_mu must be a"),
        ({"ood_eccentricity": (0.4, 0.7)}, r"ood_eccentricity=\(0.4, 0.7\) overlaps the training range eccentricity"),
        ({"ood_radius": (0.5, 1.5)}, r"ood_radius=\(0.5, 1.5\) overlaps .* below 1 or above 2"),
        ({"ood_mu": (1.0, 1.0)}, "ood_mu"),
        ({"ood_eccentricity": None, "ood_radius": None, "ood_mu": None}, "'ood' split would be in distribution"),
        ({"num_train": 0}, "num_train"),
        ({"num_ood": -1}, "num_ood"),
        ({"num_steps": 1}, "num_steps"),
        ({"dt": 0.0}, "dt"),
        ({"substeps": 0}, "substeps"),
        ({"integrator": "euler"}, "integrator must be one of"),
        ({"observation": "image"}, "observation"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"clockwise_fraction": 1.5}, "clockwise_fraction"),
        ({"energy_tol": 0.0}, "energy_tol"),
        ({"allow_overlap": "yes"}, "allow_overlap"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        OrbitsDataModule(**{**SMALL, **kw})


def test_overlap_allowed_with_warning():
    with pytest.warns(UserWarning, match="ood_mu=.* overlaps the training range mu.*allow_overlap=True"):
        dm = OrbitsDataModule(**SMALL, ood_mu=(1.0, 3.0), allow_overlap=True)
    assert dm.ood_mu == (1.0, 3.0)
    # an OOD split with none of its factors set may not exist, but num_ood=0 does not need one
    OrbitsDataModule(**{**SMALL, "num_ood": 0}, ood_eccentricity=None, ood_radius=None, ood_mu=None)


def test_too_large_step_names_the_largest_that_works():
    match = r"dt/substeps = 0.25/2 .* too large for energy_tol=1e-05.*use substeps >= (\d+)"
    with pytest.raises(ValueError, match=match) as info:
        OrbitsDataModule(**SMALL, dt=0.25, substeps=2)
    need = int(info.value.args[0].split("use substeps >= ")[1].split()[0])
    assert need > 2
    dm = OrbitsDataModule(**SMALL, dt=0.25, substeps=need)  # the suggestion meets the tolerance
    dm.setup()
    assert max(dm.energy_error.values()) <= 1e-5
    # velocity Verlet (second order) needs more steps than Yoshida's fourth-order scheme for the same tolerance
    with pytest.raises(ValueError, match="'verlet'"):
        OrbitsDataModule(**SMALL, dt=0.25, substeps=need, integrator="verlet")
    # without a tolerance there is no check
    OrbitsDataModule(**SMALL, dt=0.25, substeps=2, energy_tol=None).setup()


class _StateFeatures(nn.Module):
    """Features of the first observed state: kinetic energy, 1/r and a constant-free random mix."""

    def forward(self, x):
        r = x[:, 0, :2].norm(dim=-1)
        kinetic = 0.5 * (x[:, 0, 2:] ** 2).sum(-1)
        return torch.stack([kinetic, 1.0 / r, x[:, 0, 0]], -1)


class _Trivial(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = _StateFeatures()
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.encoder(x))

    def training_step(self, batch, batch_idx):
        return self(batch["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_linear_probe_selects_factors_by_name(trainer_kwargs):
    # With mu fixed, energy = kinetic - mu / r is linear in the features; eccentricity is not.
    dm = OrbitsDataModule(num_train=128, num_val=32, num_test=32, num_ood=32, num_steps=4, mu=(1.0, 1.0),
                          ood_mu=None, ood_eccentricity=None, batch_size=32)
    probe = LinearProbe("encoder", targets={"energy": "energy", "eccentricity": "eccentricity"}, task="regression",
                        mode="frozen", alphas=(1e-8,), log_figures=False)
    trainer = pl.Trainer(max_epochs=1, callbacks=[probe], **trainer_kwargs)
    trainer.fit(_Trivial(), dm)
    m = trainer.callback_metrics
    for split in ("val", "test", "ood"):
        assert float(m[f"probe/encoder/energy/{split}/r2"]) > 0.999
        assert float(m[f"probe/encoder/eccentricity/{split}/r2"]) < 0.9
