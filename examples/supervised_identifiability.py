"""Supervised identifiability on a latent-variable model: does cross-entropy invert the mixing?

Data (``LatentVariableDataModule``): latents ``z`` on ``S^4`` (d = 5), C = 100 class vectors
``v_c`` uniform on the sphere, ``z ~ vMF(v_y, κ = 10)``, observations ``x = g(z)`` through a fixed
random invertible LeakyReLU MLP. Under this model the Bayes-optimal logits are ``κ v_c·z`` plus a
per-class constant, so a classifier trained with cross-entropy to optimality has features that are
a linear function of ``z`` and head rows that are a linear function of the ``v_c`` (Reizinger et
al., "Cross-entropy is all you need to invert the data generating process", 2024). The theory
therefore predicts linear R² → 1 for both.

What we measure (ridge fitted in closed form with ``StreamingRidge``, penalty chosen by GCV):

* latents: R² of ``z`` predicted linearly from the encoder's output (the head's input), fitted on
  the training split and scored on the test split, averaged over the d latent coordinates;
  beside it the same for the raw observations ``x`` (how nonlinear the mixing is) and for the
  same network before training;
* class vectors: R² of the C class vectors predicted linearly from the C head rows (in-sample, and
  out-of-fold with 10-fold cross-validation over classes);
* test accuracy against the Bayes accuracy ``argmax_c v_c·z``, i.e. how close to the optimum the
  finite training run gets (the theory is a statement about the optimum).

Run: ``python examples/supervised_identifiability.py`` (a few minutes on 2 CPU cores) or
``--quick`` (< 1 minute).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

import lit_repr
from lit_repr.data.latent import LatentVariableDataModule
from lit_repr.metrics.ridge import StreamingRidge, moments_score
from lit_repr.models.classifier import Classifier


def ridge_r2(x_fit: Tensor, y_fit: Tensor, x_eval: Tensor, y_eval: Tensor) -> Tensor:
    """Per-target R² on ``(x_eval, y_eval)`` of a ridge map fitted on ``(x_fit, y_fit)`` (GCV)."""
    fit_stats = StreamingRidge(x_fit.shape[1], y_fit.shape[1])
    eval_stats = StreamingRidge(x_fit.shape[1], y_fit.shape[1])
    fit_stats.update(x_fit, y_fit)
    eval_stats.update(x_eval, y_eval)
    return moments_score(fit_stats.compute(), eval_stats)["r2"]


def cross_validated_r2(x: Tensor, y: Tensor, folds: int = 10, seed: int = 0) -> Tensor:
    """Per-target R² of out-of-fold ridge predictions (``folds``-fold cross-validation over rows)."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pred = torch.empty(n, y.shape[1], dtype=torch.float64)
    for held in perm.tensor_split(folds):
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        stats = StreamingRidge(x.shape[1], y.shape[1])
        stats.update(x[keep], y[keep])
        pred[held] = stats.compute().predict(x[held])
    y = y.to(torch.float64)
    return 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced size, finishes in < 1 minute")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny nets)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (30 if args.quick else 40)
    num_train = args.num_train or (5_000 if args.quick else 20_000)
    d, C, kappa = 5, 100, 10.0
    t0 = time.perf_counter()

    pl.seed_everything(args.seed, verbose=False)
    dm = LatentVariableDataModule(
        latent_dim=d, num_classes=C, kappa=kappa, num_train=num_train, num_val=1_000,
        num_test=2_000 if args.quick else 5_000, batch_size=256, seed=args.seed,
    )
    dm.setup("fit")
    model = Classifier(
        num_classes=C, in_features=d, hidden=[512, 512, 2 * d], activation="leaky_relu",
        lr=3e-3, weight_decay=0.0, max_epochs_hint=epochs,
    )
    untrained = copy.deepcopy(model)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)

    tr, te = dm.datasets["train"].tensors, dm.datasets["test"].tensors
    results: dict[str, float] = {}
    rows = []
    for name, source in (("trained encoder", model), ("untrained encoder", untrained), ("raw observations x", None)):
        if source is None:
            f_tr, f_te = tr["x"], te["x"]
        else:
            f_tr, f_te = (lit_repr.features(source, "backbone", x)["backbone"] for x in (tr["x"], te["x"]))
        r2 = ridge_r2(f_tr, tr["latents"], f_te, te["latents"])
        rows.append((f"latents z <- {name}", r2.mean().item(), r2.min().item()))
        results[f"latents_r2/{name}"] = r2.mean().item()

    V = dm.class_vectors
    for name, source in (("trained head rows", model), ("untrained head rows", untrained)):
        W = source.head.weight.detach()
        r2_in = ridge_r2(W, V, W, V)
        r2_cv = cross_validated_r2(W, V, folds=10, seed=args.seed)
        rows.append((f"class vectors v <- {name} (in-sample)", r2_in.mean().item(), r2_in.min().item()))
        rows.append((f"class vectors v <- {name} (10-fold CV)", r2_cv.mean().item(), r2_cv.min().item()))
        results[f"class_r2_in/{name}"] = r2_in.mean().item()
        results[f"class_r2_cv/{name}"] = r2_cv.mean().item()

    model.eval()
    with torch.no_grad():
        acc = (model(te["x"]).argmax(1) == te["y"]).float().mean().item()
    bayes = ((te["latents"] @ V.T).argmax(1) == te["y"]).float().mean().item()
    results.update(test_acc=acc, bayes_acc=bayes, seconds=time.perf_counter() - t0)

    print(f"\nSupervised identifiability: d={d}, C={C}, kappa={kappa:g}, {num_train} training samples, "
          f"{epochs} epochs, encoder {d}-512-512-{2 * d}")
    print(f"{'linear readout':<52} {'mean R2':>8} {'min R2':>8}")
    for label, mean, low in rows:
        print(f"{label:<52} {mean:8.3f} {low:8.3f}")
    print(f"test accuracy {acc:.3f} (Bayes-optimal {bayes:.3f}, chance {1 / C:.3f})")
    print("theory (cross-entropy optimum): R2 = 1 for latents and class vectors; the gap measures the "
          f"distance of a finite run from that optimum. [{results['seconds']:.0f} s]")
    return results


if __name__ == "__main__":
    main()
