"""Generative priors of FederatedFactory: one module per (client, class), exchanged as tensors.

``PRIORS`` maps each kind to its class; :func:`build_prior` builds one by kind.

Example:
    >>> sorted(PRIORS)
    ['diffusion', 'gmm', 'vae']
    >>> prior = build_prior("gmm", (1, 8, 8), num_components=2)
    >>> type(prior).__name__, prior.config()["image_shape"]
    ('GaussianMixturePrior', [1, 8, 8])
    >>> build_prior("gmm", **prior.config()).config() == prior.config()
    True
"""

from __future__ import annotations

from typing import Any

from .base import GenerativePrior
from .diffusion import DiffusionPrior
from .gmm import GaussianMixturePrior
from .vae import VAEPrior

__all__ = ["GenerativePrior", "GaussianMixturePrior", "VAEPrior", "DiffusionPrior", "PRIORS", "build_prior"]

PRIORS: dict[str, type[GenerativePrior]] = {cls.kind: cls for cls in (GaussianMixturePrior, VAEPrior, DiffusionPrior)}


def build_prior(kind: str, image_shape: Any, **config: Any) -> GenerativePrior:
    """The prior of registry key ``kind`` for images of ``image_shape``, built with ``config``.

    Args:
        kind: a key of :data:`PRIORS`.
        image_shape: ``(C, H, W)`` of the images.
        **config: the prior's other constructor arguments.

    Example:
        >>> build_prior("flow", (1, 8, 8))
        Traceback (most recent call last):
        ...
        ValueError: kind must be one of ['diffusion', 'gmm', 'vae'], got 'flow'
    """
    if not isinstance(kind, str) or kind not in PRIORS:
        raise ValueError(f"kind must be one of {sorted(PRIORS)}, got {kind!r}")
    return PRIORS[kind](image_shape, **config)
