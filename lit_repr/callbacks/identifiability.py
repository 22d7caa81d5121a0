"""IdentifiabilityMetrics and RepresentationSimilarity: ground-truth and model-to-model readouts."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_repr.callbacks.base import TapCallback, probe_loaders_for
from lit_repr.metrics.mcc import MeanCorrelationCoefficient
from lit_repr.metrics.probe import ProbeReadout
from lit_repr.metrics.ridge import DEFAULT_ALPHAS
from lit_repr.taps import Reduction, Tap
from lit_repr.targets import TargetSpec, check_target_spec, get_target

__all__ = ["IdentifiabilityMetrics", "RepresentationSimilarity"]

_IDENT_METRICS = ("linear_r2", "mcc", "kernel_r2", "dci")


class _Subsample:
    """The first ``max_samples`` rows of streamed tensors (per process; gathered under DDP)."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.chunks: dict[str, list[Tensor]] = {}

    def add(self, key: str, x: Tensor) -> None:
        have = sum(c.shape[0] for c in self.chunks.get(key, []))
        room = self.max_samples - have
        if room > 0:
            self.chunks.setdefault(key, []).append(x[:room].detach().to("cpu", torch.float64))

    def get(self, key: str, trainer: pl.Trainer | None = None) -> Tensor:
        x = torch.cat(self.chunks[key])
        if trainer is not None and trainer.world_size > 1:
            # every process holds a shard of the split: gather the shards (equal sizes are not needed)
            gathered = trainer.strategy.all_gather(_pad_rows(x, self.max_samples))
            n = trainer.strategy.all_gather(torch.tensor(x.shape[0]))
            x = torch.cat([g[: int(k)] for g, k in zip(gathered, n)])[: self.max_samples].cpu()
        return x

    def clear(self) -> None:
        self.chunks.clear()


def _pad_rows(x: Tensor, n: int) -> Tensor:
    out = torch.zeros(n, *x.shape[1:], dtype=x.dtype)
    out[: x.shape[0]] = x
    return out


def _log(pl_module: pl.LightningModule, scores: Mapping[str, float]) -> None:
    try:
        for k, v in scores.items():
            pl_module.log(k, float(v), sync_dist=False)
    except MisconfigurationException:
        pass  # outside a Trainer loop: the caller keeps the returned scores


