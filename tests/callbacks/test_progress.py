import io

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks.progress import LineProgressBar


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.net(batch[0]).pow(2).mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(bar, epochs=4):
    loader = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)  # 16 steps per epoch
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[bar], logger=False, enable_checkpointing=False, enable_model_summary=False
    )
    trainer.fit(Tiny(), loader, loader)
    return trainer


def test_one_line_per_epoch_not_per_step():
    out = io.StringIO()
    trainer = _fit(LineProgressBar(stream=out))
    assert trainer.progress_bar_callback.__class__ is LineProgressBar
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("epoch 1/4  step 16  ") and "train/loss=" in lines[0] and "val/loss=" in lines[0]
    assert lines[-1].startswith("epoch 4/4  step 64  ")


def test_every_n_epochs_keeps_the_last_and_validate_prints_once():
    out = io.StringIO()
    trainer = _fit(LineProgressBar(every_n_epochs=3, stream=out), epochs=4)
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["3/4", "4/4"]
    trainer.validate(trainer.lightning_module, DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4))
    assert out.getvalue().splitlines()[-1].startswith("validation done")


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_epochs must be an int >= 1"):
        LineProgressBar(every_n_epochs=0)
