"""Peak memory of ActivationsDataModule extraction: a source 10x larger must not need more memory.

Each size runs in a fresh process (peak RSS is per process); the source generates its samples on
the fly, so only the cache could make memory grow with the data. Prints peak RSS, time and the
ratio large/small.

    python benchmarks/bench_activations.py [--rows 10000] [--width 512]

Measured on a shared 2-core CPU (defaults; width 512, float32): 10,000 rows (19.5 MB cache) peak RSS
796.7 MB, 100,000 rows (195.3 MB cache) peak RSS 802.9 MB: ratio 1.01 (about 775 MB of it is the
imports). Extraction times varied with the machine's load (2-24 s for the larger source).
"""

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--child", action="store_true")
    p.add_argument("--cache-dir")
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_one(a.rows, a.width, a.cache_dir)))
        return
    results = []
    for rows in (a.rows, 10 * a.rows):
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, __file__, "--child", "--rows", str(rows), "--width", str(a.width), "--cache-dir", d]
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
