"""Every config in configs/ runs through the CLI at a reduced size."""

from pathlib import Path

import pytest

from lit_repr.cli import LitReprCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_runs_reduced(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = LitReprCLI(
        args=[
            "fit",
            "--config",
            str(config),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.state.finished
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))
