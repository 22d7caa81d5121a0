"""DCI on wide features: the previous configuration against the current default of ``lit_repr.metrics.dci``.

The case: 2048 features (a wide ReLU layer of a random mixing of the factors, plus noise), 1500
training and 1500 test samples, 5 factors. Before: one single-threaded 50-tree random forest per
factor searching every feature at every split (``candidates_per_factor=None, n_jobs=None``). Now:
the forests search only the factors' best features by single-split gain, on every core. Prints the
seconds of each, their ratio, and both sets of scores with their differences.

    python benchmarks/bench_dci.py [--features 2048 --samples 1500 --factors 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lit_repr.metrics import dci


def problem(features: int, samples: int, factors: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * samples, factors))
    w = rng.normal(size=(factors, features)) / np.sqrt(factors)
    f = np.maximum(z @ w + 0.5 * rng.normal(size=features), 0) + 0.1 * rng.normal(size=(2 * samples, features))
    return f[:samples], z[:samples], f[samples:], z[samples:]


def timed(data: tuple[np.ndarray, ...], **kwargs) -> tuple[float, dict]:
    t = time.perf_counter()
    out = dci(*data, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--factors", type=int, default=5)
    args = ap.parse_args()
    data = problem(args.features, args.samples, args.factors)
    print(f"DCI: {args.features} features, {args.samples} train + {args.samples} test samples, {args.factors} factors")
    t_new, new = timed(data)
    print(f"  now    (default: candidates_per_factor=32, n_jobs=-1): {t_new:7.1f} s", flush=True)
    t_old, old = timed(data, candidates_per_factor=None, n_jobs=None)
    print(f"  before (every feature, one thread):                   {t_old:7.1f} s")
    print(f"  ratio before/now: {t_old / t_new:.1f}x")
    print(f"  {'score':18s} {'before':>8s} {'now':>8s} {'diff':>8s}")
    for key in ("disentanglement", "completeness", "informativeness"):
        print(f"  {key:18s} {old[key]:8.4f} {new[key]:8.4f} {new[key] - old[key]:+8.4f}")


if __name__ == "__main__":
    main()
