"""examples/phyip.py runs at a tiny size and prints the table with the paper's figures beside ours."""

import json
from pathlib import Path

import pytest

from lit_repr.phyip import METHODS


def test_quick_run_prints_the_table_beside_the_paper(load_example, capsys, tmp_path):
    mod = load_example("phyip")
    results = mod.main(["--quick", "--num-train", "96", "--root", str(tmp_path)])
    assert set(results) == set(METHODS)
    out = capsys.readouterr().out
    assert "frozen_linear" in out and "fine_tuned" in out and "mlp_probe" in out
    assert "rho > 0.90" in out and "rho ~ 0.05" in out  # the paper's figures beside ours
    assert "ours, frozen_linear OOD rho" in out
    saved = json.loads(next(Path(tmp_path).rglob("phyip.json")).read_text())
    assert set(saved["latent_names"]) >= {"energy", "force"}
    assert next(Path(tmp_path).rglob("phyip_rho_vs_loss.png")).stat().st_size > 1000


def test_summary_and_trend_on_a_known_history(load_example):
    mod = load_example("phyip")

    class Report:
        table = "TABLE"
        history = [{"epoch": e, "ssl_loss": 1.0 / (e + 1), "scores": {"ood": {"E": {"pearson": 0.2 * e, "r2": 0.0}}}}
                   for e in range(4)]
        results = {"frozen_linear": {"ood": {"E": {"pearson": 0.95, "r2": 0.9}}},
                   "mlp_probe": {"ood": {"E": {"pearson": 0.1, "r2": 0.0}}},
                   "fine_tuned": {"ood": {"E": {"pearson": 0.93, "r2": 0.8}}}}

    assert mod.trend(Report()) == {"E": pytest.approx(-1.0)}  # rho rises as the loss falls
    text = mod.summary(Report())
    assert "frozen linear OOD rho > 0.90 for: E" in text
    assert "mlp_probe OOD rho below the frozen linear probe's (by > 0.05) for: E" in text
    assert "fine_tuned OOD rho below the frozen linear probe's (by > 0.05) for: none" in text


def test_unknown_data_kind_raises(load_example):
    mod = load_example("phyip")
    with pytest.raises(ValueError, match="--data must be 'orbits' or 'fluids'"):
        mod.make_data("springs", True, None, 0)
