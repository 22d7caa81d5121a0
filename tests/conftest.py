import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test models are tiny: one intra-op thread is faster than two and immune to the stalls of
# spinning OpenMP workers when other processes (e.g. the DDP tests' children) share the cores.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


@pytest.fixture
def trainer_kwargs(tmp_path):
    """Quiet, fast Trainer settings for tests."""
    return dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
