import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from lit_repr.metrics import ProbeReadout, fit_logistic, fit_probe


def _blobs(n=600, d=8, c=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * 2
    y = rng.integers(0, c, n)
    return rng.normal(size=(n, d)) + centers[y], y


def test_ridge_classifier_equals_sklearn_accuracy():
    x, y = _blobs()
    res = fit_probe(
        torch.tensor(x[:400]),
        torch.tensor(y[:400]),
        task="classification",
        alphas=[1.0],
        eval_sets={"test": (torch.tensor(x[400:]), torch.tensor(y[400:]))},
    )
    sk = RidgeClassifier(alpha=1.0).fit(x[:400], y[:400])
    # sklearn codes one-hot as ±1, we use 0/1: same argmax
    assert abs(res.scores["test"]["acc"] - sk.score(x[400:], y[400:])) < 1e-3


def test_logistic_equals_sklearn():
    x, y = _blobs(d=5, c=3)
    w, b = fit_logistic(torch.tensor(x), torch.tensor(y), 3, C=0.5)
    sk = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(x, y)
    pred = (torch.tensor(x) @ w + b).argmax(1).numpy()
    assert (pred == sk.predict(x)).mean() > 0.999
    # multinomial logits are defined up to a shift per sample: compare centred logits
    ours = (torch.tensor(x) @ w + b).numpy()
    theirs = sk.decision_function(x)
    np.testing.assert_allclose(ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=2e-3)


def test_regression_scores_and_multioutput():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    y = x[:, :2] * [1.0, -2.0] + 0.1 * rng.normal(size=(500, 2))
    res = fit_probe(
        torch.tensor(x[:300]), torch.tensor(y[:300]), eval_sets={"ood": (torch.tensor(x[300:]), torch.tensor(y[300:]))}
    )
    assert (
        res.scores["ood"]["r2"] > 0.99 and res.scores["ood"]["pearson"] > 0.99 and res.scores["ood"]["spearman"] > 0.99
    )


def test_readout_bad_inputs():
    r = ProbeReadout(4, task="classification", num_classes=3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        r.update_fit(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="NaN"):
        r.update_fit(torch.full((2, 4), float("nan")), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class indices of shape"):
        r.update_fit(torch.randn(2, 4), torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="not been fitted"):
        r.update_eval("val", torch.randn(2, 4), torch.tensor([0, 1]))
    rr = ProbeReadout(4, task="regression", num_targets=2)
    with pytest.raises(ValueError, match="2 dimensions|has 1 dimensions"):
        rr.update_fit(torch.randn(3, 4), torch.randn(3))
    with pytest.raises(ValueError, match="num_classes"):
        ProbeReadout(4, task="classification")
    with pytest.raises(ValueError, match="task must be"):
        ProbeReadout(4, task="ranking")  # type: ignore[arg-type]


def test_a_whole_array_is_checked_by_its_accumulation():
    # a batch of at least buffer_rows rows with nothing buffered goes straight to the statistics; its
    # values are checked there (from its sums of squares), with the readout's own message
    x, y = _blobs()
    r = ProbeReadout(8, task="classification", num_classes=4, buffer_rows=256)
    bad = torch.tensor(x[:400]).clone()
    bad[123, 4] = float("nan")
    with pytest.raises(ValueError, match="features contain 1 NaN/inf values; the probe was not updated"):
        r.update_fit(bad, torch.tensor(y[:400]))
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        r.update_fit(torch.tensor(x[:400]), torch.tensor(y[:400]) + 4)
    assert r.n_fit == 0
    r.update_fit(torch.tensor(x[:400]), torch.tensor(y[:400]))
    assert r.n_fit == 400
    r.fit()
    ref = ProbeReadout(8, task="classification", num_classes=4, buffer_rows=256)
    for start in range(0, 400, 50):  # the same rows in small batches: buffered, then added in blocks
        ref.update_fit(torch.tensor(x[start : start + 50]), torch.tensor(y[start : start + 50]))
    ref.fit()
    torch.testing.assert_close(r.weight, ref.weight, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="NaN/inf"):
        fit_probe(bad, torch.tensor(y[:400]), task="classification")


def test_constant_features_log_undefined_correlations_as_nan():
    r = ProbeReadout(3, task="regression", num_targets=1)
    r.update_fit(torch.ones(50, 3), torch.randn(50))
    with pytest.warns(UserWarning):
        r.fit()
    r.update_eval("val", torch.ones(20, 3), torch.randn(20))
    with pytest.warns(UserWarning, match="undefined") as caught:
        scores = r.compute_eval("val")
    assert len(caught) == 1
    assert torch.isnan(scores["pearson"]).all() and torch.isnan(scores["spearman"]).all()
    assert torch.isfinite(scores["mse"]).all() and torch.isfinite(scores["r2"]).all()


def test_undefined_scores_are_nan_never_zero():
    g = torch.Generator().manual_seed(0)
    r = ProbeReadout(3, task="regression", num_targets=1, target_name="energy")
    r.update(torch.randn(20, 3, generator=g), torch.randn(20, generator=g), "fit")
    r.fit()
    r.update(torch.randn(1, 3, generator=g), torch.randn(1, generator=g), "val")  # one sample: no R², no r
    with pytest.warns(UserWarning, match=r"target 'energy' on split 'val' are undefined") as caught:
        scores = r.compute("val")
    assert len(caught) == 1
    assert math.isnan(scores["r2"]) and math.isnan(scores["pearson"]) and math.isfinite(scores["mse"])
    c = ProbeReadout(3, task="classification", num_classes=3)
    c.update(torch.randn(30, 3, generator=g), torch.arange(30) % 3, "fit")
    c.fit()
    c.update(torch.randn(5, 3, generator=g), torch.zeros(5, dtype=torch.long), "one_class")
    x2, y2 = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 0, 1, 0, 1])
    c.update(x2, y2, "two_of_three")
    with pytest.warns(UserWarning, match="one_class"):
        one = c.compute("one_class")
    assert math.isnan(one["auroc"]) and math.isfinite(one["acc"])
    # AUROC averages over the classes present (torchmetrics' macro average counts an absent class as 0)
    from sklearn.metrics import roc_auc_score

    probs = c.predict(x2).float().softmax(-1).numpy()
    expected = np.mean([roc_auc_score((y2 == k).numpy(), probs[:, k]) for k in (0, 1)])
    assert c.compute("two_of_three")["auroc"] == pytest.approx(expected, abs=1e-6)
    with pytest.warns(UserWarning, match="'empty'"):
        empty = c.compute("empty")
    assert math.isnan(empty["acc"]) and math.isnan(empty["auroc"])
    unfit = ProbeReadout(3, task="classification", num_classes=3)
    unfit.fit()  # no fitting sample: no error, every score undefined
    assert unfit.unfitted is not None and not unfit.fitted
    unfit.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), "val")
    with pytest.warns(UserWarning, match="could not be fitted"):
        assert all(math.isnan(v) for v in unfit.compute("val").values())


