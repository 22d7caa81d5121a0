"""TapCallback: the machinery every lit_repr callback shares, so that a callback is a readout factory.

A callback declares its sites, its targets (target specs) and ``make_readouts(site, target,
in_features, target_features)``; this class owns everything else (see :class:`TapCallback`). The
readout contract is in :mod:`lit_repr.metrics.readout`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric
from typing_extensions import override

from lit_repr.callbacks.loaders import PaddingFilter, padding_filter, probe_loaders_for, shard
from lit_repr.callbacks.state import ReadoutState
from lit_repr.checks import check_int
from lit_repr.features import default_forward, frozen_mode, iterate_frozen, preserved_rng
from lit_repr.metrics.readout import FIT, HELDOUT, as_readout, scalars
from lit_repr.taps import Reduction, Tap
from lit_repr.targets import TargetSpec, check_target_spec, get_target, spec_fingerprint

__all__ = ["TapCallback", "default_forward", "frozen_mode", "probe_loaders_for", "normalize_targets"]

Mode = Literal["online", "frozen"]
Key = tuple[str, "str | None", str]  # (site, target, readout name)


def normalize_targets(targets: Mapping[str, TargetSpec] | TargetSpec | None, what: str = "targets") -> dict:
    """``{name: spec}`` from a dict, a bare spec (named by its string, else ``"target"``) or ``None``."""
    if targets is None:
        return {}
    if not isinstance(targets, Mapping):
        targets = {targets if isinstance(targets, str) else "target": targets}
    if not targets:
        raise ValueError(f"{what} must name at least one target, e.g. {{'digit': 'y'}}")
    return {str(k): check_target_spec(v, f"{what}[{k!r}]") for k, v in targets.items()}


def log_scores(trainer: pl.Trainer | None, pl_module: pl.LightningModule, scores: Mapping[str, float]) -> None:
    """Log a callback's scores (identical on every process) from an epoch-end hook.

    While fitting, the scores go straight to ``trainer.callback_metrics`` (where checkpointing and early
    stopping read them) and, in one call, to the trainer's loggers, at the step and with the ``epoch``
    key Lightning gives epoch-end metrics: ``LightningModule.log`` costs about 0.2 ms per value in
    Lightning's result bookkeeping, several milliseconds per validation for a probe on a few sites.
    In ``trainer.validate`` and ``trainer.test`` they go through ``LightningModule.log``, so that the
    results these return hold them.
    """
    connector = getattr(trainer, "_logger_connector", None)
    if trainer is None or connector is None or trainer.state.fn != "fit" or trainer.sanity_checking:
        for k, v in scores.items():
            pl_module.log(k, v, sync_dist=False)
        return
    values = {k: torch.tensor(float(v), dtype=torch.float32) for k, v in scores.items()}
    trainer.callback_metrics.update(values)
    connector.log_metrics(values)


def _warned_once(new: PaddingFilter | None, old: PaddingFilter | None) -> PaddingFilter | None:
    """``new`` (this epoch's filter of a loader), told that ``old`` (the last epoch's) found batches without an
    ``index`` and warned: one warning per loader and run, not one per epoch."""
    if new is not None and old is not None and not old.usable:
        new.usable = False
    return new


class TapCallback(ReadoutState, Callback):
    """Base of callbacks that read features at named sites: a callback is a *readout factory*.

    A subclass declares ``sites``, ``targets`` and :meth:`make_readouts`. This class owns:

    - the :class:`~lit_repr.taps.Tap` (attached at ``setup``, removed at ``teardown``);
    - lazy creation of the readouts of each (site, target) at its first batch, once the feature
      width is known;
    - feeding: ``mode="online"`` reads the forward passes training already makes (training batches
      fit, validation batches are scored); ``mode="frozen"`` runs the model in eval mode without
      gradients over named probe loaders (sharded across DDP processes) at the end of validation,
      leaving every RNG and every submodule's mode as it found them;
    - the ``every_n_epochs`` and sanity-check gate, the reset schedule, and every process joining
      each solve;
    - an early check: a wrong site fails at ``setup``, a wrong input or target spec at the first
      batch (frozen mode checks one batch when training starts);
    - logging ``<name>/<site>/<target>/<split>/<quantity>`` (no target segment for callbacks
      without targets), figures to TensorBoard, each warning once per (site, target) with the
      site named;
    - ``trainer.test``: online, the readouts fitted during training score the test batches; frozen,
      a measurement fits on ``fit_split`` and scores the test loaders (``test``, ``test_1``, ...);
    - under DDP, online training and evaluation batches lose the duplicates ``DistributedSampler``
      pads with, by their ``index`` (one warning per loader when batches have none);
    - ``state_dict``/``load_state_dict``: a changed configuration on resume warns and names what
      it drops; a readout whose target changed under the same name (its :meth:`fingerprint`) or
      whose widths changed starts fresh with a warning naming the change; an instance reused on
      another model starts with new readouts.

    Args:
        sites: submodule names or globs of the LightningModule.
        targets: ``{name: spec}`` (a batch key, a tuple position or a callable); ``None`` for
            readouts of the features alone.
        mode: ``"online"`` or ``"frozen"``.
        fit_split: the probe loader that fits (frozen mode); ``None`` when nothing is fitted.
        eval_splits: probe loaders scored (frozen mode); default: every loader but ``fit_split``.
        every_n_epochs: measure every this many epochs during ``fit`` (frozen mode).
        probe_loaders: named loaders for frozen mode (default: the datamodule's
            ``probe_dataloaders()``, else the trainer's train and validation loaders).
        reduction: how a site's output becomes a matrix (``"flatten"``, ``"mean"``, ...).
        input_key: where the input sits in a batch; default ``"x"`` for dicts, position 0 for tuples.
        forward_fn: replaces ``module(input)`` in frozen passes: ``forward_fn(module, batch)``.
        log_figures: log the readouts' figures to TensorBoard.
        name: prefix of logged metrics.

    Example:
        A new readout, the mean feature norm per site, is one small Metric and a few lines; it is
        exact under DDP (its states are sums) and resumable through the base alone:

        >>> import torch
        >>> from torchmetrics import Metric
        >>> class MeanNorm(Metric):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        ...         self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        ...     def update(self, features):
        ...         self.total += features.norm(dim=1).sum(); self.count += features.shape[0]
        ...     def compute(self):
        ...         return self.total / self.count
        >>> class NormMonitor(TapCallback):
        ...     def make_readouts(self, site, target, in_features, target_features):
        ...         return {"mean_norm": MeanNorm()}
        >>> from lit_repr.models import Classifier
        >>> from lit_repr.data import DigitsDataModule
        >>> monitor = NormMonitor(sites=["backbone.0"], name="norm")
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[monitor], logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(Classifier(in_features=64, hidden=[16]), DigitsDataModule())
        >>> sorted(monitor.scores)
        ['norm/backbone.0/test/mean_norm', 'norm/backbone.0/val/mean_norm']
    """

    #: rung of the evidence ladder its results stand on (1 association; see lit_repr.interventions.ladder)
    rung: int = 1
    #: the method that produces its results, as summaries and ladder reports name it
    method: str = "readout"

    def __init__(
        self,
        sites: str | Sequence[str],
        targets: Mapping[str, TargetSpec] | TargetSpec | None = None,
        mode: Mode = "frozen",
        fit_split: str | None = "train",
        eval_splits: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, Any] | None = None,
        reduction: Reduction = "flatten",
        input_key: TargetSpec | None = None,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        log_figures: bool = True,
        name: str = "readout",
    ) -> None:
        super().__init__()
        if isinstance(sites, str):
            sites = [sites]
        if not sites or not all(isinstance(s, str) for s in sites):
            raise ValueError(f"sites must name at least one submodule (strings), got {sites!r}")
        if input_key is not None:
            check_target_spec(input_key, "input_key")
        if forward_fn is not None and not callable(forward_fn):
            raise ValueError(f"forward_fn must be callable(module, batch), got {forward_fn!r}")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
        if mode not in ("online", "frozen"):
            raise ValueError(f"mode must be 'online' or 'frozen', got {mode!r}")
        check_int("every_n_epochs", every_n_epochs)
        if eval_splits is not None and fit_split in eval_splits:
            raise ValueError(f"eval_splits {list(eval_splits)} must not contain fit_split {fit_split!r}")
        self.site_patterns = list(sites)
        self.targets = normalize_targets(targets)
        self.mode = mode
        self.fit_split = fit_split
        self.eval_splits = list(eval_splits) if eval_splits is not None else None
        self.every_n_epochs = every_n_epochs
        self.probe_loaders = dict(probe_loaders) if probe_loaders else None
        self.reduction = reduction
        self.input_key = input_key
        self.forward_fn = forward_fn or default_forward(input_key)
        self.log_figures = log_figures
        self.name = name
        self.tap: Tap | None = None
        self.readouts: dict[Key, nn.Module] = {}
        self.widths: dict[tuple[str, str | None], tuple[int, int]] = {}
        self.scores: dict[str, float] = {}
        self._module: pl.LightningModule | None = None
        self._datamodule: pl.LightningDataModule | None = None
        self._splits: list[str] = []  # evaluation splits fed since the last reset
        self._fit_fed = False
        self._warned: set[tuple] = set()
        self._restored: set[tuple[str, str | None]] = set()  # (site, target) loaded, widths not yet seen
        self._padding: dict[int, PaddingFilter | None] = {}  # per evaluation loader (online DDP)
        self._train_padding: PaddingFilter | None = None  # of this epoch's training loader (online DDP)

    # ------------------------------------------------------------------ what a subclass declares
    def make_readouts(self, site: str, target: str | None, in_features: int, target_features: int) -> Mapping:
        """The readouts of one (site, target): ``{name: readout}`` (Metrics or the readout protocol).

        ``name`` prefixes the quantities of dict results and names a scalar result.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_readouts()")

    def read_targets(self, batch: Any, features: Mapping[str, Tensor]) -> dict[str | None, Any]:
        """``{target name: tensor, or {site: tensor}}`` of a batch; ``{None: None}`` without targets."""
        if not self.targets:
            return {None: None}
        return {t: get_target(batch, spec, f"target {t!r}") for t, spec in self.targets.items()}

    def target_features(self, target: str | None, y: Tensor | None) -> int:
        """The width the factory is told for ``target`` (columns of a target batch)."""
        return 0 if y is None else (1 if y.ndim == 1 else int(y[0].numel()))

    def fit_phases(self) -> list[tuple[str, str]]:
        """``[(phase, loader name)]`` run before the solve in frozen mode (phase ``"fit"`` or ``"heldout"``)."""
        return [(FIT, self.fit_split)] if self.fit_split is not None else []

    def fingerprint(self, site: str, target: str | None) -> dict[str, Any]:
        """What defines the readouts of (site, target) beyond their widths, saved with them.

        A checkpoint whose fingerprint differs from the current one was made for another target:
        its readouts are not restored (a warning names what changed). Subclasses add their own
        entries (a probe adds its task and number of classes).
        """
        spec = self.targets.get(target) if target is not None else None
        return {"target": spec_fingerprint(spec)} if spec is not None else {}

    # ------------------------------------------------------------------ sites and taps
    @property
    def sites(self) -> list[str]:
        return self.tap.sites if self.tap is not None else list(self.site_patterns)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, sites=self.site_patterns, targets=sorted(self.targets))

    def forget(self) -> None:
        """Drop every readout and score (the next batch creates them anew, at the widths it has)."""
        self.readouts, self.widths, self.scores = {}, {}, {}
        self._splits, self._fit_fed, self._restored = [], False, set()

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._module is not None and self._module is not pl_module:
            self.forget()  # an instance reused on another model: its readouts belong to the old one
        if self.tap is None or self.tap.model is not pl_module:
            if self.tap is not None:
                self.tap.remove()
            self.tap = Tap(pl_module, self.site_patterns, reduction=self.reduction)  # wrong sites fail here
            self.tap.enabled = False
        self._module, self._datamodule = pl_module, getattr(trainer, "datamodule", None)
        for r in self.readouts.values():
            r.to(pl_module.device)
        # values logged here are identical on every process by construction (states are summed first)
        warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('{re.escape(self.name)}/")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    @contextmanager
    def attached(self, pl_module: nn.Module) -> Iterator[Tap]:
        """The callback's tap on ``pl_module``, attached for the block if the callback is not set up."""
        if self.tap is not None and self.tap.model is pl_module:
            yield self.tap
            return
        tap = Tap(pl_module, self.site_patterns, reduction=self.reduction)
        tap.enabled = False
        self.tap, self._module = tap, pl_module  # type: ignore[assignment]
        try:
            yield tap
        finally:
            tap.remove()
            self.tap = None

    # ------------------------------------------------------------------ readouts
    def _readouts_for(self, site: str, target: str | None, f: Tensor, y: Tensor | None) -> list[tuple[Key, Any]]:
        if (site, target) in self._restored:  # restored from a checkpoint: the widths must still hold
            self._restored.discard((site, target))
            saved, now = self.widths[(site, target)], (int(f.shape[1]), self.target_features(target, y))
            if saved != now:
                changes = [f"{what} {a} -> {b}" for what, a, b in zip(("feature width", "target width"), saved, now)
                           if a != b]
                self.drop(site, target)
                rank_zero_warn(
                    f"{self.name}: the checkpoint's readouts of site {site!r}"
                    + (f", target {target!r}" if target is not None else "")
                    + f" were made for another configuration ({', '.join(changes)}); they start fresh"
                )
        if (site, target) not in self.widths:
            self._create(site, target, int(f.shape[1]), self.target_features(target, y), f.device)
        return [(k, r) for k, r in self.readouts.items() if k[0] == site and k[1] == target]

    def _create(self, site: str, target: str | None, in_features: int, target_features: int, device: Any) -> None:
        made = self.make_readouts(site, target, in_features, target_features)
        for rname, r in made.items():
            r = as_readout(r, rname).to(device)
            for m in r.modules():  # checkpoints hold every statistic (torchmetrics states are not saved by default)
                if isinstance(m, Metric):
                    m.persistent(True)
            self.readouts[(site, target, rname)] = r
        self.widths[(site, target)] = (in_features, target_features)

    def drop(self, site: str, target: str | None) -> None:
        """Forget the readouts of (site, target); the next batch creates them anew."""
        for k in [k for k in self.readouts if k[:2] == (site, target)]:
            del self.readouts[k]
        self.widths.pop((site, target), None)
        self._restored.discard((site, target))

    def readout(self, site: str, target: str | None = None, name: str | None = None) -> Any:
        """The readout of ``site`` and ``target`` (after the first batch); ``name`` if it has several."""
        found = [(k, r) for k, r in self.readouts.items() if k[:2] == (site, target) and name in (None, k[2])]
        if not found:
            raise KeyError(f"no readout for site {site!r} and target {target!r} yet; readouts: {list(self.readouts)}")
        return found[0][1]

    def paired(self, features: Mapping[str, Tensor], batch: Any) -> Iterator[tuple[str, str | None, Tensor, Any]]:
        """``(site, target, features, target batch)`` for every pair, the rows checked to match."""
        device = next(iter(features.values())).device
        for target, y in self.read_targets(batch, features).items():
            if isinstance(y, Tensor) and y.device != device:
                y = y.to(device)
            for site, f in features.items():
                ys = y.get(site) if isinstance(y, Mapping) else y
                if isinstance(ys, Tensor) and ys.shape[0] != f.shape[0]:
                    raise ValueError(
                        f"{self.name}: site {site!r} produced {f.shape[0]} feature rows but target {target!r} "
                        f"has {ys.shape[0]} samples; a training step with several forward passes needs a "
                        f"forward_fn or a target spec that matches"
                    )
                yield site, target, f, ys

    def feed(self, features: Mapping[str, Tensor], batch: Any, split: str) -> None:
        """Send one batch of features (``{site: (B, D)}``) and its targets to every readout."""
        for site, target, f, ys in self.paired(features, batch):
            for _, r in self._readouts_for(site, target, f, ys):
                if split in (FIT, HELDOUT) or self.mode == "frozen" or getattr(r, "fitted", True):
                    r.update(f, ys, split)
        if split == FIT:
            self._fit_fed = True
        elif split != HELDOUT and split not in self._splits:
            self._splits.append(split)

    def flush(self) -> None:
        """Let every readout that holds batches back add them to its statistics (see the readout contract)."""
        for r in self.readouts.values():
            if hasattr(r, "flush"):
                r.flush()

    def reset(self) -> None:
        """Forget every readout's statistics (fitted parameters may stay)."""
        for r in self.readouts.values():
            r.reset()
        self._splits, self._fit_fed = [], False

    def solve(self) -> None:
        """Fit every readout that fits; every process takes part (states are summed first)."""
        for (site, target, _), r in self.readouts.items():
            if hasattr(r, "fit"):
                with self._warnings_once(site, target):
                    r.fit()

    # ------------------------------------------------------------------ results
    def tag(self, site: str, target: str | None, split: str, quantity: str) -> str:
        parts = [self.name, site] + ([target] if target is not None else []) + [split, quantity]
        return "/".join(parts)

    def report(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule | None, log: bool = True) -> dict:
        """Compute every readout on the fit and each evaluation split fed; log, draw and return the scores."""
        scores: dict[str, float] = {}
        fit_name = self.fit_split if self.mode == "frozen" and self.fit_split else "train"
        splits = ([FIT] if self._fit_fed or self.mode == "online" else []) + list(self._splits)
        for (site, target, rname), r in self.readouts.items():
            for split in splits:
                shown = fit_name if split == FIT else split
                with self._warnings_once(site, target):
                    result = r.compute(split)
                for q, v in scalars(result, rname).items():
                    scores[self.tag(site, target, shown, q)] = v
                if self.log_figures and trainer is not None and hasattr(r, "figures") and split != FIT:
                    title = "/".join(self.tag(site, target, shown, "").split("/")[:-1])
                    for fname, fig in (r.figures(split, title) if trainer.is_global_zero else {}).items():
                        self.add_figure(trainer, self.tag(site, target, shown, fname), fig)
        self.scores = scores
        if log and pl_module is not None:
            log_scores(trainer, pl_module, scores)
        return scores

    @contextmanager
    def _warnings_once(self, site: str, target: str | None) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            key = (site, target, w.category, re.sub(r"[\d.]+", "#", str(w.message)))
            if key not in self._warned:
                self._warned.add(key)
                where = f"site {site!r}" + (f", target {target!r}" if target is not None else "")
                rank_zero_warn(f"{self.name} at {where}: {w.message}", category=w.category)

    @staticmethod
    def add_figure(trainer: pl.Trainer, tag: str, figure: Any) -> bool:
        """Send a matplotlib figure to every TensorBoard logger; close it. Returns whether logged."""
        import matplotlib.pyplot as plt

        logged = False
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)
                    logged = True
        plt.close(figure)
        return logged

    # ------------------------------------------------------------------ frozen mode
    def run_frozen(self, trainer: pl.Trainer, pl_module: nn.Module, loader: Any, split: str) -> None:
        """Feed this process's shard of ``loader`` through the frozen model to every readout as ``split``."""
        loader = shard(loader, trainer.global_rank, trainer.world_size)
        assert self.tap is not None
        for feats, batch in iterate_frozen(pl_module, self.tap, loader, self.forward_fn, pl_module.device):
            self.feed(feats, batch, split)

    def measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, log: bool = False,
        eval_loaders: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """One frozen measurement: fit phases, solve, evaluation splits; return (and ``log``) the scores.

        ``eval_loaders`` (``{split: loader}``) replaces the evaluation splits of the probe loaders
        (``trainer.test`` scores its own loaders). A split whose loader is empty is reported as
        undefined (NaN) with a warning.
        """
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        phases = self.fit_phases()
        if eval_loaders is not None:
            loaders = {**loaders, **eval_loaders}
            evals = list(eval_loaders)
        else:
            evals = self.eval_splits if self.eval_splits is not None else [s for s in loaders if s != self.fit_split]
        for wanted in [n for _, n in phases] + list(evals):
            if wanted not in loaders:
                raise ValueError(f"{self.name}: split {wanted!r} is not among the probe loaders {sorted(loaders)}")
        with self.attached(pl_module):
            self.reset()
            for phase, loader_name in phases:
                self.run_frozen(trainer, pl_module, loaders[loader_name], phase)
            self.solve()
            for split in evals:
                self.run_frozen(trainer, pl_module, loaders[split], split)
                if split not in self._splits:  # an empty loader (or shard): still reported, as undefined
                    self._splits.append(split)
            return self.report(trainer, pl_module, log=log)

    def check_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve the input and targets on one batch of the first frozen loader (no state changes)."""
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        first = next((n for _, n in self.fit_phases()), None) or next(iter(self.eval_splits or loaders), None)
        if first not in loaders:
            raise ValueError(f"{self.name}: split {first!r} is not among the probe loaders {sorted(loaders)}")
        with preserved_rng():
            batch = next(iter(loaders[first]), None)
        if batch is None or self.tap is None:
            return
        for feats, b in iterate_frozen(pl_module, self.tap, [batch], self.forward_fn, pl_module.device):
            for _ in self.paired(feats, b):
                pass

    # ------------------------------------------------------------------ hooks
    def _measuring_now(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return trainer.state.fn != "fit" or trainer.current_epoch % self.every_n_epochs == 0

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "frozen":
            self.check_batch(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "online":
            self.reset()
            # under DDP the training loader's sampler pads an indivisible split with duplicates: this
            # epoch's (its sampler has its epoch already) are dropped from the fitting split by 'index'
            flt = padding_filter(trainer.train_dataloader, "training") if trainer.world_size > 1 else None
            self._train_padding = _warned_once(flt, self._train_padding)

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
        if self.mode == "online" and self.tap is not None:
            self.tap.enabled = False
            if self.tap.has_features():
                feats = self.tap.read()
                if self._train_padding is not None:
                    feats, batch = self._train_padding(feats, batch, self.name)
                self.feed(feats, batch, FIT)
            if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's rows are all in
                self.flush()

    def _eval_epoch_start(self, trainer: pl.Trainer, loaders: Any) -> None:
        if self._fit_fed:
            self.solve()
        for r in self.readouts.values():
            for split in self._splits:
                r.reset(split)
        self._splits = []
        listed = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        self._padding = {i: _warned_once(padding_filter(dl), self._padding.get(i)) for i, dl in enumerate(listed)
                         if dl is not None}

    def _eval_batch_start(self, trainer: pl.Trainer) -> None:
        if self.mode == "online" and self.tap is not None:
            self.tap.clear()
            self.tap.enabled = not trainer.sanity_checking and self._online_ready()

    def _eval_batch_end(self, batch: Any, dataloader_idx: int, stem: str) -> None:
        if self.mode == "online" and self.tap is not None and self.tap.enabled:
            self.tap.enabled = False
            if self.tap.has_features():
                feats = self.tap.read()
                flt = self._padding.get(dataloader_idx)
                if flt is not None:
                    feats, batch = flt(feats, batch, self.name)
                self.feed(feats, batch, stem if dataloader_idx == 0 else f"{stem}_{dataloader_idx}")

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "online" and not trainer.sanity_checking:
            self._eval_epoch_start(trainer, trainer.val_dataloaders)

    def _online_ready(self) -> bool:
        return bool(self.readouts) and all(getattr(r, "fitted", True) for r in self.readouts.values())

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start(trainer)

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch_end(batch, dataloader_idx, "val")

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._measuring_now(trainer):
            return
        if self.mode == "online":
            if self._splits:
                self.report(trainer, pl_module)
            return
        self.measure(trainer, pl_module, log=True)

    # trainer.test: online, the readouts fitted on training score the test batches; frozen, a
    # measurement fits on the fit split and scores the test loaders (named test, test_1, ...)
    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "online":
            self._eval_epoch_start(trainer, trainer.test_dataloaders)

    @override
    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start(trainer)

    @override
    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch_end(batch, dataloader_idx, "test")

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "online":
            if self._splits:
                self.report(trainer, pl_module)
            return
        tests = trainer.test_dataloaders
        listed = tests if isinstance(tests, (list, tuple)) else [tests] if tests is not None else []
        try:
            probe_loaders_for(trainer, self.probe_loaders)
        except ValueError as err:
            rank_zero_warn(f"{self.name}: not measured in trainer.test(): {err}")
            return
        self.measure(trainer, pl_module, log=True,
                     eval_loaders={("test" if i == 0 else f"test_{i}"): dl for i, dl in enumerate(listed)})
