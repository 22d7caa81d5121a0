"""Client mods that inject faults, to rehearse how a federation handles them before it meets them for real.

A Flower mod wraps a ``ClientApp``'s handling of each message (``mod(message, context, call_next)``).
These act only on the clients (partition ids) they are given and only on ``train`` messages:

- :class:`FailingClient`: the client raises instead of fitting its modules;
- :class:`SlowClient`: the client answers only after a delay (to exceed the server's ``reply_timeout``);
- :class:`TamperedReply`: the client's reply is altered after the modules were packed: the manifest's
  SHA-256, a tensor shape in the manifest, or a byte of the safetensors data (the server must reject it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from flwr.app import ConfigRecord, Context, Message

from lit_repr.checks import check_choice, check_int, check_number

__all__ = ["FailingClient", "SlowClient", "TamperedReply", "TAMPERINGS"]

TAMPERINGS = ("hash", "shape", "bytes")


def _clients(clients: Iterable[int]) -> frozenset[int]:
    out = frozenset(check_int("clients[...]", c, low=0) for c in clients)
    if not out:
        raise ValueError("clients must name at least one partition id")
    return out


def _partition_id(context: Context) -> int | None:
    return context.node_config.get("partition-id")


class FailingClient:
    """A mod under which the given clients raise ``RuntimeError`` on ``train`` messages.

    Args:
        clients: the partition ids that fail.

    Example:
        >>> FailingClient([1]).clients
        frozenset({1})
    """

    def __init__(self, clients: Iterable[int]) -> None:
        self.clients = _clients(clients)

    def __call__(self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        pid = _partition_id(context)
        if msg.metadata.message_type.startswith("train") and pid in self.clients:
            raise RuntimeError(f"client {pid} failed while fitting its modules (injected fault)")
        return call_next(msg, context)


class SlowClient:
    """A mod under which the given clients wait ``seconds`` before handling ``train`` messages.

    Args:
        seconds: the delay.
        clients: the partition ids that are slow.

    Example:
        >>> SlowClient(30, [2]).seconds
        30.0
    """

    def __init__(self, seconds: float, clients: Iterable[int]) -> None:
        self.seconds = float(check_number("seconds", seconds, low=0, low_open=True))
        self.clients = _clients(clients)

    def __call__(self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type.startswith("train") and _partition_id(context) in self.clients:
            time.sleep(self.seconds)
        return call_next(msg, context)


class TamperedReply:
    """A mod that alters the first module of the given clients' ``train`` replies.

    Args:
        kind: ``"hash"`` (the manifest's sha256 is changed), ``"shape"`` (a tensor's shape in the manifest
            is changed) or ``"bytes"`` (one byte of the tensor data is flipped; manifest untouched).
        clients: the partition ids whose replies are altered.

    Example:
        >>> TamperedReply("bytes", [0]).kind
        'bytes'
        >>> TamperedReply("zip", [0])
        Traceback (most recent call last):
        ...
        ValueError: kind must be one of ('hash', 'shape', 'bytes'), got 'zip'
    """

    def __init__(self, kind: str, clients: Iterable[int]) -> None:
        self.kind = check_choice("kind", kind, TAMPERINGS)
        self.clients = _clients(clients)

    def __call__(self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        reply = call_next(msg, context)
        pid = _partition_id(context)
        if not msg.metadata.message_type.startswith("train") or pid not in self.clients or reply.has_error():
            return reply
        record = reply.content["module.0"]
        manifest, data = json.loads(record["manifest"]), bytearray(record["data"])
        if self.kind == "hash":
            manifest["sha256"] = ("0" if manifest["sha256"][0] != "0" else "1") + manifest["sha256"][1:]
        elif self.kind == "shape":
            name = sorted(manifest["tensors"])[0]
            manifest["tensors"][name]["shape"] = [*manifest["tensors"][name]["shape"], 1][::-1]
        else:
            data[-1] ^= 0xFF  # the last byte belongs to the tensor data, never to the header
        reply.content["module.0"] = ConfigRecord({"manifest": json.dumps(manifest), "data": bytes(data)})
        return reply
