"""Two-body Kepler orbits with their conserved quantities as ground truth.

The relative coordinate ``r = r_1 - r_2`` of two point masses obeys ``r'' = -mu r / |r|^3`` with
``mu = G (m_1 + m_2)``. :func:`kepler_initial_state` places a body on a bound orbit of given
semi-major axis ``a``, eccentricity ``e`` and orientation; :func:`simulate_kepler` integrates many
such orbits at once (float64, vectorised over trajectories) with a symplectic integrator: Yoshida's
fourth-order composition of leapfrog (three force evaluations per step) or velocity Verlet (second
order, one). Symplectic integrators keep the energy error bounded over long rollouts: it oscillates,
largest at periapsis, and does not drift. :func:`orbital_elements` recovers the specific energy,
angular momentum, semi-major axis and eccentricity of a state.

:class:`OrbitsDataModule` serves sampled trajectories with every quantity in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_choice, check_int, check_number
from lit_repr.data.base import ArrayDataModule
from lit_repr.data.ranges import check_ood_ranges, check_range

__all__ = [
    "OrbitsDataModule",
    "ORBIT_FACTORS",
    "kepler_initial_state",
    "simulate_kepler",
    "orbital_elements",
    "worst_energy_error",
]

ORBIT_FACTORS: tuple[str, ...] = ("energy", "angular_momentum", "semi_major_axis", "eccentricity", "force", "mu")

# Yoshida (1990) fourth-order composition: drift c_i, kick d_i.
_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = -(2.0 ** (1.0 / 3.0)) * _W1
_YOSHIDA_C = (_W1 / 2, (_W0 + _W1) / 2, (_W0 + _W1) / 2, _W1 / 2)
_YOSHIDA_D = (_W1, _W0, _W1)
_ORDER = {"yoshida4": 4, "verlet": 2}


def _eccentric_anomaly(mean_anomaly: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Solve Kepler's equation ``E - e sin E = M`` by Newton's method (vectorised, ``0 <= e < 1``)."""
    m = np.mod(mean_anomaly + np.pi, 2 * np.pi) - np.pi  # in [-pi, pi)
    ecc = np.where(e > 0.8, np.pi * np.sign(m), m)  # a start that converges for every e < 1
    for _ in range(100):
        f = ecc - e * np.sin(ecc) - m
        step = f / (1.0 - e * np.cos(ecc))
        ecc = ecc - step
        if np.all(np.abs(step) < 1e-15):
            break
    return ecc


