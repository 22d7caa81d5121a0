"""Lazy and rich learning: a phase diagram over the initialization's scale τ and balance δ (Kunin et al., 2024).

A reduced version of Figure 1 of "Get rich quick: exact solutions reveal how unbalanced
initializations promote rapid feature learning" (Kunin et al., NeurIPS 2024, arXiv 2406.06158).

Setup: a student ``f(x) = Σ_k a_k relu(w_kᵀx)`` (``TwoLayerNetwork``, 20 hidden units, no biases)
learns a narrow random ReLU teacher (``TeacherStudentDataModule``, 3 teacher neurons) from 200
samples on the sphere of radius ``√d`` in ``d = 20`` (whitened inputs), with full-batch gradient
descent on ``½‖f(x) − y‖²``. Every neuron starts at scale ``τ`` and imbalance ``δ``:
``τ² = ‖a_k‖² + ‖w_k‖²`` and ``δ = ‖a_k‖² − ‖w_k‖²`` (equal layer rates), so the balance
``δ/τ² ∈ [−1, 1]`` is the grid's second axis: ``δ < 0`` is *upstream* (larger first layer),
``δ > 0`` *downstream* (larger second layer), ``0`` balanced. The random directions are the same in
every cell (one seed); only the scales differ. The step size is ``lr / max(1, τ²)`` (the kernel grows
like ``τ²``), with the same number of steps in every cell.

What we measure per cell:

* kernel distance ``S = 1 − ⟨K₀, K_T⟩_F / (‖K₀‖_F ‖K_T‖_F)`` between the empirical neural tangent
  kernels at initialization and after training, on a fixed probe batch of 100 held-out inputs
  (the ``KernelDistance`` callback, which also logs the parameter distance ``‖θ − θ₀‖/‖θ₀‖``, the
  fraction of ReLU activation signs that flipped, and the drift of the conserved ``δ_k``): 0 for lazy
  (kernel) training, larger as the network learns features;
* test error: the mean squared error on 500 held-out samples relative to the variance of the teacher
  outputs (``0`` perfect, ``1`` as bad as predicting the mean);
* the final training loss (so that unfinished cells are visible).

Paper (Fig. 1b, d = 100, wider student): lazy learning (small kernel distance, worse test loss) at
large τ; rich learning at small τ; the fastest rich learning at small τ with an upstream (δ < 0)
initialization.

Run: ``python examples/lazy_rich_phase_diagram.py`` (5×5 grid, 4000 steps per cell, about 5 minutes
on 2 CPU cores) or ``--quick`` (3×3 grid, 1000 steps per cell, under a minute). The table is printed;
heat maps go to TensorBoard (``tensorboard --logdir runs``) and to ``<out>/phase_diagram.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler

from lit_repr.callbacks.kernel_distance import KernelDistance
from lit_repr.data.base import TensorDictDataset
from lit_repr.data.teacher_student import TeacherStudentDataModule
from lit_repr.models.two_layer import TwoLayerNetwork


def full_batch_loader(data: dict[str, Tensor], steps_per_epoch: int) -> DataLoader:
    """Each batch is the whole training set (in a new order), ``steps_per_epoch`` batches per epoch."""
    ds = TensorDictDataset(data)
    n = len(ds)
    sampler = RandomSampler(ds, num_samples=n * steps_per_epoch, generator=torch.Generator().manual_seed(0))
    return DataLoader(ds, batch_size=n, sampler=sampler)


def train_cell(
    tau: float, balance: float, dm: TeacherStudentDataModule, probe: Tensor, args: argparse.Namespace
) -> dict[str, float]:
    """Train one (τ, δ = balance·τ²) cell; return its kernel distance, test error and training loss."""
    pl.seed_everything(args.seed, verbose=False)  # the same random directions in every cell
    model = TwoLayerNetwork(
        in_features=args.dim, hidden_features=args.hidden, activation="relu",
        init_tau=tau, init_delta=balance * tau**2, lr=args.lr / max(1.0, tau**2),
    )
    ntk = KernelDistance(
        probe_batch=probe, num_samples=len(probe), every_n_steps=args.steps, every_n_epochs=None,
        relu_sites="hidden.1", two_layer=[("hidden.0", "output")], log_figures=False,
    )
    trainer = pl.Trainer(
        max_steps=args.steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False, callbacks=[ntk],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    train = dm.datasets["train"].tensors
    trainer.fit(model, train_dataloaders=full_batch_loader(train, steps_per_epoch=min(args.steps, 500)))
    if ntk.history["step"][-1] != args.steps:
        raise RuntimeError(f"KernelDistance measured last at step {ntk.history['step'][-1]}, not at {args.steps}")
    test = dm.datasets["test"].tensors
    model.eval()
    with torch.no_grad():
        y = test["y"].double()
        test_error = float((model(test["x"]).double() - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        train_loss = float(0.5 * (model(train["x"]).double() - train["y"].double()).pow(2).sum(1).mean())
    return {
        "kernel_distance": ntk.scores["ntk/kernel_distance"],
        "param_distance": ntk.scores["ntk/param_distance"],
        "activation_hamming": ntk.scores["ntk/hidden.1/activation_hamming"],
        "delta_change_max": ntk.scores["ntk/hidden.0/delta_change_max"],
        "test_error": test_error,
        "train_loss": train_loss,
    }


def expectation(tau: float, balance: float, taus: Sequence[float]) -> str:
    """The paper's qualitative expectation for a cell (Fig. 1b)."""
    if tau == max(taus):
        return "lazy (large tau)"
    if tau == min(taus):
        return "rich, fastest (small tau, upstream)" if balance < 0 else "rich (small tau)"
    return "lazier as tau grows"


