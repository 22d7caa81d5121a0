"""The lazy/rich examples (phase diagram, grokking) run at their --quick size, and their configs at a reduced size."""

import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("num_threads")


def test_phase_diagram_quick(capsys, tmp_path, load_example):
    res = load_example("lazy_rich_phase_diagram").main(["--quick", "--out", str(tmp_path / "pd")])
    out = capsys.readouterr().out
    assert "kernel dist" in out and "test error" in out and "paper (Fig. 1b)" in out
    cells = {k: v for k, v in res.items() if k.startswith(("kernel_distance/", "test_error/"))}
    assert len(cells) == 2 * 9
    assert all(math.isfinite(v) for v in res.values())
    # rich cells (smallest tau) move their tangent kernel far more than lazy cells (largest tau)
    assert res["rich_kernel_distance"] > 0.2
    assert res["lazy_kernel_distance"] < 0.1
    assert res["rich_kernel_distance"] > 3 * res["lazy_kernel_distance"]
    # and generalize better than the lazy cells, which keep their large random initial function
    assert res["rich_test_error"] < res["lazy_test_error"]
    assert (tmp_path / "pd" / "phase_diagram.png").stat().st_size > 0
    assert list((tmp_path / "pd").glob("events.out.tfevents.*"))


def test_grokking_quick(capsys, tmp_path, load_example):
    res = load_example("grokking").main(["--quick", "--steps", "1500", "--out", str(tmp_path / "grok")])
    out = capsys.readouterr().out
    assert "test>=0.9 at" in out and "upstream" in out and "downstream" in out
    for balance in ("-0.9", "+0", "+0.9"):
        key = f"balance={balance}/seed=0"
        assert res[f"memorized_at/{key}"] <= 500  # the training pairs are memorized early
        # held-out accuracy rises well above chance (1/31) within the short budget
        assert res[f"final_test_acc/{key}"] > 0.5
        gen = res[f"generalized_at/{key}"]
        assert gen == math.inf or res[f"memorized_at/{key}"] <= gen <= 1500
    assert (tmp_path / "grok" / "grokking.png").stat().st_size > 0


@pytest.mark.parametrize(
    "config,overrides,expected",
    [
        pytest.param(
            "lazy_rich_phase.yaml", ["--trainer.max_epochs=100"],
            ["ntk/kernel_distance", "probe/hidden/teacher_units/"],
            id="lazy_rich_phase",
        ),
        pytest.param("grokking.yaml", ["--trainer.max_epochs=50"], ["val/acc", "train/acc"], id="grokking"),
    ],
)
def test_configs_run(tmp_path, config, overrides, expected):
    from lit_repr.cli import LitReprCLI

    args = [
        "fit", "--config", str(REPO / "configs" / config), "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        *overrides,
    ]
    cli = LitReprCLI(args=args)
    assert cli.trainer.state.finished
    metrics = cli.trainer.callback_metrics
    assert "train/loss" in metrics and torch.isfinite(metrics["train/loss"])
    for name in expected:
        assert any(k.startswith(name) for k in metrics), (name, sorted(metrics))


@pytest.mark.slow
def test_phase_diagram_default_size(tmp_path, load_example):
    """The 5x5 grid: every smallest-tau cell has a larger kernel distance than every largest-tau cell."""
    res = load_example("lazy_rich_phase_diagram").main(["--out", str(tmp_path / "pd")])
    rich = [v for k, v in res.items() if k.startswith("kernel_distance/tau=0.03/")]
    lazy = [v for k, v in res.items() if k.startswith("kernel_distance/tau=3/")]
    assert len(rich) == len(lazy) == 5
    assert min(rich) > max(lazy)


@pytest.mark.slow
def test_grokking_default_size(tmp_path, load_example):
    """Five balances, two seeds: every run memorizes; the table reports every run's time to generalization."""
    res = load_example("grokking").main(["--out", str(tmp_path / "grok")])
    mem = [v for k, v in res.items() if k.startswith("memorized_at/")]
    assert len(mem) == 10 and max(mem) <= 500
