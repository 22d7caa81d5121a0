"""Label-based partitions of a training set among federated clients.

A :class:`Partition` holds, for each client, the (sorted, disjoint) indices of the training samples it
owns. Three partitioners build one from the training labels, each deterministic for a given ``seed``
(a ``numpy.random.Generator``):

- :func:`silos`: one client per class, the pathological case of mutually exclusive label sets;
- :func:`classes_per_client`: every client holds ``k`` classes, the samples of a class being shared
  among the clients that hold it;
- :func:`dirichlet`: per class, proportions across clients drawn from ``Dir(alpha)`` (Hsu et al.,
  2019): small ``alpha`` gives skewed label distributions, large ``alpha`` near-uniform ones.

Example:
    >>> labels = np.array([0, 0, 1, 1, 2, 2, 2])
    >>> p = silos(labels)
    >>> [idx.tolist() for idx in p.indices], p.classes(2, labels)
    ([[0, 1], [2, 3], [4, 5, 6]], (2,))
    >>> print(p.table(labels))
    client | 0 1 2 | total
    -------+-------+------
         0 | 2 . . |     2
         1 | . 2 . |     2
         2 | . . 3 |     3
    -------+-------+------
     total | 2 2 3 |     7
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_repr.checks import check_int, check_number

__all__ = ["Partition", "silos", "classes_per_client", "dirichlet", "PARTITIONERS", "as_labels"]


def as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """``labels`` as a 1-D ``int64`` numpy array of class indices (``>= 0``); ``ValueError`` otherwise.

    Accepts numpy arrays, torch tensors and sequences of integers.

    Example:
        >>> as_labels([2, 0, 1]).dtype
        dtype('int64')
        >>> as_labels([0.5, 1.0])
        Traceback (most recent call last):
        ...
        ValueError: labels must be a 1-D array of integer class indices, got dtype float64
    """
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one label, got an empty array")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D array of integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got a minimum of {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class Partition:
    """Which training samples each client holds.

    Attributes:
        indices: one array per client of indices into the training labels (sorted, disjoint,
            read-only ``int64``).
        num_classes: number of classes of the task (labels are in ``[0, num_classes)``).

    Example:
        >>> p = Partition((np.array([0, 2]), np.array([1])), num_classes=2)
        >>> p.num_clients, p.sizes, p.classes(0, [1, 0, 1])
        (2, (2, 1), (1,))
    """

    indices: tuple[np.ndarray, ...]
    num_classes: int

    def __post_init__(self) -> None:
        check_int("num_classes", self.num_classes)
        if not isinstance(self.indices, (tuple, list)) or not self.indices:
            raise ValueError(
                f"indices must be a non-empty tuple of index arrays (one per client), got {self.indices!r}"
            )
        arrays = []
        for client, idx in enumerate(self.indices):
            arr = np.asarray(idx)
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                raise ValueError(
                    f"indices[{client}] must be a 1-D array of integer sample indices, got shape {arr.shape}, "
                    f"dtype {arr.dtype}"
                )
            arr = np.array(arr, dtype=np.int64)  # a private copy, so freezing it leaves the caller's array alone
            if arr.size and (arr.min() < 0 or np.any(np.diff(arr) <= 0)):
                raise ValueError(f"indices[{client}] must be sorted, distinct and >= 0")
            arr.setflags(write=False)
            arrays.append(arr)
        merged = np.concatenate(arrays)
        if np.unique(merged).size != merged.size:
            raise ValueError("indices of different clients must be disjoint: a sample belongs to at most one client")
        object.__setattr__(self, "indices", tuple(arrays))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return (
            self.num_classes == other.num_classes
            and len(self.indices) == len(other.indices)
            and all(np.array_equal(a, b) for a, b in zip(self.indices, other.indices))
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.indices)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of samples of each client."""
        return tuple(int(idx.size) for idx in self.indices)

    def _labels(self, labels: Any) -> np.ndarray:
        arr = as_labels(labels)
        if arr.max() >= self.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.num_classes}) for this partition of {self.num_classes} classes, "
                f"got a label {int(arr.max())}"
            )
        needed = max((int(idx.max()) + 1 for idx in self.indices if idx.size), default=0)
        if arr.size < needed:
            raise ValueError(
                f"labels has {arr.size} entries but the partition indexes sample {needed - 1}: pass the training "
                "labels the partition was built from"
            )
        return arr

    def _client(self, client: int) -> int:
        if isinstance(client, bool) or not isinstance(client, (int, np.integer)) or not 0 <= client < self.num_clients:
            raise ValueError(f"client must be an int in [0, {self.num_clients}), got {client!r}")
        return int(client)

    def counts(self, labels: Any) -> np.ndarray:
        """``(num_clients, num_classes)`` array: how many samples of each class each client holds."""
        arr = self._labels(labels)
        return np.stack([np.bincount(arr[idx], minlength=self.num_classes) for idx in self.indices])

    def classes(self, client: int, labels: Any) -> tuple[int, ...]:
        """The classes ``client`` holds (at least one sample), in increasing order."""
        client = self._client(client)
        arr = self._labels(labels)
        return tuple(int(c) for c in np.unique(arr[self.indices[client]]))

    def table(self, labels: Any) -> str:
        """Who holds what: clients × classes sample counts with row and column totals (``.`` for 0)."""
        counts = self.counts(labels)
        cell = max(len(str(int(counts.sum(0).max()))), len(str(self.num_classes - 1)), 1)
        first = max(len("client"), len("total"), len(str(self.num_clients - 1)))
        last = max(len("total"), len(str(int(counts.sum()))))

        def row(name: str, values: np.ndarray, total: int) -> str:
            cells = " ".join(f"{int(v) if v else '.':>{cell}}" for v in values)
            return f"{name:>{first}} | {cells} | {total:>{last}}"

        header = f"{'client':>{first}} | " + " ".join(f"{c:>{cell}}" for c in range(self.num_classes))
        header += f" | {'total':>{last}}"
        rule = "-" * (first + 1) + "+" + "-" * ((cell + 1) * self.num_classes + 1) + "+" + "-" * (last + 1)
        lines = [header, rule]
        lines += [row(str(i), counts[i], int(counts[i].sum())) for i in range(self.num_clients)]
        lines += [rule, row("total", counts.sum(0), int(counts.sum()))]
        return "\n".join(lines)


