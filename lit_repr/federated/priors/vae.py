"""A small convolutional variational autoencoder as a generative prior."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_repr.checks import check_choice, check_int, check_number

from .base import GenerativePrior

__all__ = ["VAEPrior"]


class VAEPrior(GenerativePrior):
    """A convolutional VAE: two stride-2 convolutions down to a Gaussian latent, two transposed ones back up.

    Images whose height or width is not a multiple of 4 are zero-padded at the bottom and right to
    the next multiple (e.g. 30 -> 32) and the decoder's output is cropped back; 8 x 8, 28 x 28 and
    32 x 32 need no padding. The decoder outputs a mean in ``[0, 1]`` (a sigmoid); its likelihood is
    ``"bernoulli"`` (binary cross-entropy, the usual choice for grey levels in ``[0, 1]``) or
    ``"gaussian"`` with a fixed ``decoder_std`` (the default: on small sets of grey images the
    Bernoulli likelihood weighs the reconstruction too little against the KL term and the posterior
    collapses to the class mean). The loss is the negative ELBO per image, with the
    KL term's weight raised linearly from 0 to 1 over ``kl_warmup_epochs`` (0: no warm-up).
    ``train/loss``, ``train/reconstruction`` and ``train/kl`` are logged. Samples are the decoder's
    means at latent codes drawn from the standard normal prior.

    Args:
        image_shape: ``(C, H, W)`` of the images (values in ``[0, 1]``).
        latent_dim: latent dimension.
        hidden_channels: channels after the first convolution (doubled after the second).
        decoder: ``"bernoulli"`` or ``"gaussian"`` likelihood.
        decoder_std: standard deviation of the Gaussian likelihood (ignored for ``"bernoulli"``).
        kl_warmup_epochs: epochs over which the KL weight rises from 0 to 1.
        lr: Adam learning rate.
        batch_size: training mini-batch size (the whole set if it has fewer images).

    Example:
        >>> prior = VAEPrior((1, 8, 8), latent_dim=4, hidden_channels=8)
        >>> _ = prior.fit_data(torch.rand(32, 1, 8, 8), seed=0, trainer_kwargs={"max_epochs": 1})
        >>> prior.sample(6, torch.Generator().manual_seed(0)).shape
        torch.Size([6, 1, 8, 8])
    """

    kind: ClassVar[str] = "vae"
    default_max_epochs: ClassVar[int] = 100

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int = 8,
        hidden_channels: int = 16,
        decoder: str = "gaussian",
        decoder_std: float = 0.1,
        kl_warmup_epochs: int = 0,
        lr: float = 5e-3,
        batch_size: int = 32,
    ) -> None:
        latent_dim = check_int("latent_dim", latent_dim)
        hidden_channels = check_int("hidden_channels", hidden_channels)
        check_choice("decoder", decoder, ("bernoulli", "gaussian"))
        decoder_std = check_number("decoder_std", decoder_std, low=0, low_open=True)
        kl_warmup_epochs = check_int("kl_warmup_epochs", kl_warmup_epochs, low=0)
        lr = check_number("lr", lr, low=0, low_open=True)
        batch_size = check_int("batch_size", batch_size)
        super().__init__(
            image_shape,
            latent_dim=latent_dim,
            hidden_channels=hidden_channels,
            decoder=decoder,
            decoder_std=decoder_std,
            kl_warmup_epochs=kl_warmup_epochs,
            lr=lr,
            batch_size=batch_size,
        )
        self.latent_dim = latent_dim
        self.hidden_channels = hidden_channels
        self.decoder_kind = decoder
        self.decoder_std = decoder_std
        self.kl_warmup_epochs = kl_warmup_epochs
        self.lr = lr
        channels, height, width = self.image_shape
        self._padded = (math.ceil(height / 4) * 4, math.ceil(width / 4) * 4)
        self._code_shape = (2 * hidden_channels, self._padded[0] // 4, self._padded[1] // 4)
        self._initialise()

    def _reset(self) -> None:
        c, h = self.image_shape[0], self.hidden_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, 2 * h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(math.prod(self._code_shape), 2 * self.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim, math.prod(self._code_shape)),
            nn.SiLU(),
            nn.Unflatten(1, self._code_shape),
            nn.ConvTranspose2d(2 * h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, c, 3, padding=1),
        )

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance ``(N, latent_dim)`` of images ``(N, C, H, W)``."""
        _, height, width = self.image_shape
        padded = F.pad(images, (0, self._padded[1] - width, 0, self._padded[0] - height))
        mean, log_var = self.encoder(padded).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Decoder logits ``(N, C, H, W)`` (the mean image is their sigmoid) of latent codes ``(N, latent_dim)``."""
        _, height, width = self.image_shape
        return self.decoder(z)[:, :, :height, :width]

    def _kl_weight(self) -> float:
        if self.kl_warmup_epochs == 0 or self._trainer is None:
            return 1.0
        batches = max(int(self.trainer.num_training_batches), 1)
        return min(1.0, self.global_step / (self.kl_warmup_epochs * batches))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0]
        mean, log_var = self.encode(x)
        eps = torch.randn(mean.shape, generator=self.noise_generator).to(mean)
        logits = self.decode_logits(mean + eps * (0.5 * log_var).exp())
        if self.decoder_kind == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            recon = (torch.sigmoid(logits) - x) ** 2 / (2 * self.decoder_std**2)
        recon = recon.flatten(1).sum(1).mean()
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1).mean()
        loss = recon + self._kl_weight() * kl
        size = x.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/reconstruction", recon, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/kl", kl, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return torch.sigmoid(self.decode_logits(z.to(self.device)))
