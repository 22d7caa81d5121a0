"""PhyIP: do frozen linear probes on a self-supervised world model recover physical quantities out of distribution?

Internò et al. (2026, arXiv 2602.12218) report that linear probes on the frozen representations of
self-supervised world models recover internal energy and Newtonian inverse-square scaling out of
distribution (Pearson rho > 0.90), while adaptation-based evaluation (fine-tuning, or a
high-capacity probe) can collapse that structure (rho ~ 0.05).

This script trains a ``WorldModel`` by next-step prediction (latent space, EMA target, VICReg
penalty) on Kepler orbits (``OrbitsDataModule``) or 2D fluids (``FluidsDataModule``), with a frozen
``LinearProbe`` on the per-sample representation fitted on the ``train`` split at every validation
epoch, and ``PhyIPReport``, which records the probe's rho against the SSL loss and, after training,
runs the adaptation-based evaluations (an MLP probe on the frozen features; the encoder fine-tuned
with a linear head) on the same splits. It prints rho and R² per quantity, in distribution
(``test``) and out of distribution (``ood``), with the paper's figures beside ours, and writes
``phyip.json``, ``phyip_rho_vs_loss.png`` and TensorBoard logs under ``runs/phyip``.

Run: ``python examples/phyip.py`` (orbits, a few minutes on 2 idle CPU cores), ``--data fluids``,
``--quick`` for a smoke run.

Measured (``--num-train 2048 --epochs 20``, orbits, seed 0; conv1d encoder, latent objective), OOD
Pearson rho: frozen linear: angular momentum 0.940, semi-major axis 0.420, eccentricity 0.250,
force 0.218, mu 0.125, energy -0.045 (ID rho 0.70-1.00); MLP probe: mean 0.461; fine-tuned: mean 0.444.
The paper's frozen-linear OOD rho > 0.90 for energy and force is not reproduced here (angular momentum
alone passes), and adaptation does not collapse rho in our runs: it is higher OOD than the frozen
linear probe for most quantities.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lit_repr.callbacks import LinearProbe, PhyIPReport
from lit_repr.models import WorldModel
from lit_repr.phyip import METHODS, PAPER_FIGURES


def make_data(kind: str, quick: bool, num_train: int | None, seed: int) -> pl.LightningDataModule:
    """The simulator's DataModule at the size asked for."""
    if kind == "orbits":
        from lit_repr.data.orbits import OrbitsDataModule

        n = num_train or (256 if quick else 4096)
        return OrbitsDataModule(num_train=n, num_val=max(64, n // 8), num_test=max(64, n // 8),
                                num_ood=max(64, n // 8), num_steps=16 if quick else 32, batch_size=64, seed=seed)
    if kind == "fluids":
        from lit_repr.data.fluids import FluidsDataModule

        n = num_train or (64 if quick else 1024)
        return FluidsDataModule(num_train=n, num_val=max(32, n // 8), num_test=max(32, n // 8),
                                num_ood=max(32, n // 8), batch_size=32, seed=seed)
    raise ValueError(f"--data must be 'orbits' or 'fluids', got {kind!r}")


def obs_shape_of(dm: pl.LightningDataModule) -> list[int]:
    """The shape of one observation, read from a training batch."""
    dm.setup("fit")
    x = next(iter(dm.train_dataloader()))["x"]
    return list(x.shape[2:])


def run(
    data: str = "orbits", quick: bool = False, epochs: int | None = None, num_train: int | None = None,
    objective: str = "latent", encoder: str = "auto", pool: str = "mean", seed: int = 0,
    root: str = "runs", verbose: bool = True,
) -> PhyIPReport:
    """Train, probe and adapt; return the report (``results``, ``history``, ``table``)."""
    pl.seed_everything(seed, verbose=False)
    dm = make_data(data, quick, num_train, seed)
    shape = obs_shape_of(dm)
    epochs = epochs or (2 if quick else 30)
    model = WorldModel(obs_shape=shape, encoder=encoder, objective=objective, pool=pool,
                       representation_dim=16 if quick else 64, hidden=[16, 16] if quick else [64, 64],
                       context=4 if quick else 8, lr=1e-3, max_epochs_hint=epochs)
    probe = LinearProbe(sites="representation", targets={"latents": "latents"}, task="regression", mode="frozen",
                        log_figures=not quick)
    report = PhyIPReport(finetune_epochs=2 if quick else 20, mlp_hidden=[32] if quick else [256, 256],
                         mlp_epochs=2 if quick else 200, seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[probe, report], accelerator="cpu", devices=1,
                         logger=TensorBoardLogger(root, name=f"phyip_{data}"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(model, dm)
    if verbose:
        print(summary(report))
    return report


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def trend(report: PhyIPReport, split: str = "ood") -> dict[str, float]:
    """Spearman correlation, over probed epochs, between the SSL loss and the frozen probe's rho, per quantity."""
    from scipy.stats import spearmanr

    hist = report.history
    out = {}
    if len(hist) < 3:
        return out
    names = list(hist[-1]["scores"].get(split, {}))
    for q in names:
        rho = [h["scores"][split][q]["pearson"] for h in hist]
        loss = [h["ssl_loss"] for h in hist]
        out[q] = float(spearmanr(loss, rho).statistic)
    return out


def summary(report: PhyIPReport) -> str:
    """The table with the paper's figures beside ours, and what we measure, in words."""
    res = report.results
    lines = ["", "PhyIP: Pearson rho and R2 per quantity, ID (test) and OOD (ood)", report.table, ""]
    lines.append("paper (Interno et al. 2026): frozen linear OOD rho > 0.90 for internal energy and the "
                 "inverse-square force; adaptation (fine-tuning, high-capacity probe) can collapse it to rho ~ 0.05")
    for m in METHODS:
        if m in res and "ood" in res[m]:
            ood = {q: s["pearson"] for q, s in res[m]["ood"].items()}
            lines.append(f"ours, {m:<13} OOD rho: mean {_mean(list(ood.values())):.3f}; "
                         + ", ".join(f"{q} {v:.3f}" for q, v in ood.items())
                         + f"   [paper: {PAPER_FIGURES[m]}]")
    t = trend(report)
    if t:
        lines.append("Spearman(SSL loss, frozen OOD rho) over epochs (negative: rho rises as the loss falls): "
                     + ", ".join(f"{q} {v:+.2f}" for q, v in t.items()))
    if "frozen_linear" in res and "ood" in res["frozen_linear"]:
        fr = res["frozen_linear"]["ood"]
        hits = [q for q, s in fr.items() if s["pearson"] > 0.9]
        lines.append(f"frozen linear OOD rho > 0.90 for: {', '.join(hits) if hits else 'none'} "
                     f"(of {', '.join(fr)})")
        for m in ("mlp_probe", "fine_tuned"):
            if m in res:
                worse = [q for q in fr if res[m]["ood"][q]["pearson"] < fr[q]["pearson"] - 0.05]
                lines.append(f"{m} OOD rho below the frozen linear probe's (by > 0.05) for: "
                             f"{', '.join(worse) if worse else 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="orbits", choices=["orbits", "fluids"])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--objective", default="latent", choices=["latent", "observation"])
    parser.add_argument("--encoder", default="auto", choices=["auto", "mlp", "conv1d", "gru", "conv2d"])
    parser.add_argument("--pool", default="mean", choices=["mean", "first", "last"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="runs", help="where TensorBoard logs and the JSON go")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = run(args.data, args.quick, args.epochs, args.num_train, args.objective, args.encoder, args.pool,
                 args.seed, args.root)
    return report.results


if __name__ == "__main__":
    main()
