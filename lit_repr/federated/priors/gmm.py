"""A Gaussian mixture in the PCA space of one class's images: the fast CPU baseline among the priors."""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.checks import check_choice, check_int, check_number

from .base import GenerativePrior

__all__ = ["GaussianMixturePrior"]

COVARIANCE_TYPES = ("full", "diag", "spherical")


class GaussianMixturePrior(GenerativePrior):
    """PCA of the class images (closed form) and a Gaussian mixture fit by EM on the whitened PCA scores.

    :meth:`fit_data` computes the PCA (mean and the leading right singular vectors, signs fixed so
    that each vector's largest entry is positive) and a k-means++ initialisation, then runs one EM step
    per Trainer epoch over the whole set (manual optimisation, no gradient). Training stops early once
    the mean log-likelihood per image changes by less than ``tol``; ``train/log_likelihood`` is logged.
    Sampling draws a component, a Gaussian score, maps it back to pixels and clips to ``[0, 1]``.

    Few images are handled as follows: the PCA keeps at most ``min(num_pca_components, N - 1)``
    directions (directions without variance are dropped), and a class with fewer images than
    ``num_components`` gets ``N`` components, with a warning. Unused directions and components are
    kept as zero loadings and zero weights so that the tensors' shapes depend on the configuration
    only. A single image gives a prior that always returns that image.

    Args:
        image_shape: ``(C, H, W)`` of the images (values in ``[0, 1]``).
        num_components: mixture components.
        num_pca_components: PCA directions the mixture lives in (at most ``C * H * W``).
        covariance_type: ``"full"``, ``"diag"`` or ``"spherical"`` covariance per component.
        reg_covar: added to the covariance diagonals, in units of the (whitened, unit) score variance.
        tol: EM stops when the mean log-likelihood per image changes by less than this.

    Example:
        >>> prior = GaussianMixturePrior((1, 8, 8), num_components=3, num_pca_components=5)
        >>> images = torch.rand(40, 1, 8, 8)
        >>> samples = prior.fit_data(images, seed=0).sample(10, torch.Generator().manual_seed(0))
        >>> samples.shape, bool(samples.min() >= 0), bool(samples.max() <= 1)
        (torch.Size([10, 1, 8, 8]), True, True)
    """

    kind: ClassVar[str] = "gmm"
    default_max_epochs: ClassVar[int] = 100

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_components: int = 5,
        num_pca_components: int = 16,
        covariance_type: str = "full",
        reg_covar: float = 1e-2,
        tol: float = 1e-4,
    ) -> None:
        num_components = check_int("num_components", num_components)
        num_pca_components = check_int("num_pca_components", num_pca_components)
        check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
        reg_covar = check_number("reg_covar", reg_covar, low=0, low_open=True)
        tol = check_number("tol", tol, low=0)
        super().__init__(
            image_shape,
            num_components=num_components,
            num_pca_components=num_pca_components,
            covariance_type=covariance_type,
            reg_covar=reg_covar,
            tol=tol,
        )
        num_pixels = math.prod(self.image_shape)
        if num_pca_components > num_pixels:
            raise ValueError(
                f"num_pca_components must be at most C * H * W = {num_pixels} for image_shape "
                f"{self.image_shape}, got {num_pca_components}"
            )
        self.num_components = num_components
        self.num_pca_components = num_pca_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.tol = tol
        self.automatic_optimization = False
        self._initialise()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        k, d, p = self.num_components, self.num_pca_components, math.prod(self.image_shape)
        f64 = dict(dtype=torch.float64)
        self.register_buffer("pca_mean", torch.zeros(p, **f64))
        self.register_buffer("pca_loadings", torch.zeros(d, p, **f64))  # direction * standard deviation
        self.register_buffer("weights", torch.zeros(k, **f64))
        self.register_buffer("means", torch.zeros(k, d, **f64))
        cov_shape = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[self.covariance_type]
        cov = torch.ones(cov_shape, **f64) if self.covariance_type != "full" else torch.eye(d, **f64).repeat(k, 1, 1)
        self.register_buffer("covariances", cov)
        self._rank = 0  # PCA directions in use
        self._active = 0  # components in use
        self._last_ll: float | None = None

    def _setup_fit(self, images: Tensor) -> None:
        x = images.reshape(images.shape[0], -1).to(torch.float64)
        n = x.shape[0]
        mean = x.mean(0)
        centred = x - mean
        self.pca_mean.copy_(mean)
        if n > 1:
            _, s, vh = torch.linalg.svd(centred, full_matrices=False)
            kept = s > 1e-8 * max(float(s[0]), 1e-300)
            rank = min(self.num_pca_components, int(kept.sum()))
        else:
            rank = 0
        self._rank = rank
        self._active = min(self.num_components, n) if rank > 0 else 1
        if self._active < self.num_components:
            warnings.warn(
                f"GaussianMixturePrior: {n} image(s) for num_components={self.num_components}; "
                f"fitting {self._active} component(s)",
                stacklevel=3,
            )
        if rank == 0:  # one distinct image: a point mass at the mean
            self.weights.zero_()[0] = 1.0
            return
        directions = vh[:rank]
        flip = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
        directions = directions * flip
        scales = s[:rank] / math.sqrt(n - 1)
        self.pca_loadings.zero_()[:rank] = directions * scales[:, None]
        self._init_mixture(self._project_images(images))

    def _project_images(self, images: Tensor) -> Tensor:
        """Whitened PCA scores ``(N, rank)`` of images ``(N, C, H, W)``."""
        loadings = self.pca_loadings[: self._rank]
        x = images.reshape(images.shape[0], -1).to(torch.float64)
        return (x - self.pca_mean) @ loadings.T / (loadings**2).sum(1)

    def _init_mixture(self, z: Tensor) -> None:
        """k-means++ centres, hard assignments, then one M-step."""
        n, k = z.shape[0], self._active
        g = self.noise_generator
        centres = [int(torch.randint(n, (1,), generator=g))]
        closest = ((z - z[centres[0]]) ** 2).sum(1)
        for _ in range(1, k):
            probs = closest if float(closest.sum()) > 0 else torch.ones_like(closest)
            idx = int(torch.multinomial(probs, 1, generator=g))
            centres.append(idx)
            closest = torch.minimum(closest, ((z - z[idx]) ** 2).sum(1))
        dist = torch.cdist(z, z[centres])
        resp = torch.nn.functional.one_hot(dist.argmin(1), k).to(z.dtype)
        self._m_step(z, resp)

    def _m_step(self, z: Tensor, resp: Tensor) -> None:
        k, r = self._active, self._rank
        counts = resp.sum(0) + 10 * torch.finfo(z.dtype).eps
        means = resp.T @ z / counts[:, None]
        self.weights.zero_()[:k] = counts / counts.sum()
        self.means.zero_()[:k, :r] = means
        diff = z[:, None, :] - means[None]  # (N, k, r)
        if self.covariance_type == "full":
            cov = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / counts[:, None, None]
            cov = cov + self.reg_covar * torch.eye(r, dtype=z.dtype)
            full = torch.eye(self.num_pca_components, dtype=z.dtype).repeat(self.num_components, 1, 1)
            full[:k, :r, :r] = cov
            self.covariances.copy_(full)
        else:
            var = torch.einsum("nk,nki->ki", resp, diff**2) / counts[:, None] + self.reg_covar
            if self.covariance_type == "diag":
                self.covariances.fill_(1.0)[:k, :r] = var
            else:
                self.covariances.fill_(1.0)[:k] = var.mean(1)

    def _log_prob(self, z: Tensor) -> Tensor:
        """``(N, active)`` log weight + log density of each component at the scores ``z``."""
        k, r = self._active, self._rank
        means = self.means[:k, :r]
        if self.covariance_type == "full":
            dist = torch.distributions.MultivariateNormal(
                means, scale_tril=torch.linalg.cholesky(self.covariances[:k, :r, :r])
            )
            logp = dist.log_prob(z[:, None, :])
        else:
            var = self.covariances[:k, :r] if self.covariance_type == "diag" else self.covariances[:k, None]
            logp = torch.distributions.Normal(means, var.sqrt()).log_prob(z[:, None, :]).sum(-1)
        return logp + self.weights[:k].log()

    # ------------------------------------------------------------------ Lightning
    def _train_loader(self, images: Tensor, seed: int) -> DataLoader:
        return DataLoader(TensorDataset(images), batch_size=images.shape[0], shuffle=False)

    def configure_optimizers(self) -> None:
        return None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self._rank == 0:
            self.trainer.should_stop = True
            return None
        z = self._project_images(batch[0])
        logp = self._log_prob(z)
        norm = torch.logsumexp(logp, 1, keepdim=True)
        ll = float(norm.mean())
        self._m_step(z, (logp - norm).exp())
        self.log("train/log_likelihood", ll, on_step=False, on_epoch=True, batch_size=z.shape[0])
        if self._last_ll is not None and abs(ll - self._last_ll) < self.tol:
            self.trainer.should_stop = True
        self._last_ll = ll
        return None

    def _finish_load(self) -> None:
        self._rank = int((self.pca_loadings.abs().sum(1) > 0).sum())
        self._active = int((self.weights > 0).sum())

    # ------------------------------------------------------------------ sampling
    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        d = self.num_pca_components
        comps = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
        if self.covariance_type == "full":
            scale = torch.linalg.cholesky(self.covariances)[comps]  # (n, d, d)
            z = self.means[comps] + (scale @ eps[:, :, None])[:, :, 0]
        elif self.covariance_type == "diag":
            z = self.means[comps] + self.covariances[comps].sqrt() * eps
        else:
            z = self.means[comps] + self.covariances[comps, None].sqrt() * eps
        return self.pca_mean + z @ self.pca_loadings
