"""Wall time of one FederatedFactory round: Flower's simulation engine (Ray, one virtual SuperNode per client)
against the core's LocalEngine (every client in turn in this process), on the same problem and seeds.

    PYTHONPATH=$PWD python plugins/lit_repr_flower/benchmarks/bench_flower.py [--clients 10] [--cpus 2]

Digits, silos (one client per class), GMM priors, the server mode. Prints both wall times, their ratio,
the simulation's phases, and whether the classifiers are equal bit for bit. The local engine runs twice:
with this process's torch threads and with one thread (what each ClientApp gets under Ray).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from lit_repr_flower import FlowerFederation, load_splits, simulate
from lit_repr_flower.federation import partition

from lit_repr.federated import FederatedServer, LocalEngine


def local_round(fed: FlowerFederation, num_classes: int, threads: int) -> tuple[float, dict]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _local_round(fed, num_classes)
    finally:
        torch.set_num_threads(before)


def _local_round(fed: FlowerFederation, num_classes: int) -> tuple[float, dict]:
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
    parser.add_argument("--gmm-epochs", type=int, default=100, help="EM steps of each prior (stops early at tol)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        classes = args.classes if args.classes < 10 else None
        fed = FlowerFederation(classes=classes, prior_trainer={"max_epochs": args.gmm_epochs}, run_dir=tmp)
        load_splits(fed)  # warm the imports and the data set in this process for both engines
        local = {t: local_round(fed, args.classes, t) for t in sorted({1, torch.get_num_threads()})}
        start = time.perf_counter()
        run = simulate(fed, num_cpus=args.cpus, client_cpus=1)
        sim_s = time.perf_counter() - start
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in run.report["timings"].items())
    print(f"digits silos, {args.classes} clients, gmm ({args.gmm_epochs} epochs), server mode, {args.cpus} CPUs")
    for threads, (seconds, state) in local.items():
        same = state.keys() == run.classifier_state.keys() and all(
            torch.equal(state[k], run.classifier_state[k]) for k in state)
        print(f"local engine (one process, {threads} torch thread(s)): {seconds:8.2f} s   "
              f"simulation/local = {sim_s / seconds:.2f}   classifiers equal bit for bit: {same}")
    print(f"flower simulation (ray, {args.classes} nodes, 1 thread each): {sim_s:8.2f} s")
    print(f"simulation phases: {phases}")
    print(f"accuracy {run.report['methods']['FederatedFactory/server']['accuracy']:.4f}")

if __name__ == "__main__":
    main()
