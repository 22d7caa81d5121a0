"""DCI on wide features: the previous configuration against the current default of ``lit_repr.metrics.dci``.

The case: 2048 features (a wide ReLU layer of a random mixing of the factors, plus noise), 1500
training and 1500 test samples, 5 factors. Before: one single-threaded 50-tree random forest per
factor searching every feature at every split (``candidates_per_factor=None, n_jobs=None``). Now:
the forests search only the factors' best features by single-split gain, on every core. Prints the
wall-clock and CPU seconds of each (CPU seconds, summed over threads, hardly depend on what else the
machine runs), the ratio of wall-clock times, and both sets of scores with their differences. ``--all-metrics`` also
times the other identifiability readouts on the same case, as ``IdentifiabilityMetrics`` runs them
(linear R² fitted on the training samples and scored on the test samples, Pearson MCC on the test
samples, kernel R² on the two halves of the test samples).

    python benchmarks/bench_dci.py [--features 2048 --samples 1500 --factors 5] [--all-metrics]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lit_repr.metrics import LinearIdentifiability, MeanCorrelationCoefficient, dci, kernel_ridge_r2


def problem(features: int, samples: int, factors: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * samples, factors))
    w = rng.normal(size=(factors, features)) / np.sqrt(factors)
    f = np.maximum(z @ w + 0.5 * rng.normal(size=features), 0) + 0.1 * rng.normal(size=(2 * samples, features))
    return f[:samples], z[:samples], f[samples:], z[samples:]


class Clock:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:7.1f} s wall {self.cpu:7.1f} s CPU"


def timed(data: tuple[np.ndarray, ...], **kwargs) -> tuple[Clock, dict]:
    with Clock() as clock:
        out = dci(*data, **kwargs)
    return clock, out


def other_metrics(data: tuple[np.ndarray, ...]) -> None:
    ftr, ztr, fte, zte = (torch.as_tensor(a) for a in data)
    with Clock() as clock:
        lin = LinearIdentifiability(ftr.shape[1], ztr.shape[1])
        lin.update(ftr, ztr, "fit")
        lin.update(fte, zte, "eval")
        r2 = float(lin.compute()["r2"])
    print(f"  linear_r2  {clock}   (R² {r2:.3f})")
    with Clock() as clock:
        mcc = MeanCorrelationCoefficient(ztr.shape[1], ftr.shape[1])
        mcc.update(zte, fte)
        value = mcc.compute().mean
    print(f"  mcc        {clock}   (MCC {value:.3f})")
    half = fte.shape[0] // 2
    with Clock() as clock:
        kr2 = kernel_ridge_r2(fte[:half], zte[:half], fte[half:], zte[half:])["r2"]
    print(f"  kernel_r2  {clock}   (R² {float(kr2):.3f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--factors", type=int, default=5)
    ap.add_argument("--all-metrics", action="store_true", help="also time linear_r2, mcc and kernel_r2")
    args = ap.parse_args()
    data = problem(args.features, args.samples, args.factors)
    print(f"{args.features} features, {args.samples} train + {args.samples} test samples, {args.factors} factors")
    if args.all_metrics:
        other_metrics(data)
    print("DCI")
    t_new, new = timed(data)
    print(f"  now    (default: candidates_per_factor=32, n_jobs=-1): {t_new}", flush=True)
    t_old, old = timed(data, candidates_per_factor=None, n_jobs=None)
    print(f"  before (every feature, one thread):                   {t_old}")
    print(f"  ratio before/now: {t_old.wall / t_new.wall:.1f}x wall, {t_old.cpu / t_new.cpu:.1f}x CPU")
    print(f"  {'score':18s} {'before':>8s} {'now':>8s} {'diff':>8s}")
    for key in ("disentanglement", "completeness", "informativeness"):
        print(f"  {key:18s} {old[key]:8.4f} {new[key]:8.4f} {new[key] - old[key]:+8.4f}")


if __name__ == "__main__":
    main()
