"""Sprites: train on shape only; which other factors can be read linearly from the representation?

A classifier (an MLP on the pixels) is trained to tell the shape of procedurally rendered
dSprites-like images (``SpritesDataModule``: square / ellipse / heart, with scale, orientation
and x/y position drawn uniformly and independently). Its loss never mentions scale, orientation
or position. We fit a ridge map (closed form, ``StreamingRidge``, penalty by GCV) from three
representations to every factor on the training split and report the Pearson correlation of
its predictions with the factor on the test split:

* the trained classifier's penultimate layer (the head's input, tapped at ``"backbone"``),
* the same network before training,
* the raw pixels.

Orientation is an angle in ``[0, 2π)`` and the square and ellipse are symmetric under rotations
by π/2 and π, so no linear readout can decode the raw angle well; it is listed for completeness.
``shape`` is decoded as its class index (the classifier's own target, for reference).

Run: ``python examples/sprites_decodability.py`` (a few minutes on 2 CPU cores) or ``--quick``.
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
from lit_repr.data.sprites import SpritesDataModule
from lit_repr.metrics.ridge import StreamingRidge, moments_score
from lit_repr.models.classifier import Classifier


def decode(f_tr: Tensor, lat_tr: Tensor, f_te: Tensor, lat_te: Tensor, batch_size: int = 2048) -> dict[str, Tensor]:
    """Per-factor test Pearson and R² of ridge maps fitted on the training split (streamed)."""
    fit_stats = StreamingRidge(f_tr.shape[1], lat_tr.shape[1])
    test_stats = StreamingRidge(f_tr.shape[1], lat_tr.shape[1])
    for xb, yb in zip(f_tr.split(batch_size), lat_tr.split(batch_size)):
        fit_stats.update(xb, yb)
    for xb, yb in zip(f_te.split(batch_size), lat_te.split(batch_size)):
        test_stats.update(xb, yb)
    return moments_score(fit_stats.compute(), test_stats)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced size, finishes in < 1 minute")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    epochs = args.epochs or (10 if args.quick else 15)
    num_train = args.num_train or (4_000 if args.quick else 20_000)
    size = args.image_size or (32 if args.quick else 64)
    pl.seed_everything(args.seed, verbose=False)
    dm = SpritesDataModule(
        num_train=num_train, num_val=500 if args.quick else 2_000, num_test=2_000 if args.quick else 5_000,
        image_size=size, layout="flat", batch_size=128, seed=args.seed,
    )
    dm.setup("fit")
    model = Classifier(num_classes=dm.num_classes, in_features=size * size, hidden=[512, 128], lr=1e-3,
                       weight_decay=1e-4, max_epochs_hint=epochs)
    untrained = copy.deepcopy(model)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    tr, te = dm.arrays("train"), dm.arrays("test")
    model.eval()
    with torch.no_grad():
        acc = (model(te["x"]).argmax(1) == te["y"]).float().mean().item()

    results: dict[str, float] = {"shape_acc": acc}
    table = {}
    for name, source in (("trained (shape) penultimate", model), ("untrained penultimate", untrained),
                         ("raw pixels", None)):
        if source is None:
            f_tr, f_te = tr["x"], te["x"]
        else:
            f_tr, f_te = (lit_repr.features(source, "backbone", x)["backbone"] for x in (tr["x"], te["x"]))
        scores = decode(f_tr, tr["latents"], f_te, te["latents"])
        table[name] = scores["pearson"]
        for k, factor in enumerate(dm.factor_names):
            results[f"{name}/{factor}/pearson"] = float(scores["pearson"][k])
            results[f"{name}/{factor}/r2"] = float(scores["r2"][k])
    results["seconds"] = time.perf_counter() - t0

    print(f"\nSprites ({num_train} training images, {size}x{size}, shapes {dm.shapes}); classifier MLP "
          f"{size * size}-512-128 trained on shape only for {epochs} epochs: test shape accuracy {acc:.3f}")
    print("test Pearson r of a linear (ridge) readout per factor")
    header = f"{'representation':<30}" + "".join(f"{f:>13}" for f in dm.factor_names)
    print(header)
    for name, r in table.items():
        print(f"{name:<30}" + "".join(f"{float(v):13.3f}" for v in r))
    print(f"[{results['seconds']:.0f} s]")
    return results


if __name__ == "__main__":
    main()
