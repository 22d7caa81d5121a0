"""LinearProbe: frozen-feature linear probes that attach to any Lightning run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lit_repr.callbacks.base import Mode, TapCallback
from lit_repr.metrics.probe import ProbeReadout, Task
from lit_repr.metrics.readout import HELDOUT
from lit_repr.metrics.ridge import DEFAULT_ALPHAS
from lit_repr.taps import Reduction
from lit_repr.targets import TargetSpec

__all__ = ["LinearProbe"]


class LinearProbe(TapCallback):
    """Linear probes on the features of named sites, fitted in closed form, for any Lightning run.

    For every site and every target, a :class:`~lit_repr.metrics.ProbeReadout` fits a ridge probe
    from streamed sufficient statistics (exact under DDP, memory independent of the data size) with
    the penalty chosen by generalised cross-validation over ``alphas``, then scores it on evaluation
    splits. Logged as ``<name>/<site>/<target>/<split>/<quantity>``: ``r2``, ``pearson``, ``mse``
    (streamed) and ``spearman`` (on a bounded sample of at most ``max_samples`` predictions) for
    regression targets, averaged over output dimensions; ``acc`` and ``auroc`` for classification;
    ``<name>/<site>/<target>/<fit split>/alpha``, the chosen penalty (ridge). Regression targets
    also get a predicted-vs-true figure in TensorBoard (``.../<split>/pred_vs_true``).

    Two modes:

    - ``"online"``: features come from the forward passes training already makes (no second
      forward pass). The probe is fitted on the features of the epoch's training batches (the model
      changes during the epoch: the standard online-probe approximation) and scored on the
      validation batches (splits ``val``, ``val_1``, ...).
    - ``"frozen"``: at the end of validation every ``every_n_epochs`` epochs, the model runs in eval
      mode without gradients over named probe loaders: ``probe_loaders`` if given, else the
      datamodule's ``probe_dataloaders()``, else the trainer's train and validation loaders. The
      ``fit_split`` loader fits; every other loader (``val``, ``test``, ``ood``, ...) is scored.
      Module modes and every random state are restored afterwards: the run is unchanged.

    ``trainer.test`` scores the test loaders (online: with the probe fitted during training; frozen:
    fitted again on ``fit_split``). A score without a definition (R² of one sample, AUROC of a single
    class, an empty split) is logged as NaN with one warning naming the site, target and split.

    Args:
        sites: submodule names or globs, e.g. ``["backbone.layer3"]`` or ``"backbone.*"``.
        targets: ``{name: spec}``; a spec is a batch key, a tuple position or a callable. A bare
            spec is named by its string (or ``"target"``).
        task: ``"classification"`` or ``"regression"``, or a ``{target name: task}`` dict.
        num_classes: classes of classification targets (int or dict); default: the module's or
            datamodule's ``num_classes`` attribute.
        mode: ``"online"`` or ``"frozen"``.
        alphas: ridge penalties to choose from (scikit-learn's convention).
        selection: ``"gcv"`` (generalised cross-validation on the fitting split) or ``"heldout"``
            (lowest error on the ``heldout_split`` loader; frozen mode only).
        heldout_split: the probe loader that chooses the penalty when ``selection="heldout"``.
        classifier: ``"ridge"`` (least squares on one-hot targets) or ``"logistic"`` (L-BFGS on a
            bounded sample of the fitting split).
        reduction: how a site's output becomes a feature matrix (``"flatten"``, ``"mean"``, ...).
        projection_dim: random projection of high-dimensional features before fitting.
        max_components: ridge on the leading principal components only.
        max_samples: predictions kept per split for Spearman and the figures.
        every_n_epochs: probe every this many epochs (frozen mode).
        probe_loaders: named loaders for frozen mode.
        fit_split: the loader (frozen) that fits the probe.
        input_key: where the model input sits in a batch (default ``"x"``, or position 0 of tuples).
        forward_fn: replaces ``module(input)`` in frozen passes: ``forward_fn(module, batch)``.
        log_figures: log predicted-vs-true figures for regression targets.
        name: prefix of logged metrics.

    Example:
        >>> from lit_repr.models import Classifier
        >>> from lit_repr.data import DigitsDataModule
        >>> import torch; _ = torch.manual_seed(0)
        >>> probe = LinearProbe(sites=["backbone.0"], targets={"digit": "y"}, task="classification")
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[probe], logger=False,
        ...                      enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(Classifier(in_features=64, hidden=[32]), DigitsDataModule())
        >>> trainer.callback_metrics["probe/backbone.0/digit/val/acc"] > 0.7  # after one epoch
        tensor(True)
    """

    method = "linear probe"

    def __init__(
        self,
        sites: str | Sequence[str],
        targets: Mapping[str, TargetSpec] | TargetSpec = "y",
        task: Task | Mapping[str, Task] = "classification",
        num_classes: int | Mapping[str, int] | None = None,
        mode: Mode = "online",
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        selection: Literal["gcv", "heldout"] = "gcv",
        heldout_split: str = "val",
        classifier: Literal["ridge", "logistic"] = "ridge",
        reduction: Reduction = "flatten",
        projection_dim: int | None = None,
        max_components: int | None = None,
        max_samples: int = 10_000,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, Any] | None = None,
        fit_split: str = "train",
        input_key: TargetSpec | None = None,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        log_figures: bool = True,
        name: str = "probe",
    ) -> None:
        super().__init__(sites, targets, mode=mode, fit_split=fit_split, every_n_epochs=every_n_epochs,
                         probe_loaders=probe_loaders, reduction=reduction, input_key=input_key,
                         forward_fn=forward_fn, log_figures=log_figures, name=name)
        if targets is None:
            raise ValueError("targets must name at least one target, e.g. {'digit': 'y'}")
        tasks = dict(task) if isinstance(task, Mapping) else {k: task for k in self.targets}
        for k in self.targets:
            if k not in tasks:
                raise ValueError(f"task has no entry for target {k!r}; give one of 'classification', 'regression'")
            if tasks[k] not in ("classification", "regression"):
                raise ValueError(f"task for target {k!r} must be 'classification' or 'regression', got {tasks[k]!r}")
        unknown = set(tasks) - set(self.targets)
        if unknown:
            raise ValueError(f"task names unknown targets {sorted(unknown)}; targets are {sorted(self.targets)}")
        self.tasks: dict[str, Task] = tasks
        if num_classes is not None and not isinstance(num_classes, (int, Mapping)):
            raise ValueError(f"num_classes must be an int or a {{target: int}} dict, got {num_classes!r}")
        self._num_classes = (
            dict(num_classes) if isinstance(num_classes, Mapping)
            else {k: num_classes for k, t in tasks.items() if t == "classification" and num_classes is not None}
        )
        self.alphas = tuple(float(a) for a in alphas)
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError(f"alphas must be a non-empty list of penalties > 0, got {list(alphas)}")
        if selection not in ("gcv", "heldout"):
            raise ValueError(f"selection must be 'gcv' or 'heldout', got {selection!r}")
        if selection == "heldout" and mode != "frozen":
            raise ValueError("selection='heldout' needs mode='frozen' (online probes choose the penalty by GCV)")
        if classifier not in ("ridge", "logistic"):
            raise ValueError(f"classifier must be 'ridge' or 'logistic', got {classifier!r}")
        self.selection, self.heldout_split, self.classifier = selection, heldout_split, classifier
        self.projection_dim, self.max_components, self.max_samples = projection_dim, max_components, max_samples

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, sites=self.site_patterns, targets=sorted(self.targets),
                                        mode=self.mode)

    # ------------------------------------------------------------------ the readout factory
    def target_features(self, target: str | None, y: Tensor | None) -> int:
        if self.tasks[target] == "classification":  # type: ignore[index]
            return self._resolve_num_classes(target)  # type: ignore[arg-type]
        return super().target_features(target, y)

    def fingerprint(self, site: str, target: str | None) -> dict[str, Any]:
        return {**super().fingerprint(site, target), "task": self.tasks[target]}  # type: ignore[index]

    def declared_outputs(self, target: str | None) -> tuple[str, int] | None:
        if target not in self.tasks or self.tasks[target] != "classification":
            return None
        try:
            return "num_classes", self._resolve_num_classes(target)
        except ValueError:  # not known yet (no module): checked at the first batch
            return None

    def _resolve_num_classes(self, target: str) -> int:
        if target in self._num_classes:
            return int(self._num_classes[target])
        for src in (self._module, self._datamodule):
            n = getattr(src, "num_classes", None)
            if isinstance(n, int):
                return n
        raise ValueError(
            f"classification target {target!r} needs num_classes: pass LinearProbe(num_classes=...) "
            f"(neither the LightningModule nor the datamodule has a num_classes attribute)"
        )

    def make_readouts(self, site: str, target: str | None, in_features: int, target_features: int) -> dict:
        task = self.tasks[target]  # type: ignore[index]
        readout = ProbeReadout(
            in_features,
            task=task,
            num_targets=target_features if task == "regression" else None,
            num_classes=target_features if task == "classification" else None,
            alphas=self.alphas,
            selection=self.selection,
            classifier=self.classifier if task == "classification" else "ridge",
            projection_dim=self.projection_dim,
            max_components=self.max_components,
            max_samples=self.max_samples,
            target_name=target,
        )
        return {"": readout}

    def fit_phases(self) -> list[tuple[str, str]]:
        phases = super().fit_phases()
        return phases + [(HELDOUT, self.heldout_split)] if self.selection == "heldout" else phases

    def probe_frozen(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Fit on the ``fit_split`` loader and score every other probe loader; return the scores."""
        return self.measure(trainer, pl_module)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.mode == "online" and stage in ("validate", "test") and not self.readouts:
            rank_zero_warn(
                f"LinearProbe(mode='online') in trainer.{stage}(): no training batches pass, so the probe is "
                f"scored only if it was fitted before (e.g. restored from a checkpoint); use mode='frozen'"
            )


