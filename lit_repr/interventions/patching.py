"""Activation patching sweeps: patch a clean run into a corrupted one, one (site, position or unit) at a time.

For each site and each index along the swept axis (positions of dimension ``position_dim``, or units of
the last dimension), the clean run's activation at that index is written into the corrupted run
(:class:`~lit_repr.interventions.edits.ActivationPatch`) and a behavioural score is measured. The
result holds the mean score of every patched run, of the clean run and of the corrupted run, and the
fraction of the clean-corrupted difference each patch restores (1: the patch alone restores the clean
behaviour; 0: it changes nothing). It is rung-2 evidence (an intervention over a set of inputs).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_repr.features import frozen_mode, preserved_rng
from lit_repr.interventions.edits import ActivationPatch, intervene, record_activations
from lit_repr.interventions.ladder import Evidence
from lit_repr.metrics.figures import pyplot
from lit_repr.taps import resolve_sites

__all__ = ["PatchingResult", "patching_sweep", "patching_figure"]


@dataclass
class PatchingResult:
    """What :func:`patching_sweep` measured.

    Args:
        sites: the patched sites (rows).
        index: the patched positions or units (columns).
        axis: ``"position"`` or ``"unit"``.
        patched: mean score of each patched run, ``(sites, index)`` (``nan`` where a site is narrower
            than an index).
        clean: mean score of the clean run.
        corrupted: mean score of the corrupted run.
        num_inputs: inputs averaged over.
        scores: per-input scores of the patched runs, ``(sites, index, inputs)`` (for intervals).
        clean_scores: per-input scores of the clean run.
        corrupted_scores: per-input scores of the corrupted run.

    Example:
        >>> r = PatchingResult(["a"], [0, 1], "position", torch.tensor([[1.0, 0.0]]), clean=1.0, corrupted=0.0)
        >>> r.recovered
        tensor([[1., 0.]])
    """

    sites: list[str]
    index: list[int]
    axis: str
    patched: Tensor
    clean: float
    corrupted: float
    num_inputs: int = 0
    scores: Tensor | None = None
    clean_scores: Tensor | None = None
    corrupted_scores: Tensor | None = None
    rung: int = field(default=2, init=False)
    method: str = field(default="activation patching", init=False)

    @property
    def recovered(self) -> Tensor:
        """Fraction of the clean-corrupted score difference each patch restores."""
        gap = self.clean - self.corrupted
        if gap == 0:
            return torch.full_like(self.patched, float("nan"))
        return (self.patched - self.corrupted) / gap

    def intervals(self, num_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> Tensor:
        """Percentile bootstrap intervals of :attr:`recovered` over inputs, ``(sites, index, 2)``.

        Each resample draws inputs with replacement (a seeded generator) and recomputes the fraction
        restored as a ratio of means; ``nan`` without per-input scores.
        """
        if self.scores is None or self.clean_scores is None or self.corrupted_scores is None:
            return torch.full((*self.patched.shape, 2), float("nan"), dtype=torch.float64)
        n = self.clean_scores.numel()
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(n, (num_bootstrap, n), generator=g)
        clean, corrupted = self.clean_scores[idx].mean(1), self.corrupted_scores[idx].mean(1)  # (R,)
        patched = self.scores[..., idx].mean(-1)  # (S, P, R)
        ratios = (patched - corrupted) / (clean - corrupted)
        alpha = (1 - confidence) / 2
        q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
        return torch.quantile(ratios.nan_to_num(nan=0.0), q, dim=-1).permute(1, 2, 0)

    def evidence(self, confidence: float = 0.95, seed: int = 0) -> list[Evidence]:
        """One rung-2 :class:`~lit_repr.interventions.ladder.Evidence` per (site, index): the fraction restored."""
        values, ci = self.recovered, self.intervals(confidence=confidence, seed=seed)
        return [
            Evidence(self.method, self.rung, "recovered", float(values[i, j]), float(ci[i, j, 0]),
                     float(ci[i, j, 1]), site=f"{s}[{self.axis} {p}]", n=self.num_inputs, confidence=confidence)
            for i, s in enumerate(self.sites) for j, p in enumerate(self.index)
        ]

    def figure(self, title: str = "") -> Any:
        """The heat map (see :func:`patching_figure`)."""
        return patching_figure(self, title)


def patching_sweep(
    module: nn.Module,
    clean: Any,
    corrupted: Any,
    sites: str | Sequence[str],
    score_fn: Callable[[Any], Tensor],
    axis: Literal["position", "unit"] = "position",
    index: Sequence[int] | None = None,
    position_dim: int = 1,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
) -> PatchingResult:
    """Patch the clean run into the corrupted run at each site × position (or unit); score every run.

    The model runs frozen (eval mode, no gradients; modes and random states restored after).

    Args:
        module: any ``nn.Module``.
        clean: the clean input (or batch, with ``forward_fn``).
        corrupted: the corrupted input, of the clean input's shapes.
        sites: submodule names or globs whose outputs are tensors.
        score_fn: ``score_fn(output) -> (batch,)`` scores of a run (e.g. the logit of the right answer).
        axis: sweep ``"position"`` (dimension ``position_dim`` of each site's output) or ``"unit"``
            (its last dimension).
        index: the positions or units to patch (default all, from the widest site).
        position_dim: the position dimension of the sites' outputs.
        forward_fn: runs the model: ``forward_fn(module, input)``; default ``module(input)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> r = patching_sweep(net, torch.ones(2, 3), torch.zeros(2, 3), ["0", "1"], lambda out: out[:, 0],
        ...                    axis="unit")
        >>> r.patched.shape  # 2 sites x 3 units
        torch.Size([2, 3])
    """
    if axis not in ("position", "unit"):
        raise ValueError(f"axis must be 'position' or 'unit', got {axis!r}")
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable(output) -> (batch,) scores, got {score_fn!r}")
    run = forward_fn or (lambda m, x: m(x))
    names = resolve_sites(module, sites)

    def score(out: Any) -> Tensor:
        s = score_fn(out)
        if not isinstance(s, Tensor) or s.ndim != 1:
            raise ValueError(f"score_fn must return a (batch,) tensor of scores, got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        return s.detach().to("cpu", torch.float64)

    with preserved_rng(), frozen_mode(module):
        cache = record_activations(module, names, lambda: run(module, clean))
        clean_score = score(cache.output)
        corrupted_out = run(module, corrupted)
        corrupted_score = score(corrupted_out)
        dim = -1 if axis == "unit" else position_dim
        sizes = {s: cache[s].shape[dim] if cache[s].ndim > (dim if dim >= 0 else 1) else 0 for s in names}
        if axis == "position" and not all(sizes.values()):
            flat = [s for s, n in sizes.items() if not n]
            raise ValueError(f"sites {flat} have no position dimension {position_dim} (shapes "
                             f"{[tuple(cache[s].shape) for s in flat]}); sweep axis='unit' or other sites")
        idx = list(index) if index is not None else list(range(max(sizes.values())))
        if not idx:
            raise ValueError("index must name at least one position or unit")
        per_input = torch.full((len(names), len(idx), clean_score.numel()), float("nan"), dtype=torch.float64)
        for i, site in enumerate(names):
            for j, p in enumerate(idx):
                if not -sizes[site] <= p < sizes[site]:
                    continue
                kw = {"units": [p]} if axis == "unit" else {"positions": [p], "position_dim": position_dim}
                with intervene(module, {site: ActivationPatch(cache, **kw)}):
                    per_input[i, j] = score(run(module, corrupted))
    return PatchingResult(names, idx, axis, per_input.mean(-1), float(clean_score.mean()),
                          float(corrupted_score.mean()), clean_score.numel(), per_input, clean_score, corrupted_score)


def patching_figure(result: PatchingResult, title: str = "") -> Any:
    """A heat map of the fraction restored per site (rows) × position or unit (columns).

    Args:
        result: a :class:`PatchingResult`.
        title: the figure's title.

    Example:
        >>> r = PatchingResult(["a", "b"], [0, 1], "position", torch.tensor([[1.0, 0.0], [0.5, 0.2]]), 1.0, 0.0)
        >>> fig = patching_figure(r); len(fig.axes)
        2
    """
    plt = pyplot()

    values = result.recovered.numpy()
    rows, cols = values.shape
    label_width = 0.075 * max(len(s) for s in result.sites)  # inches taken by the site names
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * cols + 2.8 + label_width), max(2.8, 0.5 * rows + 1.8)),
                           layout="constrained")
    finite = values[~(values != values)]
    vmax = max(1.0, float(abs(finite).max())) if finite.size else 1.0
    im = ax.imshow(values, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(cols), [str(p) for p in result.index])
    ax.set_yticks(range(rows), result.sites)
    ax.set_xlabel(result.axis)
    ax.set_ylabel("site")
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                if v == v:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, label="fraction restored")
    subtitle = f"score: clean {result.clean:.3g}, corrupted {result.corrupted:.3g}"
    heading = textwrap.fill(title or "activation patching", width=int(12 * fig.get_figwidth()))
    ax.set_title(f"{heading}\n{subtitle}", fontsize=9)
    return fig
