"""Run LinearProbe in 1 or 2 CPU processes (gloo) and save the fitted probes; used by test_probe_ddp."""

import sys

import lightning.pytorch as pl
import torch

from lit_repr.callbacks import LinearProbe
from lit_repr.data import DigitsDataModule
from lit_repr.models import Classifier


def main(out: str, devices: int, mode: str) -> None:
    pl.seed_everything(0)
    model = Classifier(in_features=64, hidden=[32], lr=1e-12, weight_decay=0.0)
    probe = LinearProbe(
        ["backbone.0"],
        targets={"digit": "y", "ink": lambda b: b["x"].sum(1)},
        task={"digit": "classification", "ink": "regression"},
        mode=mode,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        callbacks=[probe],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    dm = DigitsDataModule(batch_size=64, val_fraction=0.2, test_fraction=0.0)
    if mode == "frozen":
        trainer.validate(model, dm, verbose=False)
    else:
        trainer.fit(model, dm)
    if trainer.is_global_zero:
        torch.save(
            {
                k: {
                    "weight": probe.readout("backbone.0", k).weight,
                    "bias": probe.readout("backbone.0", k).bias,
                    "n": int(probe.readout("backbone.0", k).stats.n),
                }
                for k in ("digit", "ink")
            }
            | {"scores": dict(probe.scores)},
            out,
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
