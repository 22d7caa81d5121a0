"""Two-dimensional incompressible Navier–Stokes flows with their energy, enstrophy and viscosity as ground truth.

On the periodic square ``[0, 2 pi)^2`` the vorticity ``w`` of an incompressible flow obeys

    ``dw/dt + u . grad w = nu laplacian w``,   ``u = (d psi/dy, -d psi/dx)``,   ``laplacian psi = -w``.

:func:`simulate_vorticity` solves it pseudo-spectrally on an ``N x N`` grid in float64, many flows at
once: the advection term is evaluated on the grid and dealiased by the 2/3 rule (every mode with
``|k_x|`` or ``|k_y|`` above ``(N - 1) // 3`` is removed, so the quadratic product is computed without
aliasing), viscosity is integrated exactly by an integrating factor ``exp(-nu |k|^2 t)``, and the
advection by the classical fourth-order Runge–Kutta scheme in the integrating-factor variables. The
truncated inviscid system conserves energy and enstrophy exactly; the time stepping loses a small
amount, of order ``h^5`` per step. A single Fourier shell (e.g. the Taylor–Green vortex
``w = 2 sin x sin y``) is an exact solution whose energy decays as ``exp(-2 nu |k|^2 t)``.

:func:`random_vorticity` draws band-limited Gaussian random fields of a given kinetic energy;
:func:`flow_diagnostics` measures kinetic energy ``(1/2) <|u|^2>``, enstrophy ``(1/2) <w^2>`` (both
averages over the domain) and the largest speed. :class:`FluidsDataModule` serves sampled rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from lit_repr.checks import check_bool, check_int, check_number
from lit_repr.data.base import ArrayDataModule
from lit_repr.data.ranges import check_ood_ranges, check_range

__all__ = [
    "FluidsDataModule",
    "FLUID_FACTORS",
    "simulate_vorticity",
    "random_vorticity",
    "flow_diagnostics",
    "dealiased_wavenumber",
]

FLUID_FACTORS: tuple[str, ...] = ("kinetic_energy", "enstrophy", "viscosity")


def dealiased_wavenumber(grid: int) -> int:
    """The largest wavenumber component kept by the 2/3 rule on a ``grid x grid`` grid: ``(grid - 1) // 3``.

    Example:
        >>> dealiased_wavenumber(32)
        10
    """
    return (check_int("grid", grid, low=4) - 1) // 3


class _Spectral:
    """Wavenumbers, the inverse Laplacian and the dealiasing mask of an ``N x N`` grid (real FFT layout)."""

    def __init__(self, grid: int) -> None:
        self.grid = grid
        self.kx = np.fft.rfftfreq(grid, 1.0 / grid)[None, :]  # (1, N/2+1): last axis is x
        self.ky = np.fft.fftfreq(grid, 1.0 / grid)[:, None]  # (N, 1): first axis is y
        self.k2 = self.kx**2 + self.ky**2
        self.inv_k2 = np.where(self.k2 > 0, 1.0 / np.where(self.k2 > 0, self.k2, 1.0), 0.0)
        kmax = dealiased_wavenumber(grid)
        self.mask = (np.abs(self.kx) <= kmax) & (np.abs(self.ky) <= kmax)
        self.minus_mask = -self.mask.astype(np.float64)
        shape = self.k2.shape
        # d/dy and d/dx of the streamfunction and of the vorticity, as multipliers of w_hat
        self.multipliers = np.stack([
            np.broadcast_to(1j * self.ky * self.inv_k2, shape),  # u = d psi / dy
            np.broadcast_to(-1j * self.kx * self.inv_k2, shape),  # v = -d psi / dx
            np.broadcast_to(1j * self.kx, shape),  # d w / dx
            np.broadcast_to(1j * self.ky, shape),  # d w / dy
        ])[:, None]  # (4, 1, N, N/2+1)

    def fft(self, f: np.ndarray) -> np.ndarray:
        return scipy.fft.rfft2(f)

    def ifft(self, f_hat: np.ndarray) -> np.ndarray:
        return scipy.fft.irfft2(f_hat, s=(self.grid, self.grid))

    def velocity(self, w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.multipliers[:2, 0].reshape((2,) + (1,) * (w_hat.ndim - 2) + self.k2.shape)
        u, v = self.ifft(m * w_hat)
        return u, v

    def advection(self, w_hat: np.ndarray) -> np.ndarray:
        """``-(u . grad w)`` in Fourier space, dealiased."""
        u, v, wx, wy = self.ifft(self.multipliers * w_hat)
        u *= wx
        v *= wy
        u += v
        out = self.fft(u)
        out *= self.minus_mask
        return out


def flow_diagnostics(vorticity: np.ndarray | Tensor) -> dict[str, np.ndarray]:
    """Kinetic energy, enstrophy and largest speed of vorticity fields on ``[0, 2 pi)^2``.

    ``kinetic_energy = (1/2) <u^2 + v^2>`` and ``enstrophy = (1/2) <w^2>``, averages over the domain;
    ``max_speed = max |u|`` over the grid. The last two axes of ``vorticity`` are the grid (``y``, ``x``);
    leading axes are kept.

    Example:
        >>> x = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        >>> w = 2 * np.sin(x)[:, None] * np.sin(x)[None, :]  # Taylor-Green: u = (sin x cos y, -cos x sin y)
        >>> d = flow_diagnostics(w)
        >>> round(float(d["kinetic_energy"]), 12), round(float(d["enstrophy"]), 12), round(float(d["max_speed"]), 6)
        (0.25, 0.5, 1.0)
    """
    w = np.asarray(vorticity.detach().cpu() if isinstance(vorticity, Tensor) else vorticity, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"vorticity must end in a square grid (..., N, N), got shape {w.shape}")
    sp = _Spectral(w.shape[-1])
    u, v = sp.velocity(sp.fft(w))
    return {
        "kinetic_energy": 0.5 * (u**2 + v**2).mean((-2, -1)),
        "enstrophy": 0.5 * (w**2).mean((-2, -1)),
        "max_speed": np.sqrt(u**2 + v**2).max((-2, -1)),
    }


def random_vorticity(
    n: int, grid: int, kinetic_energy: np.ndarray | float, band: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """``n`` band-limited Gaussian random vorticity fields with the given kinetic energies.

    White Gaussian noise is filtered to the shell ``band[0] <= |k| <= band[1]`` (each mode an independent
    complex Gaussian: flat vorticity spectrum in the band), its mean removed, and each field rescaled so
    that ``(1/2) <|u|^2>`` equals its ``kinetic_energy`` exactly.

    Args:
        n: number of fields.
        grid: points per side ``N``.
        kinetic_energy: target energy per field (scalar or ``(n,)``), ``> 0``.
        band: ``(low, high)`` wavenumber magnitudes, ``high <= (N - 1) // 3`` (dealiased modes only).
        rng: numpy random generator.

    Returns:
        ``(n, N, N)`` float64 vorticity.

    Example:
        >>> w = random_vorticity(3, 32, 0.5, (1, 4), np.random.default_rng(0))
        >>> w.shape, np.round(flow_diagnostics(w)["kinetic_energy"], 12).tolist()
        ((3, 32, 32), [0.5, 0.5, 0.5])
    """
    check_int("n", n, low=0)
    kmax = dealiased_wavenumber(grid)
    lo, hi = check_range("band", band, low=0, low_open=True, high=kmax)
    energy = np.broadcast_to(np.asarray(kinetic_energy, dtype=np.float64), (n,))
    if np.any(~np.isfinite(energy)) or np.any(energy <= 0):
        raise ValueError("kinetic_energy must be finite and > 0 for every field")
    sp = _Spectral(grid)
    k = np.sqrt(sp.k2)
    shell = (k >= lo) & (k <= hi) & sp.mask
    if not shell.any():
        raise ValueError(f"band={band!r} holds no wavenumber of the {grid}x{grid} grid; widen it")
    w_hat = sp.fft(rng.standard_normal((n, grid, grid))) * shell
    u, v = sp.velocity(w_hat)
    scale = np.sqrt(energy / (0.5 * (u**2 + v**2).mean((-2, -1))))
    return sp.ifft(w_hat * scale[:, None, None])


def simulate_vorticity(
    vorticity: np.ndarray,
    viscosity: np.ndarray | float,
    num_steps: int,
    dt: float,
    substeps: int = 1,
    max_cfl: float | None = None,
    chunk_size: int = 16,
) -> np.ndarray:
    """Integrate 2D incompressible Navier–Stokes in vorticity form for many flows at once.

    Pseudo-spectral on ``[0, 2 pi)^2`` (float64), 2/3-rule dealiasing, exact integrating factor for the
    viscosity, fourth-order Runge–Kutta for advection. The initial field is projected on the dealiased
    modes with zero mean. Flows are integrated ``chunk_size`` at a time: small batches of small
    transforms stay in the CPU cache (16 flows of 32x32 at a time take about 25% less CPU per flow
    than 128, and half as much as one at a time).

    Args:
        vorticity: ``(n, N, N)`` initial vorticity (axes ``y``, ``x``).
        viscosity: kinematic viscosity ``>= 0`` (scalar or ``(n,)``).
        num_steps: observations ``T`` (the first is the initial field).
        dt: time between observations.
        substeps: Runge–Kutta steps per observation (step ``h = dt / substeps``).
        max_cfl: if set, raise ``ValueError`` as soon as an observed field has an advective CFL number
            ``max|u| h / dx`` above it (``dx = 2 pi / N``).
        chunk_size: flows integrated together.

    Returns:
        ``(n, T, N, N)`` float64 vorticity.

    Example:
        >>> x = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        >>> w0 = 2 * np.sin(x)[:, None] * np.sin(x)[None, :]
        >>> w = simulate_vorticity(w0[None], 0.1, num_steps=3, dt=0.5)
        >>> bool(np.allclose(w[0, -1], w0 * np.exp(-2 * 0.1 * 1.0)))  # decays as exp(-nu |k|^2 t), |k|^2 = 2
        True
    """
    w = np.asarray(vorticity, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise ValueError(f"vorticity must have shape (n, N, N), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("vorticity contains NaN or inf")
    n, grid = w.shape[0], w.shape[1]
    nu = np.broadcast_to(np.asarray(viscosity, dtype=np.float64), (n,))
    if np.any(~np.isfinite(nu)) or np.any(nu < 0):
        raise ValueError("viscosity must be finite and >= 0 for every flow")
    check_int("num_steps", num_steps)
    check_number("dt", dt, low=0, low_open=True)
    check_int("substeps", substeps)
    check_int("chunk_size", chunk_size)
    sp = _Spectral(grid)
    out = np.empty((n, num_steps, grid, grid))
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        out[sl] = _rollout(sp, w[sl], nu[sl], num_steps, dt, substeps, max_cfl)
    return out


def _rollout(sp: _Spectral, w: np.ndarray, nu: np.ndarray, num_steps: int, dt: float, substeps: int,
             max_cfl: float | None) -> np.ndarray:  # fmt: skip
    n, grid = w.shape[0], sp.grid
    h = dt / substeps
    dx = 2 * math.pi / grid
    decay = np.exp(-nu[:, None, None] * sp.k2[None] * h)  # integrating factor over one step
    half = np.sqrt(decay)
    w_hat = sp.fft(w) * sp.mask
    w_hat[:, 0, 0] = 0.0
    out = np.empty((n, num_steps, grid, grid))
    for t in range(num_steps):
        out[:, t] = sp.ifft(w_hat)
        if max_cfl is not None:
            u, v = sp.velocity(w_hat)
            cfl = float(np.sqrt(u**2 + v**2).max()) * h / dx if n else 0.0
            if cfl > max_cfl:
                raise ValueError(
                    f"the flow violates the advective CFL condition at observation {t} (time {t * dt:g}) on the "
                    f"{grid}x{grid} grid: max|u| h / dx = {cfl:.3g} > {max_cfl:g} with h = dt/substeps = {h:.4g}, "
                    f"dx = 2 pi/{grid}; use substeps >= {math.ceil(substeps * cfl / max_cfl)} or a smaller dt"
                )
        if t == num_steps - 1:
            break
        for _ in range(substeps):
            a = h * sp.advection(w_hat)
            b = h * sp.advection(half * (w_hat + a / 2))
            c = h * sp.advection(half * w_hat + b / 2)
            d = h * sp.advection(decay * w_hat + half * c)
            w_hat = decay * w_hat + (decay * a + 2 * half * (b + c) + d) / 6
    return out


class FluidsDataModule(ArrayDataModule):
    """Decaying two-dimensional turbulence: vorticity rollouts with energy, enstrophy and viscosity.

    Each sample starts from a band-limited Gaussian random vorticity field (flat spectrum on the shell
    ``band[0] <= |k| <= band[1]``) rescaled to a kinetic energy drawn uniformly from ``energy``, with a
    viscosity drawn uniformly from ``viscosity``, and is integrated by :func:`simulate_vorticity` on the
    periodic square ``[0, 2 pi)^2`` with a ``grid x grid`` grid, observed ``num_steps`` times every ``dt``
    from ``t = 0``. The ``ood`` split draws energy and viscosity from ``ood_energy`` and
    ``ood_viscosity`` instead, which must not overlap the training ranges (``None``: that factor is not
    shifted). Everything is a deterministic function of ``seed``.

    Batches are dicts: ``x`` the vorticity ``(B, T, 1, N, N)`` float32 (plus Gaussian noise of std
    ``noise_std``), ``latents`` ``(B, 3)`` in the order of :attr:`factor_names`, each factor also under its
    own key ``(B,)`` so a probe selects it by name (``LinearProbe(targets={"viscosity": "viscosity"})``):

    - ``kinetic_energy``: ``(1/2) <|u|^2>`` (domain average) of the first observed frame (``t = 0``, the
      drawn initial energy);
    - ``enstrophy``: ``(1/2) <w^2>`` of the first observed frame;
    - ``viscosity``: the kinematic viscosity ``nu``;

    and ``kinetic_energy_t``, ``enstrophy_t`` ``(B, T)``, the same at every observed frame.

    Two checks run before anything is generated, for the training and the OOD ranges: *resolution*,
    the dissipation scale ``eta = sqrt(nu / w_rms)`` of the smallest viscosity must be resolved by the
    dealiased grid, ``k_max eta >= 1`` with ``k_max = (N - 1) // 3`` and the bound ``w_rms <= band[1]
    sqrt(2 E)`` at the largest energy (enstrophy never grows in 2D decaying flows); *CFL*, the rms speed
    ``sqrt(2 E)`` must satisfy ``u h / dx <= cfl`` (``h = dt / substeps``, ``dx = 2 pi / N``). The
    largest speed of every generated field is then checked against ``cfl`` too, before the data is kept.

    Args:
        num_train: training rollouts.
        num_val: validation rollouts (in distribution).
        num_test: test rollouts (in distribution).
        num_ood: out-of-distribution rollouts (split ``ood``; ``0``: none).
        grid: grid points per side ``N`` (even, ``>= 8``).
        num_steps: observed frames ``T`` (``>= 2``).
        dt: time between frames ``> 0``.
        substeps: Runge–Kutta steps per frame.
        band: ``(low, high)`` wavenumber magnitudes of the initial fields, ``0 < low <= high <= (N - 1) // 3``.
        energy: ``(low, high)`` range of the initial kinetic energy ``> 0``.
        viscosity: ``(low, high)`` range of the viscosity ``>= 0``.
        ood_energy: initial-energy range of the ``ood`` split (``None``: as ``energy``).
        ood_viscosity: viscosity range of the ``ood`` split (``None``: as ``viscosity``).
        allow_overlap: accept OOD ranges that overlap the training ranges, with a warning.
        cfl: largest advective CFL number ``max|u| h / dx`` allowed, in ``(0, 1.3]`` (RK4 with the 2/3
            rule is stable up to about 1.35).
        check_resolution: run the resolution check (``False`` allows e.g. the inviscid limit ``nu = 0``).
        noise_std: standard deviation of the Gaussian noise added to ``x`` (latents stay clean).
        batch_size: samples per batch.
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of every draw.

    Example:
        >>> dm = FluidsDataModule(num_train=8, num_val=4, num_test=4, num_ood=4, num_steps=4, batch_size=4)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["latents"].shape, b["viscosity"].shape, b["enstrophy_t"].shape
        (torch.Size([4, 4, 1, 32, 32]), torch.Size([4, 3]), torch.Size([4]), torch.Size([4, 4]))
        >>> sorted(dm.probe_dataloaders()), dm.factor_names
        (['ood', 'test', 'train', 'val'], ('kinetic_energy', 'enstrophy', 'viscosity'))
    """

    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        num_ood: int = 64,
        grid: int = 32,
        num_steps: int = 8,
        dt: float = 0.2,
        substeps: int = 8,
        band: Sequence[float] = (1.0, 4.0),
        energy: Sequence[float] = (0.1, 0.3),
        viscosity: Sequence[float] = (0.04, 0.1),
        ood_energy: Sequence[float] | None = (0.4, 0.6),
        ood_viscosity: Sequence[float] | None = (0.12, 0.2),
        allow_overlap: bool = False,
        cfl: float = 0.5,
        check_resolution: bool = True,
        noise_std: float = 0.0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.num_train = check_int("num_train", num_train)
        self.num_val = check_int("num_val", num_val, low=0)
        self.num_test = check_int("num_test", num_test, low=0)
        self.num_ood = check_int("num_ood", num_ood, low=0)
        self.grid = check_int("grid", grid, low=8)
        if self.grid % 2:
            raise ValueError(f"grid must be an even int >= 8 (the FFT grid has a Nyquist mode), got {grid!r}")
        self.num_steps = check_int("num_steps", num_steps, low=2)
        self.dt = check_number("dt", dt, low=0, low_open=True)
        self.substeps = check_int("substeps", substeps)
        kmax = dealiased_wavenumber(self.grid)
        self.band = check_range("band", band, low=0, low_open=True, high=kmax)
        self.energy = check_range("energy", energy, low=0, low_open=True)
        self.viscosity = check_range("viscosity", viscosity, low=0)
        self.allow_overlap = check_bool("allow_overlap", allow_overlap)
        ood = check_ood_ranges(
            {
                "ood_energy": (ood_energy, "energy", self.energy, dict(low=0, low_open=True)),
                "ood_viscosity": (ood_viscosity, "viscosity", self.viscosity, dict(low=0)),
            },
            self.allow_overlap,
            self.num_ood,
        )
        self.ood_energy = ood["ood_energy"] or self.energy
        self.ood_viscosity = ood["ood_viscosity"] or self.viscosity
        self.cfl = check_number("cfl", cfl, low=0, low_open=True, high=1.3)
        self.check_resolution = check_bool("check_resolution", check_resolution)
        self.noise_std = check_number("noise_std", noise_std, low=0)
        self.factor_names: tuple[str, ...] = FLUID_FACTORS
        self._check_ranges()

    # ------------------------------------------------------------------ checks
    def _ranges(self) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
        out = {}
        if self.num_train + self.num_val + self.num_test > 0:
            out["train"] = (self.energy, self.viscosity)
        if self.num_ood > 0:
            out["ood"] = (self.ood_energy, self.ood_viscosity)
        return out

    def _check_ranges(self) -> None:
        kmax = dealiased_wavenumber(self.grid)
        h = self.dt / self.substeps
        dx = 2 * math.pi / self.grid
        for split, (energy, viscosity) in self._ranges().items():
            e_max, nu_min = energy[1], viscosity[0]
            names = ("energy", "viscosity") if split == "train" else ("ood_energy", "ood_viscosity")
            if self.check_resolution:
                w_rms = self.band[1] * math.sqrt(2 * e_max)
                nu_needed = w_rms / kmax**2
                if nu_min < nu_needed:
                    if nu_min == 0:
                        scale = "the inviscid limit has no dissipation scale: no grid resolves it"
                        fix = "check_resolution=False (short inviscid rollouts of the truncated equations)"
                    else:
                        eta = math.sqrt(nu_min / w_rms)
                        grid_needed = 3 * math.ceil(math.sqrt(w_rms / nu_min)) + 1
                        grid_needed += grid_needed % 2
                        scale = (f"the dissipation scale sqrt(nu / w_rms) = {eta:.3g} is below the smallest resolved "
                                 f"scale 1/k_max = 1/{kmax} = {1 / kmax:.3g}")
                        fix = f"grid >= {grid_needed}, a lower energy or band, or check_resolution=False"
                    raise ValueError(
                        f"the {self.grid}x{self.grid} grid cannot resolve the {split!r} flows: at "
                        f"{names[1]}={nu_min:g} "
                        f"and {names[0]}={e_max:g} (vorticity rms up to band[1] * sqrt(2 E) = {w_rms:.3g}) {scale}. "
                        f"The limit is viscosity >= w_rms / k_max^2 = {nu_needed:.3g} on this grid; or use {fix}"
                    )
            u_rms = math.sqrt(2 * e_max)
            cfl = u_rms * h / dx
            if cfl > self.cfl:
                raise ValueError(
                    f"the time step dt/substeps = {self.dt:g}/{self.substeps} = {h:.4g} violates the advective CFL "
                    f"limit on the {self.grid}x{self.grid} grid for the {split!r} flows ({names[0]} up to {e_max:g}, "
                    f"{names[1]} from {nu_min:g}): even the rms speed sqrt(2 E) = {u_rms:.3g} gives u h / dx = "
                    f"{cfl:.3g} > cfl={self.cfl:g}. The limit is h <= cfl dx / u = {self.cfl * dx / u_rms:.4g}: use "
                    f"substeps >= {math.ceil(self.substeps * cfl / self.cfl)} (peak speeds are about 3 times the rms: "
                    f"more are likely needed)"
                )

    # ------------------------------------------------------------------ generation
    def sample(self, n: int, rng: np.random.Generator, ood: bool = False) -> dict[str, Tensor]:
        """Draw and integrate ``n`` rollouts from the training (or, with ``ood``, the OOD) ranges."""
        check_int("n", n, low=0)
        energy_range, nu_range = (self.ood_energy, self.ood_viscosity) if ood else (self.energy, self.viscosity)
        energy = rng.uniform(*energy_range, size=n)
        nu = rng.uniform(*nu_range, size=n)
        w0 = random_vorticity(n, self.grid, energy, self.band, rng)
        split = "ood" if ood else "train/val/test"
        h = self.dt / self.substeps
        dx = 2 * math.pi / self.grid
        peak = float(flow_diagnostics(w0)["max_speed"].max()) if n else 0.0
        if peak * h / dx > self.cfl:
            raise ValueError(
                f"the drawn {split} flows violate the advective CFL limit on the {self.grid}x{self.grid} grid "
                f"(viscosity from {nu_range[0]:g}): max|u| h / dx = {peak:.3g} * {h:.4g} / {dx:.4g} = "
                f"{peak * h / dx:.3g} > cfl={self.cfl:g}; use substeps >= "
                f"{math.ceil(self.substeps * peak * h / dx / self.cfl)}"
                f" for dt={self.dt:g}"
            )
        w = simulate_vorticity(w0, nu, self.num_steps, self.dt, self.substeps, max_cfl=self.cfl)
        diag = flow_diagnostics(w)
        x = w + self.noise_std * rng.standard_normal(w.shape) if self.noise_std > 0 else w
        latents = {"kinetic_energy": diag["kinetic_energy"][:, 0], "enstrophy": diag["enstrophy"][:, 0],
                   "viscosity": nu}
        return {
            "x": torch.from_numpy(x).float().unsqueeze(2),
            "latents": torch.from_numpy(np.stack([latents[k] for k in FLUID_FACTORS], 1)).float(),
            **{k: torch.from_numpy(v).float() for k, v in latents.items()},
            "kinetic_energy_t": torch.from_numpy(diag["kinetic_energy"]).float(),
            "enstrophy_t": torch.from_numpy(diag["enstrophy"]).float(),
        }

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test, "ood": self.num_ood}
        out: dict[str, dict[str, Tensor]] = {}
        for i, (name, n) in enumerate(sizes.items()):
            if n > 0:
                rng = np.random.default_rng([self.seed, 29, i])  # one stream per split
                out[name] = self.sample(n, rng, ood=name == "ood")
        return out

    @property
    def num_factors(self) -> int:
        """Number of per-sample latent factors (columns of ``latents``)."""
        return len(self.factor_names)
