"""TopK SAE training on the CPU, lit_repr against SAELens: throughput, and time to a matched reconstruction.

Same tensors, same process, same initial weights, same optimizer (Adam, lr 1e-3): in_features=512,
4096 latents, k=32, batch 4096. The data are synthetic sparse codes (32 of 8192 unit-norm directions
active, |N(0,1)| magnitudes). After every step the fraction of variance explained (FVE) on a held-out
batch is measured (outside the timed region). The benchmark prints

- the per-step held-out FVE curves;
- samples/s (median step time) and FLOP/s against the machine's dense matmul FLOP/s, measured on
  the encoder's matmul shape: "dense-equivalent" counts ``12·d·n`` FLOPs per sample (the six
  ``B×d×n`` matmuls of a dense forward + backward, what SAELens executes), "executed" (lit_repr's
  sparse path) ``2·d·n + 10·k·d`` (only the encoder's forward matmul is dense);
- matched reconstruction: the steps and the training time (sum of step times) each implementation
  needs to reach a held-out FVE of ``--target`` (default 0.5), and the ratio of those times.

lit_repr trains through :meth:`SparseAutoencoder.train_step` (its own training step: losses,
backward, the atom constraint, the optimizer step); SAELens through its ``TopKTrainingSAE`` with
the steps of its ``SAETrainer`` (``training_forward_pass``, backward, ``clip_grad_norm_(1.0)``,
Adam). The row "atom_norm='project'" is lit_repr with the older constraint (gradient projected
onto the sphere, atoms renormalized): it learns less per step, because projecting out the radial
gradient discards what the step says about each latent's scale; ``atom_norm="fold"`` (the default)
keeps it by folding atom norms into the encoder, as SAELens's ``rescale_acts_by_decoder_norm`` does.

SAELens is a benchmark-only dependency; run in an environment that has it:

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[dev]" sae-lens
    /tmp/bench/bin/python benchmarks/bench_sae_topk.py [--steps 30 --threads 2 --target 0.5]

Without SAELens the benchmark says so and compares against lit_repr's own dense path
(``sparse_kernels=False``), a dense-decoder reference with the same math.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lit_repr.models.sae import SparseAutoencoder

Step = Callable[[torch.Tensor], None]
Evaluate = Callable[[torch.Tensor], float]


def make_data(n_batches: int, batch: int, d: int, n_true: int, k_true: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_true, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    out = []
    for _ in range(n_batches):
        idx = torch.stack([torch.randperm(n_true, generator=g)[:k_true] for _ in range(batch)])
        vals = torch.randn(batch, k_true, generator=g).abs()
        out.append(F.embedding_bag(idx, D, per_sample_weights=vals, mode="sum"))
    return out


def dense_matmul_flops(b: int, d: int, n: int, reps: int = 3) -> float:
    x, w = torch.randn(b, d), torch.randn(n, d)
    x @ w.T
    t = time.perf_counter()
    for _ in range(reps):
        x @ w.T
    return 2 * b * d * n * reps / (time.perf_counter() - t)


def fve(x: torch.Tensor, recon: torch.Tensor) -> float:
    return float(1 - (x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def lit_repr_trainer(init: dict, first_batch, d, n, k, lr, sparse=True, atom_norm="fold") -> tuple[Step, Evaluate]:
    """(step(x), evaluate(x) -> held-out FVE) for lit_repr's SparseAutoencoder."""
    sae = SparseAutoencoder(d, n, "topk", {"k": k}, lr=lr, decoder_bias_init="mean", sparse_kernels=sparse,
                            atom_norm=atom_norm, dead_after=10**9, codes_key=None)  # fmt: skip
    sae.load_state_dict(init, strict=False)
    sae.initialize_decoder_bias(first_batch)
    opt = sae.configure_optimizers()

    @torch.no_grad()
    def evaluate(x):
        return fve(x, sae.eval()(x))

    return lambda x: sae.train_step(x, opt), evaluate


