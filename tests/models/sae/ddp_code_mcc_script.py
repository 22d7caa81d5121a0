"""Validate one SparseAutoencoder in 1 or 2 CPU processes (gloo) and save the logged code MCC; used by
test_module_ddp."""

import sys

import lightning.pytorch as pl
import torch

from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.models.sae import SparseAutoencoder


def main(out: str, devices: int) -> None:
    sae = SparseAutoencoder(8, 16, variant="topk", variant_args={"k": 3}, init_seed=0, decoder_bias_init="zeros")
    dm = SparseCodingDataModule(num_train=64, num_val=256, num_test=0, batch_size=32)  # 4 batches per process
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(sae, dm, verbose=False)
    if trainer.is_global_zero:
        torch.save({"code_mcc": float(trainer.callback_metrics["val/code_mcc"])}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