def test_buffered_accumulation_equals_unbuffered_and_flushes_on_state_dict():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    a = ProbeReadout(6, task="classification", num_classes=3, buffer_rows=1)  # every batch at once
    b = ProbeReadout(6, task="classification", num_classes=3, buffer_rows=10_000)  # one block
    for xb, yb in zip(x.split(32), y.split(32)):
        a.update_fit(xb, yb)
        b.update_fit(xb, yb)
    state = b.state_dict()  # flushes the block: a checkpoint holds every batch
    assert float(state["stats.n"]) == 300
    # the states are moments about each readout's first-block mean: compare them about one reference
    zero = {"x": torch.zeros(6, dtype=torch.float64), "y": torch.zeros(3, dtype=torch.float64)}
    torch.testing.assert_close(b.stats.moments_about(zero)["xtx"], a.stats.moments_about(zero)["xtx"])
    assert b.n_fit == a.n_fit == 300
    a.fit()
    b.fit()
    torch.testing.assert_close(a.weight, b.weight)
    for r in (a, b):
        for xb, yb in zip(x.split(50), y.split(50)):
            r.update_eval("val", xb, yb)
    sa, sb = a.compute_eval("val"), b.compute_eval("val")
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])
    with pytest.raises(ValueError, match="buffer_rows must be a positive int"):
        ProbeReadout(6, buffer_rows=0)
    with pytest.raises(RuntimeError, match="not been fitted"):
        ProbeReadout(6).update_eval("val", x, x[:, 0])


