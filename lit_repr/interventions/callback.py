"""InterventionReport: run configured interventions at the end of validation and log their effects (rung 2)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lit_repr.callbacks.base import TapCallback
from lit_repr.callbacks.loaders import probe_loaders_for, shard
from lit_repr.features import frozen_mode, move_to, preserved_rng
from lit_repr.interventions.edits import Edit, bind_edits, intervene
from lit_repr.interventions.effects import EFFECT_METRICS, EffectMetric, effect_metrics
from lit_repr.interventions.ladder import Evidence
from lit_repr.interventions.patching import PatchingResult, patching_sweep
from lit_repr.metrics.readout import SplitDict
from lit_repr.targets import TargetSpec, check_target_spec, get_input, get_target

__all__ = ["InterventionReport", "PatchingSweep", "EffectReadout"]


class EffectReadout(nn.Module):
    """One effect metric per evaluation split, behind the readout contract of :class:`~lit_repr.callbacks.TapCallback`.

    Args:
        make: builds a fresh :class:`~lit_repr.interventions.effects.EffectMetric`.

    Example:
        >>> from lit_repr.interventions.effects import LossChange
        >>> r = EffectReadout(LossChange)
        >>> r.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), "val")
        >>> r.compute("val")[""]
        0.0
    """

    def __init__(self, make: Callable[[], EffectMetric]) -> None:
        super().__init__()
        self.make = make
        self.splits = SplitDict()

    def update(self, clean: Tensor, edited: Tensor, target: Tensor | None, split: str) -> None:  # type: ignore[override]
        if split not in self.splits:
            self.splits[split] = self.make().to(clean.device)
        self.splits[split].update(clean, edited, target)

    def evidence(self, split: str) -> Evidence:
        """The effect on ``split`` as rung-2 evidence."""
        return self.splits[split].compute()

    def compute(self, split: str) -> dict[str, float]:
        if split not in self.splits or float(self.splits[split].count) == 0:
            return {}
        e = self.evidence(split)
        return {"": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}

    def reset(self, split: str | None = None) -> None:
        for s in [split] if split is not None else list(self.splits):
            if s in self.splits:
                self.splits[s].reset()


class PatchingSweep:
    """What :class:`InterventionReport` patches to draw its heat map: clean batches into corrupted ones.

    Args:
        sites: submodule names or globs whose outputs are tensors.
        corrupt: ``corrupt(batch) -> batch``: the corrupted version of a clean batch (same shapes).
        axis: ``"position"`` (dimension ``position_dim``) or ``"unit"`` (last dimension).
        index: positions or units to patch (default all).
        position_dim: the position dimension of the sites' outputs.
        score: ``"logit"`` or ``"probability"`` of each input's label on the clean batch, or a callable
            ``score(output, target) -> (batch,)``.
        num_batches: clean batches of the first evaluation split used (concatenated by the sweep, one
            batch at a time).

    Example:
        >>> sweep = PatchingSweep(["backbone.0"], corrupt=lambda b: {**b, "x": b["x"].flip(0)}, axis="unit")
        >>> sweep.axis
        'unit'
    """

    def __init__(self, sites: str | Sequence[str], corrupt: Callable[[Any], Any],
                 axis: Literal["position", "unit"] = "position", index: Sequence[int] | None = None,
                 position_dim: int = 1, score: Literal["logit", "probability"] | Callable = "logit",
                 num_batches: int = 1) -> None:
        if isinstance(sites, str):
            sites = [sites]
        if not sites or not all(isinstance(s, str) for s in sites):
            raise ValueError(f"sites must name at least one submodule (strings), got {sites!r}")
        if not callable(corrupt):
            raise ValueError(f"corrupt must be callable(batch) -> corrupted batch, got {corrupt!r}")
        if axis not in ("position", "unit"):
            raise ValueError(f"axis must be 'position' or 'unit', got {axis!r}")
        if not callable(score) and score not in ("logit", "probability"):
            raise ValueError(f"score must be 'logit', 'probability' or callable(output, target), got {score!r}")
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"num_batches must be an int >= 1, got {num_batches!r}")
        self.sites, self.corrupt, self.axis, self.index = list(sites), corrupt, axis, index
        self.position_dim, self.score, self.num_batches = position_dim, score, num_batches


class InterventionReport(TapCallback):
    """At the end of validation, run a configured list of interventions and log their effects (rung 2).

    For each evaluation split (frozen passes over the probe loaders, sharded across DDP processes),
    every batch runs once untouched and once under each intervention (:func:`intervene`); the effect
    metrics compare the two outputs: change in loss, in the label's (or ``target_class``'s) logit and
    probability, and in accuracy, each with a seeded bootstrap interval. Logged as
    ``<name>/<intervention>/<target>/<split>/<quantity>_change`` with ``..._ci_low`` and
    ``..._ci_high``. The means are exact under DDP (sum states); the intervals too while the inputs
    fit in ``max_samples`` (see :mod:`lit_repr.interventions.effects`). With ``patching``, a heat map
    of the fraction of the clean-corrupted score restored per site × position (or unit) goes to
    TensorBoard as ``<name>/patching/<split>/heatmap`` (drawn on the global-zero process).

    Results are rung 2 of the evidence ladder: ``rung = 2``; :attr:`evidence` holds them as
    :class:`~lit_repr.interventions.ladder.Evidence` after each measurement, and ``summary.json`` rows
    carry the rung.

    Args:
        interventions: ``{label: {site or glob: Edit}}``; the label names the intervention in logs.
        target: where the label sits in a batch (target spec).
        quantities: effects to log among ``"loss"``, ``"logit"``, ``"probability"``, ``"accuracy"``.
        target_class: the class of the logit and probability effects (default: each input's label).
        output_fn: turns the model's output into ``(batch, classes)`` logits (default: the output).
        patching: a :class:`PatchingSweep` for the heat map, or ``None``.
        eval_splits: probe loaders to measure on (default: every loader but ``"train"``).
        every_n_epochs: measure every this many epochs during ``fit``.
        probe_loaders: named loaders (default: the datamodule's ``probe_dataloaders()``, else the
            trainer's loaders).
        input_key: where the input sits in a batch.
        forward_fn: replaces ``module(input)``: ``forward_fn(module, batch)``.
        num_bootstrap: bootstrap resamples of each interval.
        confidence: the intervals' coverage.
        max_samples: per-input effects kept for each interval.
        seed: bootstrap seed.
        log_figures: log the patching heat map.
        name: prefix of logged metrics.

    Example:
        >>> from lit_repr.models import Classifier
        >>> from lit_repr.data import DigitsDataModule
        >>> from lit_repr.interventions import ZeroAblation
        >>> report = InterventionReport({"zero_hidden": {"backbone.0": ZeroAblation()}}, quantities=["accuracy"],
        ...                             eval_splits=["val"])
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[report], logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(Classifier(in_features=64, hidden=[32], lr=1e-2), DigitsDataModule())
        >>> report.scores["interventions/zero_hidden/y/val/accuracy_change"] < -0.3  # the model needs that layer
        True
        >>> report.evidence[0].rung, report.evidence[0].method
        (2, 'zero ablation')
    """

    rung = 2
    method = "intervention"

    def __init__(
        self,
        interventions: Mapping[str, Mapping[str, Edit]],
        target: TargetSpec = "y",
        quantities: Sequence[str] = ("loss", "logit", "probability", "accuracy"),
        target_class: int | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        patching: PatchingSweep | None = None,
        eval_splits: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, Any] | None = None,
        input_key: TargetSpec | None = None,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        num_bootstrap: int = 1000,
        confidence: float = 0.95,
        max_samples: int = 10_000,
        seed: int = 0,
        log_figures: bool = True,
        name: str = "interventions",
    ) -> None:
        if not isinstance(interventions, Mapping) or not interventions:
            raise ValueError("interventions must be a non-empty {label: {site: Edit}} dict, e.g. "
                             "{'zero_hidden': {'backbone.0': ZeroAblation()}}")
        for label, edits in interventions.items():
            if not isinstance(label, str) or not label or "/" in label:
                raise ValueError(f"intervention labels must be non-empty strings without '/', got {label!r}")
            if not isinstance(edits, Mapping) or not edits:
                raise ValueError(f"interventions[{label!r}] must be a non-empty {{site: Edit}} dict, got {edits!r}")
            for site, edit in edits.items():
                if not isinstance(edit, Edit):
                    raise ValueError(f"interventions[{label!r}][{site!r}] must be an Edit (ZeroAblation(), "
                                     f"Steering(...), ...), got {type(edit).__name__}")
        check_target_spec(target, "target")
        if patching is not None and not isinstance(patching, PatchingSweep):
            raise ValueError(f"patching must be a PatchingSweep or None, got {type(patching).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise ValueError(f"output_fn must be callable(output) -> logits, got {output_fn!r}")
        sites = list(dict.fromkeys(s for edits in interventions.values() for s in edits))
        if patching is not None:
            sites += [s for s in patching.sites if s not in sites]
        super().__init__(sites, {"target": target} if not isinstance(target, str) else target, mode="frozen",
                         fit_split=None, eval_splits=eval_splits, every_n_epochs=every_n_epochs,
                         probe_loaders=probe_loaders, input_key=input_key, forward_fn=forward_fn,
                         log_figures=log_figures, name=name)
        self.target_name = next(iter(self.targets))
        effect_metrics(tuple(quantities), target_class, num_bootstrap=num_bootstrap, confidence=confidence,
                       max_samples=max_samples, seed=seed)  # checks every option now
        self.interventions = {k: dict(v) for k, v in interventions.items()}
        self.quantities = tuple(quantities)
        self.target_class = target_class
        self.output_fn = output_fn
        self.patching = patching
        self.confidence = float(confidence)
        self._metric_kwargs = dict(num_bootstrap=num_bootstrap, confidence=confidence, max_samples=max_samples,
                                   seed=seed)
        self.evidence: list[Evidence] = []
        self.patching_result: PatchingResult | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, interventions=sorted(self.interventions))

    def _site_known(self, site: str) -> bool:  # readouts are keyed by intervention label
        return site in self.interventions

    def _method(self, label: str) -> str:
        return " + ".join(dict.fromkeys(e.method for e in self.interventions[label].values()))

    def make_readouts(self, site: str, target: str | None, in_features: int, target_features: int) -> dict:
        method = self._method(site)
        sites = "+".join(self.interventions[site])
        out = {}
        for q in self.quantities:
            cls = EFFECT_METRICS[q]
            extra = {"target_class": self.target_class} if q in ("logit", "probability") else {}

            def make(cls=cls, extra=extra) -> EffectMetric:
                return cls(method=method, site=sites, **extra, **self._metric_kwargs)

            out[cls.quantity] = EffectReadout(make)
        return out

    def _logits(self, pl_module: nn.Module, batch: Any) -> Tensor:
        out = self.forward_fn(pl_module, batch)
        logits = self.output_fn(out) if self.output_fn is not None else out
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise ValueError(f"{self.name}: the model's output must be (batch, classes) logits (give output_fn), got "
                             f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
        return logits

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, log: bool = False) -> dict[str, float]:
        """Run every intervention over the evaluation splits; return (and ``log``) the effects."""
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        evals = self.eval_splits if self.eval_splits is not None else [s for s in loaders if s != "train"]
        for wanted in evals:
            if wanted not in loaders:
                raise ValueError(f"{self.name}: split {wanted!r} is not among the probe loaders {sorted(loaders)}")
        self.reset()
        with torch.inference_mode(False):
            plans = {label: bind_edits(pl_module, edits) for label, edits in self.interventions.items()}
        device = pl_module.device
        for split in evals:
            loader = shard(loaders[split], trainer.global_rank, trainer.world_size)
            with preserved_rng(), torch.inference_mode(False), frozen_mode(pl_module):
                for batch in loader:
                    batch = move_to(batch, device)
                    y = get_target(batch, self.targets[self.target_name], f"target {self.target_name!r}")
                    clean = self._logits(pl_module, batch)
                    for label, plan in plans.items():
                        with intervene(pl_module, dict(plan), bind=False):
                            edited = self._logits(pl_module, batch)
                        if (label, self.target_name) not in self.widths:
                            self._create(label, self.target_name, clean.shape[1], 1, clean.device)
                        for (lab, _, _), r in self.readouts.items():
                            if lab == label:
                                r.update(clean, edited, y, split)
            self._splits.append(split)
        scores = self.report(trainer, pl_module, log=log)
        self.evidence = [r.evidence(split) for split in self._splits for r in self.readouts.values()
                         if r.compute(split)]
        if self.patching is not None and evals and trainer.is_global_zero:
            self.patching_result = self.run_patching(pl_module, loaders[evals[0]])
            if self.log_figures:
                fig = self.patching_result.figure(f"{self.name}: activation patching on {evals[0]}")
                self.add_figure(trainer, f"{self.name}/patching/{evals[0]}/heatmap", fig)
        return scores

    def run_patching(self, pl_module: nn.Module, loader: Any) -> PatchingResult:
        """The :class:`PatchingSweep` on the first ``num_batches`` batches of ``loader`` (averaged over inputs)."""
        sweep = self.patching
        assert sweep is not None
        results = []
        device = next((p.device for p in pl_module.parameters()), torch.device("cpu"))
        with preserved_rng():
            batches = [move_to(b, device) for _, b in zip(range(sweep.num_batches), loader)]
        for batch in batches:
            y = get_target(batch, self.targets[self.target_name], f"target {self.target_name!r}").long()

            def score(out: Any, y: Tensor = y) -> Tensor:
                if callable(sweep.score):
                    return sweep.score(out, y)
                logits = self.output_fn(out) if self.output_fn is not None else out
                vals = logits.softmax(-1) if sweep.score == "probability" else logits
                return vals.gather(1, y.unsqueeze(1)).squeeze(1)

            results.append(patching_sweep(
                pl_module, batch, sweep.corrupt(batch), sweep.sites, score, axis=sweep.axis, index=sweep.index,
                position_dim=sweep.position_dim, forward_fn=lambda m, b: self.forward_fn(m, b),
            ))
        first = results[0]
        scores = torch.cat([r.scores for r in results], -1)
        clean = torch.cat([r.clean_scores for r in results])
        corrupted = torch.cat([r.corrupted_scores for r in results])
        return PatchingResult(first.sites, first.index, first.axis, scores.mean(-1), float(clean.mean()),
                              float(corrupted.mean()), clean.numel(), scores, clean, corrupted)

    def check_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The input and target resolve on one batch of the first evaluation loader (no state changes)."""
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        first = next(iter(self.eval_splits or [s for s in loaders if s != "train"]), None)
        if first not in loaders:
            raise ValueError(f"{self.name}: split {first!r} is not among the probe loaders {sorted(loaders)}")
        with preserved_rng():
            batch = next(iter(loaders[first]), None)
        if batch is None:
            return
        batch = move_to(batch, pl_module.device)
        get_input(batch, self.input_key)
        get_target(batch, self.targets[self.target_name], f"target {self.target_name!r}")
