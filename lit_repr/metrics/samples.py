"""The one bounded-sample mechanism of lit_repr: :class:`SampleBuffer`.

Most readouts stream sufficient statistics and keep no samples. A few quantities need the samples
themselves: Spearman correlations (global ranks), kernel ridge R², DCI's tree ensembles, mutual
k-NN alignment, logistic probes and the predicted-vs-true figures. They all keep them here:

- **which samples**: a uniform random subset, without replacement, of every row seen, of at most
  ``max_samples`` rows (bottom-k sampling: each row draws an independent uniform key from a
  generator seeded by ``seed`` and the process rank; the rows with the smallest keys stay). While
  fewer than ``max_samples`` rows have been seen every row is kept, in arrival order, so results
  on small data are exact.
- **memory**: at most ``max_samples`` rows of each tensor per process, whatever the data size.
- **under DDP**: ``compute()`` gathers every process's kept rows and keys (torchmetrics' ``cat``
  reduction) and keeps the ``max_samples`` smallest keys of the union: again a uniform subset, of
  at most ``max_samples`` rows in all. With fewer rows than that in all, every row of every
  process is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from lit_repr.checks import check_int

__all__ = ["SampleBuffer", "EmptyShardSync", "fill_empty_cat_states"]


def fill_empty_cat_states(metric: Metric, group: Any = None) -> None:
    """Give each empty ``cat`` state of ``metric`` an empty tensor shaped and typed like the other
    processes' rows, before torchmetrics gathers the states under DDP; a no-op outside DDP.

    torchmetrics stands in a 1-D tensor of the metric's float dtype for the state of a process that
    received no rows. Beside the ``(N, C)`` scores or the int64 targets of the other processes, the
    gather then mixes shapes or dtypes and fails (an evaluation split with fewer samples than
    processes leaves some shards empty). One small object gather, on every process, learns each
    state's row shape and dtype from a process that holds rows; where none does, nothing changes.
    Call it on every process, where the states are synchronised (an override of ``_sync_dist``).

    Example:
        >>> buf = SampleBuffer(max_samples=4)
        >>> fill_empty_cat_states(buf)  # no process group: nothing to do
        >>> buf.keys
        []
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    names = [a for a, fx in metric._reductions.items() if fx is dim_zero_cat]
    if not names:
        return

    def row_spec(state: Tensor | list[Tensor]) -> tuple[tuple[int, ...], str] | None:
        t = state[0] if isinstance(state, list) and state else state if isinstance(state, Tensor) else None
        return None if t is None else (tuple(t.shape[1:]), str(t.dtype).removeprefix("torch."))

    local = {a: row_spec(getattr(metric, a)) for a in names}
    specs: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(specs, local, group=group)
    for a in names:
        state = getattr(metric, a)
        if not isinstance(state, list) or state:
            continue
        found = next((s[a] for s in specs if s is not None and s.get(a) is not None), None)
        if found is not None:
            shape, dtype = found
            state.append(torch.zeros((0, *shape), dtype=getattr(torch, dtype), device=metric.device))


class EmptyShardSync:
    """Mixin for a torchmetrics ``Metric`` with ``cat`` list states: under DDP, a process that received no
    rows gathers empty states of the other processes' row shape and dtype (:func:`fill_empty_cat_states`).

    Example:
        >>> class Rows(EmptyShardSync, Metric):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_state("rows", [], dist_reduce_fx="cat")
        ...     def update(self, x):
        ...         self.rows.append(x)
        ...     def compute(self):
        ...         return torch.cat(self.rows)
        >>> m = Rows(); m.update(torch.ones(2, 3)); m.compute().shape
        torch.Size([2, 3])
    """

    def _sync_dist(self, dist_sync_fn: Any = gather_all_tensors, process_group: Any = None) -> None:
        fill_empty_cat_states(self, process_group or self.process_group)  # type: ignore[arg-type, attr-defined]
        super()._sync_dist(dist_sync_fn, process_group)  # type: ignore[misc]


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _cat(state: Tensor | list[Tensor]) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0)


class SampleBuffer(EmptyShardSync, Metric):
    """A bounded uniform subsample of paired tensors (rows aligned), exact when the data fit.

    Args:
        max_samples: rows kept (per process while streaming, and in all after gathering).
        num_tensors: how many row-aligned tensors each :meth:`update` receives.
        seed: seed of the sampling keys (offset by the process rank).

    Example:
        >>> buf = SampleBuffer(max_samples=4, num_tensors=2)
        >>> buf.update(torch.arange(10.0)[:, None], torch.arange(10))
        >>> x, y = buf.compute(); x.shape, bool((x[:, 0] == y).all())
        (torch.Size([4, 1]), True)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, max_samples: int = 10_000, num_tensors: int = 2, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_int("max_samples", max_samples)
        check_int("num_tensors", num_tensors)
        self.max_samples, self.num_tensors, self.seed = max_samples, num_tensors, int(seed)
        self.add_state("keys", [], dist_reduce_fx="cat")
        for i in range(num_tensors):
            self.add_state(f"t{i}", [], dist_reduce_fx="cat")
        self._generator: torch.Generator | None = None

    @property
    def num_kept(self) -> int:
        """Rows held now (on this process, before any gathering)."""
        return int(sum(k.shape[0] for k in self.keys)) if isinstance(self.keys, list) else int(self.keys.shape[0])

    def update(self, *tensors: Tensor) -> None:  # type: ignore[override]
        """Offer a batch: ``num_tensors`` tensors with the same number of rows."""
        if len(tensors) != self.num_tensors:
            raise ValueError(f"SampleBuffer was built for {self.num_tensors} tensors per update, got {len(tensors)}")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors must have the same number of rows, got {[t.shape[0] for t in tensors]}")
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed + 7919 * _rank())
        keys = torch.rand(n, generator=self._generator, dtype=torch.float64).to(self.device)
        self.keys.append(keys)
        for i, t in enumerate(tensors):
            getattr(self, f"t{i}").append(t.detach())
        if self.num_kept > 2 * self.max_samples:  # trim now and then: amortised O(1) per row
            self._trim()

    def _trim(self) -> None:
        keys = _cat(self.keys)
        cols = [_cat(getattr(self, f"t{i}")) for i in range(self.num_tensors)]
        keys, cols = _bottom_k(keys, cols, self.max_samples)
        self.keys = [keys]
        for i, c in enumerate(cols):
            setattr(self, f"t{i}", [c])

    def compute(self) -> tuple[Tensor, ...]:  # type: ignore[override]
        """The kept rows, one tensor per input (gathered across processes under DDP)."""
        keys = _cat(self.keys)
        cols = [_cat(getattr(self, f"t{i}")) for i in range(self.num_tensors)]
        return tuple(_bottom_k(keys, cols, self.max_samples)[1])

    def reset(self) -> None:
        super().reset()
        self._generator = None


def _bottom_k(keys: Tensor, cols: list[Tensor], k: int) -> tuple[Tensor, list[Tensor]]:
    """The rows with the ``k`` smallest keys, in their original order."""
    if keys.shape[0] <= k:
        return keys, cols
    idx = keys.topk(k, largest=False).indices.sort().values
    return keys[idx], [c[idx.to(c.device)] for c in cols]
