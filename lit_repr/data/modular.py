"""Modular arithmetic: every pair ``(a, b)`` of residues mod ``p`` labelled with ``a ∘ b mod p``.

The data set of grokking studies: the table of a binary operation on ``Z_p`` (``add``,
``subtract``, ``multiply``, or ``divide``, which needs a prime ``p`` and ``b ≠ 0``), split at random
into a training fraction and a held-out rest. Inputs are the concatenated one-hot codes of ``a`` and
``b`` (``(2p,)`` floats) or the two indices (``(2,)`` integers, for an embedding layer).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_repr.data.base import ArrayDataModule, split_indices

__all__ = ["ModularArithmeticDataModule", "modular_table"]

OPERATIONS = ("add", "subtract", "multiply", "divide")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, math.isqrt(n) + 1))


def modular_table(modulus: int, operation: str = "add") -> tuple[Tensor, Tensor]:
    """All operand pairs and their results: ``(operands (N, 2), results (N,))``, both ``int64``.

    ``divide`` is ``a · b⁻¹ mod p``; it needs a prime ``modulus`` and leaves out ``b = 0``.

    Example:
        >>> ab, c = modular_table(5, "divide")
        >>> ab.shape, bool(((c * ab[:, 1]) % 5 == ab[:, 0]).all())
        (torch.Size([20, 2]), True)
    """
    if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 2:
        raise ValueError(f"modulus must be an int >= 2, got {modulus!r}")
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    if operation == "divide" and not _is_prime(modulus):
        raise ValueError(f"operation='divide' needs a prime modulus (every b != 0 invertible), got modulus={modulus}")
    p = modulus
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if operation == "divide":
        keep = b != 0
        a, b = a[keep], b[keep]
        inverse = torch.tensor([0] + [pow(k, -1, p) for k in range(1, p)])
        c = (a * inverse[b]) % p
    elif operation == "add":
        c = (a + b) % p
    elif operation == "subtract":
        c = (a - b) % p
    else:
        c = (a * b) % p
    return torch.stack([a, b], dim=1), c


class ModularArithmeticDataModule(ArrayDataModule):
    """The table of ``a ∘ b mod p`` split into a training fraction and a held-out rest.

    Batches are ``{"x": inputs, "y": (B,) result, "operands": (B, 2) the pair (a, b), "index": (B,)}``
    with ``x`` of shape ``(B, 2p)`` (``input_encoding="one_hot"``, float32) or ``(B, 2)``
    (``"index"``, int64). Splits are ``train`` (``train_fraction`` of the table) and ``val`` (the
    rest, also used for testing); the split is a deterministic function of ``seed``.

    Args:
        modulus: ``p >= 2`` (a prime for ``divide``).
        operation: ``"add"``, ``"subtract"``, ``"multiply"`` or ``"divide"``.
        train_fraction: fraction of the table used for training, in ``(0, 1)``.
        input_encoding: ``"one_hot"`` (concatenated one-hot codes of ``a`` and ``b``) or ``"index"``.
        batch_size: samples per batch.
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of the split.

    Example:
        >>> dm = ModularArithmeticDataModule(modulus=7, operation="add", train_fraction=0.5, batch_size=8)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, dm.num_classes, bool(((b["operands"].sum(1) % 7) == b["y"]).all())
        (torch.Size([8, 14]), 7, True)
    """

    def __init__(
        self,
        modulus: int = 97,
        operation: str = "add",
        train_fraction: float = 0.5,
        input_encoding: str = "one_hot",
        batch_size: int = 512,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)) or not (
            0 < train_fraction < 1
        ):
            raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")
        if input_encoding not in ("one_hot", "index"):
            raise ValueError(f"input_encoding must be 'one_hot' or 'index', got {input_encoding!r}")
        self.operands, self.results = modular_table(modulus, operation)  # checks modulus and operation
        if round(train_fraction * len(self.results)) < 1 or round(train_fraction * len(self.results)) >= len(
            self.results
        ):
            raise ValueError(
                f"train_fraction={train_fraction} leaves an empty train or held-out split of the "
                f"{len(self.results)} pairs; choose a fraction that keeps both non-empty"
            )
        self.modulus = modulus
        self.operation = operation
        self.train_fraction = float(train_fraction)
        self.input_encoding = input_encoding

    @property
    def num_classes(self) -> int:
        """Number of possible results, ``p``."""
        return self.modulus

    @property
    def in_features(self) -> int:
        """Input width: ``2p`` for one-hot inputs, ``2`` for indices."""
        return 2 * self.modulus if self.input_encoding == "one_hot" else 2

    def encode(self, operands: Tensor) -> Tensor:
        """Inputs for ``(N, 2)`` operand pairs in this DataModule's ``input_encoding``."""
        if self.input_encoding == "index":
            return operands.long()
        one_hot = torch.nn.functional.one_hot(operands.long(), self.modulus).float()
        return one_hot.reshape(operands.shape[0], 2 * self.modulus)

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        train, held_out = split_indices(len(self.results), (self.train_fraction,), seed=self.seed)
        out = {}
        for name, idx in (("train", train), ("val", held_out)):
            idx = torch.from_numpy(idx).sort().values
            ops = self.operands[idx]
            out[name] = {"x": self.encode(ops), "y": self.results[idx], "operands": ops}
        return out
