"""DCI on wide features: the previous configuration against the current default of ``lit_repr.metrics.dci``.

The case: 2048 features (a wide ReLU layer of a random mixing of the factors, plus noise), 1500
training and 1500 test samples, 5 factors. Before: one single-threaded 50-tree random forest per
factor searching every feature at every split (``candidates_per_factor=None, n_jobs=None``). Now:
the forests search only the factors' best features by single-split gain, on every core. Prints the
wall-clock and CPU seconds of each (CPU seconds, summed over threads, hardly depend on what else the
machine runs), the ratio of wall-clock times, and both sets of scores with their differences.
``--all-metrics`` first times one evaluation of each metric as ``IdentifiabilityMetrics`` makes it in
a run (frozen passes over the two splits included): linear R² fitted on the training samples and
scored on the test samples, MCC on the test samples, kernel R² on the two halves of the test
samples, DCI with its default.

    python benchmarks/bench_dci.py [--features 2048 --samples 1500 --factors 5] [--all-metrics]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import IdentifiabilityMetrics
from lit_repr.metrics import dci


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


class Features(pl.LightningModule):
    """A model whose site ``backbone`` outputs its input: the features are the benchmark's arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def other_metrics(data: tuple[np.ndarray, ...]) -> None:
    """One evaluation of ``IdentifiabilityMetrics`` per metric, as a run makes it (frozen passes included)."""
    warnings.filterwarnings("ignore", ".*self.log.*")  # measure() outside a fit: the scores are returned
    warnings.filterwarnings("ignore", ".*fewer samples than features.*")
    ftr, ztr, fte, zte = (torch.as_tensor(a, dtype=torch.float32) for a in data)
    loaders = {
        "train": DataLoader(TensorDataset(ftr, ztr), batch_size=256),
        "val": DataLoader(TensorDataset(fte, zte), batch_size=256),
    }
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    model = Features()
    for metric in ("linear_r2", "mcc", "kernel_r2", "dci"):
        cb = IdentifiabilityMetrics(
            sites=["backbone"], latents=1, input_key=0, metrics=[metric], max_samples=len(ftr),
            probe_loaders=loaders, log_figures=False,
        )  # fmt: skip
        with Clock() as clock:
            scores = cb.measure(trainer, model)
        main_scores = {k.rsplit("/", 1)[1]: v for k, v in scores.items() if "_factor" not in k}
        shown = "  ".join(f"{k} {v:.3f}" for k, v in main_scores.items())
        print(f"  {metric:10s} {clock}   ({shown})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--factors", type=int, default=5)
    ap.add_argument("--all-metrics", action="store_true", help="first time each metric of IdentifiabilityMetrics")
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
