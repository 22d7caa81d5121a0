"""CPU intra-op thread count for a block of small tensor operations.

Small operations (a 129 × 129 eigendecomposition, a working-set lasso step, predictions of a few
outputs) gain nothing from more threads, and on busy shared cores they stall waiting for them. The
readouts and encoders that run such blocks do so on one thread and give the caller's thread count
back afterwards, also on exceptions, through :func:`num_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["num_threads"]


@contextmanager
def num_threads(count: int | None) -> Iterator[None]:
    """Run the enclosed torch operations on ``count`` intra-op threads, then restore the caller's count.

    Args:
        count: intra-op threads for the block; ``None`` leaves the thread count as it is.

    Example:
        >>> before = torch.get_num_threads()
        >>> with num_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int or None, got {count!r}")
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
