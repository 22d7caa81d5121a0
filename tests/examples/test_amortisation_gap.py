"""The amortisation-gap reproduction runs end to end at a reduced size and prints its table."""

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "examples" / "amortisation_gap.py"


def _load():
    spec = importlib.util.spec_from_file_location("amortisation_gap_example", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_amortisation_gap_quick(capsys):
    mod = _load()
    results = mod.run(seeds=1, num_train=128, num_test=128, steps=60, sc_steps=15, verbose=False)
    table = mod.format_table(results)
    assert "0.566" in table and "0.691" in table and "FLOPs/sample" in table
    for runs in results.values():
        assert len(runs) == 1
        r = runs[0]
        assert 0 < r["code_mcc"] <= 1 and 0 < r["dict_mcc"] <= 1 and r["flops"] > 0
    # compute ordering is structural: amortised SAE < MLP < iterative sparse coding
    f = {k: v[0]["flops"] for k, v in results.items()}
    assert f["SAE"] < f["MLP (h=256)"] < f["sparse coding"]
    # the SAE's own dictionary with exact codes explains the test data at least as well as its encoder
    assert results["SAE dictionary + FISTA codes"][0]["fve"] >= results["SAE"][0]["fve"] - 1e-3


@pytest.mark.slow
def test_amortisation_gap_paper_size():
    mod = _load()
    results = mod.main([])
    sae = sum(r["code_mcc"] for r in results["SAE"]) / 5
    sc = sum(r["code_mcc"] for r in results["sparse coding"]) / 5
    assert sc > sae
