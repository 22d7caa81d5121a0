import pytest
import torch

from lit_repr.metrics.sae import FiringFrequency, FractionOfVarianceExplained, MeanL0


def test_fve_matches_direct_formula_and_is_batch_invariant():
    torch.manual_seed(0)
    x = torch.randn(100, 5) * 3 + 1
    recon = x + 0.5 * torch.randn(100, 5)
    direct = 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    m = FractionOfVarianceExplained(5)
    for i in range(0, 100, 17):
        m.update(x[i : i + 17], recon[i : i + 17])
    assert float(m.compute()) == pytest.approx(float(direct), rel=1e-5)
    m2 = FractionOfVarianceExplained(5)
    m2.update(x, x.mean(0).expand_as(x))
    assert float(m2.compute()) == pytest.approx(0.0, abs=1e-6)


def test_l0_and_firing_frequency():
    codes = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    l0 = MeanL0()
    l0.update(codes[:2])
    l0.update(codes[2:])
    assert float(l0.compute()) == pytest.approx(5 / 4)
    f = FiringFrequency(4, dense_threshold=0.5)
    f.update(codes)
    r = f.compute()
    assert r["frequency"].tolist() == [1.0, 0.25, 0.0, 0.0]
    assert float(r["dead_fraction"]) == 0.5
    assert float(r["dense_fraction"]) == 0.25


def test_metric_bad_shapes():
    with pytest.raises(ValueError, match="in_features"):
        FractionOfVarianceExplained(0)
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        FractionOfVarianceExplained(3).update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="4 latents"):
        FiringFrequency(4).update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dense_threshold"):
        FiringFrequency(4, dense_threshold=0)


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e8])
def test_fve_unchanged_by_a_large_constant(offset):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    recon = x + 0.3 * torch.randn(400, 6, generator=g, dtype=torch.float64)
    ref, got = FractionOfVarianceExplained(6), FractionOfVarianceExplained(6)
    for xb, rb in zip(x.split(64), recon.split(64)):
        ref.update(xb, rb)
        got.update(xb + offset, rb + offset)
    assert float(got.compute()) == pytest.approx(float(ref.compute()), abs=1e-6)
