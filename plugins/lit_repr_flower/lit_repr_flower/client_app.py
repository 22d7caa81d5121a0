"""The Flower ``ClientApp``: a node fits its generative modules with the core's ``client_step`` and replies.

A node knows which client it is from its node config (``partition-id``, ``num-partitions``; Flower's
simulation engine sets both, a real SuperNode gets them with ``--node-config``). It builds its data
shard with the same partitioner and seed as the core's ``LocalEngine`` and answers two messages:

- ``query.identify``: its partition id, the number of partitions it was told and the classes it holds
  (what the server needs to ask for every class and to name what is missing if the client fails);
- ``train``: the :class:`~lit_repr.federated.engine.ClientTask` the server sent; it runs
  :func:`~lit_repr.federated.engine.client_step` and replies with each module's manifest and
  safetensors bytes (:mod:`lit_repr_flower.messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from lit_repr_flower.federation import FlowerFederation, client_shard
from lit_repr_flower.messages import decode_task, encode_reply

__all__ = ["make_client_app", "app", "node_partition"]

_SHARDS: dict[tuple[str, int, int | None], Any] = {}  # one shard per (federation, client) in a long-lived node


def node_partition(context: Context) -> tuple[int, int | None]:
    """``(partition-id, num-partitions)`` from the node config; ``ValueError`` naming what is missing.

    Args:
        context: the ClientApp's context.
    """
    config = context.node_config
    if "partition-id" not in config:
        raise ValueError(
            "the node config has no partition-id: start the SuperNode with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        )
    pid, num = config["partition-id"], config.get("num-partitions")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise ValueError(f"node config partition-id must be an int >= 0, got {pid!r}")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise ValueError(f"node config num-partitions must be an int >= 1, got {num!r}")
    return pid, num


def _shard(fed: FlowerFederation, context: Context) -> tuple[int, Any, Any]:
    pid, num = node_partition(context)
    key = (repr(fed), pid, num)
    if key not in _SHARDS:
        _SHARDS.clear()
        _SHARDS[key] = client_shard(fed, pid, num)
    images, labels = _SHARDS[key]
    return pid, images, labels


def make_client_app(federation: FlowerFederation | None = None, mods: Sequence[Any] | None = None) -> ClientApp:
    """A ``ClientApp`` for FederatedFactory.

    Args:
        federation: the run's settings; ``None`` reads them from the run config (``flwr run``).
        mods: Flower client mods wrapped around every message (e.g. :mod:`lit_repr_flower.faults`).

    Example:
        >>> app = make_client_app(FlowerFederation(classes=3))
        >>> type(app).__name__
        'ClientApp'
    """
    if federation is not None and not isinstance(federation, FlowerFederation):
        raise ValueError(f"federation must be a FlowerFederation, got {type(federation).__name__}")
    client = ClientApp(mods=list(mods or []))

    def settings(context: Context) -> FlowerFederation:
        return federation if federation is not None else FlowerFederation.from_run_config(context.run_config)

    @client.query("identify")
    def identify(msg: Message, context: Context) -> Message:
        fed = settings(context)
        pid, images, labels = _shard(fed, context)
        _, num = node_partition(context)
        classes = sorted(int(c) for c in labels.unique().tolist())
        record = ConfigRecord(
            {"client": pid, "num_partitions": -1 if num is None else num, "classes": classes,
             "num_samples": int(len(labels))}
        )
        return Message(RecordDict({"identity": record}), reply_to=msg)

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        from lit_repr.federated.engine import client_step

        fed = settings(context)
        task = decode_task(msg.content)
        pid, images, labels = _shard(fed, context)
        if task.client != pid:
            raise ValueError(f"this node is client {pid} (partition-id) but the task is for client {task.client}")
        payloads = client_step(task, images, labels)
        return Message(encode_reply(pid, payloads), reply_to=msg)

    return client


#: The ClientApp ``flwr run`` loads (``[tool.flwr.app.components]``): settings from the run config.
app = make_client_app()
