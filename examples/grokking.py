"""Grokking and the initialization's balance: time to generalization on modular addition (Kunin et al., 2024).

Kunin et al. ("Get rich quick", NeurIPS 2024, arXiv 2406.06158, Section 5) report that upstream
initializations (a larger first layer, ``δ < 0``) decrease the time to grokking on modular
arithmetic, while downstream ones (a larger last layer, ``δ > 0``) delay it. This example measures
that effect in a small MLP.

Setup: ``c = a + b mod p`` (``ModularArithmeticDataModule``, ``p = 31``, a random 60% of the
``p²`` pairs for training, the rest held out), inputs the concatenated one-hot codes of ``a`` and
``b``. The model is a ``TwoLayerNetwork`` ``f(x) = W2 relu(W1 x)`` (256 hidden units, ``p`` logits,
cross-entropy) whose neurons all start at scale ``τ = 1`` and balance ``δ/τ²``
(``τ² = ‖a_k‖² + ‖w_k‖²``, ``δ = ‖a_k‖² − ‖w_k‖²``), trained by full-batch gradient descent with
momentum 0.9 and weight decay (without weight decay this network memorizes the training pairs and
does not generalize within these budgets). Only the balance changes between runs; the random
directions are the same (one seed per row).

What we measure, every ``--eval-every`` steps: training and held-out accuracy over the whole splits;
the first step with training accuracy >= 0.99 (memorization), the first steps with held-out accuracy
>= 0.5 and >= 0.9 (generalization), and the difference between memorization and generalization
(the grokking delay). In this setting the held-out accuracy rises steeply to about 0.85 and then
creeps towards 0.9, so the 0.5 crossing times the rise and the 0.9 crossing the slow end. A run that does not reach 0.9
within ``--steps`` is reported as "not within budget", with its final held-out accuracy.

Run: ``python examples/grokking.py`` (5 balances × 2 seeds, about 5 minutes on 2 CPU cores) or
``--quick`` (3 balances, 1 seed, about a minute). Curves go to TensorBoard under ``--out`` and to
``<out>/grokking.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, RandomSampler

from lit_repr.data.base import TensorDictDataset
from lit_repr.data.modular import ModularArithmeticDataModule
from lit_repr.models.two_layer import TwoLayerNetwork


class TwoLayerNetworkWithWeightDecay(TwoLayerNetwork):
    """``TwoLayerNetwork`` whose SGD parameter groups also apply weight decay ``weight_decay``."""

    def __init__(self, *args: Any, weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = super().configure_optimizers()
        for group in opt.param_groups:
            group["weight_decay"] = self.weight_decay
        return opt


class GeneralizationTimer(Callback):
    """Every ``every_n_steps`` steps: accuracy on the whole training and held-out splits; the first step at
    which each crosses its threshold. Stops training ``patience`` evaluations after the held-out one."""

    def __init__(self, train: dict, held_out: dict, every_n_steps: int, train_threshold: float = 0.99,
                 test_threshold: float = 0.9, patience: int = 0) -> None:
        self.train, self.held_out = train, held_out
        self.every_n_steps = every_n_steps
        self.train_threshold, self.test_threshold = train_threshold, test_threshold
        self.patience = patience
        self.history: dict[str, list[float]] = {"step": [], "train_acc": [], "test_acc": []}
        self.memorized_at: int | None = None
        self.half_at: int | None = None  # first step with held-out accuracy >= 0.5
        self.generalized_at: int | None = None

    @staticmethod
    def _accuracy(model: torch.nn.Module, data: dict) -> float:
        return float((model(data["x"]).argmax(-1) == data["y"]).double().mean())

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            train_acc, test_acc = self._accuracy(pl_module, self.train), self._accuracy(pl_module, self.held_out)
        pl_module.train(was_training)
        self.history["step"].append(step)
        self.history["train_acc"].append(train_acc)
        self.history["test_acc"].append(test_acc)
        if self.memorized_at is None and train_acc >= self.train_threshold:
            self.memorized_at = step
        if self.half_at is None and test_acc >= 0.5:
            self.half_at = step
        if self.generalized_at is None and test_acc >= self.test_threshold:
            self.generalized_at = step
        if self.generalized_at is not None and step >= self.generalized_at + self.patience * self.every_n_steps:
            trainer.should_stop = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._evaluate(trainer, pl_module)


def run(balance: float, seed: int, dm: ModularArithmeticDataModule, args: argparse.Namespace) -> dict[str, Any]:
    """Train at one balance ``δ/τ²``; return the memorization and generalization steps and the curves."""
    pl.seed_everything(seed, verbose=False)
    model = TwoLayerNetworkWithWeightDecay(
        in_features=dm.in_features, hidden_features=args.hidden, out_features=dm.num_classes, activation="relu",
        task="classification", init_tau=args.tau, init_delta=balance * args.tau**2, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay,
    )
    train, held_out = dm.datasets["train"].tensors, dm.datasets["val"].tensors
    timer = GeneralizationTimer(train, held_out, every_n_steps=args.eval_every)
    ds = TensorDictDataset(train)
    steps_per_epoch = min(args.steps, 500)
    loader = DataLoader(ds, batch_size=len(ds), sampler=RandomSampler(
        ds, num_samples=len(ds) * steps_per_epoch, generator=torch.Generator().manual_seed(seed)))
    trainer = pl.Trainer(
        max_steps=args.steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False, callbacks=[timer],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=loader)
    return {
        "memorized_at": timer.memorized_at, "half_at": timer.half_at, "generalized_at": timer.generalized_at,
        "final_step": timer.history["step"][-1], "final_train_acc": timer.history["train_acc"][-1],
        "final_test_acc": timer.history["test_acc"][-1], "history": timer.history,
    }


def label(balance: float) -> str:
    return "upstream" if balance < 0 else "downstream" if balance > 0 else "balanced"


def curves_figure(runs: dict[tuple[float, int], dict[str, Any]], balances: Sequence[float]):
    """Training (dashed) and held-out (solid) accuracy against steps, one colour per balance."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.cm.coolwarm(np.linspace(0, 1, len(balances)))
    for color, balance in zip(colors, balances):
        for (b, seed), res in runs.items():
            if b != balance:
                continue
            h = res["history"]
            name = f"δ/τ² = {balance:+g} ({label(balance)})" if seed == min(s for _, s in runs) else None
            ax.plot(h["step"], h["test_acc"], color=color, lw=1.5, label=name)
            ax.plot(h["step"], h["train_acc"], color=color, lw=1, ls="--")
    ax.axhline(0.9, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("accuracy (dashed: train, solid: held-out)")
    ax.set_title("a + b mod p: time to generalization vs initialization balance", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 balances, 1 seed, shorter budget")
    parser.add_argument("--balances", type=float, nargs="+", default=None, help="δ/τ² values in [-1, 1]")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--modulus", type=int, default=31)
    parser.add_argument("--train-fraction", type=float, default=0.6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--tau", type=float, default=1.0, help="per-neuron scale τ")
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=None, help="budget of full-batch steps per run")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--out", type=str, default="runs/grokking")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*(val_dataloader|LeafSpec|litlogger).*")
    balances = args.balances or ([-0.9, 0.0, 0.9] if args.quick else [-0.9, -0.5, 0.0, 0.5, 0.9])
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    args.steps = args.steps or (3000 if args.quick else 8000)
    if any(not -1 <= b <= 1 for b in balances):
        parser.error(f"--balances must lie in [-1, 1] (|δ| <= τ²), got {balances}")
    t0 = time.perf_counter()

    dm = ModularArithmeticDataModule(modulus=args.modulus, operation="add", train_fraction=args.train_fraction,
                                     batch_size=4096, seed=0)
    dm.setup("fit")
    runs = {(b, s): run(b, s, dm, args) for b in balances for s in seeds}

    n_train, n_test = len(dm.datasets["train"]), len(dm.datasets["val"])
    print(f"\nGrokking: a + b mod {args.modulus}, {n_train} training / {n_test} held-out pairs, TwoLayerNetwork "
          f"{2 * args.modulus}-{args.hidden}-{args.modulus} (ReLU), tau={args.tau:g}, SGD lr={args.lr:g} momentum="
          f"{args.momentum:g} weight decay={args.weight_decay:g}, budget {args.steps} steps, accuracy every "
          f"{args.eval_every} steps")
    print(f"{'delta/tau^2':>11} {'init':>10} {'seed':>4} {'train>=0.99 at':>14} {'test>=0.5 at':>12} "
          f"{'test>=0.9 at':>14} {'delay':>6} {'final test':>10}  paper (Sec. 5)")
    results: dict[str, float] = {}
    for (balance, seed), res in runs.items():
        mem, gen = res["memorized_at"], res["generalized_at"]
        gen_text = f"{gen}" if gen is not None else f"not in {args.steps}"
        delay = f"{gen - mem}" if gen is not None and mem is not None else "-"
        expect = {"upstream": "groks sooner", "balanced": "reference", "downstream": "groks later"}[label(balance)]
        half = res["half_at"] if res["half_at"] is not None else "-"
        print(f"{balance:+11.2f} {label(balance):>10} {seed:4d} {mem if mem is not None else '-':>14} {half:>12} "
              f"{gen_text:>14} {delay:>6} {res['final_test_acc']:10.3f}  {expect}")
        key = f"balance={balance:+g}/seed={seed}"
        results[f"memorized_at/{key}"] = float(mem) if mem is not None else math.inf
        results[f"half_at/{key}"] = float(res["half_at"]) if res["half_at"] is not None else math.inf
        results[f"generalized_at/{key}"] = float(gen) if gen is not None else math.inf
        results[f"final_test_acc/{key}"] = res["final_test_acc"]
    for balance in balances:
        times = [results[f"generalized_at/balance={balance:+g}/seed={s}"] for s in seeds]
        results[f"mean_generalized_at/balance={balance:+g}"] = float(np.mean(times))
    print("mean step to held-out accuracy >= 0.9 (inf: not within budget): " + ", ".join(
        f"{b:+g}: {results[f'mean_generalized_at/balance={b:+g}']:g}" for b in balances))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(runs, balances)
    fig.savefig(out / "grokking.png", dpi=120)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out)) as writer:
        writer.add_figure("grokking/accuracy_curves", fig)
        for (balance, seed), res in runs.items():
            h = res["history"]
            for step, tr, te in zip(h["step"], h["train_acc"], h["test_acc"]):
                writer.add_scalars(f"grokking/seed={seed}/test_acc", {f"balance={balance:+g}": te}, step)
                writer.add_scalars(f"grokking/seed={seed}/train_acc", {f"balance={balance:+g}": tr}, step)
    results["seconds"] = time.perf_counter() - t0
    print(f"curves: {out / 'grokking.png'} and TensorBoard under {out} [{results['seconds']:.0f} s]")
    return results


if __name__ == "__main__":
    main()
