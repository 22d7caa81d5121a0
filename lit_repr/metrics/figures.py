"""Figures of readouts, drawn with matplotlib (Agg) and logged to TensorBoard by the callbacks."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["matched_heatmap", "pred_vs_true_figure", "pyplot"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (figures are drawn off screen and sent to TensorBoard)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def matched_heatmap(res: Any, title: str) -> Any:
    """Heat map of |correlation| between factors (rows) and matched feature dimensions (columns)."""
    plt = pyplot()

    corr = res.corr.detach().cpu().reshape(-1, res.corr.shape[-1])
    matching = res.matching.detach().cpu().reshape(-1)
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


def pred_vs_true_figure(pred: Tensor, true: Tensor, title: str, max_points: int = 2000) -> Any:
    """Scatter of predicted against true values, one panel per output dimension (at most 6)."""
    plt = pyplot()

    k = min(pred.shape[1], 6)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
    for i in range(k):
        ax = axes[0, i]
        t, p = true[:, i].numpy(), pred[:, i].numpy()
        r2 = 1 - float(((t - p) ** 2).sum()) / max(float(((t - t.mean()) ** 2).sum()), 1e-12)
        ax.scatter(t[:max_points], p[:max_points], s=4, alpha=0.5)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title((f"dim {i}: " if k > 1 else "") + f"R² = {r2:.3f} (n = {len(t)})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
