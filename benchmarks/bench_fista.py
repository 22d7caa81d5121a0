"""FISTAEncoder against scikit-learn's SparseCoder (coordinate-descent lasso) and a plain FISTA loop.

Same dictionary, same data, same penalty: ``min_s ½‖x − s·D‖² + α‖s‖₁`` per sample, optionally
``s ≥ 0``. Two cases, side by side in one run:

- ``sparse codes``: 512 atoms in 128 dims, 2,048 samples, α = 0.1 (non-negative and signed codes);
- ``lasso``: 256 atoms in 64 dims, 4,096 samples, α = 0.05, signed codes. Each sample mixes 8
  atoms; the mean objective, about 0.31, is that of the case the encoder's float64 target is set on
  (objective 0.307).

Samples are ``s·D`` plus noise of standard deviation 0.01, with ``active`` atoms per sample.

For each row: the mean objective of each solver, the largest per-sample objective gap (target: ours
within 1e-4 of scikit-learn's, or below it), wall-clock times (best of ``--repeats``), the speed-up
over scikit-learn, and the floor: a plain batched FISTA loop (Gram form ``z = y − (y·G − x·Dᵀ)/L``,
one momentum for the batch, no restart, no stopping test) of 500 iterations in float64 on the same
problem, with its objective (lasso case only: 500 Gram iterations on 2,048 × 512 codes take
a while). The machine's matmul GFLOP/s are printed first.

    python benchmarks/bench_fista.py [--atoms 512 --dim 128 --samples 2048 --alpha 0.1]  # one custom case
    python benchmarks/bench_fista.py --case lasso --repeats 7  # the lasso case alone

Measured on 2 cores (load below 1.5), this script with the encoder before the exact working-set solves
and with it, back to back (float64; times in s; speed-up over scikit-learn):
    sparse codes s >= 0   0.183 -> 0.068   1.4x -> 3.7x
    sparse codes signed   0.233 -> 0.079   1.3x -> 4.1x
    lasso signed          1.299 -> 0.130   0.4x -> 4.5x   (floor 5.83 s: 45x faster than the plain loop)
with every objective within 1e-9 of scikit-learn's. The aim on the lasso case, 8x, was not reached.

Then the primal-dual active-set steps on the whole dictionary before the working sets (one batched
Cholesky solve per step on supports padded with identity atoms, the whole gradient from the supports'
Gram rows in float32, confirmed in float64). This script with the encoder before and after them,
alternating (before, after, before, after), 2 cores, load 1.4-1.7, best of 3 (float64; times in s;
speed-up over scikit-learn):
    sparse codes s >= 0   0.063 / 0.067 -> 0.037 / 0.042   3.9x / 3.6x -> 6.6x / 5.8x
    sparse codes signed   0.077 / 0.081 -> 0.039 / 0.047   3.8x / 3.8x -> 7.6x / 6.7x
    lasso signed          0.131 / 0.127 -> 0.058 / 0.062   4.5x / 4.5x -> 9.8x / 9.4x  (floor 4.0-5.0 s:
                                                                                         65-72x faster)
with every per-sample objective within 2e-10 of scikit-learn's (mean 0.310371 on the lasso case).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import matmul_gflops
from sklearn.decomposition import SparseCoder

from lit_repr.models.encoders import FISTAEncoder, lasso_objective

CASES = {  # name: (atoms, dim, samples, active, alpha, rows as (positive, dtype), whether to time the floor)
    "sparse codes": (
        512,
        128,
        2048,
        8,
        0.1,
        ((True, torch.float64), (False, torch.float64), (True, torch.float32)),
        False,
    ),
    "lasso": (256, 64, 4096, 8, 0.05, ((False, torch.float64), (False, torch.float32)), True),
}


def problem(atoms: int, dim: int, samples: int, active: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((atoms, dim))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    S = np.zeros((samples, atoms))
    for i in range(samples):
        S[i, rng.choice(atoms, active, replace=False)] = np.abs(rng.standard_normal(active))
    X = S @ D + 0.01 * rng.standard_normal((samples, dim))
    return X, D


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def plain_fista(X: torch.Tensor, D: torch.Tensor, alpha: float, positive: bool, iters: int = 500) -> torch.Tensor:
    """The textbook batched FISTA loop in the Gram form: the floor the encoder is measured against."""
    G, c = D @ D.T, X @ D.T
    step = 1.0 / float(torch.linalg.eigvalsh(G)[-1])
    s = torch.zeros_like(c)
    y, t = s, 1.0
    for _ in range(iters):
        z = y - step * (y @ G - c)
        s_new = (z - alpha * step).clamp_min(0) if positive else torch.sign(z) * (z.abs() - alpha * step).clamp_min(0)
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        y = s_new + (t - 1.0) / t_new * (s_new - s)
        s, t = s_new, t_new
    return s


def bench(atoms, dim, samples, active, alpha, positive, dtype, repeats, floor_cache: dict | None) -> dict:
    X, D = problem(atoms, dim, samples, active)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    enc = FISTAEncoder(penalty=alpha, max_iter=5000, tol=1e-7, nonnegative=positive)
    Xo, Do = Xt.to(dtype), Dt.to(dtype)
    enc(Xo[:8], Do)  # warm-up
    coder = SparseCoder(
        D, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=positive, transform_max_iter=5000,
        n_jobs=None,
    )  # fmt: skip
    t_ours = t_ref = t_floor = float("inf")
    floor = None if floor_cache is None else floor_cache.get(positive)
    for _ in range(repeats):  # interleaved, so that load on a shared machine hits every solver alike
        ours, t = _timed(lambda: enc(Xo, Do).double())
        t_ours = min(t_ours, t)
        ref, t = _timed(lambda: coder.transform(X))
        t_ref = min(t_ref, t)
        if floor_cache is not None and positive not in floor_cache:
            s, t = _timed(lambda: plain_fista(Xt, Dt, alpha, positive))
            floor = (s, min(t, floor[1]) if floor is not None else t)
    if floor_cache is not None:
        floor_cache[positive] = floor
        t_floor = floor[1]
    obj_ours = lasso_objective(Xt, ours, Dt, alpha)
    obj_ref = lasso_objective(Xt, torch.as_tensor(ref), Dt, alpha)
    return {
        "ours": float(obj_ours.mean()),
        "sklearn": float(obj_ref.mean()),
        "floor": float(lasso_objective(Xt, floor[0], Dt, alpha).mean()) if floor is not None else float("nan"),
        "max_gap": float((obj_ours - obj_ref).max()),  # > 0: ours worse on some sample
        "t_ours": t_ours,
        "t_ref": t_ref,
        "t_floor": t_floor,
        "iters": enc.last_iterations,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=None, help="run one custom case of this size instead of the two cases")
    p.add_argument("--case", choices=sorted(CASES), default=None, help="run only this one of the two cases")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--active", type=int, default=8, help="atoms per sample in the custom case")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = dict(CASES) if args.case is None else {args.case: CASES[args.case]}
    if args.atoms is not None:
        rows = ((True, torch.float64), (False, torch.float64), (True, torch.float32))
        cases = {"custom": (args.atoms, args.dim, args.samples, args.active, args.alpha, rows, True)}
    print(
        f"{args.threads} thread(s); matmul 1024x1024: {matmul_gflops(torch.float64, 1024, 5):.1f} GFLOP/s float64, "
        f"{matmul_gflops(torch.float32, 1024, 5):.1f} GFLOP/s float32; times best of {args.repeats}; "
        "scikit-learn and the floor (plain FISTA, 500 iterations) float64; objectives float64"
    )
    for name, (atoms, dim, samples, active, alpha, rows, with_floor) in cases.items():
        print(f"\n{name}: {atoms} atoms in {dim} dims, {samples} samples, {active} active per sample, alpha={alpha}")
        print(
            f"{'codes':<10} {'obj FISTA':>10} {'obj sklearn':>11} {'obj floor':>10} {'max gap':>8} {'<=1e-4':>6} "
            f"{'FISTA s':>7} {'sklearn s':>9} {'floor s':>7} {'vs sklearn':>10} {'vs floor':>8} {'iters':>6}"
        )
        floors: dict | None = {} if with_floor else None  # the float64 floor, once per sign constraint
        for positive, dtype in rows:
            r = bench(atoms, dim, samples, active, alpha, positive, dtype, args.repeats, floors)
            label = ("s >= 0" if positive else "signed") + (" f32" if dtype == torch.float32 else "")
            has_floor = r["t_floor"] < float("inf")
            t_floor = f"{r['t_floor']:>7.3f}" if has_floor else f"{'-':>7}"
            vs_floor = f"{r['t_floor'] / r['t_ours']:>7.1f}x" if has_floor else f"{'-':>8}"
            print(
                f"{label:<10} {r['ours']:>10.6f} {r['sklearn']:>11.6f} {r['floor']:>10.6f} {r['max_gap']:>8.1e} "
                f"{str(r['max_gap'] <= 1e-4):>6} {r['t_ours']:>7.3f} {r['t_ref']:>9.3f} {t_floor} "
                f"{r['t_ref'] / r['t_ours']:>9.1f}x {vs_floor} {r['iters']:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
