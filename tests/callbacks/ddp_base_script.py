"""Run the docstring's NormMonitor (online and frozen) in 1 or 2 CPU processes (gloo); save the scores."""

import sys
from pathlib import Path

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).parent))
from readout_examples import NormMonitor  # noqa: E402

from lit_repr.data import LatentVariableDataModule  # noqa: E402
from lit_repr.models import Classifier  # noqa: E402


def main(out: str, devices: int) -> None:
    import torch
    import torch.distributed as dist

    pl.seed_everything(0)
    online = NormMonitor(["backbone.0", "backbone"], mode="online", name="online")
    frozen = NormMonitor(["backbone.0"], name="frozen")
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         callbacks=[online, frozen], logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, max_epochs=1)
    # the readouts see the model's own forward passes: compare at the same weights whatever the number
    # of processes (a negligible learning rate leaves the float32 weights at their initial values)
    model = Classifier(num_classes=10, in_features=4, hidden=[16], lr=1e-12, weight_decay=0.0)
    dm = LatentVariableDataModule(latent_dim=4, num_classes=10, num_train=500, num_val=300, num_test=0, batch_size=50)
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        torch.save({**online.scores, **frozen.scores}, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
