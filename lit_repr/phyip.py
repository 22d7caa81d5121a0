"""PhyIP: do self-supervised world models represent physical quantities linearly, in and out of distribution?

Internò et al. (2026, arXiv 2602.12218) train world models by next-step prediction on physical
simulations and read their frozen representations with linear probes: internal energy and
Newtonian inverse-square scaling are recovered out of distribution (Pearson ρ > 0.90), whereas
adaptation-based evaluation (fine-tuning the encoder, or a high-capacity probe) can collapse that
structure (ρ ≈ 0.05).

This module holds the protocol's science as plain functions:

- :func:`regression_scores`: Pearson ρ (torchmetrics ``PearsonCorrCoef``) and R² (torchmetrics
  ``R2Score``) per quantity;
- :class:`LatentRegressor`: a LightningModule that regresses standardised latents from an input
  through a body (the world model's encoder, fine-tuned; or nothing, on frozen features) and a
  head (linear or MLP);
- :func:`fine_tune_scores` and :func:`mlp_probe_scores`: the two adaptation-based evaluations,
  each trained with its own Lightning ``Trainer`` and scored on every split;
- :func:`format_table`, :func:`rho_vs_loss_figure`: the report.

:class:`~lit_repr.callbacks.phyip.PhyIPReport` runs it after any world model's training.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_repr.checks import check_int, check_number
from lit_repr.features import features as read_features
from lit_repr.features import preserved_rng
from lit_repr.targets import TargetSpec, check_finite, get_input, get_target

__all__ = [
    "PAPER_FIGURES", "METHODS", "regression_scores", "LatentRegressor", "fine_tune_scores", "mlp_probe_scores",
    "collect", "frozen_features", "format_table", "rho_vs_loss_figure",
]

#: what Internò et al. (2026) report, shown beside our measurements
PAPER_FIGURES: dict[str, str] = {
    "frozen_linear": "rho > 0.90 OOD (energy, inverse-square force)",
    "mlp_probe": "rho ~ 0.05 (adaptation can collapse the structure)",
    "fine_tuned": "rho ~ 0.05 (adaptation can collapse the structure)",
}

#: the evaluations of the protocol, in the order the table lists them
METHODS = ("frozen_linear", "mlp_probe", "fine_tuned")


def regression_scores(pred: Tensor, target: Tensor, names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Pearson ρ and R² of each column of ``pred`` against ``target``: ``{name: {"pearson", "r2"}}``.

    Computed per column with torchmetrics (``pearson_corrcoef``, ``r2_score``, the functional forms of
    ``PearsonCorrCoef`` and ``R2Score``) in float64. An undefined score (a constant column) is NaN.

    Args:
        pred: predictions ``(N,)`` or ``(N, K)``.
        target: ground truth of the same shape.
        names: one name per column (default ``"0"``, ``"1"``, ...).

    Example:
        >>> t = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
        >>> s = regression_scores(2 * t + 1, t, ["a", "b"])
        >>> round(s["a"]["pearson"], 6), round(s["b"]["pearson"], 6)
        (1.0, 1.0)
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError(f"pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim == 1:
        pred = pred[:, None]
    if target.ndim == 1:
        target = target[:, None]
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must share a shape (N,) or (N, K), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if pred.shape[0] < 2:
        raise ValueError(f"regression_scores needs at least 2 samples, got {pred.shape[0]}")
    k = pred.shape[1]
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names must give one name per column ({k}), got {len(names)}: {names}")
    check_finite(pred, "predictions")
    check_finite(target, "targets")
    p, t = pred.double().cpu(), target.double().cpu()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant columns: NaN, reported as such
        for i, n in enumerate(names):
            pi, ti = p[:, i], t[:, i]
            defined_t, defined_p = bool(ti.std() > 0), bool(pi.std() > 0)
            rho = float(torchmetrics.functional.pearson_corrcoef(pi, ti)) if defined_t and defined_p else float("nan")
            r2 = float(torchmetrics.functional.r2_score(pi, ti)) if defined_t else float("nan")
            out[n] = {"pearson": rho, "r2": r2}
    return out


class LatentRegressor(pl.LightningModule):
    """Regress standardised latents from an input through a body and a head, with mean squared error.

    ``body`` maps an input to features ``(B, D)`` (the world model's encoder for fine-tuning, every
    weight trained; ``nn.Identity()`` on frozen features); the head is linear (``hidden=()``) or an
    MLP. Targets are standardised with ``mean`` and ``std`` (all latents jointly, each equally
    weighted); :meth:`predict` returns predictions on the latents' own scale. Logs ``train/loss``
    and ``val/loss``.

    Args:
        body: the module before the head (``x -> (B, in_features)``).
        in_features: width of the body's output.
        num_targets: number of latents.
        mean: per-latent mean used to standardise (``(num_targets,)``).
        std: per-latent standard deviation (``(num_targets,)``, > 0).
        hidden: hidden widths of the head (``()``: a linear head).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        input_key: where the input sits in a batch.
        target_key: where the latents sit in a batch.

    Example:
        >>> reg = LatentRegressor(nn.Identity(), 3, 2, torch.zeros(2), torch.ones(2), hidden=[8])
        >>> reg.predict(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        body: nn.Module,
        in_features: int,
        num_targets: int,
        mean: Tensor,
        std: Tensor,
        hidden: Sequence[int] = (),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        input_key: TargetSpec = "x",
        target_key: TargetSpec = "latents",
    ) -> None:
        super().__init__()
        if not isinstance(body, nn.Module):
            raise ValueError(f"body must be an nn.Module, got {type(body).__name__}")
        check_int("in_features", in_features)
        check_int("num_targets", num_targets)
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != num_targets or std.numel() != num_targets:
            raise ValueError(f"mean and std need {num_targets} entries (num_targets), "
                             f"got {mean.numel()} and {std.numel()}")
        if not bool(torch.isfinite(std).all()) or not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError(f"std must be finite and > 0 and mean finite (a constant latent cannot be standardised), "
                             f"got mean={mean.tolist()}, std={std.tolist()}")
        check_number("lr", lr, low=0, low_open=True)
        check_number("weight_decay", weight_decay, low=0)
        self.body = body
        widths = [in_features, *[check_int("hidden", h) for h in hidden], num_targets]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.GELU())
        self.head = nn.Sequential(*layers)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.lr, self.weight_decay = lr, weight_decay
        self.input_key, self.target_key = input_key, target_key

    def forward(self, x: Any) -> Tensor:
        """Standardised predictions."""
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: Any) -> Tensor:
        """Predictions on the latents' own scale."""
        return self(x) * self.std + self.mean

    def _step(self, batch: Any, stage: str) -> Tensor:
        x = get_input(batch, self.input_key)
        y = get_target(batch, self.target_key, "target_key").float()
        y = y.reshape(y.shape[0], -1)
        loss = F.mse_loss(self(x), (y - self.mean) / self.std)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=y.shape[0], on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def collect(loader: Any, key: TargetSpec) -> Tensor:
    """Concatenate ``key`` over every batch of ``loader`` (2-D: one row per sample)."""
    parts = [get_target(b, key, "target_key") for b in loader]
    if not parts:
        raise ValueError("the loader yields no batches")
    t = torch.cat([p.reshape(p.shape[0], -1) for p in parts]).float()
    return t


