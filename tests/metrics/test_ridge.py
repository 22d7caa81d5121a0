import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score

from lit_repr.metrics.ridge import StreamingRidge, moments_score


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    y = x @ rng.normal(size=(12, 3)) + 3 * rng.normal(size=(400, 3)) + 4.0
    return x, y


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 100.0])
def test_equals_sklearn_ridge_streamed(data, alpha):
    x, y = data
    r = StreamingRidge(12, 3, alphas=[alpha])
    for xb, yb in zip(np.array_split(x, 7), np.array_split(y, 7)):
        r.update(torch.tensor(xb), torch.tensor(yb))
    fit = r.compute()
    sk = Ridge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(fit.weight.numpy(), sk.coef_.T, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fit.bias.numpy(), sk.intercept_, rtol=1e-8, atol=1e-8)


def test_gcv_picks_sklearn_alpha(data):
    x, y = data
    alphas = [1e-3, 1e-2, 0.1, 1, 10, 100, 1e3, 1e4]
    r = StreamingRidge(12, 3, alphas=alphas)
    r.update(torch.tensor(x), torch.tensor(y))
    sk = RidgeCV(alphas=alphas, gcv_mode="eigen").fit(x, y)
    assert r.compute().alpha == sk.alpha_


def test_moments_score_matches_predictions(data):
    x, y = data
    r = StreamingRidge(12, 3)
    r.update(torch.tensor(x[:300]), torch.tensor(y[:300]))
    fit = r.compute()
    h = StreamingRidge(12, 3)
    h.update(torch.tensor(x[300:]), torch.tensor(y[300:]))
    scores = moments_score(fit, h)
    pred = fit.predict(torch.tensor(x[300:])).numpy()
    np.testing.assert_allclose(scores["r2"].numpy(), r2_score(y[300:], pred, multioutput="raw_values"), rtol=1e-8)
    np.testing.assert_allclose(scores["mse"].numpy(), ((y[300:] - pred) ** 2).mean(0), rtol=1e-8)
    pear = [np.corrcoef(pred[:, k], y[300:, k])[0, 1] for k in range(3)]
    np.testing.assert_allclose(scores["pearson"].numpy(), pear, rtol=1e-8)


def test_heldout_selection(data):
    x, y = data
    r = StreamingRidge(12, 3, selection="heldout", alphas=[1e-3, 1e5])
    r.update(torch.tensor(x[:300]), torch.tensor(y[:300]))
    h = StreamingRidge(12, 3)
    h.update(torch.tensor(x[300:]), torch.tensor(y[300:]))
    assert r.solve(h).alpha == 1e-3
    with pytest.raises(ValueError, match="held-out"):
        r.solve()


def test_projection_and_components(data):
    x, y = data
    r = StreamingRidge(12, 3, projection_dim=6)
    r.update(torch.tensor(x), torch.tensor(y))
    fit = r.compute()
    assert fit.weight.shape == (6, 3) and fit.predict(torch.tensor(x)).shape == (400, 3)
    r2 = StreamingRidge(12, 3, max_components=2)
    r2.update(torch.tensor(x), torch.tensor(y))
    w = r2.compute().weight
    assert torch.linalg.matrix_rank(w) <= 2


