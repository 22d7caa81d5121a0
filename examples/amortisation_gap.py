"""The amortisation gap of sparse autoencoders (O'Neill, Gumran & Klindt, ICML 2025), reproduced.

Synthetic sparse-coding data (N=16 features, M=8 dimensions, K=3 active, magnitudes |N(0,1)|,
1024 train / 1024 test samples); codes and dictionary are unknown to every method. Three ways of
inferring codes share one dictionary-learning objective (squared error + L1) and differ only in
the encoder:

- SAE: the amortised linear encoder + ReLU;
- MLP: an amortised MLP encoder with one hidden layer of 256 units;
- sparse coding: no amortisation, codes are the exact non-negative lasso solutions (FISTA) on
  the current dictionary, in training and at test time;

All use Adam (lr 1e-3, full batch, L1 coefficient 0.03 on ``‖x − x̂‖²`` summed over features, i.e.
a lasso penalty of 0.015 for FISTA); the amortised encoders take 6000 steps, sparse coding 1500
dictionary steps (each with converged codes). The budget matters: at 2000 steps with lr 3e-3 the
MLP encoder is undertrained (code MCC 0.566 ± 0.088, below the SAE's 0.606) and the paper's
ordering SAE < MLP < sparse coding does not appear; at this budget it does. Plus a fourth row the
decoupling makes free: the *trained SAE's* dictionary with FISTA codes at test time (inference-time
optimisation, warm-started from the SAE encoder).

Atoms are kept at unit norm by projecting out the radial gradient and renormalizing
(``atom_norm="project"``), the constraint this table was measured with. With the module's default
``atom_norm="fold"`` (atom norms folded into the encoder) the first four seeds gave code MCC
0.602 (SAE) / 0.600 (MLP) / 0.687 (sparse coding): the MLP encoder loses its lead under the L1 penalty.

Code MCC (Pearson, Hungarian matching) and dictionary MCC (|cosine|) are measured on the test set
and printed, as mean ± std over seeds, beside the paper's numbers, with each encoder's inference
FLOPs per sample.

    python examples/amortisation_gap.py           # 5 seeds, paper size (about 7 minutes on a CPU core)
    python examples/amortisation_gap.py --quick   # 1 seed, fewer steps (seconds)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.metrics.mcc import mean_correlation_coefficient
from lit_repr.models.encoders import FISTAEncoder, MLPEncoder
from lit_repr.models.sae import SparseAutoencoder, flops_per_sample

#: O'Neill, Gumran & Klindt (2025), N=16, M=8, K=3, unknown codes and dictionary
PAPER = {
    "SAE": {"code_mcc": 0.566, "dict_mcc": 0.745},
    "MLP (h=256)": {"code_mcc": 0.643, "dict_mcc": 0.851},
    "sparse coding": {"code_mcc": 0.691, "dict_mcc": 0.837},
}


def train(sae: SparseAutoencoder, x: torch.Tensor, steps: int, batch_size: int, seed: int) -> None:
    """Adam on the SAE loss through the module's own training step (atom constraint included)."""
    opt = sae.configure_optimizers()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        xb = x if batch_size >= len(x) else x[torch.randint(0, len(x), (batch_size,), generator=g)]
        sae.train_step(xb, opt)
    sae.eval()


def evaluate(sae: SparseAutoencoder, x: torch.Tensor, codes: torch.Tensor, dictionary: torch.Tensor) -> dict:
    with torch.no_grad():
        learned = sae.encode(x)
        recon = sae.decode(learned)
    return {
        "code_mcc": mean_correlation_coefficient(codes, learned, method="pearson").mean,
        "dict_mcc": mean_correlation_coefficient(dictionary, sae.W_dec.detach(), method="cosine").mean,
        "fve": float(1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()),
        "flops": flops_per_sample(sae),
    }


