"""Run InterventionReport in 1 or 2 CPU processes (gloo) and save its scores; used by test_callback_ddp."""

import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from lit_repr.data import DigitsDataModule
from lit_repr.interventions import InterventionReport, MeanAblation, Steering, ZeroAblation
from lit_repr.models import Classifier


def main(out: str, devices: int) -> None:
    pl.seed_everything(0)
    model = Classifier(in_features=64, hidden=[32])
    dm = DigitsDataModule(batch_size=64, val_fraction=0.2, test_fraction=0.0)
    dm.setup("fit")
    report = InterventionReport(
        {"zero": {"backbone.0": ZeroAblation()},
         "mean": {"backbone.0.0": MeanAblation(dm.datasets["train"].tensors["x"][:100], units=range(8))},
         "steer": {"backbone": Steering(torch.linspace(-1, 1, 32), scale=3.0)}},
        eval_splits=["val"],
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=[report],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(model, dm, verbose=False)
    if trainer.is_global_zero:
        n = {e.quantity + "/" + e.site: e.n for e in report.evidence}
        torch.save({"scores": dict(report.scores), "n": n}, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