def test_bad_input_leaves_state_untouched():
    r = StreamingRidge(3, 1)
    r.update(torch.randn(5, 3), torch.randn(5))
    n_before = float(r.n)
    with pytest.raises(ValueError, match="NaN"):
        r.update(torch.tensor([[1.0, float("nan"), 0.0]]), torch.zeros(1))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        r.update(torch.randn(2, 4), torch.randn(2))
    with pytest.raises(ValueError, match="targets must have shape"):
        r.update(torch.randn(2, 3), torch.randn(3))
    assert float(r.n) == n_before
    for kw in ({"alphas": []}, {"alphas": [-1.0]}, {"selection": "cv"}, {"projection_dim": 0}):
        with pytest.raises(ValueError):
            StreamingRidge(3, 1, **kw)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_or_overflowing_batches_change_nothing(first, dtype):
    # the values of a batch on the one-Gram path are checked from its own sums of squares: a NaN or an
    # inf anywhere, or values whose squares overflow float64, raise before any state (references
    # included) changes
    g = torch.Generator().manual_seed(0)
    r, clean = StreamingRidge(6, 2), StreamingRidge(6, 2)
    good = [] if first else [(torch.randn(50, 6, generator=g, dtype=dtype), torch.randn(50, 2, generator=g))]
    for xb, yb in good:
        r.update(xb, yb)
    before = {k: v.clone() for k, v in r.metric_state.items()}
    x, y = torch.randn(300, 6, generator=g, dtype=dtype), torch.randn(300, 2, generator=g, dtype=torch.float64)
    bad_x, bad_y, inf_x = x.clone(), y.clone(), x.clone()
    bad_x[299, 3] = float("nan")  # the last row: after the rows the reference is taken from
    bad_y[0, 1] = float("nan")  # the first row: inside the rows the reference is taken from
    inf_x[7, 0], inf_x[8, 0] = float("inf"), float("-inf")
    for xb, yb, match in [(bad_x, y, "^features contain NaN or inf"), (x, bad_y, "^targets contain NaN or inf"),
                          (inf_x, y, "^features contain NaN or inf"), (bad_x, bad_y, "^features and targets")]:
        with pytest.raises(ValueError, match=match):
            r.update(xb, yb)
    if dtype == torch.float64:
        big = x.clone()
        big[5, 1] = 1e200  # finite, but its square is not
        with pytest.raises(ValueError, match="^features hold values whose squares overflow float64"):
            r.update(big, y)
    for k, v in r.metric_state.items():
        assert torch.equal(v, before[k]), k
    r.update(x, y)  # a good batch afterwards is taken as if nothing had happened
    for xb, yb in [*good, (x, y)]:
        clean.update(xb, yb)
    for k, v in clean.metric_state.items():
        assert torch.equal(r.metric_state[k], v), k


def test_non_finite_batches_off_the_one_gram_path_change_nothing():
    # float32 products take the per-variable path: each batch is checked for NaN and inf first
    r = StreamingRidge(4, 1, float32_products=True)
    r.update(torch.randn(20, 4), torch.randn(20))
    before = {k: v.clone() for k, v in r.metric_state.items()}
    x = torch.randn(30, 4)
    x[3, 2] = float("inf")
    with pytest.raises(ValueError, match="^features contain NaN or inf; nothing was accumulated"):
        r.update(x, torch.randn(30))
    for k, v in r.metric_state.items():
        assert torch.equal(v, before[k]), k


def test_few_samples_and_constant_features_warn_not_nan():
    r = StreamingRidge(10, 1)
    r.update(torch.randn(4, 10), torch.randn(4))
    with pytest.warns(UserWarning, match="fewer samples than features"):
        fit = r.compute()
    assert torch.isfinite(fit.weight).all()
    c = StreamingRidge(2, 1)
    c.update(torch.ones(20, 2), torch.randn(20))
    with pytest.warns(UserWarning, match="constant"):
        fit = c.compute()
    assert torch.isfinite(fit.weight).all() and torch.isfinite(fit.bias).all()
    with pytest.raises(ValueError, match="at least 2 samples"):
        StreamingRidge(2, 1).compute()


@pytest.mark.parametrize("num_threads", [2], indirect=True)
def test_solve_leaves_thread_count_unchanged(num_threads, data, monkeypatch):
    from lit_repr.metrics import ridge

    seen = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(ridge.torch.linalg, "eigh", lambda a: seen.append(torch.get_num_threads()) or eigh(a))
    x, y = data
    stats = StreamingRidge(12, 3)
    stats.update(torch.tensor(x), torch.tensor(y))
    stats.compute()
    assert seen == [1]  # solved on one thread ...
    assert torch.get_num_threads() == 2  # ... and the caller's count is back


@pytest.mark.parametrize("num_threads", [2], indirect=True)
def test_failed_solve_leaves_thread_count_unchanged(num_threads, monkeypatch):
    from lit_repr.metrics import ridge

    def fail(a):
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(ridge.torch.linalg, "eigh", fail)
    with pytest.raises(torch.linalg.LinAlgError):
        ridge._eigh(torch.eye(3))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("offset", [1e4, 1e5, 1e6, 1e7, 1e8])
