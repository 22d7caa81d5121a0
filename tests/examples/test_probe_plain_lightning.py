import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probe_plain_lightning.py"


def test_plain_lightning_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("probe_plain_lightning", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = mod.main(epochs=2, logger=False)
    assert scores["probe/encoder.3/digit/val/acc"] > 0.8
