"""Train with KernelDistance in 1 or 2 CPU processes (gloo); save every process's probe and scores."""

import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from lit_repr.callbacks import KernelDistance
from lit_repr.data import LatentVariableDataModule
from lit_repr.models import Classifier


def main(out: str, devices: int) -> None:
    pl.seed_everything(0)
    ntk = KernelDistance(num_samples=24, every_n_steps=3, relu_sites="backbone.0.1",
                         two_layer=[("backbone.0.0", "head")])
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         callbacks=[ntk], logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, max_epochs=2)
    model = Classifier(num_classes=10, in_features=4, hidden=[16], lr=1e-2, weight_decay=0.0)
    dm = LatentVariableDataModule(latent_dim=4, num_classes=10, num_train=400, num_val=100, num_test=0, batch_size=50)
    trainer.fit(model, dm)
    mine = {"probe": ntk.probe, "kernel0": ntk.kernel0, "history": ntk.history}
    every = [None] * devices
    if devices > 1:
        dist.all_gather_object(every, mine)
    else:
        every = [mine]
    if trainer.is_global_zero:
        torch.save(every, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
