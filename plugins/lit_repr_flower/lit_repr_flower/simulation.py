"""Run the federation on one machine with Flower's simulation engine (Ray): N virtual SuperNodes.

Each virtual node gets ``partition-id`` and ``num-partitions`` in its node config from the engine,
exactly what a real SuperNode gets from ``--node-config``; the ``ServerApp`` and ``ClientApp`` are the
ones a deployment runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from lit_repr_flower.client_app import make_client_app
from lit_repr_flower.federation import FlowerFederation, load_splits, partition
from lit_repr_flower.server_app import FlowerRun, make_server_app

__all__ = ["simulate", "default_num_nodes"]


def default_num_nodes(federation: FlowerFederation) -> int:
    """The number of clients of the federation's partition (one virtual node each)."""
    if federation.num_clients is not None:  # fixed by the settings: no need to load the data
        return federation.num_clients
    _, y = load_splits(federation, ("train",))["train"]
    return len(partition(federation, y).indices)


def simulate(
    federation: FlowerFederation,
    num_nodes: int | None = None,
    *,
    num_cpus: int = 2,
    client_cpus: int = 1,
    mods: Sequence[Any] | None = None,
    verbose: bool = False,
) -> FlowerRun:
    """Run the ``ServerApp``/``ClientApp`` pair in Flower's simulation engine; the server's outcome.

    Args:
        federation: the run's settings.
        num_nodes: virtual SuperNodes (default: the partition's number of clients).
        num_cpus: CPUs Ray may use.
        client_cpus: CPUs per ClientApp (Ray runs ``num_cpus // client_cpus`` clients at once and sets
            their threads to ``client_cpus``).
        mods: client mods (e.g. :mod:`lit_repr_flower.faults`).
        verbose: Flower's debug logs.

    Returns:
        The :class:`~lit_repr_flower.server_app.FlowerRun`; :class:`~lit_repr_flower.server_app.FederationStopped`
        when the minimums are not met.

    Example:
        >>> simulate(FlowerFederation(classes=3), num_nodes=0)
        Traceback (most recent call last):
        ...
        ValueError: num_nodes must be a positive int, got 0
    """
    from flwr.simulation import run_simulation

    from lit_repr.checks import check_int

    if not isinstance(federation, FlowerFederation):
        raise ValueError(f"federation must be a FlowerFederation, got {type(federation).__name__}")
    if num_nodes is not None:
        check_int("num_nodes", num_nodes)
    check_int("num_cpus", num_cpus)
    check_int("client_cpus", client_cpus)
    if client_cpus > num_cpus:
        raise ValueError(f"client_cpus ({client_cpus}) must be <= num_cpus ({num_cpus})")
    nodes = default_num_nodes(federation) if num_nodes is None else num_nodes
    result = FlowerRun()
    backend = {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": num_cpus, "num_gpus": 0, "include_dashboard": False},
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")
        run_simulation(
            server_app=make_server_app(federation, result),
            client_app=make_client_app(federation, mods),
            num_supernodes=nodes,
            backend_config=backend,
            verbose_logging=verbose,
        )
    return result
