"""The PhyIP simulators against peers: time to generate trajectories and the accuracy they reach.

Orbits: ``simulate_kepler`` (Yoshida 4th order, vectorised over trajectories) against SciPy's
``solve_ivp`` with DOP853 (an adaptive 8th-order Runge–Kutta), one call per trajectory as a peer would
write it, asked for the same observation times, with ``rtol`` chosen so that its worst relative energy
error is no larger than ours. Both integrate the same orbits (the default training ranges of
``OrbitsDataModule``); the script prints the seconds, their ratio, and each one's worst relative
energy error and worst position error against the exact Kepler solution.

Fluids: ``simulate_vorticity`` (batched over flows, 16 at a time) against the same solver called once
per flow (how a single-flow solver is used) and on all flows in one batch, and the whole default
``FluidsDataModule`` and ``OrbitsDataModule`` set-up times. Times are wall-clock and CPU seconds (CPU
seconds hardly depend on what else the machine runs); ratios are of CPU seconds. Accuracy: the
relative energy error of the inviscid limit and the error of the Taylor–Green energy decay against
``exp(-2 nu |k|^2 t)``.

    python benchmarks/bench_simulators.py [--orbits 256] [--flows 128]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from lit_repr.data import FluidsDataModule, OrbitsDataModule
from lit_repr.data.fluids import flow_diagnostics, random_vorticity, simulate_vorticity
from lit_repr.data.orbits import kepler_initial_state, orbital_elements, simulate_kepler


def clock(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``, its wall-clock and its CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _orbits(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a, e, mu = rng.uniform(1, 2, n), rng.uniform(0, 0.5, n), rng.uniform(0.5, 2, n)
    m0, w = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    return a, e, mu, m0, w


def _errors(pos, vel, a, e, mu, m0, w, times):
    el = orbital_elements(pos, vel, mu)
    energy = np.abs(el["energy"] / el["energy"][:, :1] - 1).max()
    n_motion = np.sqrt(mu / a**3)
    exact = np.stack([kepler_initial_state(a, e, mu, m0 + n_motion * t, w)[0] for t in times], 1)
    return energy, np.abs(pos - exact).max()


def bench_orbits(n: int) -> None:
    a, e, mu, m0, w = _orbits(n)
    r0, v0 = kepler_initial_state(a, e, mu, m0, w)
    steps, dt, substeps = 32, 0.25, 20
    times = dt * np.arange(steps)
    (pos, vel), ours_wall, ours = clock(lambda: simulate_kepler(r0, v0, mu, steps, dt, substeps))
    ours_energy, ours_pos = _errors(pos, vel, a, e, mu, m0, w, times)

    def rhs(_, y, m):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return [y[2], y[3], -m * y[0] / r3, -m * y[1] / r3]

    for rtol in (1e-8, 1e-9, 1e-10, 1e-11, 1e-12):
        sols, peer_wall, peer = clock(lambda rtol=rtol: [
            solve_ivp(rhs, (0, times[-1]), np.r_[r0[i], v0[i]], method="DOP853", t_eval=times, rtol=rtol,
                      atol=rtol * 1e-2, args=(mu[i],)).y for i in range(n)])  # fmt: skip
        y = np.stack(sols)  # (n, 4, T)
        p_pos, p_vel = y[:, :2].transpose(0, 2, 1), y[:, 2:].transpose(0, 2, 1)
        peer_energy, peer_pos = _errors(p_pos, p_vel, a, e, mu, m0, w, times)
        if peer_energy <= ours_energy:
            break
    print(f"orbits: {n} trajectories x {steps} observations (dt={dt}, {substeps} substeps)")
    print(f"  simulate_kepler (Yoshida 4, vectorised) {ours_wall:7.3f} s wall {ours:7.3f} s CPU   "
          f"energy err {ours_energy:.2e}   position err {ours_pos:.2e}")
    print(f"  scipy solve_ivp DOP853 rtol={rtol:g}      {peer_wall:7.3f} s wall {peer:7.3f} s CPU   "
          f"energy err {peer_energy:.2e}   position err {peer_pos:.2e}")
    print(f"  ratio of CPU seconds (scipy / ours): {peer / ours:.1f}x")


def bench_fluids(n: int) -> None:
    w0 = random_vorticity(n, 32, 0.3, (1, 4), np.random.default_rng(0))
    nu = np.full(n, 0.05)
    batched, ours_wall, ours = clock(lambda: simulate_vorticity(w0, nu, 8, 0.2, 8))
    single, loop_wall, loop = clock(lambda: np.concatenate(
        [simulate_vorticity(w0[i : i + 1], nu[i], 8, 0.2, 8) for i in range(n)]))  # fmt: skip
    whole, whole_wall, whole_cpu = clock(lambda: simulate_vorticity(w0, nu, 8, 0.2, 8, chunk_size=n))
    assert np.allclose(batched, single, atol=1e-12) and np.allclose(batched, whole, atol=1e-12)
    print(f"fluids: {n} flows on 32x32, 8 frames (dt=0.2, 8 RK4 steps each)")
    print(f"  simulate_vorticity, 16 flows at a time  {ours_wall:7.3f} s wall {ours:7.3f} s CPU")
    print(f"  one call per flow                       {loop_wall:7.3f} s wall {loop:7.3f} s CPU")
    print(f"  all {n} flows in one batch              {whole_wall:7.3f} s wall {whole_cpu:7.3f} s CPU")
    print(f"  ratios of CPU seconds: per flow / ours {loop / ours:.1f}x, one batch / ours {whole_cpu / ours:.1f}x")
    inviscid = flow_diagnostics(simulate_vorticity(w0[:8], 0.0, 21, 0.2, 8))["kinetic_energy"]
    drift = np.abs(inviscid / inviscid[:, :1] - 1).max()
    print(f"  inviscid limit, 4 time units: worst relative energy error {drift:.2e}")
    x = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    tg = 2 * np.sin(x)[:, None] * np.sin(x)[None, :]
    ke = flow_diagnostics(simulate_vorticity(tg[None], 0.05, 11, 0.3, 3))["kinetic_energy"][0]
    exact = 0.25 * np.exp(-2 * 0.05 * 2 * 0.3 * np.arange(11))
    print(f"  Taylor-Green energy decay vs exp(-2 nu |k|^2 t): worst relative error {np.abs(ke / exact - 1).max():.2e}")


def bench_datamodules() -> None:
    for cls in (OrbitsDataModule, FluidsDataModule):
        dm = cls()
        _, wall, cpu = clock(dm.setup)
        sizes = {k: len(v) for k, v in dm.datasets.items()}
        print(f"{cls.__name__}() default set-up: {wall:6.2f} s wall {cpu:6.2f} s CPU for splits {sizes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orbits", type=int, default=256)
    parser.add_argument("--flows", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_orbits(args.orbits)
    bench_fluids(args.flows)
    bench_datamodules()


if __name__ == "__main__":
    main()
