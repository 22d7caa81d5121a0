"""What the machine does, printed beside every ratio of the benchmarks: matmul GFLOP/s and the load."""

from __future__ import annotations

import os
import time

import torch


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of one ``size x size`` matrix product in ``dtype`` on torch's threads (best of ``repeats``)."""
    a = torch.randn(size, size, dtype=dtype)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def describe(size: int = 2048) -> str:
    """One line: matmul GFLOP/s in float32 and float64, torch's threads and the 1-minute load average."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: matmul {matmul_gflops(torch.float32, size):.0f} GFLOP/s float32, "
        f"{matmul_gflops(torch.float64, size):.0f} GFLOP/s float64 ({size} x {size}, {torch.get_num_threads()} "
        f"threads); load average {load:.2f} on {os.cpu_count()} cores"
    )
