"""Streamed moment readouts in 2 CPU processes (gloo) whose shards have different means (so different
references), against the same readouts of all the data in one process; used by test_moments."""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_repr.metrics import (
    CovarianceMoments,
    LinearCKA,
    LinearIdentifiability,
    MeanCorrelationCoefficient,
    ProbeReadout,
    StreamingRidge,
)
from lit_repr.metrics.moments import CentredR2Score
from lit_repr.metrics.ridge import local_only


def data():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(301, 3, generator=g, dtype=torch.float64)
    h = z @ torch.randn(3, 6, generator=g, dtype=torch.float64) + 0.5 * torch.randn(301, 6, generator=g,
                                                                                   dtype=torch.float64)
    x = (8 * torch.round(16 * h)).float()
    x[:150] += 1e6
    x[150:] += 1e6 + 512  # the second process's reference lies 512 away from the first's
    y = z.sum(1, keepdim=True) + 1e8
    return x, z, y


def readouts():
    return {
        "ridge": (lambda: StreamingRidge(6, 3), lambda m, x, z, y: m.update(x, z), lambda m: m.compute().weight),
        "mcc": (lambda: MeanCorrelationCoefficient(3, 6), lambda m, x, z, y: m.update(z, x),
                lambda m: m.compute().corr),
        "cka": (lambda: LinearCKA(6, 3), lambda m, x, z, y: m.update(x, z), lambda m: m.compute()),
        "cka_debiased": (lambda: LinearCKA(6, 3, debiased=True), lambda m, x, z, y: m.update(x, z),
                         lambda m: m.compute()),
        "covariance": (lambda: CovarianceMoments(6), lambda m, x, z, y: m.update(x),
                       lambda m: torch.cat([m.compute()[0], m.compute()[1].flatten()])),
        "r2": (lambda: CentredR2Score(1), lambda m, x, z, y: m.update(y + z[:, :1], y), lambda m: m.compute()),
        "linear_r2": (lambda: LinearIdentifiability(6, 3),
                      lambda m, x, z, y: (m.update(x, z, "fit"), m.update(x, z, "eval")),
                      lambda m: m.compute()["r2_per_factor"]),
    }


def probe(x, y, local):
    r = ProbeReadout(6, task="regression", num_targets=1, local=local)
    r.update(x, y, "fit")
    r.fit()
    r.update(x, y, "val")
    return torch.tensor([r.compute("val")["r2"], r.compute("val")["pearson"]], dtype=torch.float64)


def worker(rank: int, world: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("LIT_REPR_TEST_PORT", "29533"))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    x, z, y = data()
    shard = slice(0, 150) if rank == 0 else slice(150, None)
    results = {}
    for name, (make, feed, result) in readouts().items():
        m = make()
        for xb, zb, yb in zip(x[shard].split(40), z[shard].split(40), y[shard].split(40)):
            feed(m, xb, zb, yb)
        two = result(m)
        one = local_only(make())
        feed(one, x, z, y)
        results[name] = (result(one), two)
    results["probe"] = (probe(x, y, local=True), probe(x[shard], y[shard], local=False))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    import random

    os.environ["LIT_REPR_TEST_PORT"] = str(random.randint(20000, 60000))
    mp.spawn(worker, args=(2, sys.argv[1]), nprocs=2, join=True)
