"""The digits interventions example at a reduced size: probe (rung 1), ablate and steer (rung 2), the ladder."""

import json


def test_digits_interventions_example_runs_reduced(load_example, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mod = load_example("interventions_digits")
    out = mod.main(epochs=3, logger=True)
    scores = out["scores"]
    assert scores["probe/backbone.1/digit/val/acc"] > 0.6
    assert scores["ablation/zero/y/val/accuracy_change"] < -0.3  # the classifier needs the site
    assert scores["steering/steer_to_3/y/val/probability_change"] > 0  # the probe direction pushes toward 3
    assert [c.gap for c in out["claims"]] == [0, 1, 0, 0, 1]
    printed = capsys.readouterr().out
    assert "| backbone.1 encodes the digit | 1 | linear probe | 1 | backbone.1 | acc |" in printed
    summary = json.loads(next((tmp_path / "runs" / "interventions_digits").rglob("summary.json")).read_text())
    rungs = {(r["callback"], r["rung"], r["method"]) for stage in summary.values() for r in stage["rows"]}
    assert {("probe", 1, "linear probe"), ("ablation", 2, "intervention"), ("steering", 2, "intervention")} <= rungs
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))