def _num_classes(labels: np.ndarray, num_classes: int | None) -> int:
    """``num_classes`` if given (checked against the labels), else the largest label + 1."""
    if num_classes is None:
        return int(labels.max()) + 1
    num_classes = check_int("num_classes", num_classes)
    if labels.max() >= num_classes:
        raise ValueError(
            f"num_classes must exceed every label, got {num_classes} with a label {int(labels.max())}"
        )
    return num_classes


def _split(indices: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle ``indices`` and cut them into ``parts`` near-equal pieces."""
    return np.array_split(rng.permutation(indices), parts)


def _finish(pieces: list[list[np.ndarray]], num_classes: int) -> Partition:
    indices = tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in pieces)
    return Partition(indices, num_classes)


def _check_enough(labels: np.ndarray, cls: int, holders: int, what: str) -> None:
    n = int(np.sum(labels == cls))
    if n < holders:
        raise ValueError(
            f"class {cls} has {n} sample(s) but {holders} clients hold it ({what}): every holder needs at least "
            "one sample; use fewer clients or more data"
        )


def silos(labels: Any, num_clients: int | None = None, seed: int = 0, *, num_classes: int | None = None) -> Partition:
    """One class per client: clients hold mutually exclusive label sets.

    With ``num_clients`` equal to the number of classes present (the default), client ``i`` holds every
    sample of the ``i``-th class present. With more clients, the extra clients are given
    the classes of a seeded permutation in turn, and the samples of a class are split at random
    into near-equal parts among its clients.

    Args:
        labels: training labels, 1-D integer class indices.
        num_clients: number of clients, at least the number of classes present (default: that number).
        seed: seed of the assignment of extra clients and of the splits.
        num_classes: classes of the task (default: the largest label + 1); give it when the last
            classes may be missing from ``labels``.

    Example:
        >>> p = silos([0, 1, 0, 1, 0, 1], num_clients=3, seed=0)
        >>> [p.classes(i, [0, 1, 0, 1, 0, 1]) for i in range(3)], sum(p.sizes)
        ([(0,), (1,), (0,)], 6)
    """
    arr = as_labels(labels)
    present = np.unique(arr)
    num_classes = _num_classes(arr, num_classes)
    if num_clients is None:
        num_clients = present.size
    num_clients = check_int("num_clients", num_clients)
    seed = check_int("seed", seed, low=0)
    if num_clients < present.size:
        raise ValueError(
            f"num_clients must be >= the number of classes present ({present.size}) so that every class has a "
            f"silo, got {num_clients}; use classes_per_client for fewer clients"
        )
    rng = np.random.default_rng(seed)
    # client i < #classes holds the i-th class present; extra clients take the classes of a seeded order in turn
    extra = np.resize(rng.permutation(present), num_clients - present.size)
    owner = np.concatenate([present, extra])
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in present:
        holders = np.flatnonzero(owner == cls)
        _check_enough(arr, int(cls), holders.size, "silos")
        for client, part in zip(holders, _split(np.flatnonzero(arr == cls), holders.size, rng)):
            pieces[client].append(part)
    return _finish(pieces, num_classes)


def classes_per_client(
    labels: Any, num_clients: int, k: int, seed: int = 0, *, num_classes: int | None = None
) -> Partition:
    """Every client holds ``k`` classes; the samples of a class are shared among the clients holding it.

    The classes present are put in a seeded random order and client ``i`` takes the ``k`` classes at
    positions ``i*k, ..., i*k + k - 1`` (cyclically). Hence each client holds ``k`` distinct classes,
    each class is held by ``floor`` or ``ceil`` of ``num_clients * k / C`` clients (``C``: the number of
    classes present), and every class is held by at least one client when ``num_clients * k >= C`` (otherwise the
    samples of the classes nobody holds are left out of the partition). The samples of a class are
    split at random into near-equal parts among its holders.

    Args:
        labels: training labels, 1-D integer class indices.
        num_clients: number of clients (>= 1).
        k: classes per client, in ``[1, number of classes present]``.
        seed: seed of the class order and of the splits.
        num_classes: classes of the task (default: the largest label + 1); give it when the last
            classes may be missing from ``labels``.

    Example:
        >>> y = np.repeat(np.arange(4), 6)
        >>> p = classes_per_client(y, num_clients=4, k=2, seed=0)
        >>> [len(p.classes(i, y)) for i in range(4)], sum(p.sizes)
        ([2, 2, 2, 2], 24)
    """
    arr = as_labels(labels)
    present = np.unique(arr)
    num_clients = check_int("num_clients", num_clients)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= present.size:
        raise ValueError(f"k must be an int in [1, {present.size}] (the number of classes present), got {k!r}")
    seed = check_int("seed", seed, low=0)
    num_classes = _num_classes(arr, num_classes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(present)
    held = [order[(i * k + np.arange(k)) % present.size] for i in range(num_clients)]
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in present:
        holders = [i for i in range(num_clients) if cls in held[i]]
        if not holders:
            continue
        _check_enough(arr, int(cls), len(holders), f"k={k} classes per client")
        for client, part in zip(holders, _split(np.flatnonzero(arr == cls), len(holders), rng)):
            pieces[client].append(part)
    return _finish(pieces, num_classes)


def dirichlet(
    labels: Any,
    num_clients: int,
    alpha: float,
    seed: int = 0,
    min_size: int = 10,
    max_attempts: int = 1000,
    *,
    num_classes: int | None = None,
) -> Partition:
    """Label-skewed partition: for each class, proportions across clients drawn from ``Dir(alpha)``.

    The samples of each class are shuffled and cut at the cumulative proportions (Hsu, Qi & Brown,
    2019). The draw is repeated (from the same generator, so still deterministic) until every client
    holds at least ``min_size`` samples, at most ``max_attempts`` times.

    Args:
        labels: training labels, 1-D integer class indices.
        num_clients: number of clients (>= 1).
        alpha: concentration (> 0): small values give each client few classes, large values near-iid
            label distributions.
        seed: seed of the draws.
        min_size: smallest client size accepted (>= 0); ``num_clients * min_size`` must not exceed
            the number of samples.
        max_attempts: draws tried before giving up with ``ValueError``.
        num_classes: classes of the task (default: the largest label + 1); give it when the last
            classes may be missing from ``labels``.

    Example:
        >>> y = np.repeat(np.arange(3), 20)
        >>> p = dirichlet(y, num_clients=3, alpha=0.5, seed=0, min_size=5)
        >>> sum(p.sizes), min(p.sizes) >= 5
        (60, True)
    """
    arr = as_labels(labels)
    num_clients = check_int("num_clients", num_clients)
    alpha = check_number("alpha", alpha, low=0, low_open=True)
    seed = check_int("seed", seed, low=0)
    min_size = check_int("min_size", min_size, low=0)
    max_attempts = check_int("max_attempts", max_attempts)
    num_classes = _num_classes(arr, num_classes)
    if num_clients * min_size > arr.size:
        raise ValueError(
            f"min_size must be at most len(labels) / num_clients = {arr.size} / {num_clients}, got {min_size}"
        )
    rng = np.random.default_rng(seed)
    present = np.unique(arr)
    by_class = [np.flatnonzero(arr == cls) for cls in present]
    smallest = -1
    for _ in range(max_attempts):
        pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = np.rint(np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for client, part in enumerate(np.split(rng.permutation(idx), cuts)):
                pieces[client].append(part)
        sizes = [sum(part.size for part in p) for p in pieces]
        smallest = max(smallest, min(sizes))
        if min(sizes) >= min_size:
            return _finish(pieces, num_classes)
    raise ValueError(
        f"dirichlet could not give every one of {num_clients} clients min_size={min_size} samples in "
        f"max_attempts={max_attempts} draws with alpha={alpha} (best smallest client: {smallest}); "
        "raise alpha or max_attempts, or lower min_size or num_clients"
    )


PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "silos": silos,
    "classes_per_client": classes_per_client,
    "dirichlet": dirichlet,
}
"""The partitioners by name (the names configs use)."""