def kepler_initial_state(
    semi_major_axis: np.ndarray,
    eccentricity: np.ndarray,
    mu: np.ndarray,
    mean_anomaly: np.ndarray,
    periapsis_angle: np.ndarray,
    clockwise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity ``(n, 2)`` of bodies on bound Kepler orbits with the given elements.

    The orbit has its focus at the origin, its periapsis in direction ``periapsis_angle`` (radians);
    the body sits at ``mean_anomaly`` (``0`` is periapsis, ``pi`` apoapsis) and moves
    counter-clockwise unless ``clockwise`` is set for it.

    Args:
        semi_major_axis: ``a > 0`` per orbit.
        eccentricity: ``0 <= e < 1`` per orbit.
        mu: gravitational parameter ``G (m_1 + m_2) > 0`` per orbit.
        mean_anomaly: mean anomaly per orbit (radians).
        periapsis_angle: direction of the periapsis per orbit (radians).
        clockwise: boolean per orbit (default: all counter-clockwise).

    Returns:
        ``(positions, velocities)``, float64 arrays of shape ``(n, 2)``.

    Example:
        >>> r, v = kepler_initial_state(np.array([1.0]), np.array([0.0]), np.array([1.0]), np.zeros(1), np.zeros(1))
        >>> r.round(12).tolist(), v.round(12).tolist()
        ([[1.0, 0.0]], [[0.0, 1.0]])
    """
    a, e, mu, m, w = (np.asarray(v, dtype=np.float64).reshape(-1) for v in
                      (semi_major_axis, eccentricity, mu, mean_anomaly, periapsis_angle))  # fmt: skip
    if not (len(a) == len(e) == len(mu) == len(m) == len(w)):
        lengths = [len(a), len(e), len(mu), len(m), len(w)]
        raise ValueError(f"every element needs one value per orbit; got lengths {lengths}")
    if np.any(~np.isfinite(np.concatenate([a, e, mu, m, w]))):
        raise ValueError("orbital elements contain NaN or inf")
    if np.any(a <= 0) or np.any(mu <= 0) or np.any((e < 0) | (e >= 1)):
        raise ValueError("bound orbits need semi_major_axis > 0, mu > 0 and 0 <= eccentricity < 1")
    ecc = _eccentric_anomaly(m, e)
    b = np.sqrt(1.0 - e**2)
    r = a * (1.0 - e * np.cos(ecc))
    pos = np.stack([a * (np.cos(ecc) - e), a * b * np.sin(ecc)], 1)
    vel = (np.sqrt(mu * a) / r)[:, None] * np.stack([-np.sin(ecc), b * np.cos(ecc)], 1)
    if clockwise is not None:
        flip = np.where(np.asarray(clockwise, dtype=bool).reshape(-1), -1.0, 1.0)
        pos[:, 1] *= flip
        vel[:, 1] *= flip
    c, s = np.cos(w), np.sin(w)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
    return np.einsum("nij,nj->ni", rot, pos), np.einsum("nij,nj->ni", rot, vel)


def _acceleration(pos: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r2 = (pos * pos).sum(-1, keepdims=True)
    return -mu[:, None] * pos / (r2 * np.sqrt(r2))


def simulate_kepler(
    positions: np.ndarray,
    velocities: np.ndarray,
    mu: np.ndarray,
    num_steps: int,
    dt: float,
    substeps: int = 1,
    integrator: Literal["yoshida4", "verlet"] = "yoshida4",
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate ``r'' = -mu r / |r|^3`` for many orbits at once and observe every ``dt``.

    Args:
        positions: ``(n, 2)`` initial positions.
        velocities: ``(n, 2)`` initial velocities.
        mu: ``(n,)`` gravitational parameters ``> 0``.
        num_steps: observations per trajectory ``T`` (the first is the initial state).
        dt: time between observations.
        substeps: integrator steps per observation (step ``h = dt / substeps``).
        integrator: ``"yoshida4"`` (fourth order, three force evaluations per step) or ``"verlet"``
            (velocity Verlet, second order, one).

    Returns:
        ``(positions, velocities)``, float64 arrays of shape ``(n, T, 2)``.

    Example:
        >>> r, v = simulate_kepler(np.array([[1.0, 0]]), np.array([[0, 1.0]]), np.array([1.0]), 5, math.pi / 2, 100)
        >>> r[0, -1].round(6).tolist()  # a circular orbit of period 2 pi, after one period
        [1.0, -0.0]
    """
    check_int("num_steps", num_steps)
    check_number("dt", dt, low=0, low_open=True)
    check_int("substeps", substeps)
    check_choice("integrator", integrator, tuple(_ORDER))
    x = np.array(positions, dtype=np.float64)
    v = np.array(velocities, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 2 or v.shape != x.shape or mu.shape != (x.shape[0],):
        raise ValueError(f"positions and velocities must be (n, 2) and mu (n,); got {x.shape}, {v.shape}, {mu.shape}")
    n = x.shape[0]
    out_x = np.empty((n, num_steps, 2))
    out_v = np.empty((n, num_steps, 2))
    h = dt / substeps
    acc = _acceleration(x, mu) if integrator == "verlet" else None
    for t in range(num_steps):
        out_x[:, t], out_v[:, t] = x, v
        if t == num_steps - 1:
            break
        for _ in range(substeps):
            if integrator == "verlet":
                v += 0.5 * h * acc
                x += h * v
                acc = _acceleration(x, mu)
                v += 0.5 * h * acc
            else:
                for c, d in zip(_YOSHIDA_C[:3], _YOSHIDA_D):
                    x += c * h * v
                    v += d * h * _acceleration(x, mu)
                x += _YOSHIDA_C[3] * h * v
    return out_x, out_v


def orbital_elements(positions: np.ndarray | Tensor, velocities: np.ndarray | Tensor, mu: np.ndarray | Tensor
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Specific energy, angular momentum, semi-major axis and eccentricity of two-body states.

    With ``r = |positions|`` and ``v = |velocities|`` (last axis of length 2; leading axes are
    broadcast against ``mu``): ``energy = v^2/2 - mu/r``, ``angular_momentum = x v_y - y v_x`` (the z
    component, positive counter-clockwise), ``semi_major_axis = -mu / (2 energy)`` (bound orbits,
    ``energy < 0``), ``eccentricity = sqrt(1 + 2 energy L^2 / mu^2)`` and ``force = mu / r^2`` (the
    magnitude of the specific force). Computed in float64.

    Example:
        >>> el = orbital_elements(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array(1.0))
        >>> [round(float(el[k]), 12) for k in ("energy", "angular_momentum", "semi_major_axis", "eccentricity")]
        [-0.5, 1.0, 1.0, 0.0]
    """
    x = np.asarray(positions.detach().cpu() if isinstance(positions, Tensor) else positions, dtype=np.float64)
    v = np.asarray(velocities.detach().cpu() if isinstance(velocities, Tensor) else velocities, dtype=np.float64)
    mu = np.asarray(mu.detach().cpu() if isinstance(mu, Tensor) else mu, dtype=np.float64)
    mu = mu.reshape(mu.shape + (1,) * (x.ndim - 1 - mu.ndim))
    r = np.sqrt((x * x).sum(-1))
    energy = 0.5 * (v * v).sum(-1) - mu / r
    ang = x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = -mu / (2.0 * energy)
        e = np.sqrt(np.clip(1.0 + 2.0 * energy * ang**2 / mu**2, 0.0, None))
    return {"energy": energy, "angular_momentum": ang, "semi_major_axis": a, "eccentricity": e,
            "force": mu / r**2}  # fmt: skip


def worst_energy_error(
    eccentricity: float, semi_major_axis: float, mu: float, step: float,
    integrator: Literal["yoshida4", "verlet"] = "yoshida4", max_steps: int = 200_000,
) -> float:  # fmt: skip
    """Largest relative energy error ``|E_t - E_0| / |E_0|`` of the integrator with step ``step`` along
    one orbit, from apoapsis through periapsis (where the error of a symplectic integrator peaks).

    Orbits needing more than ``max_steps`` steps for the half period start nearer periapsis instead,
    so the cost stays bounded.

    Example:
        >>> worst_energy_error(0.5, 1.0, 1.0, 0.01) < 1e-7
        True
    """
    period = 2 * math.pi * math.sqrt(semi_major_axis**3 / mu)
    n = min(math.ceil(period / (2 * step)), max_steps)
    start = -2 * math.pi * n * step / period  # mean anomaly n steps before periapsis
    r0, v0 = kepler_initial_state(np.array([semi_major_axis]), np.array([eccentricity]), np.array([mu]),
                                  np.array([start]), np.zeros(1))  # fmt: skip
    x, y, vx, vy = float(r0[0, 0]), float(r0[0, 1]), float(v0[0, 0]), float(v0[0, 1])
    e0 = 0.5 * (vx * vx + vy * vy) - mu / math.hypot(x, y)
    worst = 0.0
    h = step
    for _ in range(n):  # scalar floats: far faster than numpy for one orbit
        if integrator == "verlet":
            r2 = x * x + y * y
            f = -mu / (r2 * math.sqrt(r2))
            vx += 0.5 * h * f * x
            vy += 0.5 * h * f * y
            x += h * vx
            y += h * vy
            r2 = x * x + y * y
            f = -mu / (r2 * math.sqrt(r2))
            vx += 0.5 * h * f * x
            vy += 0.5 * h * f * y
        else:
            for c, d in zip(_YOSHIDA_C[:3], _YOSHIDA_D):
                x += c * h * vx
                y += c * h * vy
                r2 = x * x + y * y
                f = -mu / (r2 * math.sqrt(r2))
                vx += d * h * f * x
                vy += d * h * f * y
            x += _YOSHIDA_C[3] * h * vx
            y += _YOSHIDA_C[3] * h * vy
        err = abs(0.5 * (vx * vx + vy * vy) - mu / math.hypot(x, y) - e0)
        worst = max(worst, err)
    return worst / abs(e0)


class OrbitsDataModule(ArrayDataModule):
    """Two-body Kepler trajectories with their orbital invariants, in and out of distribution.

    Each sample is a bound orbit of the relative coordinate with semi-major axis ``a`` drawn
    uniformly from ``radius``, eccentricity ``e`` from ``eccentricity``, gravitational parameter
    ``mu = G (m_1 + m_2)`` from ``mu``, a uniform orbital phase (mean anomaly), a uniform direction of
    the periapsis and a sense of rotation (clockwise with probability ``clockwise_fraction``). The
    trajectory is integrated in float64 with a symplectic integrator (``substeps`` steps of
    ``dt / substeps`` per observation) and observed ``num_steps`` times, every ``dt``, from ``t = 0``.
    The ``ood`` split draws ``e``, ``a`` and ``mu`` from ``ood_eccentricity``, ``ood_radius`` and
    ``ood_mu`` instead, which must not overlap the training ranges (``None``: that factor is not
    shifted). Everything is a deterministic function of ``seed``.

    Batches are dicts (``B`` samples, ``T = num_steps``):

    - ``x``: what a model sees, float32: the state ``[x, y, v_x, v_y]`` ``(B, T, 4)`` (or, with
      ``observation="positions"``, ``(B, T, 2)``), plus Gaussian noise of std ``noise_std``;
    - ``positions`` ``(B, T, 2)``, ``velocities`` ``(B, T, 2)``, ``mu`` ``(B,)``: the noiseless ground
      truth (float32 roundings of the float64 integration);
    - ``latents`` ``(B, 6)``: the per-sample factors in the order of :attr:`factor_names`, and each factor
      also under its own key ``(B,)``, so a probe selects one by name, e.g.
      ``LinearProbe(targets={"energy": "energy"}, task="regression")``:

      - ``energy``: specific orbital energy ``v^2/2 - mu/r`` (``= -mu / (2a)``, conserved);
      - ``angular_momentum``: specific angular momentum ``x v_y - y v_x`` (z component; positive
        counter-clockwise, ``|L| = sqrt(mu a (1 - e^2))``, conserved);
      - ``semi_major_axis``: ``a = -mu / (2 energy)``;
      - ``eccentricity``: ``e = sqrt(1 + 2 energy L^2 / mu^2)``;
      - ``force``: magnitude of the specific inverse-square force ``mu / r^2`` at the first observation
        (``t = 0``); it changes along the orbit, and ``force_t`` ``(B, T)`` holds it at every observation;
      - ``mu``: the gravitational parameter.

      Invariants are computed from the float64 initial state (they match the drawn ``a`` and ``e`` to
      rounding).

    Before anything is generated, the worst orbit of every split's ranges (largest ``e``, smallest
    ``a``, largest ``mu``: the shortest periapsis passage) is integrated once with step
    ``dt / substeps``; if its relative energy error exceeds ``energy_tol`` a ``ValueError`` gives the
    largest step that meets it. The generated trajectories are checked again, and the largest
    relative energy error of each split is kept in :attr:`energy_error`.

    Args:
        num_train: training trajectories.
        num_val: validation trajectories (in distribution).
        num_test: test trajectories (in distribution).
        num_ood: out-of-distribution trajectories (split ``ood``; ``0``: none).
        num_steps: observations per trajectory ``T`` (``>= 2``).
        dt: time between observations ``> 0``.
        substeps: integrator steps per observation.
        integrator: ``"yoshida4"`` (fourth-order symplectic) or ``"verlet"`` (velocity Verlet).
        eccentricity: ``(low, high)`` range of ``e``, within ``[0, 1)`` (bound orbits only).
        radius: ``(low, high)`` range of the semi-major axis ``a > 0``.
        mu: ``(low, high)`` range of ``mu = G (m_1 + m_2) > 0`` (the total mass with ``G = 1``).
        ood_eccentricity: range of ``e`` of the ``ood`` split (``None``: as ``eccentricity``).
        ood_radius: range of ``a`` of the ``ood`` split (``None``: as ``radius``).
        ood_mu: range of ``mu`` of the ``ood`` split (``None``: as ``mu``).
        allow_overlap: accept OOD ranges that overlap the training ranges, with a warning.
        clockwise_fraction: probability that an orbit turns clockwise (negative angular momentum).
        observation: ``"state"`` (positions and velocities) or ``"positions"``.
        noise_std: standard deviation of the Gaussian noise added to ``x`` (ground truth stays clean).
        energy_tol: largest relative energy error allowed (``None``: no check).
        batch_size: samples per batch.
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of every draw.

    Example:
        >>> dm = OrbitsDataModule(num_train=32, num_val=8, num_test=8, num_ood=8, num_steps=16, batch_size=8)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["latents"].shape, b["energy"].shape, b["force_t"].shape
        (torch.Size([8, 16, 4]), torch.Size([8, 6]), torch.Size([8]), torch.Size([8, 16]))
        >>> sorted(dm.probe_dataloaders()), dm.factor_names[:2]
        (['ood', 'test', 'train', 'val'], ('energy', 'angular_momentum'))
    """

    def __init__(
        self,
        num_train: int = 2048,
        num_val: int = 256,
        num_test: int = 256,
        num_ood: int = 256,
        num_steps: int = 32,
        dt: float = 0.25,
        substeps: int = 20,
        integrator: Literal["yoshida4", "verlet"] = "yoshida4",
        eccentricity: Sequence[float] = (0.0, 0.5),
        radius: Sequence[float] = (1.0, 2.0),
        mu: Sequence[float] = (0.5, 2.0),
        ood_eccentricity: Sequence[float] | None = (0.6, 0.8),
        ood_radius: Sequence[float] | None = (2.5, 3.5),
        ood_mu: Sequence[float] | None = (2.5, 4.0),
        allow_overlap: bool = False,
        clockwise_fraction: float = 0.5,
        observation: Literal["state", "positions"] = "state",
        noise_std: float = 0.0,
        energy_tol: float | None = 1e-5,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.num_train = check_int("num_train", num_train)
        self.num_val = check_int("num_val", num_val, low=0)
        self.num_test = check_int("num_test", num_test, low=0)
        self.num_ood = check_int("num_ood", num_ood, low=0)
        self.num_steps = check_int("num_steps", num_steps, low=2)
        self.dt = check_number("dt", dt, low=0, low_open=True)
        self.substeps = check_int("substeps", substeps)
        self.integrator = check_choice("integrator", integrator, tuple(_ORDER))
        self.eccentricity = check_range("eccentricity", eccentricity, low=0, high=1, high_open=True)
        self.radius = check_range("radius", radius, low=0, low_open=True)
        self.mu = check_range("mu", mu, low=0, low_open=True)
        self.allow_overlap = check_bool("allow_overlap", allow_overlap)
        ood = check_ood_ranges(
            {
                "ood_eccentricity": (ood_eccentricity, "eccentricity", self.eccentricity,
                                     dict(low=0, high=1, high_open=True)),
                "ood_radius": (ood_radius, "radius", self.radius, dict(low=0, low_open=True)),
                "ood_mu": (ood_mu, "mu", self.mu, dict(low=0, low_open=True)),
            },
            self.allow_overlap,
            self.num_ood,
        )
        self.ood_eccentricity = ood["ood_eccentricity"] or self.eccentricity
        self.ood_radius = ood["ood_radius"] or self.radius
        self.ood_mu = ood["ood_mu"] or self.mu
        self.clockwise_fraction = check_number("clockwise_fraction", clockwise_fraction, low=0, high=1)
        self.observation = check_choice("observation", observation, ("state", "positions"))
        self.noise_std = check_number("noise_std", noise_std, low=0)
        if energy_tol is not None:
            check_number("energy_tol", energy_tol, low=1e-12, why=" (the float64 rounding floor; None: no check)")
        self.energy_tol = energy_tol
        self.factor_names: tuple[str, ...] = ORBIT_FACTORS
        self.energy_error: dict[str, float] = {}
        if energy_tol is not None:
            self._check_step()

    # ------------------------------------------------------------------ checks
    def _ranges(self) -> dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]]:
        out = {}
        if self.num_train + self.num_val + self.num_test > 0:
            out["train"] = (self.eccentricity, self.radius, self.mu)
        if self.num_ood > 0:
            out["ood"] = (self.ood_eccentricity, self.ood_radius, self.ood_mu)
        return out

    def _check_step(self) -> None:
        """A priori: the worst orbit of each split's ranges, integrated with the requested step."""
        h = self.dt / self.substeps
        order = _ORDER[self.integrator]
        failures = []  # (largest step meeting the tolerance, split, worst orbit, error at h)
        for split, (ecc, rad, mu) in self._ranges().items():
            worst = (ecc[1], rad[0], mu[1])
            err_h = err = worst_energy_error(*worst, h, self.integrator)
            if err <= self.energy_tol:
                continue
            # Symplectic error scales as h^order: shrink until the tolerance holds (checked, not only estimated).
            h_ok = h
            for _ in range(20):
                h_ok = h_ok * 0.9 * min((self.energy_tol / max(err, 1e-300)) ** (1 / order), 0.95)
                err = worst_energy_error(*worst, h_ok, self.integrator)
                if err <= self.energy_tol:
                    break
            failures.append((h_ok, split, worst, err_h))
        if not failures:
            return
        h_ok = min(f[0] for f in failures)
        where = "; ".join(
            f"the worst orbit of the {split!r} ranges (eccentricity={w[0]:g}, semi-major axis={w[1]:g}, mu={w[2]:g}) "
            f"has a relative energy error of {err:.3g}" for _, split, w, err in failures
        )
        raise ValueError(
            f"the integrator step dt/substeps = {self.dt:g}/{self.substeps} = {h:.4g} is too large for "
            f"energy_tol={self.energy_tol:g} with {self.integrator!r}: {where}. The largest step meeting energy_tol is "
            f"about {h_ok:.4g}: use substeps >= {math.ceil(self.dt / h_ok)} for dt={self.dt:g} (or dt <= "
            f"{h_ok * self.substeps:.4g} for substeps={self.substeps}),"
            f"{'' if self.integrator == 'yoshida4' else ' integrator=yoshida4,'} or a larger energy_tol"
        )

    # ------------------------------------------------------------------ generation
    def sample(self, n: int, rng: np.random.Generator, ood: bool = False) -> dict[str, Tensor]:
        """Draw and integrate ``n`` trajectories from the training (or, with ``ood``, the OOD) ranges."""
        return self._sample(check_int("n", n, low=0), rng, ood)[0]

    def _sample(self, n: int, rng: np.random.Generator, ood: bool) -> tuple[dict[str, Tensor], float]:
        """The samples and the largest relative energy error along their trajectories."""
        ecc_r, rad_r, mu_r = (self.ood_eccentricity, self.ood_radius, self.ood_mu) if ood else (
            self.eccentricity, self.radius, self.mu)  # fmt: skip
        e = rng.uniform(*ecc_r, size=n)
        a = rng.uniform(*rad_r, size=n)
        mu = rng.uniform(*mu_r, size=n)
        mean_anomaly = rng.uniform(0.0, 2 * np.pi, size=n)
        periapsis = rng.uniform(0.0, 2 * np.pi, size=n)
        clockwise = rng.uniform(size=n) < self.clockwise_fraction
        r0, v0 = kepler_initial_state(a, e, mu, mean_anomaly, periapsis, clockwise)
        pos, vel = simulate_kepler(r0, v0, mu, self.num_steps, self.dt, self.substeps, self.integrator)
        el0 = orbital_elements(r0, v0, mu)
        energy_t = orbital_elements(pos, vel, mu)["energy"]
        err = float(np.max(np.abs(energy_t - el0["energy"][:, None]) / np.abs(el0["energy"][:, None]))) if n else 0.0
        state = np.concatenate([pos, vel], -1) if self.observation == "state" else pos
        x = state + self.noise_std * rng.standard_normal(state.shape) if self.noise_std > 0 else state
        r = np.sqrt((pos * pos).sum(-1))
        latents = {k: el0[k] for k in ORBIT_FACTORS if k != "mu"}
        latents["mu"] = mu
        out = {
            "x": torch.from_numpy(x).float(),
            "positions": torch.from_numpy(pos).float(),
            "velocities": torch.from_numpy(vel).float(),
            "latents": torch.from_numpy(np.stack([latents[k] for k in ORBIT_FACTORS], 1)).float(),
            **{k: torch.from_numpy(v).float() for k, v in latents.items()},
            "force_t": torch.from_numpy(mu[:, None] / r**2).float(),
        }
        return out, err

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test, "ood": self.num_ood}
        out: dict[str, dict[str, Tensor]] = {}
        errors: dict[str, float] = {}
        for i, (name, n) in enumerate(sizes.items()):
            if n == 0:
                continue
            rng = np.random.default_rng([self.seed, 23, i])  # one stream per split: sizes do not shift others
            out[name], errors[name] = self._sample(n, rng, ood=name == "ood")
        if self.energy_tol is not None:
            bad = {k: v for k, v in errors.items() if v > self.energy_tol}
            if bad:
                raise ValueError(
                    f"relative energy errors {bad} of the generated trajectories exceed "
                    f"energy_tol={self.energy_tol:g}; "
                    f"increase substeps (now {self.substeps}) or decrease dt (now {self.dt:g})"
                )
        self.energy_error = errors
        return out

    @property
    def num_factors(self) -> int:
        """Number of per-sample latent factors (columns of ``latents``)."""
        return len(self.factor_names)
