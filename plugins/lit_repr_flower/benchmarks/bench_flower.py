"""Wall time of one FederatedFactory round from one config: Flower's simulation engine (Ray, one virtual
SuperNode per client) against the core's pipeline on its LocalEngine (every client in turn in this process).

    PYTHONPATH=$PWD python plugins/lit_repr_flower/benchmarks/bench_flower.py [--config configs/federated_digits.yaml]

Both read the same core config (the ``server`` mode, no baselines; its unlearning request, if any, runs in
both). Prints both wall times, their ratio, the simulation's phases, both results and whether the final
classifiers are equal bit for bit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from lit_repr_flower import FlowerFederation, simulate
from lit_repr_flower.federation import build_datamodule

from lit_repr.federated.factory import FederatedFactory


def core_run(path: str, run_dir: str) -> tuple[float, FederatedFactory, dict]:
    """The core's pipeline on the config: server mode, no baselines."""
    fed = FlowerFederation.from_factory_config(path)
    config = yaml.safe_load(Path(path).read_text())
    kwargs = {k: v for k, v in config.items() if k not in ("data", "modes", "baselines", "baseline_args", "run_dir")}
    factory = FederatedFactory(build_datamodule(fed), modes=["server"], baselines=[], run_dir=run_dir, progress=False,
                               **kwargs)
    start = time.perf_counter()
    report = factory.run()
    return time.perf_counter() - start, factory, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/federated_digits.yaml", help="a core FederatedFactory config")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use (one per ClientApp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local_s, factory, local_report = core_run(args.config, str(Path(tmp) / "local"))
        fed = FlowerFederation.from_factory_config(args.config, run_dir=str(Path(tmp) / "flower"))
        start = time.perf_counter()
        run = simulate(fed, num_cpus=args.cpus, client_cpus=1)
        sim_s = time.perf_counter() - start
    a, b = factory.server.models["server"].state_dict(), run.server.models["server"].state_dict()
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    clients = len(run.report["clients"])
    print(f"{args.config}: {clients} clients, prior {fed.prior}, server mode, {args.cpus} CPUs")
    print(f"core pipeline, local engine (one process): {local_s:8.2f} s")
    print(f"flower simulation (ray, {clients} nodes)      : {sim_s:8.2f} s   ratio simulation/local = "
          f"{sim_s / local_s:.2f}")
    print("local phases     : " + ", ".join(f"{k} {v:.2f}s" for k, v in local_report["timings"].items()))
    print("simulation phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in run.report["timings"].items()))
    for method, result in local_report["methods"].items():
        other = run.report["methods"][method]
        print(f"{method}: accuracy local {result['accuracy']:.4f}, flower {other['accuracy']:.4f}; "
              f"macro AUROC local {result['macro_auroc']:.4f}, flower {other['macro_auroc']:.4f}")
    print(f"final server classifiers equal bit for bit: {same}")


if __name__ == "__main__":
    main()