def heatmap_figure(kd: np.ndarray, err: np.ndarray, taus: Sequence[float], balances: Sequence[float]):
    """Two heat maps over the (τ, δ/τ²) grid: kernel distance and test error (log colour scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = (
        (axes[0], kd, "kernel distance S (init → end)", None, "viridis", "{:.2f}"),
        (axes[1], err, "test error (relative MSE)", LogNorm(vmin=max(err.min(), 1e-4), vmax=max(err.max(), 1e-3)),
         "magma_r", "{:.2g}"),
    )
    for ax, values, title, norm, cmap, fmt in panels:
        im = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, norm=norm)
        ax.set_xticks(range(len(balances)), [f"{b:+g}" for b in balances])
        ax.set_yticks(range(len(taus)), [f"{t:g}" for t in taus])
        ax.set_xlabel("balance δ/τ²  (−: upstream, +: downstream)")
        ax.set_ylabel("scale τ")
        ax.set_title(title, fontsize=10)
        for i in range(len(taus)):
            for j in range(len(balances)):
                r, g, b, _ = im.cmap(im.norm(values[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                color = "w" if dark else "k"
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7, color=color)
        fig.colorbar(im, ax=ax)
    fig.suptitle("Lazy vs rich: two-layer ReLU student on a ReLU teacher", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3x3 grid and 1000 steps per cell (under a minute)")
    parser.add_argument("--taus", type=float, nargs="+", default=None, help="scales τ (default 0.03 ... 3)")
    parser.add_argument("--balances", type=float, nargs="+", default=None, help="δ/τ² values in [-1, 1]")
    parser.add_argument("--dim", type=int, default=20, help="input dimension d")
    parser.add_argument("--hidden", type=int, default=20, help="student hidden units")
    parser.add_argument("--teacher", type=int, default=3, help="teacher hidden units")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--num-probe", type=int, default=100, help="held-out inputs of the NTK probe batch")
    parser.add_argument("--steps", type=int, default=None, help="full-batch gradient steps per cell")
    parser.add_argument("--lr", type=float, default=0.02, help="step size at τ <= 1 (divided by τ² above)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=str, default="runs/lazy_rich_phase_diagram")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny nets)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*(val_dataloader|LeafSpec|litlogger).*")
    taus = args.taus or ([0.1, 1.0, 3.0] if args.quick else [0.03, 0.1, 0.3, 1.0, 3.0])
    balances = args.balances or ([-0.9, 0.0, 0.9] if args.quick else [-0.9, -0.5, 0.0, 0.5, 0.9])
    args.steps = args.steps or (1000 if args.quick else 4000)
    if any(not -1 <= b <= 1 for b in balances):
        parser.error(f"--balances must lie in [-1, 1] (|δ| <= τ²), got {balances}")
    t0 = time.perf_counter()

    dm = TeacherStudentDataModule(
        in_features=args.dim, num_teacher_neurons=args.teacher, radius=math.sqrt(args.dim),
        num_train=args.num_train, num_val=0, num_test=args.num_test, batch_size=args.num_train, seed=args.seed,
    )
    dm.setup("fit")
    probe = dm.datasets["test"].tensors["x"][: args.num_probe]

    kd = np.zeros((len(taus), len(balances)))
    err = np.zeros_like(kd)
    results: dict[str, float] = {}
    rows = []
    for i, tau in enumerate(taus):
        for j, balance in enumerate(balances):
            cell = train_cell(tau, balance, dm, probe, args)
            kd[i, j], err[i, j] = cell["kernel_distance"], cell["test_error"]
            for name, value in cell.items():
                results[f"{name}/tau={tau:g}/balance={balance:+g}"] = value
            rows.append((tau, balance, cell, expectation(tau, balance, taus)))

    results["rich_kernel_distance"] = float(kd[0].mean())  # smallest τ
    results["lazy_kernel_distance"] = float(kd[-1].mean())  # largest τ
    results["rich_test_error"] = float(err[0].mean())
    results["lazy_test_error"] = float(err[-1].mean())

    print(f"\nLazy/rich phase diagram: d={args.dim}, {args.hidden} hidden ReLU units, teacher {args.teacher} units, "
          f"{args.num_train} training samples, {args.steps} full-batch GD steps, lr {args.lr:g}/max(1, tau^2)")
    print(f"{'tau':>6} {'delta/tau^2':>11} {'delta':>9} {'kernel dist':>11} {'param dist':>10} {'relu flips':>10} "
          f"{'train loss':>10} {'test error':>10}  paper (Fig. 1b)")
    for tau, balance, cell, expect in rows:
        print(f"{tau:6g} {balance:+11.2f} {balance * tau**2:+9.3g} {cell['kernel_distance']:11.3f} "
              f"{cell['param_distance']:10.3f} {cell['activation_hamming']:10.3f} {cell['train_loss']:10.2e} "
              f"{cell['test_error']:10.3g}  {expect}")
    print(f"mean kernel distance: smallest tau={taus[0]:g} (rich) {results['rich_kernel_distance']:.3f}, "
          f"largest tau={taus[-1]:g} (lazy) {results['lazy_kernel_distance']:.3f}; mean test error "
          f"{results['rich_test_error']:.3g} vs {results['lazy_test_error']:.3g}")
    print("kernel distance per balance at the smallest tau: "
          + ", ".join(f"{b:+g}: {v:.3f}" for b, v in zip(balances, kd[0])))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = heatmap_figure(kd, err, taus, balances)
    fig.savefig(out / "phase_diagram.png", dpi=120)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out)) as writer:
        writer.add_figure("phase_diagram/kernel_distance_and_test_error", fig)
    results["seconds"] = time.perf_counter() - t0
    print(f"heat maps: {out / 'phase_diagram.png'} and TensorBoard under {out} [{results['seconds']:.0f} s]")
    return results


if __name__ == "__main__":
    main()
