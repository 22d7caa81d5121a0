"""Wall time of one FederatedFactory round: Flower's simulation engine (Ray, one virtual SuperNode per client)
against the core's LocalEngine (every client in turn in this process), on the same problem and seeds.

    PYTHONPATH=$PWD python plugins/lit_repr_flower/benchmarks/bench_flower.py [--clients 10] [--cpus 2]

Digits, silos (one client per class), GMM priors, the server mode. Prints both wall times, their ratio,
the simulation's phases, and whether the two classifiers are equal bit for bit.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from lit_repr_flower import FlowerFederation, load_splits, simulate
from lit_repr_flower.federation import partition

from lit_repr.federated import FederatedServer, LocalEngine


def local_round(fed: FlowerFederation, num_classes: int) -> tuple[float, dict]:
    splits = load_splits(fed)
    x, y = splits["train"]
    start = time.perf_counter()
    engine = LocalEngine(x, y, partition(fed, y), prior=fed.prior, prior_config=fed.prior_config,
                         trainer=fed.prior_trainer, seed=fed.seed, progress=False)
    server = FederatedServer(num_classes=num_classes, classifier=fed.classifier, trainer=fed.classifier_trainer,
                             samples_per_class=fed.samples_per_class, seed=fed.seed, batch_size=fed.batch_size,
                             progress=False)
    engine.run(server, test_images=splits["test"][0], test_labels=splits["test"][1])
    return time.perf_counter() - start, server.models["server"].state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10, help="digit classes kept (= silos, = clients)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use (one per ClientApp)")
    parser.add_argument("--gmm-epochs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        classes = args.classes if args.classes < 10 else None
        fed = FlowerFederation(classes=classes, prior_trainer={"max_epochs": args.gmm_epochs}, run_dir=tmp)
        load_splits(fed)  # warm the imports and the data set in this process for both engines
        local_s, local_state = local_round(fed, args.classes)
        start = time.perf_counter()
        run = simulate(fed, num_cpus=args.cpus, client_cpus=1)
        sim_s = time.perf_counter() - start
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in run.report["timings"].items())
    same = local_state.keys() == run.classifier_state.keys() and all(
        torch.equal(local_state[k], run.classifier_state[k]) for k in local_state)
    print(f"digits silos, {args.classes} clients, gmm ({args.gmm_epochs} epochs), server mode, {args.cpus} CPUs")
    print(f"local engine (one process)      : {local_s:8.2f} s")
    print(f"flower simulation (ray, {args.classes:2d} nodes): {sim_s:8.2f} s   "
          f"ratio simulation/local = {sim_s / local_s:.2f}")
    print(f"simulation phases: {phases}")
    print(f"server classifier equal bit for bit: {same}; accuracy {run.report['methods']['server']['accuracy']:.4f}")


if __name__ == "__main__":
    main()