def test_regression_r2_equals_sklearn_ridgecv_to_rounding():
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV

    from lit_repr.metrics import DEFAULT_ALPHAS

    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 30, generator=g, dtype=torch.float64)
    y = x @ torch.randn(30, generator=g, dtype=torch.float64) + torch.randn(800, generator=g, dtype=torch.float64)
    res = fit_probe(x[:600], y[:600], eval_sets={"val": (x[600:], y[600:])})
    sk = RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode="eigen").fit(x[:600].numpy(), y[:600].numpy())
    assert res.scores["val"]["r2"] == pytest.approx(sk.score(x[600:].numpy(), y[600:].numpy()), abs=1e-10)
    # Spearman on the bounded sample equals scipy's when every prediction is kept
    pred = res.predict(x[600:]).reshape(-1).numpy()
    assert res.scores["val"]["spearman"] == pytest.approx(spearmanr(pred, y[600:].numpy()).statistic, abs=1e-6)


@pytest.mark.parametrize("offset", [1e4, 1e5, 1e6, 1e7, 1e8])
def test_fit_probe_r2_and_accuracy_unchanged_by_a_feature_offset(grid_features, shifted, offset):
    h, z = grid_features(800, 16, offset)
    y = z[:, 0] - z[:, 1] + 0.5 * torch.randn(800, dtype=torch.float64)
    cls = (z[:, 0] > 0).long() + (z[:, 2] > 0).long()
    x0, x = h.float(), shifted(h, offset)
    ref = fit_probe(x0[:600], y[:600], eval_sets={"val": (x0[600:], y[600:])})
    got = fit_probe(x[:600], y[:600], eval_sets={"val": (x[600:], y[600:])})
    for split in ("fit", "val"):
        assert got.scores[split]["r2"] == pytest.approx(ref.scores[split]["r2"], abs=1e-6)
    ref = fit_probe(x0[:600], cls[:600], task="classification", eval_sets={"val": (x0[600:], cls[600:])})
    got = fit_probe(x[:600], cls[:600], task="classification", eval_sets={"val": (x[600:], cls[600:])})
    assert got.scores["val"]["acc"] == pytest.approx(ref.scores["val"]["acc"], abs=1e-6)
    assert ref.scores["val"]["acc"] > 0.6


def test_target_offset_of_1e8_keeps_every_digit():
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g)
    digit = torch.randint(0, 10, (1000,), generator=g).double()
    y = digit + x.double() @ torch.randn(8, generator=g, dtype=torch.float64)
    res = fit_probe(x[:800], y[:800] + 1e8, eval_sets={"val": (x[800:], y[800:] + 1e8)})
    sk = Ridge(alpha=res.alpha).fit(x[:800].double().numpy(), (y[:800] + 1e8).numpy())
    assert res.scores["fit"]["r2"] == pytest.approx(sk.score(x[:800].double().numpy(), (y[:800] + 1e8).numpy()),
                                                    abs=1e-4)
    assert res.scores["val"]["r2"] == pytest.approx(sk.score(x[800:].double().numpy(), (y[800:] + 1e8).numpy()),
                                                    abs=1e-4)
    # the regression readout, streamed in batches: the same scores as without the offset
    out = {}
    for off in (0.0, 1e8):
        r = ProbeReadout(8, task="regression", num_targets=1)
        for xb, yb in zip(x[:800].split(100), (y[:800] + off).split(100)):
            r.update(xb, yb, "fit")
        r.fit()
        for xb, yb in zip(x[800:].split(64), (y[800:] + off).split(64)):
            r.update(xb, yb, "val")
        out[off] = r.compute("val")
    for k in ("r2", "pearson", "spearman", "mse"):
        assert out[1e8][k] == pytest.approx(out[0.0][k], abs=1e-6), k


