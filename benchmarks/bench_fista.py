"""FISTAEncoder against scikit-learn's SparseCoder (coordinate-descent lasso) on the same problem.

Same dictionary, same data, same penalty: ``min_s ½‖x − s·D‖² + α‖s‖₁`` per sample, optionally
``s ≥ 0``. Prints the mean objective of each solver, the largest per-sample objective gap (target:
ours within 1e-4 of scikit-learn's, or below it), and the wall-clock ratio.

    python benchmarks/bench_fista.py [--atoms 512 --dim 128 --samples 2048 --alpha 0.1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.decomposition import SparseCoder

from lit_repr.models.encoders import FISTAEncoder, lasso_objective


def problem(atoms: int, dim: int, samples: int, active: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((atoms, dim))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    S = np.zeros((samples, atoms))
    for i in range(samples):
        S[i, rng.choice(atoms, active, replace=False)] = np.abs(rng.standard_normal(active))
    X = S @ D + 0.01 * rng.standard_normal((samples, dim))
    return X, D


def bench(atoms: int, dim: int, samples: int, alpha: float, positive: bool, threads: int, dtype=torch.float64) -> dict:
    torch.set_num_threads(threads)
    X, D = problem(atoms, dim, samples, active=max(1, dim // 16))
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    enc = FISTAEncoder(penalty=alpha, max_iter=5000, tol=1e-7, nonnegative=positive)
    Xo, Do = Xt.to(dtype), Dt.to(dtype)
    enc(Xo[:8], Do)  # warm-up
    t = time.perf_counter()
    ours = enc(Xo, Do).double()
    t_ours = time.perf_counter() - t
    coder = SparseCoder(
        D, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=positive, transform_max_iter=5000,
        n_jobs=None,
    )  # fmt: skip
    t = time.perf_counter()
    ref = coder.transform(X)
    t_ref = time.perf_counter() - t
    obj_ours = lasso_objective(Xt, ours, Dt, alpha)
    obj_ref = lasso_objective(Xt, torch.as_tensor(ref), Dt, alpha)
    return {
        "ours": float(obj_ours.mean()),
        "sklearn": float(obj_ref.mean()),
        "max_gap": float((obj_ours - obj_ref).max()),  # > 0: ours worse on some sample
        "t_ours": t_ours,
        "t_ref": t_ref,
        "iters": enc.last_iterations,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    print(
        f"lasso per sample, {args.atoms} atoms in {args.dim} dims, {args.samples} samples, alpha={args.alpha}, "
        f"{args.threads} thread(s); scikit-learn float64, FISTA float64 (float32 in the last row), objectives float64"
    )
    print(
        f"{'codes':<10} {'obj FISTA':>12} {'obj sklearn':>12} {'max gap':>10} {'within 1e-4':>11} "
        f"{'FISTA s':>8} {'sklearn s':>9} {'speed-up':>9} {'FISTA iters':>11}"
    )
    for positive, dtype in ((True, torch.float64), (False, torch.float64), (True, torch.float32)):
        r = bench(args.atoms, args.dim, args.samples, args.alpha, positive, args.threads, dtype)
        label = ("s >= 0" if positive else "signed") + (" f32" if dtype == torch.float32 else "")
        print(
            f"{label:<10} {r['ours']:>12.6f} {r['sklearn']:>12.6f} {r['max_gap']:>10.1e} "
            f"{str(r['max_gap'] <= 1e-4):>11} {r['t_ours']:>8.2f} {r['t_ref']:>9.2f} {r['t_ref'] / r['t_ours']:>8.1f}x "
            f"{r['iters']:>11.0f}"
        )


if __name__ == "__main__":
    main()
