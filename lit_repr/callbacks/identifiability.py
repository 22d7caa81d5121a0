"""IdentifiabilityMetrics and RepresentationSimilarity: ground-truth and model-to-model readouts.

Both are readout factories on :class:`~lit_repr.callbacks.TapCallback`: what they log is computed
by the exported Metrics (:class:`~lit_repr.metrics.LinearIdentifiability`,
:class:`~lit_repr.metrics.MeanCorrelationCoefficient`, :class:`~lit_repr.metrics.KernelIdentifiability`,
:class:`~lit_repr.metrics.DCI`, :class:`~lit_repr.metrics.LinearCKA`,
:class:`~lit_repr.metrics.MutualKNNAlignment`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lit_repr.callbacks.base import Mode, TapCallback
from lit_repr.checks import check_int
from lit_repr.features import detached_copy
from lit_repr.metrics.figures import matched_heatmap
from lit_repr.metrics.identifiability import DCI, KernelIdentifiability, LinearIdentifiability
from lit_repr.metrics.mcc import MCCResult, MeanCorrelationCoefficient
from lit_repr.metrics.readout import MetricReadout
from lit_repr.metrics.ridge import DEFAULT_ALPHAS
from lit_repr.metrics.similarity import LinearCKA, MutualKNNAlignment
from lit_repr.taps import Reduction, Tap
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = ["IdentifiabilityMetrics", "RepresentationSimilarity"]

_IDENT_METRICS = ("linear_r2", "mcc", "kernel_r2", "dci")


def _mcc_quantities(res: MCCResult) -> dict[str, float]:
    per_factor = res.per_factor.reshape(-1).tolist()
    return {"": float(res.mean), **{f"factor{i}": float(v) for i, v in enumerate(per_factor)}}


class IdentifiabilityMetrics(TapCallback):
    """How well do a model's features recover ground-truth latent factors?

    At the end of validation (every ``every_n_epochs`` epochs; frozen mode), the model runs frozen
    over the ``fit_split`` and ``eval_split`` probe loaders, whose batches carry the ground truth
    (``latents`` by default); in online mode the training batches fit and the validation batches are
    scored. Per site it logs, under ``<name>/<site>/<latents>/<eval_split>/``:

    - ``linear_r2`` (uniform average), ``linear_r2_factor{i}``, ``linear_pearson_factor{i}``:
      :class:`~lit_repr.metrics.LinearIdentifiability`, a ridge map from features to latents fitted
      on ``fit_split`` from streamed statistics (exact under DDP, GCV penalty; the penalty is logged
      as ``<fit_split>/linear_alpha``);
    - ``mcc`` and ``mcc_factor{i}``: :class:`~lit_repr.metrics.MeanCorrelationCoefficient` (Pearson,
      Hungarian matching) streamed over the whole evaluation split, and a heat map of the matched
      correlations;
    - ``kernel_r2`` (optional, costly: RBF kernel ridge with cross-validated penalty and bandwidth on
      ``max_samples`` samples);
    - ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` (optional, costly).

    Args:
        sites: submodule names or globs.
        latents: where the ground truth sits in a batch (key, position or callable).
        metrics: any of ``"linear_r2"``, ``"mcc"``, ``"kernel_r2"``, ``"dci"``.
        mode: ``"frozen"`` (default) or ``"online"``.
        fit_split: probe loader that fits the linear map (and trains DCI's regressors).
        eval_split: probe loader on which everything is scored.
        max_samples: samples kept per split for kernel R² and DCI (a bounded uniform sample).
        every_n_epochs: how often to measure during ``fit``.
        probe_loaders: named loaders; default: the datamodule's ``probe_dataloaders()``.
        alphas: ridge penalties.
        reduction: how a site's output becomes a feature matrix.
        input_key: where the model input sits in a batch (default ``"x"``, or position 0 of tuples).
        forward_fn: replaces ``module(input)`` in frozen passes.
        log_figures: log the MCC correlation heat map.
        name: prefix of logged metrics.

    Example:
        >>> cb = IdentifiabilityMetrics(sites=["backbone"], latents="latents", metrics=["linear_r2", "mcc"])
        >>> cb.metrics
        ('linear_r2', 'mcc')
    """

    method = "identifiability metrics"

    def __init__(
        self,
        sites: str | Sequence[str],
        latents: TargetSpec = "latents",
        metrics: Sequence[str] = ("linear_r2", "mcc"),
        mode: Mode = "frozen",
        fit_split: str = "train",
        eval_split: str = "val",
        max_samples: int = 2000,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, Any] | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        reduction: Reduction = "flatten",
        input_key: TargetSpec | None = None,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        log_figures: bool = True,
        name: str = "ident",
    ) -> None:
        check_target_spec(latents, "latents")
        if fit_split == eval_split:
            raise ValueError(f"fit_split and eval_split must differ (held-out scoring), both are {fit_split!r}")
        latent_name = latents if isinstance(latents, str) else "latents"
        super().__init__(sites, {latent_name: latents}, mode=mode, fit_split=fit_split, eval_splits=[eval_split],
                         every_n_epochs=every_n_epochs, probe_loaders=probe_loaders, reduction=reduction,
                         input_key=input_key, forward_fn=forward_fn, log_figures=log_figures, name=name)
        metrics = tuple(metrics)
        bad = [m for m in metrics if m not in _IDENT_METRICS]
        if bad or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {_IDENT_METRICS}, got {list(metrics)}")
        check_int("max_samples", max_samples, low=10)
        self.metrics, self.eval_split, self.max_samples = metrics, eval_split, max_samples
        self.alphas = tuple(alphas)
        self.latent_name = latent_name

    def read_targets(self, batch: Any, features: Mapping[str, Tensor]) -> dict[str | None, Any]:
        z = get_target(batch, self.targets[self.latent_name], "latents")
        z = z.to(torch.float64)  # latents keep every digit (e.g. a large offset)
        return {self.latent_name: z[:, None] if z.ndim == 1 else z.flatten(1)}

    def make_readouts(self, site: str, target: str | None, in_features: int, target_features: int) -> dict:
        out: dict[str, Any] = {}
        if "linear_r2" in self.metrics:
            out["linear"] = LinearIdentifiability(in_features, target_features, alphas=self.alphas)
        if "mcc" in self.metrics:
            out["mcc"] = MetricReadout(
                MeanCorrelationCoefficient(target_features, in_features), "mcc",
                update_fn=lambda m, f, z: m.update(z, f), quantities=_mcc_quantities,
                figure_fn=lambda res, title: {"mcc_matrix": matched_heatmap(res, title)},
            )
        if "kernel_r2" in self.metrics:
            out["kernel"] = KernelIdentifiability(max_samples=self.max_samples)
        if "dci" in self.metrics:
            out["dci"] = DCI(max_samples=self.max_samples)
        return out


def load_checkpoint_weights(path: str) -> dict[str, Tensor]:
    """The ``state_dict`` of a Lightning checkpoint, read without unpickling arbitrary objects."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return ckpt["state_dict"]


class RepresentationSimilarity(TapCallback):
    """Compare the training model's representations with a reference, over training.

    The reference runs on the same batches as the model (frozen passes over the ``split`` probe
    loader by default; the training and validation batches in online mode), and per site
    :class:`~lit_repr.metrics.LinearCKA` (biased and debiased, streamed: exact under DDP, memory
    independent of the data) and :class:`~lit_repr.metrics.MutualKNNAlignment` (on a bounded
    uniform sample of ``max_samples`` rows) compare the two. Logged as
    ``<name>/<site>/<reference>/<split>/{cka, cka_debiased, mutual_knn}``, where ``<reference>`` is
    ``init``, ``checkpoint`` or ``reference`` (a module).

    Args:
        sites: submodule names or globs of the training model.
        reference: ``"init"`` (a frozen copy of the model when fitting starts), a path to a
            Lightning checkpoint of the same class (weights only, nothing unpickled), or any
            ``nn.Module``.
        reference_sites: the matching site names of the reference (default: ``sites``).
        split: the probe loader to compare on.
        max_samples: samples compared by mutual k-NN (all pairs: ``O(max_samples²)``).
        k: neighbours of the mutual k-NN metric.
        mode: ``"frozen"`` (default) or ``"online"``.
        every_n_epochs: how often to compare during ``fit``.
        probe_loaders: named loaders; default: the datamodule's ``probe_dataloaders()``.
        reduction: how a site's output becomes a feature matrix.
        input_key: where the model input sits in a batch (default ``"x"``, or position 0 of tuples).
        forward_fn: replaces ``module(input)``; used for both models.
        name: prefix of logged metrics.

    Example:
        >>> cb = RepresentationSimilarity(sites=["backbone"], reference="init", k=5)
        >>> cb.k
        5
    """

    method = "representation similarity"

    def __init__(
        self,
        sites: str | Sequence[str],
        reference: str | nn.Module = "init",
        reference_sites: Sequence[str] | None = None,
        split: str = "val",
        max_samples: int = 1000,
        k: int = 10,
        mode: Mode = "frozen",
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, Any] | None = None,
        reduction: Reduction = "flatten",
        input_key: TargetSpec | None = None,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        name: str = "similarity",
    ) -> None:
        if not isinstance(reference, (nn.Module, str)):
            raise ValueError(
                f"reference must be 'init', a checkpoint path or an nn.Module, got {type(reference).__name__}"
            )
        super().__init__(sites, None, mode=mode, fit_split=None, eval_splits=[split], every_n_epochs=every_n_epochs,
                         probe_loaders=probe_loaders, reduction=reduction, input_key=input_key,
                         forward_fn=forward_fn, log_figures=False, name=name)
        check_int("k", k)
        if not isinstance(max_samples, int) or max_samples <= k + 1:
            raise ValueError(f"max_samples must be an int > k + 1 = {k + 1}, got {max_samples!r}")
        self.reference_spec = reference
        self.reference_name = (
            reference if reference == "init" else "reference" if isinstance(reference, nn.Module) else "checkpoint"
        )
        self.targets = {self.reference_name: None}  # the reference's features at the matching site
        self.reference_sites = list(reference_sites) if reference_sites is not None else None
        self.split, self.max_samples, self.k = split, max_samples, k
        self.reference: nn.Module | None = reference if isinstance(reference, nn.Module) else None
        self._ref_tap: Tap | None = None

    @property
    def state_key(self) -> str:
        ref = self.reference_spec if isinstance(self.reference_spec, str) else type(self.reference_spec).__name__
        return self._generate_state_key(name=self.name, sites=self.site_patterns, reference=ref)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # copy before our tap is attached (hooks would be copied along); share, not copy, the trainer
        if self.reference is None and self.reference_spec != "init":
            ref = detached_copy(pl_module, trainer)
            ref.load_state_dict(load_checkpoint_weights(str(self.reference_spec)))
            self.reference = ref
        if self.reference is None and stage == "fit":
            self.reference = detached_copy(pl_module, trainer)  # the model at initialisation
        super().setup(trainer, pl_module, stage)
        if self.reference is None:
            raise ValueError("reference='init' is only defined when fitting; pass a checkpoint path or a module")
        self.reference.to(pl_module.device).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        ref_sites = self.reference_sites or self.sites
        if len(ref_sites) != len(self.sites):
            raise ValueError(f"reference_sites {ref_sites} must pair one-to-one with sites {self.sites}")
        if self._ref_tap is not None:
            self._ref_tap.remove()
        self._ref_tap = Tap(self.reference, ref_sites, reduction=self.reduction)
        self._pairs = dict(zip(self.sites, self._ref_tap.sites))

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if self._ref_tap is not None:
            self._ref_tap.remove()
            self._ref_tap = None

    def read_targets(self, batch: Any, features: Mapping[str, Tensor]) -> dict[str | None, Any]:
        assert self.reference is not None and self._ref_tap is not None, "setup() has not run"
        self._ref_tap.clear()
        with torch.no_grad():
            self.forward_fn(self.reference, batch)
        ref = self._ref_tap.read()
        return {self.reference_name: {site: ref[self._pairs[site]] for site in features}}

    def make_readouts(self, site: str, target: str | None, in_features: int, target_features: int) -> dict:
        return {
            "cka": LinearCKA(in_features, target_features),
            "cka_debiased": LinearCKA(in_features, target_features, debiased=True),
            "mutual_knn": MutualKNNAlignment(k=self.k, max_samples=self.max_samples),
        }

    def compare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Compare the model with the reference on the ``split`` loader; return the scores."""
        return self.measure(trainer, pl_module)

    def extra_state(self) -> dict[str, Any]:
        if self.reference_spec == "init" and self.reference is not None:
            return {"reference": {k: v.cpu() for k, v in self.reference.state_dict().items()}}
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "reference" in state and self.reference is not None:
            self.reference.load_state_dict(state["reference"])
