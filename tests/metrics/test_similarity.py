import numpy as np
import pytest
import torch
from scipy.stats import ortho_group
from sklearn.neighbors import NearestNeighbors

from lit_repr.metrics.similarity import LinearCKA, MutualKNNAlignment, linear_cka, mutual_knn_alignment


def _np_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """CKA from Gram matrices: centred with H (biased), or the U-centring of the unbiased HSIC."""
    def centre(g):
        n = g.shape[0]
        if not debiased:
            h = np.eye(n) - 1.0 / n
            return h @ g @ h
        g = g.copy()
        np.fill_diagonal(g, 0.0)
        col = g.sum(0) / (n - 2)
        col -= col.sum() / (2 * (n - 1))
        g = g - col[:, None] - col[None, :]
        np.fill_diagonal(g, 0.0)
        return g

    kx, ky = centre(x @ x.T), centre(y @ y.T)
    return float((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10)) + 2.0
    y = np.tanh(x @ rng.normal(size=(10, 7))) + 0.5 * rng.normal(size=(120, 7))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_equals_gram_computation_both_paths(xy, debiased):
    x, y = xy
    want = _np_cka(x, y, debiased)
    # n > D: streamed statistics
    assert float(linear_cka(torch.tensor(x), torch.tensor(y), debiased)) == pytest.approx(want, abs=1e-10)
    # n < D: Gram matrices
    xs, ys = x[:8], y[:8]
    assert float(linear_cka(torch.tensor(xs), torch.tensor(ys), debiased)) == pytest.approx(
        _np_cka(xs, ys, debiased), abs=1e-10
    )
    m = LinearCKA(10, 7, debiased=debiased)
    for xb, yb in zip(np.array_split(x, 5), np.array_split(y, 5)):
        m.update(torch.tensor(xb), torch.tensor(yb))
    assert float(m.compute()) == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(xy, debiased):
    x, y = xy
    q = ortho_group.rvs(7, random_state=1)
    base = float(linear_cka(torch.tensor(x), torch.tensor(y), debiased))
    moved = float(linear_cka(torch.tensor(x), torch.tensor(4.2 * y @ q), debiased))
    assert moved == pytest.approx(base, abs=1e-10)
    # but not to an anisotropic scaling
    aniso = float(linear_cka(torch.tensor(x), torch.tensor(y * np.arange(1, 8) ** 2), debiased))
    assert abs(aniso - base) > 1e-3


def test_debiased_cka_removes_the_width_bias():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 500, generator=g), torch.randn(50, 500, generator=g)  # independent, wide
    assert float(linear_cka(x, y)) > 0.8  # the biased estimator is fooled by the width
    assert abs(float(linear_cka(x, y, debiased=True))) < 0.1


def test_mutual_knn_equals_sklearn_neighbours():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 4)) + 0.8 * rng.normal(size=(80, 4))
    k = 7
    for metric in ("euclidean", "cosine"):
        def nbrs(a, metric=metric):
            nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(a)
            idx = nn.kneighbors(a, return_distance=False)
            return [set(r[r != i][:k]) for i, r in enumerate(idx)]

        want = np.mean([len(a & b) / k for a, b in zip(nbrs(x), nbrs(y))])
        got = float(mutual_knn_alignment(torch.tensor(x), torch.tensor(y), k=k, metric=metric))
        assert got == pytest.approx(want)


def test_mutual_knn_invariances_and_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert float(mutual_knn_alignment(x, 3 * x @ q, k=10)) == 1.0
    chance = float(mutual_knn_alignment(x, torch.randn(200, 5, generator=g), k=10))
    assert chance < 0.15  # about k / (N - 1) = 0.05
    m = MutualKNNAlignment(k=10, max_samples=150)
    m.update(x[:100], x[:100])
    m.update(x[100:], x[100:])
    assert float(m.compute()) == 1.0


def test_similarity_bad_input():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="NaN or inf"):
        linear_cka(x, x.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="constant over the samples"):
        linear_cka(x, torch.ones(20, 3))
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="k must be an int with 1 <= k < number of samples = 20"):
        mutual_knn_alignment(x, x, k=20)
    with pytest.raises(ValueError, match="metric must be"):
        mutual_knn_alignment(x, x, metric="manhattan")
    m = LinearCKA(3, 3)
    with pytest.raises(ValueError, match=r"expected x \(B, 3\)"):
        m.update(x, torch.randn(20, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        m.compute()


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("offset", [1e4, 1e5, 1e6, 1e7, 1e8])
def test_cka_unchanged_by_a_feature_offset_on_both_paths(grid_features, shifted, offset, debiased):
    h, _ = grid_features(500, 10, offset)
    other, _ = grid_features(500, 6, offset, seed=1)
    other = other + h[:, :6]

    def streamed(x, y):
        m = LinearCKA(10, 6, debiased=debiased)
        for xb, yb in zip(x.split(64), y.split(64)):
            m.update(xb, yb)
        return float(m.compute())

    ref = streamed(h.float(), other.float())
    assert streamed(shifted(h, offset), shifted(other, offset / 10)) == pytest.approx(ref, abs=1e-9)
    assert float(linear_cka(shifted(h, offset), other.float(), debiased=debiased)) == pytest.approx(ref, abs=1e-9)
    # fewer samples than features: the Gram path
    hw, _ = grid_features(40, 120, offset, seed=2)
    ref = float(linear_cka(hw.float(), hw[:, :50].float(), debiased=debiased))
    got = float(linear_cka(shifted(hw, offset), shifted(hw[:, :50], offset), debiased=debiased))
    assert got == pytest.approx(ref, abs=1e-9)
