"""A small procedural stand-in for the PhyIP simulators: 2D harmonic oscillators with known conserved quantities.

Batches have the simulators' keys: ``x`` (B, T, 4) = [position, velocity] and ``latents`` (B, 3) =
energy, angular momentum, frequency; splits train/val/test and ``ood`` (larger amplitudes).
"""

import torch

from lit_repr.data import ArrayDataModule

LATENT_NAMES = ["energy", "angular_momentum", "frequency"]


def oscillators(n, steps, amplitude, generator, dt=0.25):
    """``x`` (n, steps, 4) and ``latents`` (n, 3) of oscillators x = a cos(wt + p), y = b sin(wt + p)."""
    lo, hi = amplitude
    a = lo + (hi - lo) * torch.rand(n, 1, generator=generator)
    b = lo + (hi - lo) * torch.rand(n, 1, generator=generator)
    w = 0.5 + torch.rand(n, 1, generator=generator)
    p = 2 * torch.pi * torch.rand(n, 1, generator=generator)
    t = dt * torch.arange(steps).float()
    ph = w * t + p
    x = torch.stack([a * torch.cos(ph), b * torch.sin(ph), -a * w * torch.sin(ph), b * w * torch.cos(ph)], -1)
    latents = torch.cat([0.5 * w**2 * (a**2 + b**2), a * b * w, w], 1)
    return x, latents


class OscillatorDataModule(ArrayDataModule):
    """Harmonic oscillators: ID amplitudes in [0.5, 1.5], OOD in [1.5, 2.5]."""

    latent_names = LATENT_NAMES

    def __init__(self, num_train=256, num_eval=64, steps=24, batch_size=64, seed=0):
        super().__init__(batch_size=batch_size, seed=seed)
        self.num_train, self.num_eval, self.steps = num_train, num_eval, steps

    def build_splits(self):
        g = torch.Generator().manual_seed(self.seed)
        out = {}
        for split, n, amp in (("train", self.num_train, (0.5, 1.5)), ("val", self.num_eval, (0.5, 1.5)),
                              ("test", self.num_eval, (0.5, 1.5)), ("ood", self.num_eval, (1.5, 2.5))):
            x, lat = oscillators(n, self.steps, amp, g)
            out[split] = {"x": x, "latents": lat}
        return out
