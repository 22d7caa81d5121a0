"""The generative prior contract: one module per (client, class), trained on that client's images of that class.

A :class:`GenerativePrior` is a LightningModule that

- trains on a tensor of images ``(N, C, H, W)`` with values in ``[0, 1]`` through a Lightning
  ``Trainer`` (:meth:`GenerativePrior.fit_data`), bit-for-bit reproducibly for a fixed ``seed`` on
  the CPU: the network is rebuilt from the seed, data order and training noise come from generators
  seeded from it, and the Trainer runs with ``deterministic=True``;
- draws images in ``[0, 1]`` (:meth:`GenerativePrior.sample`), deterministically for a given
  ``torch.Generator``;
- is described by a JSON configuration (:meth:`GenerativePrior.config`) and a flat dictionary of
  tensors (:meth:`GenerativePrior.tensors`), from which :meth:`GenerativePrior.from_tensors` rebuilds
  it strictly (missing, extra or mis-shaped tensors are refused), so that it can travel as
  safetensors between parties without pickles.

Fitting and sampling run on ``fit_threads`` intra-op threads (1 by default; the caller's count is
restored after), so that results do not depend on the machine's core count: multi-threaded kernels
may order floating-point reductions differently. Bit-for-bit equality is promised for the same seed,
data and library versions on the CPU. (Tiny networks also train faster on one thread than on busy
shared cores.)
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.checks import check_int
from lit_repr.federated.engine import QUIET_TRAINER, quiet_lightning
from lit_repr.threads import num_threads

__all__ = ["GenerativePrior", "check_image_shape", "check_images"]

#: Trainer settings of :meth:`GenerativePrior.fit_data` (``trainer_kwargs`` override them).
DEFAULT_TRAINER_KWARGS: dict[str, Any] = {**QUIET_TRAINER, "deterministic": True}


def check_image_shape(image_shape: Any) -> tuple[int, int, int]:
    """``image_shape`` as a ``(C, H, W)`` tuple of positive ints; ``ValueError`` otherwise.

    Example:
        >>> check_image_shape([1, 8, 8])
        (1, 8, 8)
        >>> check_image_shape((8, 8))
        Traceback (most recent call last):
        ...
        ValueError: image_shape must be (channels, height, width), three positive ints, got (8, 8)
    """
    ok = isinstance(image_shape, (tuple, list)) and len(image_shape) == 3
    if ok:
        try:
            shape = tuple(check_int("image_shape", s) for s in image_shape)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"image_shape must be (channels, height, width), three positive ints, got {image_shape!r}")
    return shape


def check_images(images: Any, image_shape: tuple[int, int, int], min_count: int = 1) -> Tensor:
    """``images`` as a float32 CPU tensor after checking shape ``(N, *image_shape)``, finiteness and range ``[0, 1]``.

    Args:
        images: the training images.
        image_shape: the expected ``(C, H, W)``.
        min_count: the fewest images accepted.

    Example:
        >>> check_images(torch.full((2, 1, 4, 4), 0.5), (1, 4, 4)).shape
        torch.Size([2, 1, 4, 4])
        >>> check_images(torch.full((2, 1, 4, 4), 2.0), (1, 4, 4))
        Traceback (most recent call last):
        ...
        ValueError: images must have values in [0, 1], got values in [2, 2]
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if not (images.is_floating_point() or images.dtype == torch.bool):
        raise ValueError(f"images must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images must have shape (N, {', '.join(map(str, image_shape))}) to match image_shape, "
            f"got {tuple(images.shape)}"
        )
    if images.shape[0] < min_count:
        raise ValueError(f"images must hold at least {min_count} image(s), got {images.shape[0]}")
    images = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(images).all():
        raise ValueError(f"images must be finite, got {int((~torch.isfinite(images)).sum())} NaN or infinite value(s)")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ValueError(f"images must have values in [0, 1], got values in [{low:g}, {high:g}]")
    return images.contiguous()