class IdentifiabilityMetrics(TapCallback):
    """How well do a model's features recover ground-truth latent factors?

    At the end of validation (every ``every_n_epochs`` epochs), the model runs frozen (eval mode,
    no grad) over the ``fit_split`` and ``eval_split`` probe loaders, whose batches carry the
    ground truth (``latents`` by default). Per site it logs, under
    ``<name>/<site>/<latents>/<eval_split>/``:

    - ``linear_r2`` (uniform average) and ``linear_r2_factor{i}``: R² of a ridge map from features
      to latents, fitted on ``fit_split`` from streamed statistics (exact under DDP, GCV penalty)
      and scored on ``eval_split``;
    - ``mcc`` and ``mcc_factor{i}``: the mean correlation coefficient (Pearson, Hungarian
      matching of feature dimensions to factors) from statistics streamed over the whole
      evaluation split (exact under DDP), and a TensorBoard heat map of the matched correlations;
    - ``kernel_r2`` (optional): RBF kernel ridge R² with cross-validated penalty and bandwidth;
    - ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` (optional).

    Args:
        sites: submodule names or globs.
        latents: where the ground truth sits in a batch (key, position or callable).
        metrics: any of ``"linear_r2"``, ``"mcc"``, ``"kernel_r2"``, ``"dci"``.
        fit_split: probe loader that fits the linear map (and trains DCI's regressors).
        eval_split: probe loader on which everything is scored.
        max_samples: samples kept per split for kernel R² and DCI (per process; gathered under DDP).
        every_n_epochs: how often to measure during ``fit``.
        probe_loaders: named loaders; default: the datamodule's ``probe_dataloaders()``.
        alphas: ridge penalties.
        reduction: how a site's output becomes a feature matrix.
        input_key: where the model input sits in a batch.
        forward_fn: replaces ``module(batch[input_key])`` in frozen passes.
        log_figures: log the MCC correlation heat map.
        name: prefix of logged metrics.

    Example:
        >>> cb = IdentifiabilityMetrics(sites=["backbone"], latents="latents", metrics=["linear_r2", "mcc"])
        >>> cb.metrics
        ('linear_r2', 'mcc')
    """

    def __init__(
        self,
        sites: str | Sequence[str],
        latents: TargetSpec = "latents",
        metrics: Sequence[str] = ("linear_r2", "mcc"),
        fit_split: str = "train",
        eval_split: str = "val",
        max_samples: int = 2000,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, DataLoader] | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        reduction: Reduction = "flatten",
        input_key: TargetSpec = "x",
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        log_figures: bool = True,
        name: str = "ident",
    ) -> None:
        super().__init__(sites, reduction=reduction, input_key=input_key, forward_fn=forward_fn, name=name)
        self.latents = check_target_spec(latents, "latents")
        metrics = tuple(metrics)
        bad = [m for m in metrics if m not in _IDENT_METRICS]
        if bad or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {_IDENT_METRICS}, got {list(metrics)}")
        if not isinstance(max_samples, int) or max_samples < 10:
            raise ValueError(f"max_samples must be an int >= 10, got {max_samples!r}")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive int, got {every_n_epochs!r}")
        if fit_split == eval_split:
            raise ValueError(f"fit_split and eval_split must differ (held-out scoring), both are {fit_split!r}")
        self.metrics = metrics
        self.fit_split = fit_split
        self.eval_split = eval_split
        self.max_samples = max_samples
        self.every_n_epochs = every_n_epochs
        self.probe_loaders = dict(probe_loaders) if probe_loaders else None
        self.alphas = tuple(alphas)
        self.log_figures = log_figures
        self.latent_name = latents if isinstance(latents, str) else "latents"
        self.readouts = nn.ModuleDict()
        self.mcc_readouts = nn.ModuleDict()
        self.scores: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, sites=self.site_patterns, latents=self.latent_name)

    def _latents(self, batch: Any, n: int) -> Tensor:
        z = get_target(batch, self.latents, "latents").float()
        z = z[:, None] if z.ndim == 1 else z.flatten(1)
        if z.shape[0] != n:
            raise ValueError(f"latents have {z.shape[0]} samples but the features have {n}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("latents contain NaN or inf")
        return z

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and trainer.current_epoch % self.every_n_epochs != 0:
            return
        self.measure(trainer, pl_module)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Run the frozen passes, compute every metric, log and return the scores."""
        loaders = probe_loaders_for(trainer, self.probe_loaders)
        for split in (self.fit_split, self.eval_split):
            if split not in loaders:
                raise ValueError(f"split {split!r} is not among the probe loaders {sorted(loaders)}")
        temporary = self.tap is None
        if temporary:
            TapCallback.setup(self, trainer, pl_module, "validate")
        try:
            return self._measure(trainer, pl_module, loaders)
        finally:
            if temporary:
                self.teardown(trainer, pl_module, "validate")

    def _key(self, site: str) -> str:
        return f"s{self.sites.index(site)}"

    def _readout(self, site: str, f: Tensor, z: Tensor) -> ProbeReadout:
        key = self._key(site)
        if key not in self.readouts:
            self.readouts[key] = ProbeReadout(
                f.shape[1], task="regression", num_targets=z.shape[1], alphas=self.alphas
            ).to(f.device)
        return self.readouts[key]  # type: ignore[return-value]

    def _mcc(self, site: str, f: Tensor, z: Tensor) -> MeanCorrelationCoefficient:
        key = self._key(site)
        if key not in self.mcc_readouts:
            self.mcc_readouts[key] = MeanCorrelationCoefficient(z.shape[1], f.shape[1]).to(f.device)
        return self.mcc_readouts[key]  # type: ignore[return-value]

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loaders: dict) -> dict[str, float]:
        fit_sub, eval_sub = _Subsample(self.max_samples), _Subsample(self.max_samples)
        subsample = bool({"kernel_r2", "dci"} & set(self.metrics))  # the metrics that need samples
        for r in self.readouts.values():
            r.reset_fit()
            r.reset_eval()
        for m in self.mcc_readouts.values():
            m.reset()

        def on_fit(feats: dict[str, Tensor], batch: Any) -> None:
            z = self._latents(batch, next(iter(feats.values())).shape[0]).to(pl_module.device)
            if subsample:
                fit_sub.add("z", z)
            for site, f in feats.items():
                self._readout(site, f, z).update_fit(f, z)
                if subsample:
                    fit_sub.add(site, f)

        def on_eval(feats: dict[str, Tensor], batch: Any) -> None:
            z = self._latents(batch, next(iter(feats.values())).shape[0]).to(pl_module.device)
            if subsample:
                eval_sub.add("z", z)
            for site, f in feats.items():
                self._readout(site, f, z).update_eval(self.eval_split, f, z)
                if "mcc" in self.metrics:
                    self._mcc(site, f, z).update(z, f)
                if subsample:
                    eval_sub.add(site, f)

        self.run_frozen(trainer, pl_module, loaders[self.fit_split], on_fit)
        for r in self.readouts.values():
            r.fit()
        self.run_frozen(trainer, pl_module, loaders[self.eval_split], on_eval)

        scores: dict[str, float] = {}
        z_eval = eval_sub.get("z", trainer) if subsample else None
        z_fit = fit_sub.get("z", trainer) if "dci" in self.metrics else None
        for site in self.sites:
            prefix = f"{self.name}/{site}/{self.latent_name}/{self.eval_split}"
            r = self._readout(site, torch.zeros(1, 1), torch.zeros(1, 1))
            if "linear_r2" in self.metrics:
                r2 = r.compute_eval(self.eval_split)["r2"].flatten()
                scores[f"{prefix}/linear_r2"] = float(r2.mean())
                for i, v in enumerate(r2.tolist()):
                    scores[f"{prefix}/linear_r2_factor{i}"] = v
            r.reset_eval()
            f_eval = eval_sub.get(site, trainer) if subsample else None
            if "mcc" in self.metrics:  # streamed over the whole split, summed across processes
                res = self.mcc_readouts[self._key(site)].compute()
                scores[f"{prefix}/mcc"] = float(res.mean)
                for i, v in enumerate(res.per_factor.tolist()):
                    scores[f"{prefix}/mcc_factor{i}"] = float(v)
                if self.log_figures and trainer.is_global_zero:
                    self.add_figure(trainer, f"{prefix}/mcc_matrix", _matched_heatmap(res, prefix))
            if "kernel_r2" in self.metrics:
                from lit_repr.metrics.identifiability import kernel_ridge_r2

                n = f_eval.shape[0] // 2
                out = kernel_ridge_r2(f_eval[:n], z_eval[:n], f_eval[n:], z_eval[n:])
                scores[f"{prefix}/kernel_r2"] = float(out["r2"] if isinstance(out, Mapping) else out)
            if "dci" in self.metrics:
                from lit_repr.metrics.identifiability import dci

                d = dci(fit_sub.get(site, trainer).numpy(), z_fit.numpy(), f_eval.numpy(), z_eval.numpy())
                for k in ("disentanglement", "completeness", "informativeness"):
                    scores[f"{prefix}/dci_{k}"] = float(d[k])
        self.scores = scores
        _log(pl_module, scores)
        return scores


def _matched_heatmap(res: Any, title: str) -> Any:
    """Heat map of |correlation| between factors (rows) and matched feature dimensions (columns)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    corr = res.corr.detach().cpu()
    matching = res.matching.detach().cpu()
    order = [int(j) for j in matching.tolist() if int(j) >= 0]
    rest = [j for j in range(corr.shape[1]) if j not in order]
    shown = order + rest[: max(0, min(len(rest), 2 * corr.shape[0]))]
    mat = corr[:, shown].numpy()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * len(shown) + 1.5), max(2.5, 0.35 * corr.shape[0] + 1.2)))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, j in enumerate(matching.tolist()):  # outline the matched pairs
        if int(j) >= 0:
            col = shown.index(int(j))
            ax.add_patch(plt.Rectangle((col - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5))
            ax.text(col, i, f"{mat[i, col]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if mat[i, col] > 0.6 else "white")
    ax.set_xticks(range(len(shown)), [str(j) for j in shown], fontsize=7, rotation=90)
    ax.set_yticks(range(corr.shape[0]), [f"z{i}" for i in range(corr.shape[0])], fontsize=7)
    ax.set_xlabel("feature dimension (matched first, outlined)")
    ax.set_ylabel("ground-truth factor")
    ax.set_title(f"{title}\nMCC = {res.mean:.3f}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|corr|")
    fig.tight_layout()
    return fig


def _detached_copy(module: nn.Module, trainer: pl.Trainer) -> nn.Module:
    """A deep copy of ``module`` without forward hooks, sharing (not copying) the trainer."""
    ref = copy.deepcopy(module, memo={id(trainer): trainer})
    for m in ref.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return ref


class RepresentationSimilarity(TapCallback):
    """Compare the training model's representations with a reference, over training.

    At the end of validation, the model and the reference run frozen over the ``split`` probe
    loader; features of up to ``max_samples`` samples are compared per site with linear CKA
    (biased HSIC, and the debiased estimator) and the mutual k-nearest-neighbour alignment of the
    Platonic Representation Hypothesis. Logged as ``<name>/<site>/<split>/cka``, ``cka_debiased``
    and ``mutual_knn``.

    Args:
        sites: submodule names or globs of the training model.
        reference: ``"init"`` (a frozen copy of the model when fitting starts), a path to a
            Lightning checkpoint of the same class, or any ``nn.Module``.
        reference_sites: the matching site names of the reference (default: ``sites``).
        split: the probe loader to compare on.
        max_samples: samples compared (the metrics need all pairs: ``O(max_samples²)``).
        k: neighbours of the mutual k-NN metric.
        every_n_epochs: how often to compare during ``fit``.
        probe_loaders: named loaders; default: the datamodule's ``probe_dataloaders()``.
        reduction: how a site's output becomes a feature matrix.
        input_key: where the model input sits in a batch.
        forward_fn: replaces ``module(batch[input_key])``; used for both models.
        name: prefix of logged metrics.

    Example:
        >>> cb = RepresentationSimilarity(sites=["backbone"], reference="init", k=5)
        >>> cb.k
        5
    """

    def __init__(
        self,
        sites: str | Sequence[str],
        reference: str | nn.Module = "init",
        reference_sites: Sequence[str] | None = None,
        split: str = "val",
        max_samples: int = 1000,
        k: int = 10,
        every_n_epochs: int = 1,
        probe_loaders: Mapping[str, DataLoader] | None = None,
        reduction: Reduction = "flatten",
        input_key: TargetSpec = "x",
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        name: str = "similarity",
    ) -> None:
        super().__init__(sites, reduction=reduction, input_key=input_key, forward_fn=forward_fn, name=name)
        if not (isinstance(reference, nn.Module) or isinstance(reference, str)):
            raise ValueError(
                f"reference must be 'init', a checkpoint path or an nn.Module, got {type(reference).__name__}"
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not isinstance(max_samples, int) or max_samples <= k + 1:
            raise ValueError(f"max_samples must be an int > k + 1 = {k + 1}, got {max_samples!r}")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive int, got {every_n_epochs!r}")
        self.reference_spec = reference
        self.reference_sites = list(reference_sites) if reference_sites is not None else None
        self.split = split
        self.max_samples = max_samples
        self.k = k
        self.every_n_epochs = every_n_epochs
        self.probe_loaders = dict(probe_loaders) if probe_loaders else None
        self.reference: nn.Module | None = reference if isinstance(reference, nn.Module) else None
        self.scores: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        ref = self.reference_spec if isinstance(self.reference_spec, str) else type(self.reference_spec).__name__
        return self._generate_state_key(name=self.name, sites=self.site_patterns, reference=ref)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # copy before our tap is attached (hooks would be copied along); share, not copy, the trainer
        if self.reference is None and isinstance(self.reference_spec, str) and self.reference_spec != "init":
            ckpt = torch.load(self.reference_spec, map_location="cpu", weights_only=False)
            ref = _detached_copy(pl_module, trainer)
            ref.load_state_dict(ckpt["state_dict"])
            self.reference = ref
        if self.reference is None and stage == "fit":
            self.reference = _detached_copy(pl_module, trainer)  # the model at initialisation
        super().setup(trainer, pl_module, stage)
        if self.reference is None:
            raise ValueError("reference='init' is only defined when fitting; pass a checkpoint path or a module")
        self.reference.to(pl_module.device).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.reference_spec == "init" and self.reference is not None:
            return {"reference": {k: v.cpu() for k, v in self.reference.state_dict().items()}}
        return {}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "reference" in state_dict and self.reference is not None:
            self.reference.load_state_dict(state_dict["reference"])

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and trainer.current_epoch % self.every_n_epochs != 0:
            return
        self.compare(trainer, pl_module)

    def compare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Compare the model with the reference on the ``split`` loader; log and return scores."""
        from lit_repr.metrics.similarity import linear_cka, mutual_knn_alignment

        loaders = probe_loaders_for(trainer, self.probe_loaders)
        if self.split not in loaders:
            raise ValueError(f"split {self.split!r} is not among the probe loaders {sorted(loaders)}")
        assert self.reference is not None and self.tap is not None
        ref_sites = self.reference_sites or self.sites
        if len(ref_sites) != len(self.sites):
            raise ValueError(f"reference_sites {ref_sites} must pair one-to-one with sites {self.sites}")
        ours, theirs = _Subsample(self.max_samples), _Subsample(self.max_samples)
        ref_tap = Tap(self.reference, ref_sites, reduction=self.reduction)
        try:

            def on_batch(feats: dict[str, Tensor], batch: Any) -> None:
                ref_tap.clear()
                with torch.no_grad():
                    self.forward_fn(self.reference, batch)
                ref_feats = ref_tap.read()
                for site, rsite in zip(self.sites, ref_sites):
                    ours.add(site, feats[site])
                    theirs.add(site, ref_feats[rsite])

            self.run_frozen(trainer, pl_module, loaders[self.split], on_batch)
        finally:
            ref_tap.remove()
        scores: dict[str, float] = {}
        for site in self.sites:
            x, y = ours.get(site, trainer), theirs.get(site, trainer)
            prefix = f"{self.name}/{site}/{self.split}"
            scores[f"{prefix}/cka"] = float(linear_cka(x, y))
            scores[f"{prefix}/cka_debiased"] = float(linear_cka(x, y, debiased=True))
            scores[f"{prefix}/mutual_knn"] = float(mutual_knn_alignment(x, y, k=min(self.k, x.shape[0] - 2)))
        self.scores = scores
        _log(pl_module, scores)
        return scores
