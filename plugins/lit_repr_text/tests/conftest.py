import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def encoder():
    """One all-MiniLM-L6-v2 TextEncoder for the session (tests must not change it)."""
    from lit_repr_text import TextEncoder

    return TextEncoder()


@pytest.fixture
def trainer_kwargs(tmp_path):
    return dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=tmp_path,
                num_sanity_val_steps=0)
