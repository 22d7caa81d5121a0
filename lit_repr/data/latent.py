"""A latent-variable model with known ground truth: class-conditional vMF latents, mixed by an MLP.

The generative process studied in identifiability theory for cross-entropy training:

1. ``C`` class vectors ``v_c`` are drawn uniformly on the unit hypersphere ``S^{d-1}``;
2. a sample picks a class ``y`` uniformly and a latent ``z ~ vMF(v_y, κ)`` (von Mises–Fisher
   around the class vector with concentration ``κ``);
3. the observation is ``x = g(z)`` where ``g`` is a fixed random invertible MLP: square weight
   matrices with a controlled condition number, LeakyReLU between them.

Under this model the optimal classifier's logits are ``κ v_c·z`` up to a per-class constant,
so a network trained with cross-entropy can recover ``z`` (and the head the ``v_c``) up to a
linear map. :func:`sample_von_mises_fisher` implements Wood's (1994) rejection sampler.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lit_repr.checks import check_int, check_number
from lit_repr.data.base import ArrayDataModule

__all__ = [
    "LatentVariableDataModule",
    "InvertibleMLP",
    "sample_von_mises_fisher",
    "uniform_on_sphere",
    "vmf_mean_resultant_length",
]


def uniform_on_sphere(n: int, num_features: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly on the unit sphere ``S^{num_features-1}`` of ``R^num_features``
    (normalized Gaussians).

    Example:
        >>> z = uniform_on_sphere(4, 3, np.random.default_rng(0))
        >>> bool(np.allclose(np.linalg.norm(z, axis=1), 1))
        True
    """
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    g = rng.standard_normal((n, num_features))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    while np.any(norms < 1e-12):  # measure zero, but never divide by zero
        bad = norms[:, 0] < 1e-12
        g[bad] = rng.standard_normal((int(bad.sum()), num_features))
        norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g / norms


def vmf_mean_resultant_length(kappa: float, num_features: int) -> float:
    """``E[μ·z]`` for ``z ~ vMF(μ, κ)`` on ``S^{d-1}``, ``d = num_features``: ``I_{d/2}(κ) / I_{d/2-1}(κ)``.

    Example:
        >>> round(vmf_mean_resultant_length(10.0, 5), 3)
        0.811
    """
    from scipy.special import ive

    if kappa == 0:
        return 0.0
    return float(ive(num_features / 2, kappa) / ive(num_features / 2 - 1, kappa))


