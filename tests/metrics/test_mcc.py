import itertools

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lit_repr.metrics.mcc import MeanCorrelationCoefficient, mean_correlation_coefficient


def _brute_force_mcc(abs_corr: np.ndarray) -> float:
    """Best one-to-one matching by enumerating every injective map (tiny sizes only)."""
    k, d = abs_corr.shape
    best = 0.0
    if d >= k:
        for cols in itertools.permutations(range(d), k):
            best = max(best, sum(abs_corr[i, c] for i, c in enumerate(cols)) / k)
    else:
        for rows in itertools.permutations(range(k), d):
            best = max(best, sum(abs_corr[r, j] for j, r in enumerate(rows)) / k)
    return best


def _np_pearson(a, b):
    return np.abs(np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1]:])


@pytest.mark.parametrize("k,d", [(4, 4), (3, 6), (5, 3)])
def test_pearson_equals_numpy_and_brute_force(k, d):
    rng = np.random.default_rng(k * 10 + d)
    z = rng.normal(size=(300, k))
    f = z[:, rng.integers(0, k, size=d)] @ np.diag(rng.uniform(-2, 2, d)) + rng.normal(size=(300, d))
    res = mean_correlation_coefficient(torch.tensor(z), torch.tensor(f))
    np.testing.assert_allclose(res.corr.numpy(), _np_pearson(z, f), atol=1e-12)
    assert res.mean == pytest.approx(_brute_force_mcc(_np_pearson(z, f)), abs=1e-12)
    matched = res.matching[res.matching >= 0]
    assert len(set(matched.tolist())) == len(matched) == min(k, d)
    assert int((res.matching < 0).sum()) == max(0, k - d)


def test_spearman_equals_scipy():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 3))
    f = np.exp(z[:, [2, 0, 1]]) + 0.3 * rng.normal(size=(200, 3))  # monotone, nonlinear
    res = mean_correlation_coefficient(z, f, method="spearman")
    rho = np.abs(spearmanr(z, f).statistic[:3, 3:])
    np.testing.assert_allclose(res.corr.numpy(), rho, atol=1e-12)
    assert res.matching.tolist() == [1, 2, 0]


def test_cosine_equals_numpy():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(5, 8))
    learned = rng.normal(size=(7, 8))
    res = mean_correlation_coefficient(true, learned, method="cosine")
    tn = true / np.linalg.norm(true, axis=1, keepdims=True)
    ln = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    np.testing.assert_allclose(res.corr.numpy(), np.abs(tn @ ln.T), atol=1e-12)
    assert res.mean == pytest.approx(_brute_force_mcc(np.abs(tn @ ln.T)), abs=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_invariant_to_permutation_sign_flips_and_scaling(method):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 4, generator=g)
    f = z @ torch.randn(4, 6, generator=g) + 0.5 * torch.randn(400, 6, generator=g)
    base = mean_correlation_coefficient(z, f, method=method)
    perm = torch.randperm(6, generator=g)
    signs = torch.tensor([1.0, -1, -1, 1, -1, 1])
    other = mean_correlation_coefficient(z, f[:, perm] * signs * 3.7, method=method)
    assert other.mean == pytest.approx(base.mean, abs=1e-6)  # float32 inputs
    torch.testing.assert_close(other.per_factor, base.per_factor, rtol=0, atol=1e-6)
    assert (perm[other.matching] == base.matching).all()


def test_dictionary_mcc_invariant_to_atom_permutation_and_sign():
    d = torch.randn(6, 10, dtype=torch.float64)
    res = mean_correlation_coefficient(d, -2 * d[torch.tensor([3, 1, 0, 5, 4, 2])], method="cosine")
    assert res.mean == pytest.approx(1.0)
    assert res.matching.tolist() == [2, 1, 5, 0, 4, 3]


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_streaming_metric_equals_one_shot(method):
    z, f = torch.randn(500, 3), torch.randn(500, 5)
    f[:, 2] += 2 * z[:, 0]
    m = MeanCorrelationCoefficient(3, 5, method=method)
    for zb, fb in zip(z.split(64), f.split(64)):
        m.update(zb, fb)
    got = m.compute()
    want = mean_correlation_coefficient(z, f, method=method)
    torch.testing.assert_close(got.corr, want.corr, rtol=1e-9, atol=1e-9)
    assert got.mean == pytest.approx(want.mean, abs=1e-9)


def test_dead_learned_dimensions_correlate_zero():
    z = torch.randn(100, 2)
    f = torch.cat([z, torch.zeros(100, 1), torch.full((100, 1), 3.0)], 1)
    res = mean_correlation_coefficient(z, f)
    assert res.corr[:, 2:].abs().max() == 0 and res.mean == pytest.approx(1.0)
    m = MeanCorrelationCoefficient(2, 4)
    m.update(z, f)
    assert torch.isfinite(m.compute().corr).all()


def test_bad_input():
    z = torch.randn(50, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        mean_correlation_coefficient(z, z, method="kendall")
    with pytest.raises(ValueError, match="same number of samples"):
        mean_correlation_coefficient(z, z[:40])
    with pytest.raises(ValueError, match="NaN or inf"):
        mean_correlation_coefficient(z, torch.full((50, 2), float("nan")))
    with pytest.raises(ValueError, match=r"ground-truth factor\(s\) \[1\] are constant"):
        mean_correlation_coefficient(torch.cat([z[:, :1], torch.ones(50, 1)], 1), z)
    with pytest.raises(ValueError, match="fewer samples than ground-truth dimensions"):
        mean_correlation_coefficient(torch.randn(4, 6), torch.randn(4, 6))
    with pytest.raises(ValueError, match="atoms have dimension"):
        mean_correlation_coefficient(torch.randn(3, 4), torch.randn(3, 5), method="cosine")
    with pytest.raises(ValueError, match="zero norm"):
        mean_correlation_coefficient(torch.zeros(2, 4), torch.randn(3, 4), method="cosine")
    with pytest.raises(ValueError, match="'pearson' or 'spearman'"):
        MeanCorrelationCoefficient(2, 2, method="cosine")
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        MeanCorrelationCoefficient(2, 0)
    m = MeanCorrelationCoefficient(3, 3)
    with pytest.raises(ValueError, match=r"expected true \(B, 3\)"):
        m.update(z, z[:, :2])
    assert float(m.n) == 0  # nothing was accumulated


@pytest.mark.parametrize("offset", [1e4, 1e5, 1e6, 1e7, 1e8])
def test_streamed_mcc_unchanged_by_a_feature_offset(grid_features, shifted, offset):
    h, z = grid_features(900, 6, offset)

    def streamed(x, t):
        m = MeanCorrelationCoefficient(3, 6)
        for tb, xb in zip(t.split(100), x.split(100)):
            m.update(tb, xb)
        return m.compute()

    ref = streamed(h.float(), z)
    got = streamed(shifted(h, offset), z + offset)  # ground truth offset too
    assert got.mean == pytest.approx(ref.mean, abs=1e-9)
    torch.testing.assert_close(got.corr, ref.corr, rtol=0, atol=1e-9)
    assert mean_correlation_coefficient(z, shifted(h, offset)).mean == pytest.approx(ref.mean, abs=1e-9)