def test_constant_added_to_features_or_targets_changes_nothing(grid_features, shifted, offset):
    h, z = grid_features(600, 12, offset)
    y = z @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3 * torch.randn(600, 1, dtype=torch.float64)

    def scores(x, t):
        m = StreamingRidge(12, 1)
        for xb, tb in zip(x.split(64), t.split(64)):
            m.update(xb, tb)
        fit = m.compute()
        return fit, moments_score(fit, m)

    ref_fit, ref = scores(h.float(), y)
    fit, got = scores(shifted(h, offset), y + offset)
    assert fit.alpha == ref_fit.alpha
    torch.testing.assert_close(fit.weight, ref_fit.weight, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(got["r2"], ref["r2"], rtol=0, atol=1e-9)


def test_float32_products_match_float64_to_float32_rounding():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3000, 40, generator=g) @ torch.randn(40, 40, generator=g) + 50.0).float()
    y = x.double() @ torch.randn(40, 2, generator=g, dtype=torch.float64) + 1e8 + torch.randn(3000, 2, generator=g,
                                                                                             dtype=torch.float64)
    exact, fast = StreamingRidge(40, 2), StreamingRidge(40, 2, float32_products=True)
    for xb, yb in zip(x.split(700), y.split(700)):
        exact.update(xb, yb)
        fast.update(xb, yb)
    assert fast.x_ref.float().double().equal(fast.x_ref)  # the reference is rounded to float32
    for k in ("sum_x", "xtx", "xty"):
        moved = fast.moments_about({"x": exact.x_ref, "y": exact.y_ref})[k]
        torch.testing.assert_close(moved, exact.moments_about({"x": exact.x_ref, "y": exact.y_ref})[k], rtol=1e-5,
                                   atol=1e-5 * float(exact.xtx.diagonal().max()) ** 0.5 * 3000 ** 0.5)
    f_exact, f_fast = exact.compute(), fast.compute()
    assert f_fast.alpha == f_exact.alpha
    s_exact, s_fast = moments_score(f_exact, exact), moments_score(f_fast, exact)
    torch.testing.assert_close(s_fast["r2"], s_exact["r2"], rtol=0, atol=1e-6)
    # float64 features keep float64 products
    r64 = StreamingRidge(40, 2, float32_products=True)
    r64.update(x.double(), y)
    torch.testing.assert_close(r64.xtx, exact.moments_about({"x": r64.x_ref, "y": r64.y_ref})["xtx"], rtol=1e-10,
                               atol=1e-6)
    r64.update(x[:500], y[:500])  # float32 data about a float64 reference: the float64 path, exact
    whole = StreamingRidge(40, 2)
    whole.update(torch.cat([x.double(), x[:500].double()]), torch.cat([y, y[:500]]))
    torch.testing.assert_close(r64.compute().weight, whole.compute().weight, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="float32_products"):
        StreamingRidge(40, 2, float32_products=1)


