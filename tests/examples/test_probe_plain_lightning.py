import importlib.util
import json
import re
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probe_plain_lightning.py"


def test_plain_lightning_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("probe_plain_lightning", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = mod.main(epochs=2, logger=False)
    assert scores["probe/encoder.3/digit/val/acc"] > 0.8


def test_plain_lightning_example_logs_like_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("probe_plain_lightning", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(epochs=1, logger=True)
    run = tmp_path / "runs" / "probe_plain_lightning" / "version_0"
    assert list(run.glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert "probe/encoder.3/digit/val/acc" in summary["fit"]["scores"]
    assert re.search(r"probe +encoder.3 +digit +val", capsys.readouterr().out)
