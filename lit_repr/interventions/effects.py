"""Effect metrics of an intervention over a set of inputs, with seeded bootstrap confidence intervals.

Each metric compares a model's outputs on the same inputs without and with an edit (``clean`` and
``edited`` logits, ``(N, classes)``) and averages a per-input effect:

- :class:`LossChange`: edited minus clean cross-entropy against the label;
- :class:`LogitChange`: edited minus clean logit of a target class (a fixed class, or each input's label);
- :class:`ProbabilityChange`: the same for its softmax probability;
- :class:`AccuracyChange`: edited minus clean correctness (so ``-0.3`` is a 30-point accuracy drop).

**States and DDP.** The mean is exact: its states are sums (``total``, ``count``) reduced with
``dist_reduce_fx="sum"``. The confidence interval needs per-input effects: they are kept in a
:class:`~lit_repr.metrics.samples.SampleBuffer` (lit_repr's one bounded-sample mechanism) of at most
``max_samples`` effects. While all inputs fit, every effect is kept on every process and gathered,
and the effects are sorted before resampling, so 2 processes give bit for bit the interval of 1.
Beyond ``max_samples`` inputs the buffer is a uniform subsample of size ``m`` of the ``N`` inputs:
the bootstrap distribution of its mean is centred on the exact mean and its spread scaled by
``sqrt(m / N)`` (the standard error of a mean of ``N`` rather than ``m`` inputs).

**Bootstrap.** A percentile bootstrap of the mean with ``num_bootstrap`` resamples, drawn from a
``torch.Generator`` seeded by ``seed``: the same inputs give the same interval. Fewer than 2 inputs
give a ``nan`` interval.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from lit_repr.checks import check_int, check_number
from lit_repr.interventions.ladder import Evidence
from lit_repr.metrics.samples import SampleBuffer

__all__ = [
    "bootstrap_ci",
    "EffectMetric",
    "LossChange",
    "LogitChange",
    "ProbabilityChange",
    "AccuracyChange",
    "EFFECT_METRICS",
    "effect_metrics",
]


def bootstrap_ci(effects: Tensor, num_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                 mean: float | None = None, total: int | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``effects`` (seeded; order of ``effects`` irrelevant).

    Args:
        effects: per-input effects, 1-D.
        num_bootstrap: resamples.
        confidence: the interval's coverage, in ``(0, 1)``.
        seed: seed of the resampling generator.
        mean: the exact mean over all inputs when ``effects`` is a subsample (default: their mean).
        total: how many inputs ``effects`` were drawn from (default: their number); the spread is
            scaled by ``sqrt(len(effects) / total)``.

    Example:
        >>> lo, hi = bootstrap_ci(torch.arange(100.0), seed=0)
        >>> lo < 49.5 < hi, round(hi - lo) in range(9, 14)  # the mean's 95% interval, about ±2 SE
        (True, True)
    """
    check_int("num_bootstrap", num_bootstrap)
    check_number("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    x = effects.detach().reshape(-1).to("cpu", torch.float64).sort().values
    m = x.numel()
    if m < 2:
        return math.nan, math.nan
    sample_mean = float(x.mean())
    centre = sample_mean if mean is None else float(mean)
    scale = 1.0 if total is None else math.sqrt(m / max(int(total), m))
    g = torch.Generator().manual_seed(int(seed))
    chunk = max(1, min(num_bootstrap, 2_000_000 // m))
    means = []
    for start in range(0, num_bootstrap, chunk):
        n = min(chunk, num_bootstrap - start)
        means.append(x[torch.randint(m, (n, m), generator=g)].mean(1))
    boot = torch.cat(means)
    alpha = (1 - confidence) / 2
    q = torch.quantile(boot, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    lo, hi = (centre + (float(v) - sample_mean) * scale for v in q)
    return lo, hi


class EffectMetric(Metric):
    """Base of effect metrics: the mean over inputs of a per-input effect of an edit, with a bootstrap CI.

    A subclass implements :meth:`effect` (per-input effects from clean and edited logits and labels).
    :meth:`compute` returns an :class:`~lit_repr.interventions.ladder.Evidence` (rung 2) holding the
    mean, the interval and the number of inputs.

    Args:
        method: the intervention's method name, carried by the returned evidence.
        site: where the intervention was made (carried by the evidence).
        num_bootstrap: bootstrap resamples.
        confidence: the interval's coverage.
        max_samples: per-input effects kept for the bootstrap (see the module docstring).
        seed: seed of the bootstrap (and of the subsample).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> class MarginChange(EffectMetric):
        ...     quantity = "margin_change"
        ...     def effect(self, clean, edited, target):
        ...         return (edited[:, 1] - edited[:, 0]) - (clean[:, 1] - clean[:, 0])
        >>> m = MarginChange(); m.update(torch.zeros(4, 2), torch.tensor([[0.0, 1.0]]).repeat(4, 1))
        >>> m.compute().value
        1.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    #: rung of the evidence ladder (2: intervention)
    rung = 2
    #: name of the quantity (``loss_change``, ...)
    quantity = "effect"

    def __init__(self, method: str = "intervention", site: str | None = None, num_bootstrap: int = 1000,
                 confidence: float = 0.95, max_samples: int = 10_000, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(method, str) or not method:
            raise ValueError(f"method must be a non-empty string, got {method!r}")
        check_int("num_bootstrap", num_bootstrap)
        check_number("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
        check_int("max_samples", max_samples)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.method, self.site = method, site
        self.num_bootstrap, self.confidence, self.seed = num_bootstrap, float(confidence), seed
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.samples = SampleBuffer(max_samples, num_tensors=1, seed=seed)

    def effect(self, clean: Tensor, edited: Tensor, target: Tensor | None) -> Tensor:
        """Per-input effects ``(N,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement effect()")

    def _check(self, clean: Tensor, edited: Tensor, target: Tensor | None) -> None:
        name = type(self).__name__
        for arg, t in (("clean", clean), ("edited", edited)):
            if not isinstance(t, Tensor) or t.ndim != 2:
                raise ValueError(f"{name}: {arg} must be (inputs, classes) logits, got "
                                 f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        if clean.shape != edited.shape:
            raise ValueError(f"{name}: clean {tuple(clean.shape)} and edited {tuple(edited.shape)} logits must have "
                             f"the same shape (the same inputs without and with the edit)")
        if target is not None and (target.ndim != 1 or target.shape[0] != clean.shape[0]):
            raise ValueError(f"{name}: target must be ({clean.shape[0]},) class indices, got {tuple(target.shape)}")
        if not (bool(torch.isfinite(clean).all()) and bool(torch.isfinite(edited).all())):
            raise ValueError(f"{name}: clean or edited logits contain non-finite values")

    def update(self, clean: Tensor, edited: Tensor, target: Tensor | None = None) -> None:  # type: ignore[override]
        """Add a batch: ``clean`` and ``edited`` logits ``(N, classes)`` of the same inputs, their labels ``(N,)``."""
        self._check(clean, edited, target)
        e = self.effect(clean.to(torch.float64), edited.to(torch.float64),
                        None if target is None else target.long()).detach()
        self.total += e.sum()
        self.count += e.numel()
        self.samples.update(e.unsqueeze(1))

    def compute(self) -> Evidence:  # type: ignore[override]
        """The mean effect with its bootstrap interval, as rung-2 :class:`Evidence`."""
        n = int(self.count)
        if n == 0:
            return Evidence(self.method, self.rung, self.quantity, math.nan, math.nan, math.nan, self.site, 0,
                            self.confidence)
        mean = float(self.total / self.count)
        (kept,) = self.samples.compute()
        lo, hi = bootstrap_ci(kept.reshape(-1), self.num_bootstrap, self.confidence, self.seed, mean=mean, total=n)
        return Evidence(self.method, self.rung, self.quantity, mean, lo, hi, self.site, n, self.confidence)

    def reset(self) -> None:
        super().reset()
        self.samples.reset()


def _class_of(target: Tensor | None, target_class: int | None, name: str) -> Tensor:
    if target_class is not None:
        return torch.tensor([target_class])
    if target is None:
        raise ValueError(f"{name} needs labels (target) or a fixed target_class")
    return target


class LossChange(EffectMetric):
    """Edited minus clean cross-entropy against each input's label.

    Args:
        method: the intervention's method name.
        site: where the intervention was made.
        num_bootstrap: bootstrap resamples.
        confidence: the interval's coverage.
        max_samples: per-input effects kept for the bootstrap.
        seed: seed of the bootstrap.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> m = LossChange()
        >>> m.update(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
        >>> round(m.compute().value, 4)  # log 2 - log(1 + e^-2)
        0.5662
    """

    quantity = "loss_change"

    def effect(self, clean: Tensor, edited: Tensor, target: Tensor | None) -> Tensor:
        if target is None:
            raise ValueError("LossChange needs labels (target)")
        return F.cross_entropy(edited, target, reduction="none") - F.cross_entropy(clean, target, reduction="none")


class LogitChange(EffectMetric):
    """Edited minus clean logit of a target class (``target_class``, or each input's label).

    Args:
        target_class: a fixed class; ``None`` uses each input's label.
        method: the intervention's method name.
        site: where the intervention was made.
        kwargs: the :class:`EffectMetric` options (``num_bootstrap``, ``confidence``, ...).

    Example:
        >>> m = LogitChange(target_class=1)
        >>> m.update(torch.tensor([[0.0, 1.0], [0.0, 3.0]]), torch.zeros(2, 2))
        >>> m.compute().value
        -2.0
    """

    quantity = "logit_change"

    def __init__(self, target_class: int | None = None, method: str = "intervention", site: str | None = None,
                 **kwargs) -> None:
        super().__init__(method=method, site=site, **kwargs)
        if target_class is not None:
            check_int("target_class", target_class, low=0)
        self.target_class = target_class

    def _values(self, logits: Tensor) -> Tensor:
        return logits

    def effect(self, clean: Tensor, edited: Tensor, target: Tensor | None) -> Tensor:
        cls = _class_of(target, self.target_class, type(self).__name__).to(clean.device)
        if int(cls.max()) >= clean.shape[1]:
            raise ValueError(f"{type(self).__name__}: class {int(cls.max())} out of range for {clean.shape[1]} logits")
        cls = cls.expand(clean.shape[0]).unsqueeze(1)
        return (self._values(edited).gather(1, cls) - self._values(clean).gather(1, cls)).squeeze(1)


class ProbabilityChange(LogitChange):
    """Edited minus clean softmax probability of a target class (``target_class``, or each input's label).

    Args:
        target_class: a fixed class; ``None`` uses each input's label.
        method: the intervention's method name.
        site: where the intervention was made.
        kwargs: the :class:`EffectMetric` options.

    Example:
        >>> m = ProbabilityChange()
        >>> m.update(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, -100.0]]), torch.tensor([1]))
        >>> round(m.compute().value, 3)
        -0.5
    """

    quantity = "probability_change"

    def _values(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)


class AccuracyChange(EffectMetric):
    """Edited minus clean correctness (top-1 prediction equal to the label), per input.

    Args:
        method: the intervention's method name.
        site: where the intervention was made.
        kwargs: the :class:`EffectMetric` options.

    Example:
        >>> m = AccuracyChange()
        >>> m.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        ...          torch.tensor([0, 0]))
        >>> m.compute().value
        -0.5
    """

    quantity = "accuracy_change"

    def effect(self, clean: Tensor, edited: Tensor, target: Tensor | None) -> Tensor:
        if target is None:
            raise ValueError("AccuracyChange needs labels (target)")
        return (edited.argmax(1) == target).double() - (clean.argmax(1) == target).double()


#: the effect metrics by short name, as :class:`~lit_repr.interventions.InterventionReport` takes them
EFFECT_METRICS = {"loss": LossChange, "logit": LogitChange, "probability": ProbabilityChange,
                  "accuracy": AccuracyChange}


def effect_metrics(quantities: tuple[str, ...] = ("loss", "logit", "probability", "accuracy"),
                   target_class: int | None = None, **kwargs) -> dict[str, EffectMetric]:
    """``{quantity name: metric}`` for the named effects (``"loss"``, ``"logit"``, ``"probability"``, ``"accuracy"``).

    Args:
        quantities: which effects.
        target_class: the class of the logit and probability effects (default: each input's label).
        kwargs: :class:`EffectMetric` options shared by all.

    Example:
        >>> sorted(effect_metrics(("loss", "accuracy")))
        ['accuracy_change', 'loss_change']
    """
    if isinstance(quantities, str):
        quantities = (quantities,)
    bad = [q for q in quantities if q not in EFFECT_METRICS]
    if bad or not quantities:
        raise ValueError(f"quantities must be a non-empty list of {sorted(EFFECT_METRICS)}, got {list(quantities)}")
    out = {}
    for q in quantities:
        cls = EFFECT_METRICS[q]
        extra = {"target_class": target_class} if issubclass(cls, LogitChange) else {}
        m = cls(**extra, **kwargs)
        out[m.quantity] = m
    return out
