"""DIET (datum index as target) on the latent-variable model and on digits.

DIET trains an encoder and a bias-free linear head with cross-entropy where each training sample
is its own class (label smoothing 0.8). It never sees a class label. Reizinger et al. (2024)
prove that, for data whose latents cluster as von Mises–Fisher distributions and whose
augmentations stay within a sample's cluster, DIET's features identify the latents up to a
linear map, like a supervised classifier does.

Part 1, latent-variable model (d = 5, C = 100 classes, κ = 10, as in
``supervised_identifiability.py``): DIET with oracle augmentations (each training step sees a
fresh view ``z' ~ vMF(z, κ_view)`` of every sample, ``x' = g(z')``) with the paper's label
smoothing 0.8 and without smoothing, DIET without augmentations, and a supervised classifier with
the same encoder. With vMF views, DIET *is* classification with one class per training sample
whose class vector is the sample's latent, so at its optimum (without label smoothing) its
features are linear in ``z`` and its head rows linear in the ``z_n``. We report the test R² of
the latents from the features (ridge, fitted on train), the test accuracy of a linear (logistic)
probe for the class beside the Bayes accuracy, and the R² of the training latents from DIET's head
rows.

Part 2, scikit-learn digits: DIET (with small random shifts and pixel noise as augmentation)
against a supervised classifier, the same network untrained, and raw pixels, by the accuracy of a
logistic probe on the penultimate features (fitted on the training images, scored on the 539
validation and test images).

Run: ``python examples/diet_identifiability.py`` (a few minutes on 2 CPU cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from supervised_identifiability import cross_validated_r2, ridge_r2  # the sibling example's ridge readouts
from torch import Tensor, nn

import lit_repr
from lit_repr.data.digits import DigitsDataModule
from lit_repr.data.latent import LatentVariableDataModule
from lit_repr.metrics import fit_probe
from lit_repr.models.classifier import Classifier
from lit_repr.models.diet import DIET


class AugmentedDigits(DigitsDataModule):
    """Digits whose training batches get a random shift of up to one pixel and Gaussian noise.

    Args:
        noise: standard deviation of the pixel noise.
        **kwargs: passed to ``DigitsDataModule`` (``layout`` must stay ``"flat"``).
    """

    def __init__(self, noise: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.noise = noise

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return batch
        x = batch["x"].view(-1, 8, 8)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(trainer.global_step))
        padded = F.pad(x, (1, 1, 1, 1))
        shifts = torch.randint(0, 3, (x.shape[0], 2), generator=g)
        out = torch.empty_like(x)
        for dy in range(3):
            for dx in range(3):
                sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                out[sel] = padded[sel, dy : dy + 8, dx : dx + 8]
        out = out + self.noise * torch.randn(out.shape, generator=g)
        return {**batch, "x": out.reshape(x.shape[0], 64)}


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )


def probe_accuracy(f_tr: Tensor, y_tr: Tensor, f_te: Tensor, y_te: Tensor, num_classes: int) -> float:
    """Test accuracy of a logistic-regression probe fitted on standardized training features."""
    mu, sd = f_tr.mean(0), f_tr.std(0).clamp_min(1e-6)
    res = fit_probe((f_tr - mu) / sd, y_tr, task="classification", num_classes=num_classes,
                    eval_sets={"test": ((f_te - mu) / sd, y_te)}, classifier="logistic")
    return res.scores["test"]["acc"]


def latent_part(quick: bool, seed: int, epochs: int | None) -> tuple[list[tuple[str, float, float]], dict[str, float]]:
    d, C, kappa, view_kappa = 5, 100, 10.0, 50.0
    n = 1_000 if quick else 2_000
    diet_epochs = epochs or (30 if quick else 150)
    sup_epochs = epochs or (15 if quick else 60)
    common = dict(latent_dim=d, num_classes=C, kappa=kappa, num_train=n, num_val=200,
                  num_test=2_000 if quick else 5_000, batch_size=256, seed=seed)
    enc = dict(in_features=d, hidden=[512, 512, 2 * d], activation="leaky_relu", weight_decay=0.0)
    variants = [
        ("DIET, vMF views, smoothing 0.8", dict(label_smoothing=0.8), view_kappa),
        ("DIET, vMF views, no smoothing", dict(label_smoothing=0.0), view_kappa),
    ]
    if not quick:
        variants.append(("DIET, no views, smoothing 0.8", dict(label_smoothing=0.8), None))
    runs: dict[str, tuple[pl.LightningModule, LatentVariableDataModule, int]] = {}
    for name, kw, vk in variants:
        pl.seed_everything(seed, verbose=False)
        runs[name] = (DIET(num_samples=n, max_epochs_hint=diet_epochs, lr=1e-2, **kw, **enc),
                      LatentVariableDataModule(view_kappa=vk, **common), diet_epochs)
    pl.seed_everything(seed, verbose=False)
    runs["supervised classifier (labels y)"] = (
        Classifier(num_classes=C, max_epochs_hint=sup_epochs, lr=3e-3, **enc),
        LatentVariableDataModule(**common), sup_epochs,
    )
    untrained = copy.deepcopy(runs["supervised classifier (labels y)"][0])
    for model, dm, ep in runs.values():
        _trainer(ep).fit(model, dm)
    dm = LatentVariableDataModule(**common)
    dm.setup()
    tr, te = dm.datasets["train"].tensors, dm.datasets["test"].tensors
    bayes = ((te["latents"] @ dm.class_vectors.T).argmax(1) == te["y"]).float().mean().item()
    sources: dict[str, nn.Module | None] = {name: m for name, (m, _, _) in runs.items()}
    sources["untrained encoder"] = untrained
    sources["raw observations x"] = None
    rows: list[tuple[str, float, float]] = []
    results: dict[str, float] = {}
    for name, model in sources.items():
        if model is None:
            f_tr, f_te = tr["x"], te["x"]
        else:
            f_tr, f_te = (lit_repr.features(model, "backbone", x)["backbone"] for x in (tr["x"], te["x"]))
        r2 = ridge_r2(f_tr, tr["latents"], f_te, te["latents"]).mean().item()
        acc = probe_accuracy(f_tr, tr["y"], f_te, te["y"], C)
        rows.append((name, r2, acc))
        results[f"latent/{name}/r2"] = r2
        results[f"latent/{name}/probe_acc"] = acc
    results["latent/bayes_acc"] = bayes
    print(f"\nPart 1: latent-variable model, d={d}, C={C}, kappa={kappa:g}, {n} training samples; DIET "
          f"{diet_epochs} epochs (views z' ~ vMF(z, {view_kappa:g})), supervised {sup_epochs} epochs; "
          f"encoder {d}-512-512-{2 * d}")
    print(f"{'features':<36} {'latent R2':>10} {'class probe acc':>16}")
    for label, r2, acc in rows:
        print(f"{label:<36} {r2:10.3f} {acc:16.3f}")
    print(f"Bayes-optimal class accuracy {bayes:.3f}, chance {1 / C:.3f}")
    print("DIET head rows -> each training sample's latent z_n (one row per sample):")
    for name, (model, _, _) in runs.items():
        if isinstance(model, DIET):
            W, Z = model.head_rows, tr["latents"]
            r2_in = ridge_r2(W, Z, W, Z).mean().item()
            r2_cv = cross_validated_r2(W, Z, folds=10, seed=seed).mean().item()
            results[f"latent/{name}/head_r2_in"] = r2_in
            results[f"latent/{name}/head_r2_cv"] = r2_cv
            print(f"  {name:<34} in-sample R2 {r2_in:.3f}, 10-fold CV R2 {r2_cv:.3f}")
    print("theory: at the optimum of DIET with vMF views (and of the supervised loss), features are a linear "
          "function of z (R2 = 1)")
    return rows, results


def digits_part(quick: bool, seed: int, epochs: int | None) -> tuple[list[tuple[str, float]], dict[str, float]]:
    diet_epochs = epochs or (30 if quick else 200)
    sup_epochs = epochs or (15 if quick else 40)
    enc = dict(in_features=64, hidden=[256, 128], lr=3e-3, weight_decay=1e-4)
    pl.seed_everything(seed, verbose=False)
    dm = AugmentedDigits(batch_size=128, seed=seed)
    dm.setup()
    n = len(dm.datasets["train"])
    diet = DIET(num_samples=n, max_epochs_hint=diet_epochs, **enc)
    _trainer(diet_epochs).fit(diet, dm)
    pl.seed_everything(seed, verbose=False)
    sup = Classifier(num_classes=10, max_epochs_hint=sup_epochs, **enc)
    untrained = copy.deepcopy(sup)
    _trainer(sup_epochs).fit(sup, DigitsDataModule(batch_size=128, seed=seed))
    tr = dm.datasets["train"].tensors
    # score on validation + test images together (539 images) for a less noisy accuracy
    te = {k: torch.cat([dm.datasets["val"].tensors[k], dm.datasets["test"].tensors[k]]) for k in ("x", "y")}
    rows = []
    results = {}
    for name, model in (("DIET (no labels)", diet), ("supervised classifier", sup),
                        ("untrained network", untrained), ("raw pixels", None)):
        if model is None:
            f_tr, f_te = tr["x"], te["x"]
        else:
            f_tr, f_te = (lit_repr.features(model, "backbone", x)["backbone"] for x in (tr["x"], te["x"]))
        acc = probe_accuracy(f_tr, tr["y"], f_te, te["y"], 10)
        rows.append((name, acc))
        results[f"digits/{name}/probe_acc"] = acc
    print(f"\nPart 2: digits ({n} training images), MLP 64-256-128, DIET {diet_epochs} epochs with shift+noise "
          f"augmentation, supervised {sup_epochs} epochs")
    print(f"{'features':<36} {'held-out probe acc':>19}")
    for label, acc in rows:
        print(f"{label:<36} {acc:19.3f}")
    return rows, results


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced size, finishes in < 1 minute")
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    parser.add_argument("--part", choices=["latent", "digits", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny nets)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results: dict[str, float] = {}
    if args.part in ("latent", "both"):
        results.update(latent_part(args.quick, args.seed, args.epochs)[1])
    if args.part in ("digits", "both"):
        results.update(digits_part(args.quick, args.seed, args.epochs)[1])
    results["seconds"] = time.perf_counter() - t0
    print(f"[{results['seconds']:.0f} s]")
    return results


if __name__ == "__main__":
    main()
