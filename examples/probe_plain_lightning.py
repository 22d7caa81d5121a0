"""Add lit_repr callbacks to a Lightning project that has never heard of lit_repr.

The LightningModule below is plain Lightning: (x, y) tuple batches, its own layers, no lit_repr
base class. Two lines attach a linear probe to its hidden layers:

    from lit_repr.callbacks import LinearProbe
    trainer = pl.Trainer(callbacks=[LinearProbe(sites=["encoder.*"], targets={"digit": 1}, num_classes=10,
                                                input_key=0, mode="frozen")])

``RunSummary`` prints the probe's final scores as a table at the end and writes them to
``runs/probe_plain_lightning/version_N/summary.json``, beside the TensorBoard logs (the same layout as
``python -m lit_repr fit --config configs/<name>.yaml``, which logs to ``runs/<name>/version_N``).

Run:  python examples/probe_plain_lightning.py  [--epochs 5]
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import LinearProbe, RunSummary


class MyModel(pl.LightningModule):
    """An ordinary LightningModule."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.classifier = nn.Linear(64, 10)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loaders() -> tuple[DataLoader, DataLoader]:
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:1400], perm[1400:]
    return (
        DataLoader(TensorDataset(x[tr], y[tr]), batch_size=64, shuffle=True),
        DataLoader(TensorDataset(x[va], y[va]), batch_size=256),
    )


def main(epochs: int = 5, logger: bool = True) -> dict[str, float]:
    pl.seed_everything(0)
    train, val = loaders()
    probe = LinearProbe(
        sites=["encoder.1", "encoder.3"],  # the two ReLU outputs, by dotted name
        targets={"digit": 1},  # position 1 of the (x, y) batch
        num_classes=10,
        input_key=0,  # frozen passes call model(batch[0])
        mode="frozen",  # eval mode, no grad, over the train and val loaders
        probe_loaders={"train": train, "val": val},
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[probe, RunSummary()],  # the table of final scores, and summary.json beside the logs
        logger=TensorBoardLogger(save_dir="runs", name="probe_plain_lightning") if logger else False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(MyModel(), train, val)
    return {k: round(v, 4) for k, v in probe.scores.items()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    main(ap.parse_args().epochs)
