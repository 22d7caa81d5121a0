"""InterventionReport is exact under DDP: 2 CPU processes (gloo) log the effects, intervals included, of 1."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_callback_script.py")


def test_ddp_effect_equals_one_process(run_ddp_script):
    one, two = run_ddp_script(SCRIPT, 1), run_ddp_script(SCRIPT, 2)
    assert set(one["scores"]) == set(two["scores"]) and len(one["scores"]) == 3 * 4 * 3
    assert one["n"] == two["n"] and set(one["n"].values()) == {359}  # every validation input, once
    for k, v in one["scores"].items():
        assert two["scores"][k] == pytest.approx(v, abs=1e-9), k
