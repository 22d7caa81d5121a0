"""CPU thread counts (torch's intra-op threads, scipy's BLAS threads) for a block of operations.

Small operations (a 129 × 129 eigendecomposition, a working-set lasso step, predictions of a few
outputs) gain nothing from more threads, and on busy shared cores they stall waiting for them. The
readouts and encoders that run such blocks do so on one thread and give the caller's thread count
back afterwards, also on exceptions, through :func:`num_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["blas_threads", "num_threads"]

_BLAS_LIBRARIES: list = []


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


@contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """Run the enclosed scipy BLAS and LAPACK calls on ``count`` threads, then restore their thread counts.

    scipy's BLAS keeps its own thread pool, blind to :func:`torch.set_num_threads`; small factorisations
    stall waiting for its threads on busy cores, and a pool larger than the caller's torch threads
    oversubscribes the cores (e.g. several DDP processes on one node). The libraries are looked up once
    (with threadpoolctl, which comes with scikit-learn); without threadpoolctl the block runs unchanged.

    Args:
        count: BLAS threads for the block; ``None`` leaves them as they are.

    Example:
        >>> from scipy.linalg import blas
        >>> with blas_threads(1):
        ...     float(blas.ddot([1.0, 2.0], [3.0, 4.0]))
        11.0
    """
    if count is None:
        yield
        return
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive int or None, got {count!r}")
    if not _BLAS_LIBRARIES:
        try:
            import scipy.linalg  # noqa: F401  (its BLAS must be loaded to be listed)
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover
            _BLAS_LIBRARIES.append([])
        else:
            _BLAS_LIBRARIES.append(ThreadpoolController().select(user_api="blas").lib_controllers)
    libraries = _BLAS_LIBRARIES[0]
    before = [lib.get_num_threads() for lib in libraries]
    changed = [lib for lib, n in zip(libraries, before) if n != count]
    for lib in changed:
        lib.set_num_threads(count)
    try:
        yield
    finally:
        for lib, n in zip(libraries, before):
            if lib in changed:
                lib.set_num_threads(n)
