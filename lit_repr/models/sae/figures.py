"""Pictures of a sparse autoencoder for TensorBoard: its atoms as images and its firing frequencies.

:func:`atom_figure` draws any dictionary ``(n, d)`` as a grid of images; :func:`log_atom_figure`
and :func:`log_firing_histogram` send a LightningModule's pictures to the first TensorBoard logger
of its trainer (on global rank 0 only), and do nothing without one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["atom_figure", "tensorboard_writer", "log_atom_figure", "log_firing_histogram"]


def atom_figure(
    dictionary: Tensor, image_shape: Sequence[int], max_atoms: int = 64, title: str = "SAE dictionary atoms"
) -> Any:
    """A matplotlib figure of the first ``max_atoms`` rows of ``dictionary`` as images.

    Single-channel atoms use a diverging color map centered on 0; ``(C, H, W)`` atoms are shown
    as RGB after min-max scaling.

    Args:
        dictionary: ``(n, d)`` atoms, one per row.
        image_shape: ``(H, W)`` or ``(C, H, W)`` with product ``d``.
        max_atoms: atoms drawn at most.
        title: the figure's title.

    Example:
        >>> fig = atom_figure(torch.randn(6, 4), (2, 2))
        >>> len([ax for ax in fig.axes if ax.images])
        6
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(int(s) for s in image_shape)
    if dictionary.ndim != 2 or len(shape) not in (2, 3) or math.prod(shape) != dictionary.shape[1]:
        raise ValueError(
            f"image_shape must be (H, W) or (C, H, W) with product {dictionary.shape[-1]} (the atom size), got {shape}"
        )
    W = dictionary.detach().float().cpu()[:max_atoms]
    n = W.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = W[i].reshape(shape)
        if img.ndim == 3:
            img = img.permute(1, 2, 0)
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
            ax.imshow(img.numpy())
        else:
            lim = float(img.abs().max()) or 1.0
            ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def tensorboard_writer(module: Any) -> Any:
    """The ``SummaryWriter`` of the first TensorBoard logger of ``module``'s trainer on global rank 0, else ``None``.

    Example:
        >>> tensorboard_writer(torch.nn.Linear(2, 2)) is None
        True
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = getattr(module, "_trainer", None)
    if trainer is None or not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_firing_histogram(module: Any, tag: str, frequency: Tensor) -> None:
    """Add the histogram of ``log10`` firing frequencies to TensorBoard (if there is one)."""
    tb = tensorboard_writer(module)
    if tb is not None:
        tb.add_histogram(tag, torch.log10(frequency.float().cpu() + 1e-10), global_step=module.global_step)


def log_atom_figure(module: Any, tag: str, dictionary: Tensor, image_shape: Sequence[int]) -> None:
    """Add :func:`atom_figure` of ``dictionary`` to TensorBoard (if there is one)."""
    tb = tensorboard_writer(module)
    if tb is not None:
        import matplotlib.pyplot as plt

        fig = atom_figure(dictionary, image_shape)
        tb.add_figure(tag, fig, global_step=module.global_step)
        plt.close(fig)
