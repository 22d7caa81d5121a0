"""DCI on wide features: the forests search the factors' best single-split candidates (lit_repr.metrics.dci)."""

import numpy as np
import pytest

from lit_repr.metrics.identifiability import _best_split_gains, dci


def _brute_gain(x, y):
    best = -np.inf
    for t in np.unique(x)[:-1]:
        left, right = y[x <= t], y[x > t]
        sse = ((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum()
        best = max(best, ((y - y.mean()) ** 2).sum() - sse)
    return best


def test_best_split_gain_equals_exhaustive_search():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 4, size=(50, 3)), rng.normal(size=(50, 2)), np.ones((50, 1))], 1)
    z = np.stack([rng.normal(size=50) + x[:, 0], rng.normal(size=50)], 1)
    gains = _best_split_gains(x, z, block=2)  # blocks do not change the result
    for j in range(2):
        np.testing.assert_allclose(gains[:5, j], [_brute_gain(x[:, i], z[:, j]) for i in range(5)])
    assert (gains[5] == -np.inf).all()  # a constant feature has no threshold


@pytest.fixture(scope="module")
def wide():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(800, 3))
    w = rng.normal(size=(3, 300)) / np.sqrt(3)
    f = np.maximum(z @ w + 0.5 * rng.normal(size=300), 0) + 0.1 * rng.normal(size=(800, 300))
    return f[:400], z[:400], f[400:], z[400:]


def test_wide_features_scores_match_searching_every_feature(wide):
    fast = dci(*wide, n_estimators=20, candidates_per_factor=16)
    full = dci(*wide, n_estimators=20, candidates_per_factor=None)
    for key in ("disentanglement", "completeness", "informativeness"):
        assert fast[key] == pytest.approx(full[key], abs=0.02), key
    searched = fast["importance"].sum(1) > 0
    assert 16 <= searched.sum() <= 48  # the union of 3 factors' 16 candidates; the rest get importance 0
    top = np.argsort(-full["importance"], axis=0)[:3]  # each factor's 3 most important features, all features searched
    assert searched[top].all()


def test_threads_do_not_change_the_result(wide):
    f, z, ft, zt = (a[:200, :40] for a in wide)
    one, every = dci(f, z, ft, zt, n_estimators=5, n_jobs=None), dci(f, z, ft, zt, n_estimators=5, n_jobs=-1)
    np.testing.assert_array_equal(one["importance"], every["importance"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"candidates_per_factor": 0}, "candidates_per_factor must be a positive int or None"),
        ({"n_jobs": 0}, "n_jobs must be None, -1"),
        ({"n_estimators": True}, "n_estimators must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    x, z = np.random.default_rng(0).normal(size=(20, 3)), np.random.default_rng(1).normal(size=(20, 2))
    with pytest.raises(ValueError, match=match):
        dci(x, z, x, z, **kwargs)