def run(
    seeds: int = 5,
    num_train: int = 1024,
    num_test: int = 1024,
    steps: int = 6000,
    sc_steps: int = 1500,
    l1: float = 0.03,
    lr: float = 1e-3,
    batch_size: int = 1024,
    verbose: bool = True,
) -> dict[str, list[dict]]:
    """Train every method on ``seeds`` data sets; return ``{method: [metrics per seed]}``."""
    results: dict[str, list[dict]] = {k: [] for k in [*PAPER, "SAE dictionary + FISTA codes"]}
    for seed in range(seeds):
        t0 = time.time()
        dm = SparseCodingDataModule(
            num_features=16, in_features=8, num_active=3, num_train=num_train, num_val=0, num_test=num_test, seed=seed
        )
        dm.setup()
        xtr = dm.datasets["train"].tensors["x"]
        xte, cte = dm.datasets["test"].tensors["x"], dm.datasets["test"].tensors["codes"]
        encoders = {
            "SAE": (None, steps),
            "MLP (h=256)": (MLPEncoder([256]), steps),
            "sparse coding": (FISTAEncoder(penalty=l1 / 2, max_iter=200, tol=1e-4), sc_steps),
        }
        for name, (enc, n_steps) in encoders.items():
            torch.manual_seed(seed)
            sae = SparseAutoencoder(
                8, 16, "relu", {"l1_coefficient": l1}, encoder=enc, lr=lr, init_seed=seed, decoder_bias_init="zeros",
                atom_norm="project",
            )
            train(sae, xtr, n_steps, batch_size, seed)
            if name == "sparse coding":  # test-time codes: exact lasso on the learned dictionary
                sae.encoder.tol = 1e-6
                sae.encoder.max_iter = 2000
            results[name].append(evaluate(sae, xte, cte, dm.dictionary))
            if name == "SAE":
                sae_model = sae
        sae_model.swap_encoder(FISTAEncoder(penalty=l1 / 2, max_iter=2000, tol=1e-6, warm_start=sae_model.encoder))
        results["SAE dictionary + FISTA codes"].append(evaluate(sae_model, xte, cte, dm.dictionary))
        if verbose:
            line = ", ".join(f"{k}: {v[-1]['code_mcc']:.3f}" for k, v in results.items())
            print(f"seed {seed} ({time.time() - t0:.0f}s) code MCC  {line}", flush=True)
    return results


def format_table(results: dict[str, list[dict]]) -> str:
    """The reproduction table: ours (mean ± std over seeds) beside the paper, with FLOPs per sample."""
    head = (
        f"{'method':<30} {'code MCC ours':>16} {'paper':>6}   {'dict MCC ours':>16} {'paper':>6}   "
        f"{'FVE':>6}  {'FLOPs/sample':>12}"
    )
    lines = [head, "-" * len(head)]
    for name, runs in results.items():
        if not runs:
            continue
        c = np.array([r["code_mcc"] for r in runs])
        d = np.array([r["dict_mcc"] for r in runs])
        fve = np.mean([r["fve"] for r in runs])
        flops = np.mean([r["flops"] for r in runs])
        p = PAPER.get(name, {})
        pc = f"{p['code_mcc']:.3f}" if p else "  —  "
        pd = f"{p['dict_mcc']:.3f}" if p else "  —  "
        lines.append(
            f"{name:<30} {c.mean():>9.3f} ± {c.std():.3f} {pc:>6}   {d.mean():>9.3f} ± {d.std():.3f} {pd:>6}   "
            f"{fve:>6.3f}  {flops:>12,.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 256 samples, few steps")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps of the amortised encoders")
    parser.add_argument("--l1", type=float, default=0.03)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        kw = dict(seeds=args.seeds or 1, num_train=256, num_test=256, steps=args.steps or 300, sc_steps=60)
    else:
        kw = dict(seeds=args.seeds or 5, steps=args.steps or 6000)
    results = run(l1=args.l1, **kw)
    print()
    print(
        f"Amortisation gap, N=16 M=8 K=3, {kw.get('num_train', 1024)} train / {kw.get('num_test', 1024)} test, "
        f"{kw['seeds']} seed(s); paper: O'Neill, Gumran & Klindt (ICML 2025)"
    )
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
