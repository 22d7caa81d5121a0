"""A denoising diffusion prior: DDPM training of a small ``diffusers.UNet2DModel``, DDIM sampling.

``diffusers`` is imported when the first :class:`DiffusionPrior` is built (it takes seconds), not when
this module is.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_repr.checks import check_bool, check_choice, check_int, check_number

from .base import GenerativePrior

__all__ = ["DiffusionPrior"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class DiffusionPrior(GenerativePrior):
    """DDPM (epsilon prediction, mean squared error) on a small UNet, sampled with DDIM.

    The network is a ``diffusers.UNet2DModel`` with one ``DownBlock2D``/``UpBlock2D`` per entry of
    ``block_out_channels`` (``layers_per_block`` ResNet layers each) and, with ``attention=True``,
    self-attention in the middle block. Training draws a timestep and Gaussian noise per image
    (``diffusers.DDPMScheduler.add_noise``) from the fit's seeded generator. Sampling runs
    ``num_inference_steps`` deterministic DDIM steps (``eta = 0``, trailing timestep spacing) from
    Gaussian noise drawn with the caller's generator; ``train/loss`` is logged.

    Images are mapped to ``[-1, 1]``. The UNet halves the resolution ``len(block_out_channels) - 1``
    times, so heights and widths that are not a multiple of ``2 ** (len(block_out_channels) - 1)``
    are padded at the bottom and right with the background value 0 (e.g. 28 x 28 with three blocks
    becomes 28 x 28, 30 x 30 becomes 32 x 32) and samples are cropped back. With the default two
    blocks, 8 x 8 and 28 x 28 need no padding.

    Args:
        image_shape: ``(C, H, W)`` of the images (values in ``[0, 1]``).
        block_out_channels: UNet channels per resolution.
        layers_per_block: ResNet layers per UNet block.
        norm_num_groups: group-norm groups (must divide every entry of ``block_out_channels``).
        attention: self-attention in the UNet's middle block.
        num_train_timesteps: diffusion steps of the DDPM noise schedule.
        beta_schedule: ``"linear"``, ``"scaled_linear"`` or ``"squaredcos_cap_v2"`` (cosine).
        num_inference_steps: DDIM steps per sample (at most ``num_train_timesteps``).
        lr: AdamW learning rate.
        batch_size: training mini-batch size (the whole set if it has fewer images).

    Example:
        >>> prior = DiffusionPrior((1, 8, 8), block_out_channels=(8, 16), norm_num_groups=4,
        ...                        num_train_timesteps=20, num_inference_steps=3)
        >>> _ = prior.fit_data(torch.rand(8, 1, 8, 8), seed=0, trainer_kwargs={"max_steps": 2})
        >>> prior.sample(2, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 8, 8])
    """

    kind: ClassVar[str] = "diffusion"
    default_max_epochs: ClassVar[int] = 300

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        attention: bool = False,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        num_inference_steps: int = 50,
        lr: float = 2e-3,
        batch_size: int = 32,
    ) -> None:
        if (
            not isinstance(block_out_channels, (tuple, list))
            or not block_out_channels
            or isinstance(block_out_channels, str)
        ):
            raise ValueError(
                f"block_out_channels must be a non-empty list of positive ints, got {block_out_channels!r}"
            )
        block_out_channels = [check_int("block_out_channels", c) for c in block_out_channels]
        layers_per_block = check_int("layers_per_block", layers_per_block)
        norm_num_groups = check_int("norm_num_groups", norm_num_groups)
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups must divide every entry of block_out_channels {block_out_channels}, "
                f"got {norm_num_groups} (it does not divide {bad})"
            )
        attention = check_bool("attention", attention)
        num_train_timesteps = check_int("num_train_timesteps", num_train_timesteps, low=2)
        check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        num_inference_steps = check_int("num_inference_steps", num_inference_steps)
        if num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be at most num_train_timesteps={num_train_timesteps}, "
                f"got {num_inference_steps}"
            )
        lr = check_number("lr", lr, low=0, low_open=True)
        batch_size = check_int("batch_size", batch_size)
        super().__init__(
            image_shape,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            attention=attention,
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            num_inference_steps=num_inference_steps,
            lr=lr,
            batch_size=batch_size,
        )
        self.block_out_channels = tuple(block_out_channels)
        self.layers_per_block = layers_per_block
        self.norm_num_groups = norm_num_groups
        self.attention = attention
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.num_inference_steps = num_inference_steps
        self.lr = lr
        multiple = 2 ** (len(block_out_channels) - 1)
        _, height, width = self.image_shape
        self._padded = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
        from diffusers import DDIMScheduler, DDPMScheduler

        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.sampler = DDIMScheduler.from_config(self.noise_scheduler.config, timestep_spacing="trailing")
        self._initialise()

    def _reset(self) -> None:
        from diffusers import UNet2DModel

        blocks = len(self.block_out_channels)
        self.unet = UNet2DModel(
            sample_size=self._padded,
            in_channels=self.image_shape[0],
            out_channels=self.image_shape[0],
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            down_block_types=("DownBlock2D",) * blocks,
            up_block_types=("UpBlock2D",) * blocks,
            norm_num_groups=self.norm_num_groups,
            add_attention=self.attention,
            attention_head_dim=None,
        )

    def _to_model_space(self, images: Tensor) -> Tensor:
        _, height, width = self.image_shape
        padded = F.pad(images, (0, self._padded[1] - width, 0, self._padded[0] - height))
        return padded * 2.0 - 1.0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self._to_model_space(batch[0])
        g = self.noise_generator
        noise = torch.randn(x.shape, generator=g).to(x)
        timesteps = torch.randint(0, self.num_train_timesteps, (x.shape[0],), generator=g).to(x.device)
        noisy = self.noise_scheduler.add_noise(x, noise, timesteps)
        loss = F.mse_loss(self.unet(noisy, timesteps).sample, noise)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        channels, height, width = self.image_shape
        x = torch.randn(n, channels, *self._padded, generator=generator).to(self.device)
        self.sampler.set_timesteps(self.num_inference_steps)
        for t in self.sampler.timesteps:
            eps = self.unet(x, t.to(self.device)).sample
            x = self.sampler.step(eps, t, x, eta=0.0).prev_sample
        return ((x[:, :, :height, :width] + 1.0) / 2.0).float()