def _wide(n=300, d=40, k=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 2.0
    y = x @ rng.normal(size=(d, k)) + 20 * rng.normal(size=(n, k)) - 1.0
    return x, y


def _both_paths(monkeypatch, stats):
    """``(tridiagonal fit, eigendecomposition fit)`` of ``stats``; the tridiagonal path must have applied."""
    from lit_repr.metrics import ridge

    calls = []
    real = ridge._gcv_tridiagonal
    monkeypatch.setattr(ridge, "_gcv_tridiagonal", lambda *a: calls.append(real(*a)) or calls[-1])
    fast = stats.solve()  # (not compute(): torchmetrics would return the first result again)
    assert calls and calls[-1] is not None
    monkeypatch.setattr(ridge, "_gcv_tridiagonal", lambda *a: None)
    slow = stats.solve()
    assert slow is not fast
    monkeypatch.setattr(ridge, "_gcv_tridiagonal", real)
    assert fast.alpha == slow.alpha
    return fast, slow


def test_tridiagonal_gcv_equals_the_eigendecomposition_and_sklearn(monkeypatch):

    x, y = _wide()
    stats = StreamingRidge(40, 3)
    stats.update(torch.tensor(x), torch.tensor(y))
    fast, slow = _both_paths(monkeypatch, stats)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-9, atol=0)
    torch.testing.assert_close(fast.weight, slow.weight, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(fast.bias, slow.bias, rtol=1e-8, atol=1e-8)
    sk = RidgeCV(alphas=list(stats.alphas.tolist())).fit(x, y)
    assert fast.alpha == pytest.approx(sk.alpha_)
    ref = Ridge(alpha=fast.alpha).fit(x, y)
    np.testing.assert_allclose(fast.weight.numpy(), ref.coef_.T, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", ["collinear", "fewer_samples_than_features"])
def test_tridiagonal_gcv_equals_the_eigendecomposition_without_full_rank(monkeypatch, case):
    # directions without variance: the eigendecomposition drops them; the tridiagonal solve must agree
    from threadpoolctl import threadpool_info


    x, y = _wide()
    if case == "collinear":
        x[:, 6] = x[:, 7]
    else:
        x, y = x[:45], y[:45]  # 45 samples, 40 features of rank 36: no interpolation
        x[:, 36:] = x[:, :4] @ np.random.default_rng(3).normal(size=(4, 4))
    stats = StreamingRidge(40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer samples than features
        stats.update(torch.tensor(x), torch.tensor(y))
        before = [lib["num_threads"] for lib in threadpool_info()]
        fast, slow = _both_paths(monkeypatch, stats)
        assert [lib["num_threads"] for lib in threadpool_info()] == before  # BLAS thread counts restored
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-7, atol=0)
    torch.testing.assert_close(fast.weight, slow.weight, rtol=1e-7, atol=1e-9)
    xt = torch.tensor(_wide(seed=2)[0])
    torch.testing.assert_close(fast.predict(xt), slow.predict(xt), rtol=1e-7, atol=1e-7)


def test_gcv_of_an_interpolating_fit_equals_the_kernel_form(monkeypatch):
    # 30 samples, 40 features: least squares interpolates, and GCV's RSS and n - df both vanish with the
    # penalty. The n x n kernel form has no cancellation (RSS = sum_j (a/(l_j + a))^2 (u_j'y)^2). The
    # eigendecomposition must match it at every penalty, down to the smallest (where a difference of
    # rounding errors is all that is left of RSS computed as one); the tridiagonal solve at every penalty
    # whose RSS it keeps (NaN below the rounding level), with the same choice
    x, y = _wide()
    x, y = x[:30], y[:30]
    stats = StreamingRidge(40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer samples than features
        stats.update(torch.tensor(x), torch.tensor(y))
        fast, slow = _both_paths(monkeypatch, stats)
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam, u = np.linalg.eigh(xc @ xc.T)
    lam = np.where(lam > 1e-9 * lam.max(), lam, 0.0)  # (the direction of the constant, removed by centring)
    proj = u.T @ yc
    ref = []
    for a in stats.alphas.tolist():
        rss = ((a / (lam + a))[:, None] * proj) ** 2
        df = (lam / (lam + a)).sum() + 1
        ref.append(rss.sum(0).mean() / 30 / (1 - df / 30) ** 2)
    ref = np.array(ref)
    np.testing.assert_allclose(slow.scores.numpy(), ref, rtol=1e-6)
    kept = ~torch.isnan(fast.scores)
    assert 0 < int(kept.sum()) < len(ref)  # the smallest penalties lose their score
    np.testing.assert_allclose(fast.scores[kept].numpy(), ref[kept.numpy()], rtol=1e-6)
    assert fast.alpha == slow.alpha == stats.alphas[int(np.argmin(ref))]


def test_tridiagonal_gcv_leaves_a_penalty_at_the_rounding_level_to_the_eigendecomposition():
    from lit_repr.metrics import ridge

    x, y = _wide()
    x[:, 6] = x[:, 7]
    stats = StreamingRidge(40, 3, alphas=[1e-30])
    stats.update(torch.tensor(x), torch.tensor(y))
    mx, my, sxx, sxy, syy = stats._centred()
    assert ridge._gcv_tridiagonal(sxx, sxy, syy, stats.alphas, 300.0, 1.0, 1e-11 * float(sxx.diag().max())) is None
    fit = stats.compute()
    assert bool(torch.isfinite(fit.weight).all())
    torch.testing.assert_close(fit.weight[6], fit.weight[7], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("value", [0.0, 3.0, 1e8 + 0.1])
def test_tridiagonal_gcv_drops_constant_features_as_the_eigendecomposition_does(monkeypatch, value):
    # dead ReLU units (0), or any constant: solved without them (weight 0), not handed to the eigendecomposition

    x, y = _wide()
    x[:, [5, 11]] = value
    stats = StreamingRidge(40, 3)
    stats.update(torch.tensor(x), torch.tensor(y))
    fast, slow = _both_paths(monkeypatch, stats)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-9, atol=0)
    torch.testing.assert_close(fast.weight, slow.weight, rtol=1e-8, atol=1e-10)
    assert float(fast.weight[[5, 11]].abs().max()) == 0.0
    sk = Ridge(alpha=fast.alpha).fit(x, y)
    np.testing.assert_allclose(fast.weight.numpy(), sk.coef_.T, rtol=1e-6, atol=1e-8)


def test_tridiagonal_gcv_equals_the_eigendecomposition_beyond_a_thousand_features(monkeypatch):

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1500, 1100, generator=g, dtype=torch.float64)
    y = x[:, :20] @ torch.randn(20, 2, generator=g, dtype=torch.float64) + torch.randn(1500, 2, generator=g,
                                                                                      dtype=torch.float64)
    stats = StreamingRidge(1100, 2)
    stats.update(x, y)
    fast, slow = _both_paths(monkeypatch, stats)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-8, atol=0)
    torch.testing.assert_close(fast.weight, slow.weight, rtol=1e-7, atol=1e-9)
