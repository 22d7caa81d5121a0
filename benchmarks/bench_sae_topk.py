"""TopK SAE training throughput on the CPU: lit_repr's sparse kernels against SAELens's TopK training SAE.

Same tensors, same process, same optimiser (Adam), d_in=512, 4096 latents, k=32, batch 4096. The
data are synthetic sparse codes (32 of 8192 unit-norm directions active, |N(0,1)| magnitudes).
Both models train for the same number of steps; the printed fraction of variance explained on a
held-out batch shows the reconstruction they reach ("matched reconstruction"), then the
samples/s ratio. FLOP/s are reported against the machine's dense matmul FLOP/s, measured here on
the encoder's own matmul shape:

- "dense-equivalent": ``12·d·n`` FLOPs per sample (the six ``B×d×n`` matmuls of a dense
  forward + backward, what SAELens executes), divided by the step time;
- "executed" (lit_repr): ``2·d·n + 10·k·d`` per sample (only the encoder's forward matmul is
  dense; decoding and every gradient touch the ``k`` active latents only).

SAELens is a benchmark-only dependency; run in an environment that has it:

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[dev]" sae-lens
    /tmp/bench/bin/python benchmarks/bench_sae_topk.py [--steps 12 --threads 2]

Without SAELens the benchmark says so and compares against lit_repr's own dense path
(``sparse_kernels=False``), a dense-decoder reference with the same math.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lit_repr.models.sae import SparseAutoencoder


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


def lit_repr_trainer(init: dict, first_batch, d, n, k, lr, sparse=True):
    """(step(x) -> None, evaluate(x) -> FVE) for lit_repr's SparseAutoencoder."""
    sae = SparseAutoencoder(d, n, variant="topk", k=k, lr=lr, decoder_bias_init="mean", sparse_kernels=sparse,
                            dead_after=10**9, codes_key=None)  # fmt: skip
    sae.load_state_dict(init, strict=False)
    sae.initialize_decoder_bias(first_batch)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    sae.train()

    def step(x):
        loss = sae.compute_losses(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.on_before_optimizer_step(opt)
        opt.step()
        sae.renormalize_atoms()

    @torch.no_grad()
    def evaluate(x):
        sae.eval()
        out = fve(x, sae(x))
        sae.train()
        return out

    return step, evaluate


def sae_lens_trainer(init: dict, first_batch, d, n, k, lr, sparse=False):
    """The same for SAELens's TopKTrainingSAE, started from the same weights."""
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
        opt.step()
        count[0] += 1

    @torch.no_grad()
    def evaluate(x):
        feats, _ = sae.encode_with_hidden_pre(x)
        return fve(x, sae.decode(feats))

    return step, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d, n, k, b = args.d, args.latents, args.k, args.batch
    data = make_data(4, b, d, n_true=2 * n, k_true=k)
    test = make_data(5, b, d, n_true=2 * n, k_true=k)[4]  # same dictionary, a batch not trained on
    peak = dense_matmul_flops(b, d, n)
    print(
        f"TopK SAE training on CPU ({args.threads} threads): d={d}, latents={n}, k={k}, batch={b}, {args.steps} steps"
    )
    print(f"dense matmul ({b}x{d} @ {d}x{n}): {peak / 1e9:.1f} GFLOP/s")

    init = SparseAutoencoder(d, n, variant="topk", k=k, init_seed=0).state_dict()
    impls = {"lit_repr SparseAutoencoder (sparse TopK kernels)": lit_repr_trainer(init, data[0], d, n, k, args.lr)}
    executed = {next(iter(impls)): 2 * d * n + 10 * k * d}
    ref_name = None
    try:
        import sae_lens

        ref_name = f"SAELens {sae_lens.__version__} TopKTrainingSAE (dense decoder)"
        impls[ref_name] = sae_lens_trainer(init, data[0], d, n, k, args.lr)
        try:
            name = f"SAELens {sae_lens.__version__} TopKTrainingSAE (use_sparse_activations)"
            impls[name] = sae_lens_trainer(init, data[0], d, n, k, args.lr, sparse=True)
            impls[name][0](data[0])  # probe once; dropped below if it fails
        except Exception as err:  # noqa: BLE001 - report, do not fail the benchmark
            print(f"(SAELens use_sparse_activations=True not run: {type(err).__name__}: {str(err)[:120]})")
            impls.pop(name, None)
    except ImportError as err:
        print(f"SAELens is not importable here ({err}); comparing against lit_repr's dense path instead.")
    dense_name = "lit_repr SparseAutoencoder (dense path, sparse_kernels=False)"
    impls[dense_name] = lit_repr_trainer(init, data[0], d, n, k, args.lr, sparse=False)
    ref_name = ref_name or dense_name

    # steps interleave the implementations, so load from other processes hits all of them alike
    times: dict[str, list[float]] = {name: [] for name in impls}
    for i in range(args.steps):
        x = data[i % len(data)]
        for name, (step, _) in impls.items():
            t = time.perf_counter()
            step(x)
            times[name].append(time.perf_counter() - t)
    warm = 2 if args.steps > 4 else 0
    print(f"\n{'implementation':<68} {'samples/s':>10} {'s/step':>7} {'held-out FVE':>12} {'dense-eq FLOP/s':>16} "
          f"{'executed':>9}")  # fmt: skip
    rate = {}
    for name, (_, evaluate) in impls.items():
        ts = sorted(times[name][warm:])
        step_t = ts[len(ts) // 2]  # median
        rate[name] = b / step_t
        dense_eq = 12 * d * n * b / step_t / peak
        ex = f"{executed[name] * b / step_t / peak:>8.0%}" if name in executed else f"{'':>8}"
        print(f"{name:<68} {b / step_t:>10,.0f} {step_t:>7.2f} {evaluate(test):>12.3f} {dense_eq:>15.0%} {ex}")
    print("  (median step time; FLOP/s columns as a fraction of the dense matmul FLOP/s above)")
    ours = next(iter(impls))
    print(f"\nthroughput ratio, lit_repr sparse / {ref_name}: {rate[ours] / rate[ref_name]:.2f}x")
    for name in impls:
        if name not in (ours, ref_name):
            print(f"throughput ratio, lit_repr sparse / {name}: {rate[ours] / rate[name]:.2f}x")


if __name__ == "__main__":
    main()
