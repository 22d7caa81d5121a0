"""The demo-transformer patching example at a reduced size."""

import pytest


def test_patching_example_runs_reduced(load_example, tmp_path, capsys):
    mod = load_example("patching_transformer")
    out = mod.main(steps=60, num_inputs=32, corrupt_position=2, out=str(tmp_path / "heat.png"))
    r = out["result"]
    assert r.patched.shape == (len(mod.SITES), 8) and r.axis == "position"
    # patching the (shared) embedding at the corrupted position makes the corrupted run the clean run;
    # at any other position it changes nothing: whatever the training reached
    assert float(r.recovered[0, 2]) == pytest.approx(1.0, abs=1e-6)
    assert r.recovered[0, [0, 1, 3, 4, 5, 6, 7]].abs().max() < 1e-6
    assert (tmp_path / "heat.png").stat().st_size > 10_000
    assert [c.gap for c in out["claims"]] == [0, 0, 1]
    printed = capsys.readouterr().out
    assert "| claim | claim rung | method | rung | site | quantity | effect ± 95% CI | gap |" in printed
