"""Fit the Whitening callback in 1 or 2 CPU processes (gloo); save every process's installed whitening."""

import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Dicts(Dataset):
    def __init__(self, n=256, d=5):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 2.0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.whitening = None
        self.lin = nn.Linear(5, 1)

    def training_step(self, batch, _):
        return self.lin(self.whitening(batch["x"])).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def main(out: str, devices: int) -> None:
    from lit_repr.callbacks import Whitening

    pl.seed_everything(0)
    cb = Whitening(num_batches=2, kind="zca", eps=1e-6)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         callbacks=[cb], logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, max_steps=2)
    model = Model()
    # each process reads 2 batches of 64 / devices of its shard (Lightning's sampler shuffles with a fixed seed)
    trainer.fit(model, DataLoader(Dicts(), batch_size=64 // devices, shuffle=False))
    mine = {k: v.clone() for k, v in model.whitening.state_dict().items()}
    mine["identity_deviation"] = cb.identity_deviation
    mine["indices"] = list(trainer.train_dataloader.sampler)[: 2 * (64 // devices)]
    every = [None] * devices
    if devices > 1:
        dist.all_gather_object(every, mine)
    else:
        every = [mine]
    if trainer.is_global_zero:
        torch.save({"ranks": every, "x": Dicts().x}, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