def test_small_probes_run_on_one_thread_and_restore_the_thread_count(monkeypatch):
    from lit_repr.metrics import probe as probe_module

    seen = []
    real_update = probe_module.StreamingRidge._accumulate

    def spy(self, x, y, **kwargs):
        seen.append(torch.get_num_threads())
        return real_update(self, x, y, **kwargs)

    monkeypatch.setattr(probe_module.StreamingRidge, "_accumulate", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, y = _blobs()
        r = ProbeReadout(8, task="classification", num_classes=4)
        r.update(torch.tensor(x[:400]), torch.tensor(y[:400]), "fit")
        r.fit()
        r.update(torch.tensor(x[400:]), torch.tensor(y[400:]), "val")
        scores = r.compute("val")
        assert seen == [1] and torch.get_num_threads() == 2  # small: one thread, then restored
        assert scores["acc"] > 0.9
        with pytest.raises(RuntimeError, match="boom"), probe_module._threads_for(0, torch.device("cpu")):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
        with probe_module._threads_for(2**40, torch.device("cpu")):  # large work keeps every thread
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("levels", [None, 2, 8])
def test_ovr_auroc_equals_torchmetrics_and_sklearn_with_ties(levels):
    from sklearn.metrics import roc_auc_score
    from torchmetrics.functional.classification.auroc import _multiclass_auroc_compute

    from lit_repr.metrics.probe import ovr_auroc

    gen = torch.Generator().manual_seed(levels or 0)
    p = torch.randn(300, 6, generator=gen).softmax(-1)
    if levels:  # coarse scores: many ties within and across classes
        p = (p * levels).round() / levels
    y = torch.randint(0, 5, (300,), generator=gen)  # class 5 absent: undefined
    ours = ovr_auroc(p, y, 6)
    assert ours.dtype == p.dtype and bool(ours[5].isnan())
    theirs = _multiclass_auroc_compute((p, y), 6, None, None)
    torch.testing.assert_close(ours[:5], theirs[:5], atol=2e-7, rtol=0)
    for c in range(5):
        assert abs(float(ours[c]) - roc_auc_score((y == c).numpy(), p[:, c].double().numpy())) < 2e-7


@pytest.mark.parametrize("validate_args", [True, False])
def test_evaluation_metrics_equal_torchmetrics_on_probabilities_and_logits(validate_args):
    # the probe's accuracy (two counts) and AUROC (checked scores kept as they are) against torchmetrics',
    # batch by batch; logits are normalised by a softmax as torchmetrics does
    import torchmetrics

    from lit_repr.metrics.probe import evaluation_metrics

    gen = torch.Generator().manual_seed(1)
    for logits in (False, True):
        ours = evaluation_metrics("classification", 4, validate_args=validate_args)
        acc = torchmetrics.classification.MulticlassAccuracy(num_classes=4, average="micro")
        auroc = torchmetrics.classification.MulticlassAUROC(num_classes=4)
        for _ in range(3):
            s = 3 * torch.randn(50, 4, generator=gen)
            p = s if logits else s.softmax(-1)
            y = torch.randint(0, 4, (50,), generator=gen)
            ours.update(p, y)
            acc.update(p, y)
            auroc.update(p, y)
        got = ours.compute()
        torch.testing.assert_close(got["acc"], acc.compute())
        torch.testing.assert_close(got["auroc"], auroc.compute(), atol=1e-6, rtol=0)
    empty = evaluation_metrics("classification", 4, validate_args=validate_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torchmetrics: compute before update)
        assert math.isnan(float(empty["acc"].compute()))


def test_accuracy_checks_its_inputs_when_asked():
    from lit_repr.metrics.probe import evaluation_metrics

    acc = evaluation_metrics("classification", 3)["acc"]
    with pytest.raises(ValueError, match=r"scores \(N, 3\) and class indices \(N,\)"):
        acc.update(torch.rand(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"has class indices in \[0, 3\], outside \[0, 3\)"):
        acc.update(torch.rand(2, 3), torch.tensor([0, 3]))
    assert int(acc.total) == 0  # nothing was counted


def test_linear64_in_blocks_equals_one_product():
    from lit_repr.metrics.probe import linear64

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2500, 7, generator=g) + 1e4
    w, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    want = x.double() @ w + b
    for rows in (1, 1000, 4096):  # blocks, with a last partial one; a single block
        got = linear64(x, w, b, rows=rows)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
    torch.testing.assert_close(linear64(x.double(), w, b), want, rtol=1e-15, atol=0)
    threads = torch.get_num_threads()
    linear64(x, w, b, rows=1000)  # few outputs run on one thread: the caller's count comes back
    assert torch.get_num_threads() == threads


def test_fit_probe_float32_products_equals_ridgecv():
    from sklearn.linear_model import RidgeCV

    from lit_repr.metrics import fit_probe
    from lit_repr.metrics.ridge import DEFAULT_ALPHAS

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 64, generator=g) @ (torch.randn(64, 64, generator=g) / 8) + 0.5
    y = x.double() @ torch.randn(64, generator=g, dtype=torch.float64) + 0.5 * torch.randn(5000, generator=g,
                                                                                       dtype=torch.float64)
    res = fit_probe(x[:4000], y[:4000], eval_sets={"test": (x[4000:], y[4000:])}, float32_products=True)
    exact = fit_probe(x[:4000], y[:4000], eval_sets={"test": (x[4000:], y[4000:])})
    # ill-conditioned features: float32 rounding may move the chosen penalty, not the score
    assert abs(res.scores["test"]["r2"] - exact.scores["test"]["r2"]) < 1e-4
    sk = RidgeCV(alphas=DEFAULT_ALPHAS).fit(x[:4000].numpy(), y[:4000].numpy())  # penalty by leave-one-out
    assert abs(res.scores["test"]["r2"] - sk.score(x[4000:].numpy(), y[4000:].numpy())) < 1e-4