def sae_lens_trainer(init: dict, first_batch, d, n, k, lr, sparse=False) -> tuple[Step, Evaluate]:
    """The same for SAELens's TopKTrainingSAE, started from the same weights, stepped as its SAETrainer does."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    cfg = TopKTrainingSAEConfig(d_in=d, d_sae=n, k=k, aux_loss_coefficient=1 / 32, device="cpu",
                                use_sparse_activations=sparse)  # fmt: skip
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(init["W_dec"])
        sae.W_enc.copy_(init["encoder.linear.weight"].T)
        sae.b_enc.copy_(init["encoder.linear.bias"])
        sae.b_dec.copy_(first_batch.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    no_dead = torch.zeros(n, dtype=torch.bool)
    count = [0]

    def step(x):
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x, coefficients={}, dead_neuron_mask=no_dead, n_training_steps=count[0], is_logging_step=False
            )  # fmt: skip
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        count[0] += 1

    @torch.no_grad()
    def evaluate(x):
        feats, _ = sae.encode_with_hidden_pre(x)
        return fve(x, sae.decode(feats))

    return step, evaluate


def steps_to(curve: list[float], target: float) -> int | None:
    """The first step (1-based) whose held-out FVE reaches ``target``."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--target", type=float, default=0.5, help="held-out FVE for the time-to-reconstruction ratio")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d, n, k, b = args.d, args.latents, args.k, args.batch
    data = make_data(4, b, d, n_true=2 * n, k_true=k)
    test = make_data(5, b, d, n_true=2 * n, k_true=k)[4]  # same dictionary, a batch not trained on
    peak = dense_matmul_flops(b, d, n)
    print(f"TopK SAE training on CPU ({args.threads} threads): d={d}, latents={n}, k={k}, batch={b}, {args.steps} "
          f"steps, Adam lr={args.lr}")  # fmt: skip
    print(f"dense matmul ({b}x{d} @ {d}x{n}): {peak / 1e9:.1f} GFLOP/s")

    init = SparseAutoencoder(d, n, "topk", {"k": k}, init_seed=0).state_dict()
    ours = "lit_repr SparseAutoencoder (sparse TopK kernels)"
    impls = {ours: lit_repr_trainer(init, data[0], d, n, k, args.lr)}
    executed = {ours: 2 * d * n + 10 * k * d}
    ref_name = None
    try:
        import sae_lens

        ref_name = f"SAELens {sae_lens.__version__} TopKTrainingSAE (dense decoder)"
        impls[ref_name] = sae_lens_trainer(init, data[0], d, n, k, args.lr)
        name = f"SAELens {sae_lens.__version__} TopKTrainingSAE (use_sparse_activations)"
        try:  # probe a copy once; dropped if it fails
            sae_lens_trainer(init, data[0], d, n, k, args.lr, sparse=True)[0](data[0])
            impls[name] = sae_lens_trainer(init, data[0], d, n, k, args.lr, sparse=True)
        except Exception as err:  # noqa: BLE001 - report, do not fail the benchmark
            print(f"(SAELens use_sparse_activations=True not run: {type(err).__name__}: {str(err)[:120]})")
    except ImportError as err:
        print(f"SAELens is not importable here ({err}); comparing against lit_repr's dense path instead.")
    impls["lit_repr, atom_norm='project' (sparse kernels)"] = lit_repr_trainer(
        init, data[0], d, n, k, args.lr, atom_norm="project"
    )
    dense_name = "lit_repr SparseAutoencoder (dense path, sparse_kernels=False)"
    impls[dense_name] = lit_repr_trainer(init, data[0], d, n, k, args.lr, sparse=False)
    ref_name = ref_name or dense_name

    # steps interleave the implementations, so load from other processes hits all of them alike
    times: dict[str, list[float]] = {name: [] for name in impls}
    curves: dict[str, list[float]] = {name: [] for name in impls}
    for i in range(args.steps):
        x = data[i % len(data)]
        for name, (step, evaluate) in impls.items():
            t = time.perf_counter()
            step(x)
            times[name].append(time.perf_counter() - t)
            curves[name].append(evaluate(test))

    short = {name: f"[{j}]" for j, name in enumerate(impls)}
    print("\nheld-out FVE after each step")
    print(f"{'step':>5} " + " ".join(f"{short[name]:>7}" for name in impls))
    for i in range(args.steps):
        print(f"{i + 1:>5} " + " ".join(f"{curves[name][i]:>7.3f}" for name in impls))

    warm = 2 if args.steps > 4 else 0
    print(f"\n{'':<4}{'implementation':<68} {'samples/s':>10} {'s/step':>7} {'dense-eq FLOP/s':>16} {'executed':>9} "
          f"{'steps to FVE ' + str(args.target):>18} {'time to FVE':>12}")  # fmt: skip
    rate, to_target = {}, {}
    for name in impls:
        ts = sorted(times[name][warm:])
        step_t = ts[len(ts) // 2]  # median
        rate[name] = b / step_t
        dense_eq = 12 * d * n * b / step_t / peak
        ex = f"{executed[name] * b / step_t / peak:>8.0%}" if name in executed else f"{'':>8}"
        s = steps_to(curves[name], args.target)
        to_target[name] = sum(times[name][:s]) if s is not None else None
        reach = f"{s:>18}" if s is not None else f"{'> ' + str(args.steps):>18}"
        secs = f"{to_target[name]:>11.1f}s" if s is not None else f"{'—':>12}"
        print(f"{short[name]:<4}{name:<68} {b / step_t:>10,.0f} {step_t:>7.2f} {dense_eq:>15.0%} {ex} {reach} {secs}")
    print("  (median step time; FLOP/s as a fraction of the dense matmul FLOP/s above; time to FVE: sum of step times)")
    print()
    for name in impls:
        if name == ours:
            continue
        line = f"lit_repr sparse / {name}: throughput {rate[ours] / rate[name]:.2f}x"
        if to_target[ours] is not None and to_target[name] is not None:
            line += f", time to held-out FVE {args.target}: {to_target[name] / to_target[ours]:.2f}x faster"
        elif to_target[ours] is not None:
            line += f", time to held-out FVE {args.target}: the other does not reach it in {args.steps} steps"
        print(line)


if __name__ == "__main__":
    main()
