"""ActivationsDataModule: extraction throughput, SAE epochs from the cache vs the live frozen model, peak memory.

1. Extraction throughput (rows/s): ``prepare_data`` (frozen forward + Tap + safetensors chunks + sha256 +
   manifest) against a plain loop that runs the same frozen model over the same loader without caching.
2. One SAE epoch (TopK, sparse kernels) read from the cache against the same epoch with the frozen model
   run live on every batch (its activations at the site taken with a forward hook), as a ratio.
   The frozen model is a 4-layer MLP of width 1024 (``--width``), not trivially cheap.
3. Peak RSS of extraction for a source 10x larger: each size runs in a fresh process (peak RSS is per
   process); the source generates its samples on the fly, so only the cache could make memory grow.

    python benchmarks/bench_activations.py [--rows 8192] [--width 1024] [--rss-rows 10000]

Every timed part runs on one thread (``torch.set_num_threads(1)``).

Measured on a shared, heavily loaded 2-core CPU (defaults, 25 Nov 2026)::

    frozen model: 4-layer MLP 256 -> 1024 (ReLU), 8192 rows, batch 256, 1 thread
    extraction   plain loop (no cache)      1058 rows/s   ActivationsDataModule      1007 rows/s   ratio cache/plain 0.95
    SAE epoch    from the cache   18.09 s   frozen model live   28.00 s   ratio live/cache 1.55 (TopK SAE 1024 -> 2048, k=32)
    rows    10000  cache    19.5 MB  peak RSS  1063.0 MB (after imports 1063.0 MB)  extract  16.52 s  read   0.96 s
    rows   100000  cache   195.3 MB  peak RSS  1063.0 MB (after imports 1063.0 MB)  extract 196.26 s  read  18.73 s
    10x the rows: peak RSS ratio 1.00 (growth above imports 0.00x)

Caching costs about 5% of extraction throughput (Tap, safetensors, sha256); every later epoch then skips
the frozen model. Absolute times varied several-fold with the machine's load; the ratios less so.
"""  # noqa: E501

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def run_one(rows: int, width: int, cache_dir: str) -> dict:
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from lit_repr.data import ActivationsDataModule

    class Generated(Dataset):
        def __len__(self):
            return rows

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(64, generator=g)
            return {"x": x, "y": (x[0] > 0).long(), "index": torch.tensor(i)}

    class Source(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(Generated(), batch_size=256)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, width), nn.ReLU())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    dm = ActivationsDataModule(net, ["1"], Source(), cache_dir=cache_dir, splits=["train"], batches_per_chunk=8)
    dm.prepare_data()
    seconds = time.perf_counter() - t0
    dm.setup("fit")
    t1 = time.perf_counter()
    n = sum(b["x"].shape[0] for b in dm.train_dataloader())
    read_seconds = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": n, "cache_mb": n * width * 4 / 2**20, "rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024,
            "extract_s": seconds, "read_s": read_seconds}


class _Rows:
    """``rows`` generated inputs of width ``in_width`` (seeded per row), with a label."""

    def __init__(self, rows: int, in_width: int) -> None:
        self.rows, self.in_width = rows, in_width

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict:
        import torch

        g = torch.Generator().manual_seed(i)
        x = torch.randn(self.in_width, generator=g)
        return {"x": x, "y": (x[0] > 0).long(), "index": torch.tensor(i)}


def frozen_mlp(in_width: int, width: int, depth: int = 4):
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, d = [], in_width
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers).eval().requires_grad_(False)


