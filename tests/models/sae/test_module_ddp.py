"""The code MCC of SparseAutoencoder is exact under DDP: 2 processes log what 1 process logs."""

from pathlib import Path

import pytest
import torch

from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.metrics.mcc import mean_correlation_coefficient
from lit_repr.models.sae import SparseAutoencoder

SCRIPT = Path(__file__).with_name("ddp_code_mcc_script.py")


def test_code_mcc_two_processes_equal_one_and_the_whole_split(run_ddp_script):
    one, two = run_ddp_script(SCRIPT, 1), run_ddp_script(SCRIPT, 2)
    sae = SparseAutoencoder(8, 16, variant="topk", variant_args={"k": 3}, init_seed=0, decoder_bias_init="zeros")
    dm = SparseCodingDataModule(num_train=64, num_val=256, num_test=0, batch_size=32)
    dm.setup("validate")
    val = dm.datasets["val"].tensors
    with torch.no_grad():
        expected = mean_correlation_coefficient(val["codes"], sae.eval().encode(val["x"])).mean
    assert one["code_mcc"] == pytest.approx(expected, abs=1e-6)
    assert two["code_mcc"] == pytest.approx(expected, abs=1e-6)
