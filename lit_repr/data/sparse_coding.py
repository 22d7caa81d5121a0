"""Synthetic sparse-coding data with ground truth: ``x = s·D`` with exactly ``K`` of ``N`` codes active.

The generative process (as in the amortisation-gap study of O'Neill, Gumran & Klindt, 2025):

1. a dictionary ``D`` of ``N`` (``num_features``) random unit-norm atoms in ``R^M``
   (``M = in_features``; normalized Gaussian rows);
2. per sample, exactly ``K`` (``num_active``) of the ``N`` features are active, drawn without
   replacement with probabilities ``p_i ∝ i^{−zipf_exponent}`` (``0``: uniform) by the Gumbel-top-k
   trick;
   ``correlation > 0`` makes the Gumbel perturbations of features in the same group of
   ``group_size`` jointly Gaussian (copula) with that correlation, so they tend to fire together;
3. active magnitudes are ``|N(0, 1)|``;
4. ``x = s·D``, optionally plus isotropic Gaussian noise;
5. ``mixing_condition > 1``: an anisotropic linear mixing ``A = U diag(σ) Vᵀ`` (random orthogonal
   ``U``, ``V``; singular values log-spaced from 1 down to ``1 / mixing_condition``, so
   ``cond(A) = mixing_condition``) is applied, ``x ← x·A``: some directions of the observations are
   stretched, others squashed (the setting in which whitening the inputs of an SAE matters).

Batches are ``{"x": (B, M), "codes": (B, N), "index": (B,)}``. The dictionary is not repeated in
every sample: it is the DataModule attribute :attr:`SparseCodingDataModule.dictionary` (``(N, M)``,
the atoms as they appear in ``x``: ``D·A`` with a mixing), which
:class:`~lit_repr.models.sae.SparseAutoencoder` reads through its ``true_dictionary()`` hook.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtr
from torch import Tensor

from lit_repr.checks import check_int, check_number
from lit_repr.data.base import ArrayDataModule

__all__ = ["SparseCodingDataModule", "sample_sparse_codes", "random_dictionary", "anisotropic_mixing"]


def random_dictionary(num_features: int, in_features: int, rng: np.random.Generator) -> np.ndarray:
    """``(num_features, in_features)`` atoms drawn uniformly on the unit sphere.

    Example:
        >>> D = random_dictionary(5, 3, np.random.default_rng(0))
        >>> D.shape, bool(np.allclose(np.linalg.norm(D, axis=1), 1))
        ((5, 3), True)
    """
    D = rng.standard_normal((num_features, in_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def anisotropic_mixing(in_features: int, condition: float, rng: np.random.Generator) -> np.ndarray:
    """``(in_features, in_features)`` matrix ``U diag(σ) Vᵀ``: random orthogonal ``U``, ``V`` and singular
    values log-spaced from 1 to ``1 / condition`` (its condition number is ``condition``).

    Example:
        >>> A = anisotropic_mixing(4, 100.0, np.random.default_rng(0))
        >>> round(float(np.linalg.cond(A)), 6)
        100.0
    """
    check_number("condition", condition, low=1)
    u, _ = np.linalg.qr(rng.standard_normal((in_features, in_features)))
    v, _ = np.linalg.qr(rng.standard_normal((in_features, in_features)))
    sigma = np.logspace(0, -np.log10(condition), in_features)
    return (u * sigma) @ v.T


def sample_sparse_codes(
    n: int,
    num_features: int,
    num_active: int,
    rng: np.random.Generator,
    zipf_exponent: float = 0.0,
    correlation: float = 0.0,
    group_size: int = 4,
) -> np.ndarray:
    """``(n, num_features)`` codes with exactly ``num_active`` non-zeros per row, magnitudes ``|N(0, 1)|``.

    Args:
        n: samples.
        num_features: features ``N``.
        num_active: active features per sample ``K``.
        rng: numpy generator.
        zipf_exponent: firing probabilities ``∝ rank^{−zipf_exponent}``.
        correlation: Gaussian-copula correlation of the selection noise within feature groups.
        group_size: features per correlated group.

    Example:
        >>> s = sample_sparse_codes(4, 6, 2, np.random.default_rng(0))
        >>> (s != 0).sum(1).tolist()
        [2, 2, 2, 2]
    """
    logits = -zipf_exponent * np.log(np.arange(1, num_features + 1))
    if correlation > 0:
        z = rng.standard_normal((n, num_features))
        groups = np.arange(num_features) // group_size
        shared = rng.standard_normal((n, int(groups.max()) + 1))[:, groups]
        z = math.sqrt(1 - correlation) * z + math.sqrt(correlation) * shared
        u = np.clip(ndtr(z), 1e-12, 1 - 1e-12)
    else:
        u = rng.uniform(1e-12, 1 - 1e-12, size=(n, num_features))
    gumbel = -np.log(-np.log(u))
    active = np.argpartition(-(logits + gumbel), num_active - 1, axis=1)[:, :num_active]
    codes = np.zeros((n, num_features))
    rows = np.arange(n)[:, None]
    codes[rows, active] = np.abs(rng.standard_normal((n, num_active)))
    return codes


class SparseCodingDataModule(ArrayDataModule):
    """Synthetic sparse-coding data ``x = s·D`` with the true codes in every batch.

    Args:
        num_features: number of ground-truth features ``N`` (dictionary atoms).
        in_features: dimension ``M`` of the observations ``x`` (the ``in_features`` of a model
            reading them).
        num_active: active features per sample ``K`` (``1 <= num_active <= num_features``); named
            so as not to clash with an SAE's ``k`` when Lightning merges hyperparameters.
        num_train: training samples.
        num_val: validation samples (``0``: no ``val`` split).
        num_test: test samples (``0``: no ``test`` split).
        zipf_exponent: Zipfian firing (``0``: every feature equally likely).
        correlation: within-group correlation of feature selection, in ``[0, 1)``.
        group_size: features per correlated group.
        noise_std: standard deviation of additive Gaussian noise on ``x``.
        mixing_condition: condition number (``>= 1``) of an anisotropic linear mixing applied to ``x``
            after the noise; ``1`` (default): no mixing.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        seed: seed of the codes (and of the dictionary unless ``dictionary_seed`` is given).
        dictionary_seed: separate seed for the dictionary.
        eval_batch_size: evaluation batch size.

    Example:
        >>> dm = SparseCodingDataModule(num_features=16, in_features=8, num_active=3, num_train=64, batch_size=16)
        >>> dm.setup("fit"); b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["codes"].shape, dm.dictionary.shape
        (torch.Size([16, 8]), torch.Size([16, 16]), torch.Size([16, 8]))
    """

    def __init__(
        self,
        num_features: int = 16,
        in_features: int = 8,
        num_active: int = 3,
        num_train: int = 1024,
        num_val: int = 1024,
        num_test: int = 1024,
        zipf_exponent: float = 0.0,
        correlation: float = 0.0,
        group_size: int = 4,
        noise_std: float = 0.0,
        mixing_condition: float = 1.0,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        dictionary_seed: int | None = None,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        for name, v in (("num_features", num_features), ("in_features", in_features), ("num_active", num_active),
                        ("num_train", num_train), ("group_size", group_size)):  # fmt: skip
            check_int(name, v)
        check_int("num_val", num_val, low=0)
        check_int("num_test", num_test, low=0)
        if num_active > num_features:
            raise ValueError(f"num_active must be <= num_features={num_features}, got {num_active}")
        check_number("zipf_exponent", zipf_exponent, low=0)
        check_number("correlation", correlation, low=0, high=1, high_open=True)
        check_number("noise_std", noise_std, low=0)
        check_number("mixing_condition", mixing_condition, low=1)
        if dictionary_seed is not None:
            check_int("dictionary_seed", dictionary_seed, low=0)
        self.save_hyperparameters()
        self.num_features, self.num_active = num_features, num_active
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.zipf_exponent, self.correlation, self.group_size = zipf_exponent, correlation, group_size
        self.noise_std = noise_std
        self.mixing_condition = float(mixing_condition)
        self.dictionary_seed = dictionary_seed
        dseed = seed if dictionary_seed is None else dictionary_seed
        atoms = random_dictionary(num_features, in_features, np.random.default_rng([dseed, 1]))
        #: the mixing ``A`` (``(in_features, in_features)``; ``None`` when ``mixing_condition == 1``)
        self.mixing: Tensor | None = None
        if mixing_condition > 1:
            mix = anisotropic_mixing(in_features, mixing_condition, np.random.default_rng([dseed, 3]))
            self.mixing = torch.as_tensor(mix, dtype=torch.float64)
            atoms = atoms @ mix
        #: the true dictionary as the atoms appear in ``x``, ``(num_features, in_features)``: unit-norm
        #: rows without mixing, ``D·A`` with one
        self.dictionary: Tensor = torch.as_tensor(atoms, dtype=torch.float32)

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        rng = np.random.default_rng([self.seed, 2])
        D = self.dictionary.double().numpy()
        out = {}
        for split, n in self.sizes.items():
            if n == 0:
                continue
            s = sample_sparse_codes(n, self.num_features, self.num_active, rng, self.zipf_exponent, self.correlation,
                                    self.group_size)  # fmt: skip
            x = s @ D
            if self.noise_std > 0:
                noise = self.noise_std * rng.standard_normal(x.shape)
                x = x + (noise @ self.mixing.numpy() if self.mixing is not None else noise)
            out[split] = {
                "x": torch.as_tensor(x, dtype=torch.float32),
                "codes": torch.as_tensor(s, dtype=torch.float32),
            }
        return out