def run_throughput(rows: int, width: int, in_width: int = 256, batch_size: int = 256) -> dict:
    """Extraction rows/s (cache vs plain loop) and SAE epoch seconds (cache vs live)."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from lit_repr.data import ActivationsDataModule
    from lit_repr.models.sae import SparseAutoencoder

    torch.set_num_threads(1)
    ds = _Rows(rows, in_width)

    class Source(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(ds, batch_size=batch_size)

    net = frozen_mlp(in_width, width)
    site = str(len(net) - 1)  # the last ReLU
    # 1. plain loop: the frozen model over the data, nothing kept
    t0 = time.perf_counter()
    n = 0
    with torch.no_grad():
        for batch in Source().train_dataloader():
            net(batch["x"])
            n += len(batch["x"])
    plain_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        dm = ActivationsDataModule(net, [site], Source(), cache_dir=d, splits=["train"], batches_per_chunk=8,
                                   batch_size=batch_size)
        t0 = time.perf_counter()
        dm.prepare_data()
        cache_s = time.perf_counter() - t0
        dm.setup("fit")

        # 2. one SAE epoch: from the cache, then with the frozen model run live
        def sae():
            return SparseAutoencoder(width, 2 * width, "topk", {"k": 32}, init_seed=0, decoder_bias_init="zeros",
                                     codes_key=None)

        cached = sae()
        opt = cached.configure_optimizers()
        t0 = time.perf_counter()
        for batch in dm.train_dataloader():
            cached.train_step(batch["x"], opt)
        epoch_cache_s = time.perf_counter() - t0
    live = sae()
    opt = live.configure_optimizers()
    seen = {}
    hook = net[int(site)].register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    t0 = time.perf_counter()
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=True):
        with torch.no_grad():
            net(batch["x"])
        live.train_step(seen["x"], opt)
    epoch_live_s = time.perf_counter() - t0
    hook.remove()
    return {"rows": n, "plain_s": plain_s, "cache_s": cache_s, "epoch_cache_s": epoch_cache_s,
            "epoch_live_s": epoch_live_s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=8192, help="rows of the throughput and SAE-epoch parts")
    p.add_argument("--width", type=int, default=1024, help="width of the frozen MLP (and of the SAE's input)")
    p.add_argument("--rss-rows", type=int, default=10_000, help="rows of the smaller source of the peak-RSS part")
    p.add_argument("--rss-width", type=int, default=512)
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--child", action="store_true")
    p.add_argument("--cache-dir")
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_one(a.rss_rows, a.rss_width, a.cache_dir)))
        return
    t = run_throughput(a.rows, a.width)
    n = t["rows"]
    print(f"frozen model: 4-layer MLP 256 -> {a.width} (ReLU), {n} rows, batch 256, 1 thread")
    print(f"extraction   plain loop (no cache) {n / t['plain_s']:9.0f} rows/s   ActivationsDataModule "
          f"{n / t['cache_s']:9.0f} rows/s   ratio cache/plain {t['plain_s'] / t['cache_s']:.2f}")
    print(f"SAE epoch    from the cache {t['epoch_cache_s']:7.2f} s   frozen model live {t['epoch_live_s']:7.2f} s   "
          f"ratio live/cache {t['epoch_live_s'] / t['epoch_cache_s']:.2f} (TopK SAE {a.width} -> {2 * a.width}, k=32)")
    if a.skip_rss:
        return
    results = []
    for rows in (a.rss_rows, 10 * a.rss_rows):
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, __file__, "--child", "--rss-rows", str(rows), "--rss-width", str(a.rss_width),
                   "--cache-dir", d]
            results.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    for r in results:
        print(f"rows {r['rows']:>8}  cache {r['cache_mb']:7.1f} MB  peak RSS {r['peak_rss_mb']:7.1f} MB "
              f"(after imports {r['rss_before_mb']:6.1f} MB)  extract {r['extract_s']:6.2f} s  "
              f"read {r['read_s']:6.2f} s")
    small, large = results
    grow = (large["peak_rss_mb"] - large["rss_before_mb"]) / max(small["peak_rss_mb"] - small["rss_before_mb"], 1e-9)
    print(f"10x the rows: peak RSS ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
          f"(growth above imports {grow:.2f}x)")


if __name__ == "__main__":
    main()