def sample_von_mises_fisher(mu: np.ndarray, kappa: float, rng: np.random.Generator) -> np.ndarray:
    """One sample of ``vMF(mu[i], kappa)`` per row of ``mu`` (Wood's rejection sampler).

    Args:
        mu: ``(n, d)`` unit mean directions, ``d >= 2``.
        kappa: concentration ``>= 0`` (``0`` is the uniform distribution on the sphere).
        rng: numpy random generator.

    Returns:
        ``(n, d)`` unit vectors.

    Example:
        >>> mu = np.tile([1.0, 0, 0], (2000, 1))
        >>> z = sample_von_mises_fisher(mu, 10.0, np.random.default_rng(0))
        >>> bool(abs(z[:, 0].mean() - vmf_mean_resultant_length(10.0, 3)) < 0.01)
        True
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[1] < 2:
        raise ValueError(f"mu must have shape (n, d) with d >= 2, got {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise ValueError("mu contains NaN or inf")
    norms = np.linalg.norm(mu, axis=1)
    if np.any(np.abs(norms - 1) > 1e-6):
        raise ValueError(f"mu rows must be unit vectors; norms range over [{norms.min():.4g}, {norms.max():.4g}]")
    if not (np.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    n, d = mu.shape
    if kappa == 0:
        return uniform_on_sphere(n, d, rng)
    # Component along the mean direction, w = μ·z, by rejection (Wood 1994), numerically stable form.
    m1 = d - 1.0
    b = m1 / (2.0 * kappa + math.sqrt(4.0 * kappa**2 + m1**2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m1 * math.log(1.0 - x0**2)
    w = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        k = todo.size
        beta = rng.beta(m1 / 2.0, m1 / 2.0, size=k)
        cand = (1.0 - (1.0 + b) * beta) / (1.0 - (1.0 - b) * beta)
        u = rng.uniform(size=k)
        ok = kappa * cand + m1 * np.log(1.0 - x0 * cand) - c >= np.log(u)
        w[todo[ok]] = cand[ok]
        todo = todo[~ok]
    # Uniform direction in the tangent space of e1, then the Householder reflection e1 -> μ.
    v = uniform_on_sphere(n, d - 1, rng)
    z = np.concatenate([w[:, None], np.sqrt(np.clip(1.0 - w**2, 0.0, None))[:, None] * v], axis=1)
    e1 = np.zeros(d)
    e1[0] = 1.0
    h = e1[None, :] - mu
    hn = (h * h).sum(1, keepdims=True)
    reflect = hn[:, 0] > 1e-24
    proj = (h * z).sum(1, keepdims=True)
    z = np.where(reflect[:, None], z - 2.0 * h * proj / np.where(hn > 1e-24, hn, 1.0), z)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _conditioned_matrix(size: int, condition_number: float, rng: np.random.Generator) -> np.ndarray:
    """``U diag(s) Vᵀ`` with Haar-random orthogonal ``U, V`` and log-spaced singular values whose
    ratio is ``condition_number`` and whose geometric mean is 1 (volume preserving)."""

    def haar(k: int) -> np.ndarray:
        q, r = np.linalg.qr(rng.standard_normal((k, k)))
        return q * np.sign(np.diag(r))[None, :]

    s = np.exp(np.linspace(-0.5, 0.5, size) * math.log(condition_number)) if size > 1 else np.ones(1)
    return haar(size) @ np.diag(s) @ haar(size).T


class InvertibleMLP(nn.Sequential):
    """A fixed random invertible MLP ``R^d -> R^d`` (``d = in_features``): ``Linear, LeakyReLU, ..., Linear``.

    Every weight matrix is square with singular values log-spaced over a ratio of
    ``condition_number`` (geometric mean 1); LeakyReLU with a positive slope is a bijection, so
    the whole map is invertible (:meth:`inverse`). Parameters are frozen buffers of the data, not
    something to train.

    Args:
        in_features: input dimension, also the output dimension.
        num_layers: number of linear layers (``num_layers - 1`` LeakyReLUs between them).
        negative_slope: LeakyReLU slope for negative inputs, in ``(0, 1]``; smaller is more
            nonlinear (``1`` gives a linear map).
        condition_number: ratio of largest to smallest singular value of each weight, ``>= 1``.
        bias_scale: standard deviation of the random biases (``0`` for none).
        seed: seed of the weights.

    Example:
        >>> g = InvertibleMLP(5, num_layers=3, seed=0)
        >>> z = torch.randn(8, 5, dtype=torch.float64)
        >>> torch.allclose(g.inverse(g(z)), z, atol=1e-8)
        True
    """

    def __init__(
        self,
        in_features: int,
        num_layers: int = 3,
        negative_slope: float = 0.2,
        condition_number: float = 2.0,
        bias_scale: float = 0.1,
        seed: int = 0,
    ) -> None:
        check_int("in_features", in_features)
        check_int("num_layers", num_layers)
        check_number("negative_slope", negative_slope, low=0, high=1, low_open=True,
                     why=" so the LeakyReLU is invertible")  # fmt: skip
        check_number("condition_number", condition_number, low=1)
        check_number("bias_scale", bias_scale, low=0)
        check_int("seed", seed, low=0)
        rng = np.random.default_rng(seed)
        layers: list[nn.Module] = []
        for i in range(num_layers):
            lin = nn.Linear(in_features, in_features, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(_conditioned_matrix(in_features, condition_number, rng)))
                lin.bias.copy_(torch.from_numpy(bias_scale * rng.standard_normal(in_features)))
            lin.requires_grad_(False)
            layers.append(lin)
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(negative_slope))
        super().__init__(*layers)
        self.in_features = in_features
        self.negative_slope = negative_slope

    def forward(self, z: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(z.to(torch.float64))

    @torch.no_grad()
    def inverse(self, x: Tensor) -> Tensor:
        """The exact inverse map ``x -> z``."""
        h = x.to(torch.float64)
        for layer in reversed(list(self)):
            if isinstance(layer, nn.Linear):
                h = torch.linalg.solve(layer.weight, (h - layer.bias).T).T
            else:
                h = torch.where(h >= 0, h, h / self.negative_slope)
        return h


class LatentVariableDataModule(ArrayDataModule):
    """Class-conditional von Mises–Fisher latents on the hypersphere, mixed by an invertible MLP.

    Batches are ``{"x": (B, d) float32 observations, "y": (B,) class, "latents": (B, d) float32
    unit vectors, "index": (B,) position in the split}``. The ground truth of the generative
    process is kept on the DataModule after :meth:`setup`: :attr:`class_vectors` (``(C, d)``
    unit rows) and :attr:`mixing` (the :class:`InvertibleMLP`; ``mixing.inverse`` recovers the
    latents exactly). Everything is a deterministic function of ``seed``.

    With ``view_kappa`` set, each *training* batch is replaced (after transfer to the device)
    by a fresh "view" of every sample: ``z' ~ vMF(z, view_kappa)``, ``x' = g(z')``, with
    ``"latents"`` holding ``z'`` and ``"anchor_latents"`` the original ``z``. This is the oracle
    augmentation under which instance discrimination (:class:`~lit_repr.models.diet.DIET`) has a
    latent-variable interpretation. Views are drawn from ``seed`` and the global step, so a
    resumed run sees the same views.

    Args:
        latent_dim: dimension ``d`` of the latent space (latents live on ``S^{d-1}``), ``>= 2``.
        num_classes: number of classes ``C``.
        kappa: concentration of the vMF around each class vector (``0``: uniform, no class
            information).
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        num_mixing_layers: linear layers of the mixing MLP.
        negative_slope: LeakyReLU slope of the mixing MLP in ``(0, 1]`` (``1``: linear mixing).
        condition_number: condition number of each mixing weight matrix (``>= 1``).
        view_kappa: if set (``> 0``), concentration of the training-time vMF views.
        batch_size: samples per batch.
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of class vectors, mixing, samples and splits.

    Example:
        >>> dm = LatentVariableDataModule(latent_dim=5, num_classes=10, num_train=200, batch_size=50)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["latents"].shape, dm.class_vectors.shape
        (torch.Size([50, 5]), torch.Size([50, 5]), torch.Size([10, 5]))
    """

    def __init__(
        self,
        latent_dim: int = 5,
        num_classes: int = 100,
        kappa: float = 10.0,
        num_train: int = 20_000,
        num_val: int = 2_000,
        num_test: int = 5_000,
        num_mixing_layers: int = 3,
        negative_slope: float = 0.2,
        condition_number: float = 2.0,
        view_kappa: float | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 2:
            raise ValueError(f"latent_dim must be an int >= 2 (latents live on S^(d-1)), got {latent_dim!r}")
        check_int("num_classes", num_classes)
        check_number("kappa", kappa, low=0)
        check_int("num_train", num_train, low=2)
        check_int("num_val", num_val, low=0)
        check_int("num_test", num_test, low=0)
        if view_kappa is not None:
            check_number("view_kappa", view_kappa, low=0, low_open=True, why=" (or None: no views)")
        check_int("num_mixing_layers", num_mixing_layers)
        # Build the mixing now so that its own argument checks fire at construction time.
        self.mixing = InvertibleMLP(
            latent_dim, num_layers=num_mixing_layers, negative_slope=negative_slope,
            condition_number=condition_number, seed=seed + 1,
        )
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.kappa = float(kappa)
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.view_kappa = view_kappa
        rng = np.random.default_rng(seed)
        self.class_vectors = torch.from_numpy(uniform_on_sphere(num_classes, latent_dim, rng)).float()

    # ------------------------------------------------------------------ generation
    def sample(self, n: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """Draw ``n`` fresh samples ``{"x", "y", "latents"}`` from the generative process."""
        check_int("n", n, low=0)
        y = rng.integers(0, self.num_classes, size=n)
        z = sample_von_mises_fisher(self.class_vectors.double().numpy()[y], self.kappa, rng)
        return self._observe(torch.from_numpy(z), torch.from_numpy(y))

    @torch.no_grad()
    def _observe(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        x = self.mixing(z)
        return {"x": x.float(), "y": y.long(), "latents": z.float()}

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        rng = np.random.default_rng([self.seed, 7])
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
        return {name: self.sample(n, rng) for name, n in sizes.items() if n > 0}

    # ------------------------------------------------------------------ views
    def make_views(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Replace ``x`` and ``latents`` of a batch by a vMF view around each sample's latent."""
        anchor = batch["latents"]
        z = anchor.detach().double().cpu().numpy()
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        view = torch.from_numpy(sample_von_mises_fisher(z, float(self.view_kappa), rng))
        obs = self._observe(view, batch["y"].cpu())
        out = dict(batch)
        out["x"] = obs["x"].to(batch["x"].device)
        out["latents"] = obs["latents"].to(anchor.device)
        out["anchor_latents"] = anchor
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if self.view_kappa is None or trainer is None or not trainer.training:
            return batch
        if not isinstance(batch, dict) or "latents" not in batch:
            return batch
        rng = np.random.default_rng([self.seed, 11, int(trainer.global_step), int(trainer.global_rank)])
        return self.make_views(batch, rng)
