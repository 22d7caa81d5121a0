"""A tiny stand-in prior (per-pixel Gaussian fitted in closed form) for the exchange and engine tests."""

import pytest
import torch
from torch import nn


class PixelGaussianPrior(nn.Module):
    """Per-pixel mean and std; sampling is mean + std * noise, clamped to [0, 1]."""

    kind = "pixel"

    def __init__(self, image_shape, shrink=0.0):
        super().__init__()
        if shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {shrink}")
        self.image_shape = tuple(image_shape)
        self.shrink = shrink
        self.register_buffer("mean", torch.zeros(self.image_shape))
        self.register_buffer("std", torch.zeros(self.image_shape))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit_data(self, images, *, seed, trainer_kwargs=None, logger=None):
        g = torch.Generator().manual_seed(seed)
        jitter = 1e-3 * torch.rand(self.image_shape, generator=g)  # the seed matters, as in a real fit
        self.mean.copy_(images.mean(0) + jitter)
        self.std.copy_(images.std(0, unbiased=False) * (1 - self.shrink))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def sample(self, n, generator=None):
        if not bool(self.fitted):
            raise RuntimeError("not fitted")
        noise = torch.randn((n, *self.image_shape), generator=generator)
        return (self.mean + self.std * noise).clamp(0, 1)

    def config(self):
        return {"image_shape": list(self.image_shape), "shrink": self.shrink}

    def tensors(self):
        return {k: v.clone().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, config, tensors):
        prior = cls(**config)
        want = prior.state_dict()
        if set(want) != set(tensors):
            raise ValueError(f"expected tensors {sorted(want)}, got {sorted(tensors)}")
        for k, v in want.items():
            if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
                raise ValueError(f"tensor {k} mismatched")
        prior.load_state_dict(tensors)
        return prior


@pytest.fixture
def pixel_prior(monkeypatch):
    """Make the exchange and the client step know the "pixel" prior (and only it)."""
    import lit_repr.federated.engine as engine
    import lit_repr.federated.exchange as exchange

    registry = {"pixel": PixelGaussianPrior}

    def build(kind, image_shape, **config):
        if kind not in registry:
            raise ValueError(f"unknown prior kind {kind!r}; known: {sorted(registry)}")
        return registry[kind](image_shape, **config)

    monkeypatch.setattr(exchange, "_prior_registry", lambda: registry)
    monkeypatch.setattr(engine, "_build_prior", build)
    return PixelGaussianPrior
