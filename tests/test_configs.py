"""Every config in configs/ runs through the CLI at a reduced size."""

from pathlib import Path

import numpy as np
import pytest

from lit_repr.cli import LitReprCLI, main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
FIT_CONFIGS = [p for p in CONFIGS if not p.stem.startswith("federated_")]
FEDERATE_CONFIGS = [p for p in CONFIGS if p.stem.startswith("federated_")]

# a federation at a reduced size: one-epoch fits, a few synthetic images, one baseline round
FEDERATE_REDUCED = [
    "--samples_per_class=12",
    "--prior_trainer={max_epochs: 2}",
    "--classifier_trainer={max_epochs: 1}",
    "--baseline_args={rounds: 1, local_epochs: 1, epochs: 1}",
    "--progress=false",
]


def test_configs_exist():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)
    assert any(p.name == "federated_digits.yaml" for p in CONFIGS)


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=[p.stem for p in FIT_CONFIGS])
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


def write_medmnist_stand_in(root: Path, flag: str, num_classes: int, per_class: int = 6) -> None:
    """A file with the official MedMNIST layout (uint8 28×28×3 images, (N, 1) labels), class-dependent images."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = np.repeat(np.arange(num_classes), per_class)
        base = (labels * (200 // num_classes))[:, None, None, None]
        arrays[f"{split}_images"] = (base + rng.integers(0, 40, (len(labels), 28, 28, 3))).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{flag}.npz", **arrays)


@pytest.mark.parametrize("config", FEDERATE_CONFIGS, ids=[p.stem for p in FEDERATE_CONFIGS])
def test_federate_config_runs_reduced(config, tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    extra = []
    data = yaml.safe_load(config.read_text())["data"]
    if data["class_path"].endswith("MedMNISTDataModule"):  # a stand-in file instead of the real download
        write_medmnist_stand_in(tmp_path / "medmnist", data["init_args"]["flag"], num_classes=8)
        extra.append(f"--data.init_args.root={tmp_path / 'medmnist'}")
    main(["federate", "--config", str(config), *FEDERATE_REDUCED, *extra, f"--run_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    assert "FederatedFactory/server" in out and "report:" in out
    assert (tmp_path / "run" / "report.json").is_file()
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "run" / "modules").glob("*.safetensors"))
