"""LinearProbe: frozen-feature linear probes that attach to any Lightning run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_repr.callbacks.base import Mode, TapCallback, probe_loaders_for
from lit_repr.metrics.probe import ProbeReadout, Task
from lit_repr.metrics.ridge import DEFAULT_ALPHAS
from lit_repr.taps import Reduction
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = ["LinearProbe"]


class LinearProbe(TapCallback):
    """Linear probes on the features of named sites, fitted in closed form, for any Lightning run.

    For every site and every target, a ridge probe is fitted from streamed sufficient statistics
    (exact under DDP, memory independent of the data size) with the penalty chosen by
    generalised cross-validation over ``alphas``, then scored on evaluation splits. Metrics are
    logged as ``<name>/<site>/<target>/<split>/<quantity>``: ``r2``, ``pearson``, ``spearman``,
    ``mse`` for regression targets (averaged over output dimensions), ``acc`` and ``auroc`` for
    classification; plus ``.../alpha``, the chosen penalty. Regression targets also get a
    predicted-vs-true figure in TensorBoard.

    Two modes:

    - ``"online"``: features come from the forward passes training already makes (no second
      forward pass). The probe is fitted on the features seen during the epoch's training batches
      (the model changes during the epoch: this is the standard online-probe approximation) and
      scored on the validation batches. Evaluation split names are ``val`` (``val_1``, ... for
      further validation loaders).
    - ``"frozen"``: at the end of validation every ``every_n_epochs`` epochs, the model runs in
      eval mode without gradients over named probe loaders: ``probe_loaders`` if given, else the
      datamodule's ``probe_dataloaders()``, else the trainer's train and validation loaders. The
      ``fit_split`` loader fits; every other loader (``val``, ``test``, ``ood``, ...) is scored.
      Each submodule's train/eval mode is restored afterwards; BatchNorm statistics are untouched.

    Args:
        sites: submodule names or globs, e.g. ``["backbone.layer3"]`` or ``"backbone.*"``.
        targets: ``{name: spec}``; a spec is a batch key, a tuple position or a callable. A bare
            spec means ``{"y": spec}``-like naming (the spec's string, or ``"target"``).
        task: ``"classification"`` or ``"regression"``, or a ``{target name: task}`` dict.
        num_classes: classes of classification targets (int or dict); default: the module's or
            datamodule's ``num_classes`` attribute.
        mode: ``"online"`` or ``"frozen"``.
        alphas: ridge penalties to choose from (scikit-learn's convention).
        selection: how the penalty is chosen: ``"gcv"`` (generalised cross-validation on the
            fitting split, exact from its statistics) or ``"heldout"`` (lowest error on the
            ``heldout_split`` loader; frozen mode only).
        heldout_split: the probe loader that chooses the penalty when ``selection="heldout"``.
        classifier: ``"ridge"`` (least squares on one-hot targets) or ``"logistic"`` (L-BFGS on
            cached features; memory grows with the fitting split up to ``max_cache_samples``).
        reduction: how a site's output becomes a feature matrix (``"flatten"``, ``"mean"``, ...).
        projection_dim: random projection of high-dimensional features before fitting.
        max_components: ridge on the leading principal components only.
        every_n_epochs: probe every this many epochs (frozen mode).
        probe_loaders: named loaders for frozen mode.
        fit_split: the loader (frozen) that fits the probe.
        input_key: where the model input sits in a batch (frozen mode calls ``module(input)``).
        forward_fn: replaces that call: ``forward_fn(module, batch)``.
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
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, DataLoader] | None = None,
        fit_split: str = "train",
        input_key: TargetSpec = "x",
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        log_figures: bool = True,
        name: str = "probe",
    ) -> None:
        super().__init__(sites, reduction=reduction, input_key=input_key, forward_fn=forward_fn, name=name)
        if not isinstance(targets, Mapping):
            targets = {targets if isinstance(targets, str) else "target": targets}
        if not targets:
            raise ValueError("targets must name at least one target, e.g. {'digit': 'y'}")
        self.targets = {str(k): check_target_spec(v, f"targets[{k!r}]") for k, v in targets.items()}
        tasks = dict(task) if isinstance(task, Mapping) else {k: task for k in self.targets}
        for k in self.targets:
            if k not in tasks:
                raise ValueError(f"task has no entry for target {k!r}; give one of 'classification', 'regression'")
            if tasks[k] not in ("classification", "regression"):
                raise ValueError(f"task for target {k!r} must be 'classification' or 'regression', got {tasks[k]!r}")
        unknown = set(tasks) - set(self.targets)
        if unknown:
            raise ValueError(f"task names unknown targets {sorted(unknown)}; targets are {sorted(self.targets)}")
        self.tasks = tasks
        if num_classes is not None and not isinstance(num_classes, Mapping):
            num_classes = {k: num_classes for k, t in tasks.items() if t == "classification"}
        self._num_classes = dict(num_classes or {})
        if mode not in ("online", "frozen"):
            raise ValueError(f"mode must be 'online' or 'frozen', got {mode!r}")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive int, got {every_n_epochs!r}")
        self.mode = mode
        self.alphas = tuple(float(a) for a in alphas)
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError(f"alphas must be a non-empty list of penalties > 0, got {list(alphas)}")
        if selection not in ("gcv", "heldout"):
            raise ValueError(f"selection must be 'gcv' or 'heldout', got {selection!r}")
        if selection == "heldout" and mode != "frozen":
            raise ValueError("selection='heldout' needs mode='frozen' (online probes choose the penalty by GCV)")
        self.selection = selection
        self.heldout_split = heldout_split
        if classifier not in ("ridge", "logistic"):
            raise ValueError(f"classifier must be 'ridge' or 'logistic', got {classifier!r}")
        self.classifier = classifier
        self.projection_dim = projection_dim
        self.max_components = max_components
        self.every_n_epochs = every_n_epochs
        self.probe_loaders = dict(probe_loaders) if probe_loaders else None
        self.fit_split = fit_split
        self.log_figures = log_figures
        self.readouts = nn.ModuleDict()
        self._keys: dict[tuple[str, str], str] = {}
        self._dims: dict[str, tuple[int, int]] = {}
        self._module: pl.LightningModule | None = None
        self.scores: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            name=self.name,
            sites=self.site_patterns,
            targets=sorted(self.targets),
            mode=self.mode,
        )

    # ------------------------------------------------------------------ readouts
    def _resolve_num_classes(self, target: str, pl_module: pl.LightningModule, trainer: pl.Trainer | None) -> int:
        if target in self._num_classes:
            return int(self._num_classes[target])
        for src in (pl_module, getattr(trainer, "datamodule", None)):
            n = getattr(src, "num_classes", None)
            if isinstance(n, int):
                return n
        raise ValueError(
            f"classification target {target!r} needs num_classes: pass LinearProbe(num_classes=...) "
            f"(neither the LightningModule nor the datamodule has a num_classes attribute)"
        )

    def _readout(
        self,
        site: str,
        target: str,
        feats: Tensor,
        y: Tensor,
        pl_module: pl.LightningModule,
        trainer: pl.Trainer | None,
    ) -> ProbeReadout:
        key = self._keys.get((site, target))
        if key is not None:
            return self.readouts[key]  # type: ignore[return-value]
        task = self.tasks[target]
        if task == "classification":
            num_out = self._resolve_num_classes(target, pl_module, trainer)
        else:
            num_out = 1 if y.ndim == 1 else int(y[0].numel())
        return self._make_readout(site, target, feats.shape[1], num_out, feats.device)

    def _make_readout(self, site: str, target: str, num_features: int, num_out: int, device: Any) -> ProbeReadout:
        task = self.tasks[target]
        key = f"r{len(self._keys)}"
        readout = ProbeReadout(
            num_features,
            task=task,
            num_targets=num_out if task == "regression" else None,
            num_classes=num_out if task == "classification" else None,
            alphas=self.alphas,
            selection=self.selection,
            classifier=self.classifier if task == "classification" else "ridge",
            projection_dim=self.projection_dim,
            max_components=self.max_components,
        ).to(device)
        self.readouts[key] = readout
        self._keys[(site, target)] = key
        self._dims[key] = (num_features, num_out)
        return readout

    def readout(self, site: str, target: str) -> ProbeReadout:
        """The :class:`ProbeReadout` of ``site`` and ``target`` (after the first batch)."""
        key = self._keys.get((site, target))
        if key is None:
            raise KeyError(f"no probe for site {site!r} and target {target!r} yet; probes: {list(self._keys)}")
        return self.readouts[key]  # type: ignore[return-value]

    def _feed(
        self,
        feats: dict[str, Tensor],
        batch: Any,
        pl_module: pl.LightningModule,
        trainer: pl.Trainer | None,
        split: str | None,
        heldout: bool = False,
    ) -> None:
        """Send a batch of features to every readout: to the fit statistics (split None) or an eval split."""
        ys = {t: get_target(batch, spec, f"target {t!r}") for t, spec in self.targets.items()}
        for t, y in ys.items():
            y = y.to(pl_module.device) if isinstance(y, Tensor) else y
            for site, f in feats.items():
                if y.shape[0] != f.shape[0]:
                    raise ValueError(
                        f"site {site!r} produced {f.shape[0]} feature rows but target {t!r} has {y.shape[0]} "
                        f"samples; a training step with several forward passes needs a forward_fn or a "
                        f"target spec that matches"
                    )
                r = self._readout(site, t, f, y, pl_module, trainer)
                if heldout:
                    r.update_heldout(f, y)
                elif split is None:
                    r.update_fit(f, y)
                else:
                    r.update_eval(split, f, y)

    def _fit_all(self, trainer: pl.Trainer) -> None:
        # under DDP every process must join every solve (the statistics are summed first)
        for r in self.readouts.values():
            if trainer.world_size > 1 or r.n_fit >= 2:
                r.fit()

    def _log_eval(self, trainer: pl.Trainer, pl_module: pl.LightningModule, splits: Sequence[str]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for (site, target), key in self._keys.items():
            r: ProbeReadout = self.readouts[key]  # type: ignore[assignment]
            if not r.fitted:
                continue
            prefix = f"{self.name}/{site}/{target}"
            scores[f"{prefix}/alpha"] = r.alpha
            for split in splits:
                if split not in r.evals:
                    continue
                for q, v in r.compute_eval(split).items():
                    scores[f"{prefix}/{split}/{q}"] = float(v.float().mean())
                if self.log_figures and r.task == "regression" and trainer.is_global_zero:
                    data = r.plot_data(split)
                    if data is not None:
                        fig = _pred_vs_true(*data, title=f"{prefix} ({split})")
                        self.add_figure(trainer, f"{prefix}/{split}/pred_vs_true", fig)
            r.reset_eval()
        self.scores = scores
        try:
            for k, v in scores.items():
                pl_module.log(k, v, sync_dist=False)
        except MisconfigurationException:
            pass  # called outside a Trainer loop (by hand): scores are returned and kept in .scores
        return scores

    # ------------------------------------------------------------------ online mode
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "online":
            for r in self.readouts.values():
                r.reset_fit()

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.mode == "online" and self.tap is not None:
            self.tap.clear()
            self.tap.enabled = True

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.mode != "online" or self.tap is None:
            return
        self.tap.enabled = False
        if self.tap.has_features():
            self._feed(self.tap.read(), batch, pl_module, trainer, split=None)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for r in self.readouts.values():
            r.reset_eval()
        if self.mode == "online" and not trainer.sanity_checking:
            self._fit_all(trainer)

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.mode == "online" and self.tap is not None:
            self.tap.clear()
            self.tap.enabled = not trainer.sanity_checking and any(r.fitted for r in self.readouts.values())

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.mode != "online" or self.tap is None or not self.tap.enabled:
            return
        self.tap.enabled = False
        if self.tap.has_features():
            split = "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"
            self._feed(self.tap.read(), batch, pl_module, trainer, split=split)

    # ------------------------------------------------------------------ both modes
    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.mode == "online":
            self._log_eval(trainer, pl_module, sorted({s for r in self.readouts.values() for s in r.evals}))
            return
        if trainer.current_epoch % self.every_n_epochs != 0 and trainer.state.fn == "fit":
            return
        self.probe_frozen(trainer, pl_module)

    def probe_frozen(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Fit on the ``fit_split`` loader and score every other probe loader; log and return scores."""
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        if self.fit_split not in loaders:
            raise ValueError(f"fit_split {self.fit_split!r} is not among the probe loaders {sorted(loaders)}")
        temporary = self.tap is None  # called by hand after a run: attach, probe, detach
        if temporary:
            TapCallback.setup(self, trainer, pl_module, "validate")
        try:
            return self._probe_frozen(trainer, pl_module, loaders)
        finally:
            if temporary:
                self.teardown(trainer, pl_module, "validate")

    def _probe_frozen(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loaders: dict[str, DataLoader]
    ) -> dict[str, float]:
        for r in self.readouts.values():
            r.reset_fit()
        self.run_frozen(
            trainer, pl_module, loaders[self.fit_split], lambda f, b: self._feed(f, b, pl_module, trainer, split=None)
        )
        if self.selection == "heldout":
            if self.heldout_split not in loaders:
                raise ValueError(
                    f"heldout_split {self.heldout_split!r} is not among the probe loaders {sorted(loaders)}"
                )
            self.run_frozen(
                trainer,
                pl_module,
                loaders[self.heldout_split],
                lambda f, b: self._feed(f, b, pl_module, trainer, split=None, heldout=True),
            )
        self._fit_all(trainer)
        evals = [s for s in loaders if s != self.fit_split]
        for split in evals:
            self.run_frozen(
                trainer, pl_module, loaders[split], lambda f, b, s=split: self._feed(f, b, pl_module, trainer, split=s)
            )
        return self._log_eval(trainer, pl_module, evals)

    # ------------------------------------------------------------------ state
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._module = pl_module
        if (
            self.mode == "online"
            and stage in ("validate", "test")
            and not any(r.fitted for r in self.readouts.values())
        ):
            rank_zero_warn(
                f"LinearProbe(mode='online') in trainer.{stage}(): no training batches pass, so the probe is "
                f"scored only if it was fitted before (e.g. restored from a checkpoint); use mode='frozen'"
            )
        self.readouts.to(pl_module.device)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": {f"{s}\x1f{t}": k for (s, t), k in self._keys.items()},
            "dims": dict(self._dims),
            "readouts": {k: {n: v.detach().cpu() for n, v in r.state_dict().items()} for k, r in self.readouts.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        keys = state_dict.get("keys", {})
        dims = state_dict.get("dims", {})
        device = self._module.device if self._module is not None else "cpu"
        self.readouts = nn.ModuleDict()
        self._keys, self._dims = {}, {}
        for joined, key in sorted(keys.items(), key=lambda kv: int(kv[1][1:])):
            site, target = joined.split("\x1f")
            if target not in self.targets:
                continue
            nf, no = dims[key]
            r = self._make_readout(site, target, int(nf), int(no), device)
            saved = state_dict.get("readouts", {}).get(key, {})
            for buf in ("weight", "bias"):
                if buf in saved:
                    setattr(r, buf, saved[buf].to(device))
            r.load_state_dict(saved, strict=False)


def _pred_vs_true(pred: Tensor, true: Tensor, title: str) -> Any:
    """Scatter of predicted against true values, one panel per output dimension (at most 6)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = min(pred.shape[1], 6)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
    for i in range(k):
        ax = axes[0, i]
        t, p = true[:, i].numpy(), pred[:, i].numpy()
        ax.scatter(t, p, s=4, alpha=0.5)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        r2 = 1 - float(((t - p) ** 2).sum()) / max(float(((t - t.mean()) ** 2).sum()), 1e-12)
        ax.set_title((f"dim {i}: " if k > 1 else "") + f"R² = {r2:.3f} (n = {len(t)})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
