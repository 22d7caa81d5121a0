"""The identifiability examples run at their --quick size, and the configs run at a reduced size."""

import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("num_threads")


def _finite(results):
    bad = {k: v for k, v in results.items() if not math.isfinite(v)}
    assert not bad, f"non-finite results: {bad}"


def test_supervised_identifiability_quick(capsys, load_example):
    res = load_example("supervised_identifiability").main(["--quick", "--epochs", "8", "--num-train", "3000"])
    _finite(res)
    out = capsys.readouterr().out
    assert "class vectors v <- trained head rows (10-fold CV)" in out
    # even a short run identifies more than chance: trained head rows carry the class vectors
    assert res["class_r2_in/trained head rows"] > 0.2
    assert res["class_r2_cv/untrained head rows"] < 0.1
    assert 0 < res["test_acc"] <= res["bayes_acc"] + 0.05


def test_diet_identifiability_quick(capsys, load_example):
    res = load_example("diet_identifiability").main(["--quick", "--epochs", "3"])
    _finite(res)
    out = capsys.readouterr().out
    assert "Part 1" in out and "Part 2" in out
    assert res["digits/raw pixels/probe_acc"] > 0.85
    assert res["latent/raw observations x/r2"] > 0.6


def test_sprites_decodability_quick(capsys, load_example):
    args = ["--quick", "--epochs", "1", "--num-train", "1500", "--image-size", "32"]
    res = load_example("sprites_decodability").main(args)
    _finite(res)
    out = capsys.readouterr().out
    assert "pos_x" in out and "raw pixels" in out
    # position is linearly decodable from raw pixels; the raw angle is not
    assert res["raw pixels/pos_x/pearson"] > 0.7
    assert abs(res["raw pixels/orientation/pearson"]) < 0.3


@pytest.mark.parametrize(
    "config,overrides",
    [
        ("identifiability_supervised.yaml",
         ["--data.init_args.num_train=400", "--data.init_args.num_val=100", "--data.init_args.num_test=100"]),
        ("identifiability_diet.yaml",
         ["--data.init_args.num_train=400", "--data.init_args.num_val=100", "--data.init_args.num_test=100"]),
        ("sprites_shape.yaml",
         ["--data.init_args.num_train=300", "--data.init_args.num_val=60", "--data.init_args.num_test=60"]),
    ],
)
def test_configs_run(tmp_path, config, overrides):
    from lit_repr.cli import LitReprCLI

    args = [
        "fit", "--config", str(REPO / "configs" / config), "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false",
        "--trainer.callbacks.init_args.every_n_epochs=1", *overrides,
    ]
    cli = LitReprCLI(args=args)
    assert cli.trainer.current_epoch == 1
    metrics = cli.trainer.callback_metrics
    assert "train/loss" in metrics and torch.isfinite(metrics["train/loss"])
    assert any(k.startswith("probe/") for k in metrics), sorted(metrics)
    if hasattr(cli.model, "num_samples"):  # DIET's head follows the (overridden) training set size
        assert cli.model.num_samples == len(cli.datamodule.datasets["train"]) == 400


@pytest.mark.slow
def test_supervised_identifiability_default_size(load_example):
    """At the default size (a few minutes) the trained encoder and head are near-linearly identified."""
    res = load_example("supervised_identifiability").main([])
    assert res["latents_r2/trained encoder"] > 0.95
    assert res["class_r2_cv/trained head rows"] > 0.95
    assert res["latents_r2/trained encoder"] > res["latents_r2/raw observations x"] + 0.1


@pytest.mark.slow
def test_sprites_decodability_default_size(load_example):
    """Training on shape makes scale more, and position less, linearly decodable than at init."""
    res = load_example("sprites_decodability").main([])
    assert res["shape_acc"] > 0.7
    assert res["trained (shape) penultimate/scale/pearson"] > res["untrained penultimate/scale/pearson"] + 0.05
    assert res["trained (shape) penultimate/pos_x/pearson"] < res["raw pixels/pos_x/pearson"]