def _trainer(max_epochs: int, trainer_kwargs: Mapping[str, Any] | None = None) -> pl.Trainer:
    kw = dict(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return pl.Trainer(**{**kw, **(trainer_kwargs or {})})


def _shuffled(loader: DataLoader, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size or 64, shuffle=True, generator=g,
                      collate_fn=loader.collate_fn)


def _predict(model: LatentRegressor, loader: Any, input_key: TargetSpec) -> Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model.predict(get_input(b, input_key)) for b in loader])


def _check_loaders(loaders: Mapping[str, Any], fit_split: str) -> None:
    if fit_split not in loaders:
        raise ValueError(f"fit_split {fit_split!r} is not among the loaders {sorted(loaders)}")


def fine_tune_scores(
    network: nn.Module,
    loaders: Mapping[str, DataLoader],
    names: Sequence[str],
    in_features: int,
    max_epochs: int = 10,
    lr: float = 1e-3,
    fit_split: str = "train",
    val_split: str | None = "val",
    input_key: TargetSpec = "x",
    target_key: TargetSpec = "latents",
    seed: int = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Fine-tune ``network`` (``x -> (B, in_features)``, every weight) with a linear head on the standardised latents.

    Trained with a Lightning ``Trainer`` on a shuffled copy of ``loaders[fit_split]``; scored on
    every loader: ``{split: {latent name: {"pearson", "r2"}}}``. ``network`` is trained in place
    (pass a copy). ``trainer_kwargs`` override the ``Trainer``'s settings (e.g. ``limit_train_batches``).

    Example:
        >>> from torch.utils.data import DataLoader
        >>> x = torch.randn(64, 3); lat = x[:, :2] * 2
        >>> data = [{"x": a, "latents": b} for a, b in zip(x, lat)]
        >>> s = fine_tune_scores(nn.Linear(3, 4), {"train": DataLoader(data, batch_size=16)}, ["a", "b"], 4,
        ...                      max_epochs=30, lr=1e-2, val_split=None)
        >>> s["train"]["a"]["pearson"] > 0.9
        True
    """
    return _adapt(network, loaders, names, in_features, (), max_epochs, lr, fit_split, val_split,
                  input_key, target_key, seed, trainer_kwargs)


def mlp_probe_scores(
    feats: Mapping[str, Tensor],
    latents: Mapping[str, Tensor],
    names: Sequence[str],
    hidden: Sequence[int] = (256, 256),
    max_epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 128,
    fit_split: str = "train",
    val_split: str | None = "val",
    seed: int = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """An MLP probe on frozen features: trained on ``feats[fit_split]`` to the standardised latents, scored per split.

    Args:
        feats: ``{split: (N, D) features}``.
        latents: ``{split: (N, K) latents}``, the same splits and rows.
        names: one name per latent.
        hidden: the MLP's hidden widths (high capacity by default).
        max_epochs: training epochs (Lightning ``Trainer``).
        lr: AdamW learning rate.
        batch_size: training batch size.
        fit_split: the split that trains the probe.
        val_split: the split logged as ``val/loss`` during training (``None``: none).
        seed: seed of the shuffling and of the initial weights.
        trainer_kwargs: override the ``Trainer``'s settings (e.g. ``limit_train_batches``).

    Example:
        >>> f = {"train": torch.randn(128, 4)}; lat = {"train": f["train"][:, :1] ** 2}
        >>> s = mlp_probe_scores(f, lat, ["sq"], hidden=[32], max_epochs=30, lr=1e-2, batch_size=16)
        >>> s["train"]["sq"]["pearson"] > 0.9
        True
    """
    if set(feats) != set(latents):
        raise ValueError(f"feats and latents must cover the same splits, got {sorted(feats)} and {sorted(latents)}")
    check_int("batch_size", batch_size)
    loaders = {}
    for s in feats:
        if feats[s].shape[0] != latents[s].shape[0]:
            raise ValueError(f"split {s!r}: {feats[s].shape[0]} feature rows but {latents[s].shape[0]} latent rows")
        ds = [{"x": f, "latents": y} for f, y in zip(feats[s].float(), latents[s].float().reshape(len(latents[s]), -1))]
        loaders[s] = DataLoader(ds, batch_size=batch_size)
    width = next(iter(feats.values())).shape[1]
    return _adapt(nn.Identity(), loaders, names, width, hidden, max_epochs, lr, fit_split, val_split, "x",
                  "latents", seed, trainer_kwargs)


def _adapt(
    body: nn.Module, loaders: Mapping[str, Any], names: Sequence[str], in_features: int, hidden: Sequence[int],
    max_epochs: int, lr: float, fit_split: str, val_split: str | None, input_key: TargetSpec,
    target_key: TargetSpec, seed: int, trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    _check_loaders(loaders, fit_split)
    if val_split is not None and val_split not in loaders:
        val_split = None
    check_int("max_epochs", max_epochs)
    targets = {s: collect(dl, target_key) for s, dl in loaders.items()}
    y = targets[fit_split]
    if y.shape[1] != len(names):
        raise ValueError(f"names must give one name per latent ({y.shape[1]}), got {len(names)}: {list(names)}")
    std = y.std(0)
    if y.shape[0] < 2 or not bool((std > 0).all()):
        raise ValueError(f"the {fit_split!r} split needs >= 2 samples and no constant latent to standardise; "
                         f"std per latent: {dict(zip(names, std.tolist()))}")
    with preserved_rng():
        torch.manual_seed(seed)
        model = LatentRegressor(body, in_features, y.shape[1], y.mean(0), std, hidden=hidden, lr=lr,
                                input_key=input_key, target_key=target_key)
        _trainer(max_epochs, trainer_kwargs).fit(model, _shuffled(loaders[fit_split], seed),
                                 loaders[val_split] if val_split is not None else None)
    return {s: regression_scores(_predict(model, dl, input_key), targets[s], names) for s, dl in loaders.items()}


def frozen_features(module: nn.Module, site: str, loaders: Mapping[str, Any]) -> dict[str, Tensor]:
    """``{split: (N, D)}`` features of ``module`` at ``site`` (frozen: eval mode, no gradients)."""
    return {s: read_features(module, [site], dl)[site] for s, dl in loaders.items()}


def format_table(
    results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    names: Sequence[str],
    id_split: str = "test",
    ood_split: str = "ood",
    paper: Mapping[str, str] | None = PAPER_FIGURES,
) -> str:
    """A text table: one row per (quantity, method), columns ρ and R² in and out of distribution, the paper beside.

    ``results`` is ``{method: {split: {quantity: {"pearson", "r2"}}}}``.

    Example:
        >>> r = {"frozen_linear": {"test": {"E": {"pearson": 0.99, "r2": 0.98}},
        ...                        "ood": {"E": {"pearson": 0.9, "r2": 0.5}}}}
        >>> print(format_table(r, ["E"], paper=None))  # doctest: +NORMALIZE_WHITESPACE
        quantity  method         rho ID   rho OOD  R2 ID     R2 OOD
        E         frozen_linear  0.990    0.900    0.980     0.500
    """
    def f(v: float | None) -> str:
        return "  n/a" if v is None else ("  nan" if v != v else f"{v:.3f}")

    def get(method: str, split: str, q: str, k: str) -> float | None:
        return results.get(method, {}).get(split, {}).get(q, {}).get(k)

    methods = [m for m in METHODS if m in results] + [m for m in results if m not in METHODS]
    width = max([len("quantity")] + [len(n) for n in names]) + 2
    mwidth = max([len("method")] + [len(m) for m in methods]) + 2
    head = f"{'quantity':<{width}}{'method':<{mwidth}}{'rho ID':<9}{'rho OOD':<9}{'R2 ID':<10}{'R2 OOD':<10}"
    if paper:
        head += "paper"
    lines = [head.rstrip()]
    for q in names:
        for m in methods:
            line = (f"{q:<{width}}{m:<{mwidth}}{f(get(m, id_split, q, 'pearson')):<9}"
                    f"{f(get(m, ood_split, q, 'pearson')):<9}{f(get(m, id_split, q, 'r2')):<10}"
                    f"{f(get(m, ood_split, q, 'r2')):<10}")
            if paper:
                line += paper.get(m, "")
            lines.append(line.rstrip())
    return "\n".join(lines)


def rho_vs_loss_figure(
    history: Sequence[Mapping[str, Any]], names: Sequence[str], splits: Sequence[str] = ("test", "ood"),
    title: str = "frozen linear probe: Pearson rho against SSL loss",
) -> Any:
    """A matplotlib figure of the frozen probe's ρ per quantity against the SSL loss, one panel per split.

    ``history`` holds one record per probed epoch: ``{"epoch", "ssl_loss", "scores": {split: {quantity:
    {"pearson", "r2"}}}}``. Points are joined in epoch order; the first and last epochs are labelled.

    Example:
        >>> h = [{"epoch": e, "ssl_loss": 1.0 / (e + 1), "scores": {"test": {"E": {"pearson": e / 3, "r2": 0.0}}}}
        ...      for e in range(3)]
        >>> fig = rho_vs_loss_figure(h, ["E"], splits=["test"]); len(fig.axes)
        1
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    if not history:
        raise ValueError("history is empty: the probe recorded no epoch (run at least one validation epoch)")
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits) + 1.5, 3.6), squeeze=False)
    losses = [float(h["ssl_loss"]) for h in history]
    for ax, split in zip(axes[0], splits):
        for q in names:
            rho = [float(h["scores"].get(split, {}).get(q, {}).get("pearson", float("nan"))) for h in history]
            ax.plot(losses, rho, marker="o", ms=3, lw=1, label=q)
        first = [float(h["scores"].get(split, {}).get(names[0], {}).get("pearson", float("nan"))) for h in history]
        for i in sorted({0, len(history) - 1}):
            ax.annotate(f"epoch {history[i]['epoch']}", (losses[i], first[i]), xytext=(0, -12),
                        textcoords="offset points", ha="center", fontsize=7, alpha=0.7)
        if min(losses) > 0 and max(losses) / min(losses) > 20:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.invert_xaxis()  # training runs left to right: the loss decreases
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0.9, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("SSL loss (val)")
        ax.set_ylabel(f"Pearson rho ({split})")
        ax.set_title(split, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

