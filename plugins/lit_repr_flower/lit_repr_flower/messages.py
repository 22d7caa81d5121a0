"""What the Flower messages carry: the core's ``ClientTask`` down, the core's ``ModulePayload`` s up.

Flower's records hold flat values (``ConfigRecord``: scalars, ``str``, ``bytes`` and lists of them;
``ArrayRecord``: arrays that Flower serialises itself). A module travels as one ``ConfigRecord``
``{"manifest": <JSON text>, "data": <bytes>}``: the safetensors bytes the client's ``pack`` produced are
carried verbatim as a ``bytes`` value, so the server hashes exactly the bytes the client hashed and
``verify`` applies unchanged. An ``ArrayRecord`` would re-encode every tensor in Flower's own format,
and the manifest's SHA-256 of the safetensors file could then no longer be checked.

Reply layout (``RecordDict``):

- ``"client"``: ``ConfigRecord`` ``{"client": <partition id>, "num_modules": n, "classes": [...]}``;
- ``"module.<i>"`` for ``i < n``: ``ConfigRecord`` ``{"manifest": <JSON>, "data": <bytes>}``.

Task layout: ``"task"``: ``ConfigRecord`` ``{"task": <ClientTask.to_dict() as JSON>}``.

Decoding never trusts the reply: a missing record, a wrong type or a manifest that is not a JSON object
raises :class:`ReplyError` (a ``ValueError``) naming what is wrong; the payloads it returns are still
unverified (the server verifies them with the core's ``verify``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from lit_repr.federated.engine import ClientTask
from lit_repr.federated.exchange import ModulePayload

__all__ = ["ReplyError", "encode_task", "decode_task", "encode_reply", "decode_reply"]

TASK_KEY = "task"
CLIENT_KEY = "client"
MODULE_PREFIX = "module."


class ReplyError(ValueError):
    """A client reply that does not have the layout of :func:`encode_reply` (nothing from it is used).

    Args:
        message: what is wrong with the reply.

    Example:
        >>> isinstance(ReplyError("no 'client' record"), ValueError)
        True
    """


def encode_task(task: ClientTask) -> RecordDict:
    """The content of the message that asks one client to fit its modules.

    Args:
        task: the core's :class:`~lit_repr.federated.engine.ClientTask`.

    Example:
        >>> from lit_repr.federated.engine import ClientTask
        >>> t = ClientTask(client=2, prior="gmm", prior_config={}, trainer={}, seed=0)
        >>> decode_task(encode_task(t)) == t
        True
    """
    if not isinstance(task, ClientTask):
        raise ValueError(f"task must be a ClientTask, got {type(task).__name__}")
    return RecordDict({TASK_KEY: ConfigRecord({TASK_KEY: json.dumps(task.to_dict(), sort_keys=True)})})


def decode_task(content: RecordDict) -> ClientTask:
    """The :class:`~lit_repr.federated.engine.ClientTask` that :func:`encode_task` wrote.

    Args:
        content: the received message's ``RecordDict``.

    Example:
        >>> from flwr.app import RecordDict
        >>> decode_task(RecordDict())
        Traceback (most recent call last):
        ...
        ValueError: the message holds no 'task' record (records: [])
    """
    if TASK_KEY not in content:
        raise ValueError(f"the message holds no {TASK_KEY!r} record (records: {sorted(content)})")
    record = content[TASK_KEY]
    text = record.get(TASK_KEY) if isinstance(record, ConfigRecord) else None
    if not isinstance(text, str):
        raise ValueError(f"the {TASK_KEY!r} record must be a ConfigRecord with a JSON string under {TASK_KEY!r}")
    return ClientTask.from_dict(json.loads(text))


def encode_reply(client: int, payloads: Sequence[ModulePayload]) -> RecordDict:
    """The content of a client's reply: its partition id and each module's manifest and safetensors bytes.

    Args:
        client: the client's partition id.
        payloads: the modules the core's ``client_step`` returned.

    Example:
        >>> from lit_repr.federated.exchange import ModulePayload
        >>> p = ModulePayload(manifest={"client": 0, "cls": 4}, data=b"abc")
        >>> decode_reply(encode_reply(0, [p])) == (0, [p])
        True
    """
    payloads = list(payloads)
    for p in payloads:
        if not isinstance(p, ModulePayload):
            raise ValueError(f"payloads must be ModulePayload objects, got {type(p).__name__}")
    classes = [int(p.cls) for p in payloads if isinstance(p.cls, int)]
    records: dict[str, Any] = {
        CLIENT_KEY: ConfigRecord({"client": int(client), "num_modules": len(payloads), "classes": classes})
    }
    for i, p in enumerate(payloads):
        records[f"{MODULE_PREFIX}{i}"] = ConfigRecord(
            {"manifest": json.dumps(p.manifest, sort_keys=True), "data": bytes(p.data)}
        )
    return RecordDict(records)


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReplyError(f"{what} must be an int >= 0, got {value!r}")
    return value


def decode_reply(content: RecordDict) -> tuple[int, list[ModulePayload]]:
    """``(client, payloads)`` from a reply that :func:`encode_reply` wrote; the payloads are unverified.

    Args:
        content: the reply message's ``RecordDict``.

    Example:
        >>> from flwr.app import RecordDict
        >>> decode_reply(RecordDict())
        Traceback (most recent call last):
        ...
        lit_repr_flower.messages.ReplyError: the reply holds no 'client' record (records: [])
    """
    if CLIENT_KEY not in content or not isinstance(content[CLIENT_KEY], ConfigRecord):
        raise ReplyError(f"the reply holds no {CLIENT_KEY!r} record (records: {sorted(content)})")
    head = content[CLIENT_KEY]
    client = _int(head.get("client"), "the reply's client id")
    n = _int(head.get("num_modules"), "the reply's num_modules")
    expected = {f"{MODULE_PREFIX}{i}" for i in range(n)} | {CLIENT_KEY}
    if set(content) != expected:
        raise ReplyError(
            f"client {client}: the reply announces {n} modules but holds records {sorted(content)}"
        )
    payloads = []
    for i in range(n):
        record = content[f"{MODULE_PREFIX}{i}"]
        if not isinstance(record, ConfigRecord) or set(record) != {"manifest", "data"}:
            raise ReplyError(f"client {client}: module {i} must be a ConfigRecord with 'manifest' and 'data'")
        text, data = record["manifest"], record["data"]
        if not isinstance(text, str) or not isinstance(data, bytes):
            raise ReplyError(
                f"client {client}: module {i} needs a JSON string manifest and bytes data, "
                f"got {type(text).__name__} and {type(data).__name__}"
            )
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReplyError(f"client {client}: the manifest of module {i} is not JSON: {err}") from None
        if not isinstance(manifest, Mapping):
            raise ReplyError(f"client {client}: the manifest of module {i} is not a JSON object")
        payloads.append(ModulePayload(manifest=dict(manifest), data=data))
    return client, payloads


def payload_classes(payloads: Iterable[ModulePayload]) -> list[int]:
    """The classes the payloads claim, sorted (ints only)."""
    return sorted({p.cls for p in payloads if isinstance(p.cls, int)})
