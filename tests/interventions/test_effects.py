"""Effect metrics match a hand computation; the bootstrap interval is seeded, order-free and well scaled."""

import math

import pytest
import torch
import torch.nn.functional as F

from lit_repr.interventions import (
    AccuracyChange,
    Evidence,
    LogitChange,
    LossChange,
    ProbabilityChange,
    bootstrap_ci,
    effect_metrics,
)


def batches(seed=0, n=300, c=5):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n, c, generator=g) * 2
    edited = clean + torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return clean, edited, y


def fed(metric, clean, edited, y, chunk=64):
    for i in range(0, len(clean), chunk):
        metric.update(clean[i : i + chunk], edited[i : i + chunk], None if y is None else y[i : i + chunk])
    return metric.compute()


def test_effect_metrics_match_a_hand_computation():
    clean, edited, y = batches()
    rows = torch.arange(len(y))
    hand = {
        "loss_change": F.cross_entropy(edited.double(), y, reduction="none")
        - F.cross_entropy(clean.double(), y, reduction="none"),
        "logit_change": edited.double()[rows, y] - clean.double()[rows, y],
        "probability_change": edited.double().softmax(1)[rows, y] - clean.double().softmax(1)[rows, y],
        "accuracy_change": (edited.argmax(1) == y).double() - (clean.argmax(1) == y).double(),
    }
    for quantity, metric in effect_metrics(num_bootstrap=500, seed=4).items():
        e = fed(metric, clean, edited, y)
        assert isinstance(e, Evidence) and e.rung == 2 and e.quantity == quantity and e.n == len(y)
        assert e.value == pytest.approx(float(hand[quantity].mean()), abs=1e-12)
        assert (e.ci_low, e.ci_high) == pytest.approx(bootstrap_ci(hand[quantity], 500, 0.95, seed=4), abs=1e-12)
        assert e.ci_low < e.value < e.ci_high


def test_fixed_target_class():
    clean, edited, _ = batches()
    e = fed(LogitChange(target_class=2), clean, edited, None)
    assert e.value == pytest.approx(float((edited[:, 2].double() - clean[:, 2].double()).mean()), abs=1e-12)
    p = fed(ProbabilityChange(target_class=0), clean, edited, None)
    assert p.value == pytest.approx(float((edited.double().softmax(1)[:, 0] - clean.double().softmax(1)[:, 0]).mean()))


def test_bootstrap_interval_has_the_normal_theory_width_and_is_seeded_and_order_free():
    x = torch.randn(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = bootstrap_ci(x, 2000, 0.95, seed=0)
    se = float(x.std() / math.sqrt(len(x)))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_ci(x, 2000, 0.95, seed=0) == (lo, hi)
    assert bootstrap_ci(x.flip(0), 2000, 0.95, seed=0) == (lo, hi)
    assert bootstrap_ci(x, 2000, 0.95, seed=1) != (lo, hi)
    assert all(math.isnan(v) for v in bootstrap_ci(x[:1]))


def test_a_bounded_sample_keeps_the_exact_mean_and_the_interval_of_all_inputs():
    clean, edited, y = batches(n=3000)
    full = fed(LossChange(seed=0), clean, edited, y)
    bounded = fed(LossChange(seed=0, max_samples=300), clean, edited, y)
    assert bounded.value == pytest.approx(full.value, abs=1e-12) and bounded.n == 3000
    assert bounded.ci_high - bounded.ci_low == pytest.approx(full.ci_high - full.ci_low, rel=0.25)
    assert bounded.ci_low < bounded.value < bounded.ci_high


def test_reset_and_empty():
    m = AccuracyChange()
    fed(m, *batches())
    m.reset()
    assert m.samples.num_kept == 0 and float(m.count) == 0


def test_bad_input():
    clean, edited, y = batches()
    with pytest.raises(ValueError, match="same shape"):
        LossChange().update(clean, edited[:, :3], y)
    with pytest.raises(ValueError, match=r"target must be \(300,\) class indices"):
        LossChange().update(clean, edited, y[:5])
    with pytest.raises(ValueError, match="needs labels"):
        LogitChange().update(clean, edited, None)
    with pytest.raises(ValueError, match="non-finite"):
        LossChange().update(clean, edited * float("nan"), y)
    with pytest.raises(ValueError, match="confidence"):
        LossChange(confidence=1.5)
    with pytest.raises(ValueError, match="quantities must be"):
        effect_metrics(("loss", "kl"))
