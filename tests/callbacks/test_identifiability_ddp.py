"""IdentifiabilityMetrics and RepresentationSimilarity are exact under DDP (2 CPU processes, gloo)."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_identifiability_script.py")


def test_two_processes_equal_one(run_ddp_script):
    one, two = run_ddp_script(SCRIPT, 1), run_ddp_script(SCRIPT, 2)
    assert set(one) == set(two)
    assert "ident/backbone/latents/val/linear_r2" in one and "similarity/backbone/reference/val/cka" in one
    local_one, local_two = one.pop("local"), two.pop("local")
    # logged values are identical on every process by construction: no advice to sync them
    assert one.pop("sync_dist_advice") == [] and two.pop("sync_dist_advice") == []
    for k, v in one.items():
        assert two[k] == pytest.approx(v, abs=1e-6), k
    assert local_two == pytest.approx(local_one, abs=1e-9)  # rank 0 alone, no doubled statistics