@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_fit_scores_from_moments_equal_a_pass_over_the_fitting_data(offset):
    # fit_probe scores its fitting split from the statistics (no second pass): the same numbers
    from lit_repr.metrics.probe import ProbeReadout
    from lit_repr.metrics.readout import FIT

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 12, generator=g) + 4.0
    y = x[:, :3].double() @ torch.randn(3, 3, generator=g, dtype=torch.float64) + offset
    y += torch.randn(3000, 3, generator=g, dtype=torch.float64)
    y[:, 2] = offset + 1.0  # a constant target: its R² and r are undefined and left out of the means
    res = fit_probe(x, y)
    readout = ProbeReadout(12, task="regression", num_targets=3, local=True)
    readout.update(x, y, FIT)
    readout.fit()
    readout.update(x, y, "again")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        passed = readout.compute("again")
    assert set(res.scores["fit"]) == set(passed)
    for k in ("r2", "pearson", "mse"):
        assert res.scores["fit"][k] == pytest.approx(passed[k], rel=1e-9, abs=1e-12), k
    assert res.scores["fit"]["spearman"] == pytest.approx(passed["spearman"], rel=1e-12)  # all rows: same sample


def test_fit_scores_from_moments_do_not_apply_to_classification_or_unfitted_probes():
    from lit_repr.metrics.probe import ProbeReadout

    assert ProbeReadout(4, task="regression", num_targets=1).fit_scores_from_moments() is None  # not fitted
    clf = ProbeReadout(4, task="classification", num_classes=3)
    clf.update(torch.randn(30, 4), torch.randint(0, 3, (30,)), "fit")
    clf.fit()
    assert clf.fit_scores_from_moments() is None