def derived_seed(seed: int, *salt: int) -> int:
    """A 63-bit seed derived from ``seed`` and ``salt`` (independent streams for init, data order, noise).

    Example:
        >>> derived_seed(0, 1) == derived_seed(0, 1) != derived_seed(0, 2)
        True
    """
    value = int(seed) & 0xFFFFFFFFFFFFFFFF
    for s in (*salt, 0x9E3779B97F4A7C15):
        value = (value ^ (int(s) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


@contextmanager
def _torch_flags_restored():
    """Give back the caller's global determinism settings, which ``Trainer(deterministic=...)`` sets."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


class GenerativePrior(pl.LightningModule):
    """Base class of the generative priors: fit on one client's images of one class, sample, travel as tensors.

    Subclasses set ``kind`` (the registry key) and implement ``_reset`` (build the untrained
    networks and buffers, called under the fit's seed), ``_sample`` and the Lightning training hooks;
    optionally ``_setup_fit`` (closed-form steps on the whole data before training, e.g. PCA),
    ``_finish_fit`` and ``_train_loader``. A subclass's ``__init__`` validates its arguments, passes them
    to ``super().__init__`` (which records them for :meth:`config`), sets its attributes and ends by
    calling ``self._initialise()`` (``_reset`` under a fixed seed, leaving the caller's random state alone).

    Args:
        image_shape: ``(C, H, W)`` of the images, whose values lie in ``[0, 1]``.
        **hparams: the subclass's validated, JSON-serialisable constructor arguments.

    Example:
        >>> from lit_repr.federated.priors import GaussianMixturePrior
        >>> prior = GaussianMixturePrior((1, 4, 4), num_components=2, num_pca_components=3)
        >>> _ = prior.fit_data(torch.rand(20, 1, 4, 4), seed=0)
        >>> prior.sample(5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 1, 4, 4])
    """

    kind: ClassVar[str] = ""
    cli_listed: ClassVar[bool] = False  # fitted per client by fit_data, not by `python -m lit_repr fit`
    #: epochs when ``trainer_kwargs`` gives neither ``max_epochs`` nor ``max_steps``
    default_max_epochs: ClassVar[int] = 10
    #: fewest training images accepted by :meth:`fit_data`
    min_images: ClassVar[int] = 1
    #: intra-op threads of :meth:`fit_data` and :meth:`sample` (``None``: the caller's)
    fit_threads: ClassVar[int | None] = 1

    def __init__(self, image_shape: tuple[int, int, int], **hparams: Any) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self._config = {"image_shape": list(self.image_shape), **hparams}
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self._fit_seed = 0
        self._noise: torch.Generator | None = None

    # ------------------------------------------------------------------ subclass hooks
    def _reset(self) -> None:
        """(Re)build the untrained networks and buffers; called in ``__init__`` and under the fit's seed."""
        raise NotImplementedError

    def _initialise(self) -> None:
        """``_reset`` under a fixed seed, without drawing from the caller's random stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self._reset()

    def _setup_fit(self, images: Tensor) -> None:
        """Closed-form preparation on all training images before the Trainer runs (default: nothing)."""

    def _finish_fit(self) -> None:
        """Work after the Trainer has run (default: nothing)."""

    def _train_loader(self, images: Tensor, seed: int) -> DataLoader:
        """Shuffled mini-batches of ``hparams["batch_size"]`` (the whole set without that key), seeded order."""
        batch_size = min(int(self._config.get("batch_size", images.shape[0])), images.shape[0])
        order = torch.Generator().manual_seed(derived_seed(seed, 2))
        return DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, generator=order)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ public interface
    @property
    def noise_generator(self) -> torch.Generator:
        """The generator of training noise, seeded by :meth:`fit_data` (use it for every random draw in training)."""
        if self._noise is None:
            self._noise = torch.Generator().manual_seed(derived_seed(self._fit_seed, 3))
        return self._noise

    def fit_data(
        self,
        images: Tensor,
        *,
        seed: int,
        trainer_kwargs: dict[str, Any] | None = None,
        logger: Any = None,
    ) -> GenerativePrior:
        """Train on one client's images of one class through a Lightning ``Trainer``; return ``self``.

        The prior is rebuilt from ``seed`` first, so two fits with the same seed and data give
        identical :meth:`tensors`. Nothing is written to disk unless ``trainer_kwargs`` asks for it.
        The global random state and determinism flags of the caller are left as they were.

        Args:
            images: ``(N, C, H, W)`` float tensor with values in ``[0, 1]``.
            seed: the seed of initialisation, data order and training noise.
            trainer_kwargs: extra ``Trainer`` arguments (e.g. ``{"max_epochs": 50}``), overriding the
                defaults (CPU, deterministic, no checkpoints, no progress bar, no model summary).
            logger: a Lightning logger; with a TensorBoard logger a grid of samples is logged as an image
                (``prior/<kind>/samples``) after training.
        """
        images = check_images(images, self.image_shape, self.min_images)
        seed = check_int("seed", seed, low=0)
        if trainer_kwargs is not None and not isinstance(trainer_kwargs, dict):
            raise ValueError(f"trainer_kwargs must be a dict or None, got {type(trainer_kwargs).__name__}")
        kwargs = {**DEFAULT_TRAINER_KWARGS, **(trainer_kwargs or {})}
        if "logger" in kwargs:
            raise ValueError("trainer_kwargs must not contain 'logger': pass it as fit_data(..., logger=...)")
        if "max_epochs" not in kwargs and "max_steps" not in kwargs:
            kwargs["max_epochs"] = self.default_max_epochs
        kwargs["logger"] = logger if logger is not None else False

        with (
            torch.random.fork_rng(devices=[]),
            _torch_flags_restored(),
            quiet_lightning(),
            num_threads(self.fit_threads),
        ):
            trainer = pl.Trainer(**kwargs)  # a bad Trainer argument fails here, before the prior changes
            torch.manual_seed(derived_seed(seed, 1))
            self.fitted.fill_(False)
            self._fit_seed = seed
            self._noise = None
            self._reset()
            self._setup_fit(images)
            self.train()
            trainer.fit(self, train_dataloaders=self._train_loader(images, seed))
            self.cpu()
            self._finish_fit()
            self.fitted.fill_(True)
            self.eval()
            if logger is not None:
                self._log_samples(logger, trainer.global_step, seed)
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, C, H, W)``, float32 in ``[0, 1]``, deterministic for a given ``generator``.

        Args:
            n: how many images.
            generator: the CPU generator of every random draw (``None``: torch's global generator).
        """
        n = check_int("n", n)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not bool(self.fitted):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted: call fit_data(images, seed=...) or rebuild a fitted "
                "prior with from_tensors(config, tensors) before sample()"
            )
        was_training = self.training
        self.eval()
        try:
            with num_threads(self.fit_threads):
                out = self._sample(n, generator)
        finally:
            self.train(was_training)
        return out.to("cpu", torch.float32).clamp_(0.0, 1.0).reshape(n, *self.image_shape).contiguous()

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (``image_shape`` included), enough to rebuild the prior."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._config.items()}

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor needed to sample (parameters and fitted buffers), as contiguous CPU copies."""
        return {k: v.detach().to("cpu").clone().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, config: dict[str, Any], tensors: dict[str, Tensor]) -> GenerativePrior:
        """Rebuild a prior from :meth:`config` and :meth:`tensors`; strict about names, shapes and dtypes.

        Args:
            config: the constructor arguments (validated by the constructor).
            tensors: the tensors; a missing, extra or mis-shaped entry raises ``ValueError`` naming it.
        """
        if cls is GenerativePrior or not cls.kind:
            raise ValueError("from_tensors must be called on a concrete prior class, e.g. PRIORS[kind].from_tensors")
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict of constructor arguments, got {type(config).__name__}")
        if "image_shape" not in config:
            raise ValueError(f"config must contain 'image_shape', got keys {sorted(config)}")
        if not isinstance(tensors, dict):
            raise ValueError(f"tensors must be a dict of name -> Tensor, got {type(tensors).__name__}")
        prior = cls(**config)
        expected = prior.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing:
            raise ValueError(f"tensors is missing {missing} for a {cls.kind!r} prior with this config")
        if extra:
            raise ValueError(f"tensors has unexpected entries {extra} for a {cls.kind!r} prior with this config")
        for name, want in expected.items():
            got = tensors[name]
            if not isinstance(got, Tensor):
                raise ValueError(f"tensors[{name!r}] must be a Tensor, got {type(got).__name__}")
            if tuple(got.shape) != tuple(want.shape):
                raise ValueError(
                    f"tensors[{name!r}] has shape {tuple(got.shape)}, expected {tuple(want.shape)} for this config"
                )
            if got.dtype != want.dtype:
                raise ValueError(f"tensors[{name!r}] has dtype {got.dtype}, expected {want.dtype}")
            if got.is_floating_point() and not torch.isfinite(got).all():
                raise ValueError(f"tensors[{name!r}] holds NaN or infinite values")
        prior.load_state_dict({k: v.detach().to("cpu") for k, v in tensors.items()}, strict=True)
        prior._finish_load()
        prior.eval()
        return prior

    def _finish_load(self) -> None:
        """Rebuild derived, non-persistent state after :meth:`from_tensors` (default: nothing)."""

    # ------------------------------------------------------------------ logging
    def _log_samples(self, logger: Any, step: int, seed: int) -> None:
        experiment = getattr(logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        from torchvision.utils import make_grid

        num = 64
        images = self.sample(num, torch.Generator().manual_seed(derived_seed(seed, 4)))
        grid = make_grid(images, nrow=int(math.sqrt(num)), padding=1, pad_value=1.0)
        experiment.add_image(f"prior/{self.kind}/samples", grid, global_step=step)
