"""The whitening-SAE experiment runs at a reduced size: synthetic part always, MiniLM part with the text plugin."""

import sys

import pytest
import torch


def test_synthetic_part_reduced(load_example, capsys):
    mod = load_example("whitening_saes")
    res = mod.run_synthetic(seeds=1, num_train=512, num_test=256, steps=60, verbose=False)
    assert set(res) == {(v, label) for v in ("relu", "topk") for label, _, _ in mod.CONDITIONS}
    for (variant, _), runs in res.items():
        r = runs[0]
        assert 0 < r["code_mcc"] <= 1 and 0 < r["dict_mcc"] <= 1 and r["fve"] <= 1
        if variant == "topk":
            assert r["l0"] <= 3 + 1e-9
    table = mod.format_synthetic(res)
    assert "whitened, loss original" in table and "code MCC" in table
    assert "topk: code_mcc whitened − raw" in mod.summary(res, "code_mcc")


def test_main_prints_the_paper_claim_beside_the_table(load_example, capsys, monkeypatch):
    mod = load_example("whitening_saes")
    monkeypatch.setattr(mod, "run_synthetic", lambda **kw: {("topk", "raw"): [
        {"code_mcc": 0.5, "dict_mcc": 0.6, "fve": 0.9, "l0": 3.0}]})
    mod.main(["--quick", "--part", "synthetic"])
    out = capsys.readouterr().out
    assert "sparse probing +7.3%" in out and "0.500 ± 0.000" in out


def test_without_the_plugin_the_text_part_says_so(load_example, capsys, monkeypatch):
    mod = load_example("whitening_saes")
    monkeypatch.setitem(sys.modules, "lit_repr_text", None)  # import fails as if not installed
    assert mod.run_text(steps=1) is None
    assert "text plugin is not installed" in capsys.readouterr().out


def test_sparse_probe_finds_the_informative_latents(load_example):
    mod = load_example("whitening_saes")
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    codes = torch.rand(600, 50, generator=g)
    codes[:, 7] += 2.0 * (y == 1)
    codes[:, 31] += 2.0 * (y == 2)
    f = mod.class_separation(codes, y)
    assert set(f.topk(2).indices.tolist()) == {7, 31}
    assert mod.sparse_probe(codes[:400], y[:400], codes[400:], y[400:], k=2) > 0.95
    assert mod.sparse_probe(codes[:400, :5], y[:400], codes[400:, :5], y[400:], k=2) < 0.6
    means, ids = mod.per_document(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([4, 4, 9]))
    assert means.flatten().tolist() == [2.0, 5.0] and ids.tolist() == [4, 9]


def test_text_part_reduced(load_example, tmp_path):
    pytest.importorskip("lit_repr_text")
    mod = load_example("whitening_saes")
    res = mod.run_text(steps=20, num_latents=64, k=8, seeds=1, verbose=False, cache_dir=str(tmp_path),
                       data_args={"num_texts": 120, "max_length": 24, "batch_size": 30})
    assert ("topk", "whitened, loss whitened") in res and len(res) == 7
    row = res[("topk", "raw")][0]
    assert row["l0"] <= 8 + 1e-9 and row["fve"] <= 1
    probes = [k for k in row if k.startswith("probe/")]
    assert {"probe/kind", "probe/has_code"} <= set(probes)
    assert all(0 <= row[k] <= 1 for k in probes)
    assert "sparse probe" in mod.format_text(res)
