"""Run IdentifiabilityMetrics and RepresentationSimilarity in 1 or 2 CPU processes (gloo) and save
the scores; used by test_identifiability_ddp."""

import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from lit_repr.callbacks import IdentifiabilityMetrics, RepresentationSimilarity
from lit_repr.data import LatentVariableDataModule
from lit_repr.metrics import fit_probe, linear_cka
from lit_repr.models import Classifier


def main(out: str, devices: int) -> None:
    pl.seed_everything(0)
    model = Classifier(num_classes=10, in_features=4, hidden=[32, 16])
    reference = Classifier(num_classes=10, in_features=4, hidden=[32, 16])
    ident = IdentifiabilityMetrics(["backbone", "backbone.0"], metrics=["linear_r2", "mcc"], max_samples=5000)
    sim = RepresentationSimilarity(["backbone"], reference=reference, max_samples=5000, k=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=[ident, sim],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    dm = LatentVariableDataModule(latent_dim=4, num_classes=10, num_train=500, num_val=301, num_test=0,
                                  batch_size=64)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, dm, verbose=False)
    advice = [str(w.message) for w in caught if "sync_dist" in str(w.message)]
    if trainer.is_global_zero:
        # readouts of in-memory arrays, called on one rank only: must not enter a collective (hang)
        g = torch.Generator().manual_seed(0)
        x, z = torch.randn(200, 6, generator=g), torch.randn(200, 2, generator=g)
        local = {
            "fit_probe_r2": fit_probe(x, z).scores["fit"]["r2"],
            "cka_debiased_local": float(linear_cka(x, x @ torch.randn(6, 6, generator=g), debiased=True)),
        }
        torch.save({**ident.scores, **sim.scores, "local": local, "sync_dist_advice": advice}, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
