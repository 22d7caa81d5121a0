"""What travels from a client to the server: one generative module per (client, class), as safetensors.

A :class:`ModulePayload` is a JSON manifest and the safetensors bytes of one fitted
:class:`~lit_repr.federated.priors.GenerativePrior`. Nothing else is ever parsed on the receiving side:
:func:`verify` refuses pickles and archives, checks the size and the SHA-256 of the bytes, reads the
safetensors header (8-byte little-endian length, then JSON) and compares every tensor's name, dtype and
shape with the manifest *before* any tensor is loaded, and checks that the prior kind is a known one.
Every failure raises :class:`ExchangeError` (a ``ValueError``) naming the client, the class and what
failed.

Manifest (``"format": "lit_repr.prior/1"``)::

    {"format": "lit_repr.prior/1", "client": 3, "cls": 7, "kind": "gmm", "config": {...},
     "tensors": {"means": {"dtype": "float32", "shape": [4, 64]}, ...},
     "num_bytes": 12345, "sha256": "..."}

On disk (:func:`save_payloads`, :func:`load_payloads`) each payload is ``<client>_<cls>.safetensors``
beside ``<client>_<cls>.json``.

Example:
    >>> m = {"format": FORMAT, "client": 0, "cls": 1, "kind": "gmm", "config": {}, "tensors": {},
    ...      "num_bytes": 3, "sha256": "0" * 64}
    >>> verify(ModulePayload(manifest=m, data=b"\\x80\\x04K."))
    Traceback (most recent call last):
    ...
    lit_repr.federated.exchange.ExchangeError: module of client 0, class 1: the data is a pickle or a zip archive; ...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FORMAT",
    "ExchangeError",
    "ModulePayload",
    "pack",
    "verify",
    "read_header",
    "save_payloads",
    "load_payloads",
]

FORMAT = "lit_repr.prior/1"

# safetensors' dtype codes <-> torch dtype names used in manifests
_ST_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
_TORCH_DTYPES: dict[torch.dtype, str] = {getattr(torch, name): name for name in _ST_DTYPES.values()}
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1}
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_NAME = re.compile(r"^(\d+)_(\d+)\.json$")


class ExchangeError(ValueError):
    """A module payload that the server refuses: wrong hash, size, shapes, dtypes, kind or format.

    Args:
        message: what failed (the client and class are prefixed by :func:`verify`).

    Example:
        >>> isinstance(ExchangeError("bad"), ValueError)
        True
    """


@dataclass(frozen=True)
class ModulePayload:
    """One generative module on its way from a client to the server.

    Attributes:
        manifest: JSON-serialisable description: ``format``, ``client``, ``cls``, ``kind``, ``config``,
            ``tensors`` (name -> ``{"dtype", "shape"}``), ``num_bytes``, ``sha256``.
        data: the safetensors bytes of the module's tensors.
    """

    manifest: dict
    data: bytes

    @property
    def client(self) -> Any:
        """The client id the manifest claims."""
        return self.manifest.get("client") if isinstance(self.manifest, Mapping) else None

    @property
    def cls(self) -> Any:
        """The class the manifest claims."""
        return self.manifest.get("cls") if isinstance(self.manifest, Mapping) else None

    @property
    def kind(self) -> Any:
        """The prior kind the manifest claims."""
        return self.manifest.get("kind") if isinstance(self.manifest, Mapping) else None


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _prior_registry() -> Mapping[str, type]:
    from lit_repr.federated.priors import PRIORS

    return PRIORS


def pack(prior: Any, client: int, cls: int) -> ModulePayload:
    """The payload of one fitted prior: its tensors as safetensors bytes plus a manifest with their hash.

    Args:
        prior: a fitted :class:`~lit_repr.federated.priors.GenerativePrior`.
        client: the client id (int >= 0).
        cls: the class the prior models (int >= 0).

    Example:
        >>> from lit_repr.federated.priors import build_prior
        >>> prior = build_prior("gmm", (1, 4, 4), num_components=2, num_pca_components=3)
        >>> prior = prior.fit_data(torch.rand(20, 1, 4, 4), seed=0, trainer_kwargs={"max_epochs": 2})
        >>> payload = pack(prior, client=0, cls=3)
        >>> payload.manifest["kind"], payload.manifest["num_bytes"] == len(payload.data)
        ('gmm', True)
        >>> type(verify(payload)).__name__
        'GaussianMixturePrior'
    """
    if not _is_index(client):
        raise ValueError(f"client must be an int >= 0, got {client!r}")
    if not _is_index(cls):
        raise ValueError(f"cls must be an int >= 0, got {cls!r}")
    kind = getattr(prior, "kind", None)
    if not isinstance(kind, str):
        raise ValueError(f"prior must be a GenerativePrior with a string `kind`, got {type(prior).__name__}")
    config = prior.config()
    try:
        config = json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the config of the {kind!r} prior of client {client}, class {cls} is not JSON: {err}"
        ) from None
    tensors = prior.tensors()
    if not isinstance(tensors, Mapping) or not tensors:
        raise ValueError(f"the {kind!r} prior of client {client}, class {cls} returned no tensors")
    clean: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"tensor {name!r} of the {kind!r} prior is a {type(t).__name__}, not a Tensor")
        if t.dtype not in _TORCH_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}; allowed: {sorted(_TORCH_DTYPES.values())}")
        clean[str(name)] = t.detach().to("cpu").contiguous()
    from safetensors.torch import save

    data = save(clean)
    manifest = {
        "format": FORMAT,
        "client": int(client),
        "cls": int(cls),
        "kind": kind,
        "config": config,
        "tensors": {n: {"dtype": _TORCH_DTYPES[t.dtype], "shape": list(t.shape)} for n, t in sorted(clean.items())},
        "num_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return ModulePayload(manifest=manifest, data=data)


def read_header(data: bytes) -> dict[str, dict]:
    """The tensor entries of a safetensors buffer's header, checked for consistency; no tensor is loaded.

    Checks: the 8-byte little-endian header length fits the buffer, the header is a JSON object, each
    entry has a known dtype, an integer shape and data offsets that tile the data area exactly (no gap,
    no overlap, nothing past the end: a truncated file fails here).

    Args:
        data: the bytes of a safetensors file.

    Returns:
        ``{name: {"dtype": torch dtype name, "shape": [...]}}`` (the ``__metadata__`` entry is dropped).

    Example:
        >>> from safetensors.torch import save
        >>> read_header(save({"w": torch.zeros(2, 3)}))
        {'w': {'dtype': 'float32', 'shape': [2, 3]}}
        >>> read_header(save({"w": torch.zeros(2, 3)})[:-4])
        Traceback (most recent call last):
        ...
        ValueError: the data area holds 20 bytes but the header's tensors need 24 (truncated?)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"the data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes is too short for a safetensors file (8-byte header length first)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"the header length {n} does not fit in {len(data)} bytes (truncated or not safetensors)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the safetensors header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"the safetensors header must be a JSON object, got {type(header).__name__}")
    body = len(data) - 8 - n
    entries, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"header entry {name!r} must have exactly dtype, shape and data_offsets, got {entry!r}")
        dtype = _ST_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {entry['dtype']!r}; allowed: {sorted(_ST_DTYPES)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_is_index(s) for s in shape):
            raise ValueError(f"tensor {name!r} has shape {shape!r}; expected a list of ints >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_index(o) for o in offsets)):
            raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end]")
        numel = 1
        for s in shape:
            numel *= s
        if offsets[1] - offsets[0] != numel * _ITEMSIZE[dtype]:
            raise ValueError(
                f"tensor {name!r} ({dtype}, shape {shape}) needs {numel * _ITEMSIZE[dtype]} bytes, "
                f"its data_offsets {offsets} span {offsets[1] - offsets[0]}"
            )
        entries[name] = {"dtype": dtype, "shape": list(shape)}
        spans.append((offsets[0], offsets[1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise ValueError(f"tensor data is not contiguous: a block starts at {begin}, the previous ends at {end}")
        end = stop
    if end != body:
        raise ValueError(f"the data area holds {body} bytes but the header's tensors need {end} (truncated?)")
    return entries


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, Mapping):
        raise ExchangeError(f"the manifest must be a JSON object, got {type(manifest).__name__}")
    required = ("format", "client", "cls", "kind", "config", "tensors", "num_bytes", "sha256")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ExchangeError(f"the manifest lacks {missing}; it needs {list(required)}")
    if manifest["format"] != FORMAT:
        raise ExchangeError(f"manifest format {manifest['format']!r} is not {FORMAT!r}")
    for key in ("client", "cls"):
        if not _is_index(manifest[key]):
            raise ExchangeError(f"manifest {key} must be an int >= 0, got {manifest[key]!r}")


def verify(payload: ModulePayload) -> Any:
    """Check a payload completely, then rebuild its prior; :class:`ExchangeError` names what failed.

    In order: manifest fields; the bytes are a well-formed safetensors file (header parsed by hand: a
    pickle, an archive or a truncated file fails here); size; SHA-256; the header's tensor names, dtypes
    and shapes against the manifest; the prior kind is known. Only then
    are tensors loaded (``safetensors.torch.load``) and the prior rebuilt with ``from_tensors``.

    Args:
        payload: a :class:`ModulePayload` as received.

    Returns:
        The rebuilt :class:`~lit_repr.federated.priors.GenerativePrior`.

    Example:
        >>> verify("not a payload")
        Traceback (most recent call last):
        ...
        lit_repr.federated.exchange.ExchangeError: expected a ModulePayload, got str
    """
    if not isinstance(payload, ModulePayload):
        raise ExchangeError(f"expected a ModulePayload, got {type(payload).__name__}")
    manifest = payload.manifest
    who = (
        f"module of client {manifest.get('client')!r}, class {manifest.get('cls')!r}"
        if isinstance(manifest, Mapping)
        else "module"
    )
    try:
        _check_manifest(manifest)
        data = payload.data
        if not isinstance(data, (bytes, bytearray)):
            raise ExchangeError(f"the data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        try:
            header = read_header(data)
        except ValueError as err:
            if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":
                raise ExchangeError(
                    "the data is a pickle or a zip archive; only safetensors bytes are accepted (nothing was loaded)"
                ) from None
            raise ExchangeError(f"not a valid safetensors file: {err}") from None
        if len(data) != manifest["num_bytes"]:
            raise ExchangeError(f"size mismatch: the manifest says {manifest['num_bytes']} bytes, got {len(data)}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest["sha256"]:
            raise ExchangeError(
                f"sha256 mismatch: the manifest says {manifest['sha256']!r}, the data hashes to {digest!r}"
            )
        declared = manifest["tensors"]
        if not isinstance(declared, Mapping):
            raise ExchangeError(f"manifest tensors must be an object, got {type(declared).__name__}")
        if set(header) != set(declared):
            raise ExchangeError(
                f"tensor names differ: the manifest lists {sorted(declared)}, the file holds {sorted(header)}"
            )
        for name, entry in header.items():
            want = declared[name]
            if not isinstance(want, Mapping) or want.get("dtype") != entry["dtype"]:
                got = want.get("dtype") if isinstance(want, Mapping) else want
                raise ExchangeError(f"tensor {name!r}: dtype {entry['dtype']} in the file, {got!r} in the manifest")
            if list(want.get("shape", [])) != entry["shape"]:
                raise ExchangeError(
                    f"tensor {name!r}: shape {entry['shape']} in the file, {want.get('shape')} in the manifest"
                )
        registry = _prior_registry()
        kind = manifest["kind"]
        if kind not in registry:
            raise ExchangeError(f"unknown prior kind {kind!r}; known: {sorted(registry)}")
        if not isinstance(manifest["config"], Mapping):
            raise ExchangeError(f"manifest config must be an object, got {type(manifest['config']).__name__}")
        from safetensors.torch import load

        tensors = load(data)
        try:
            return registry[kind].from_tensors(dict(manifest["config"]), tensors)
        except ExchangeError:
            raise
        except (ValueError, TypeError, KeyError, RuntimeError) as err:
            raise ExchangeError(f"the {kind!r} prior cannot be rebuilt from these tensors: {err}") from None
    except ExchangeError as err:
        raise ExchangeError(f"{who}: {err}") from None


def save_payloads(payloads: Iterable[ModulePayload], directory: str | os.PathLike) -> list[Path]:
    """Write payloads as ``<client>_<cls>.safetensors`` + ``<client>_<cls>.json``; checks all before writing.

    Args:
        payloads: the payloads (distinct (client, class) pairs).
        directory: where to write (created if needed).

    Returns:
        The paths of the written safetensors files.

    Example:
        >>> save_payloads([], "unused_dir")
        []
    """
    payloads = list(payloads)
    seen = set()
    for p in payloads:
        if not isinstance(p, ModulePayload):
            raise ValueError(f"payloads must be ModulePayload objects, got {type(p).__name__}")
        try:
            _check_manifest(p.manifest)
        except ExchangeError as err:
            raise ValueError(f"cannot save a payload with a bad manifest: {err}") from None
        if not isinstance(p.data, (bytes, bytearray)):
            raise ValueError(f"payload data must be bytes, got {type(p.data).__name__}")
        key = (p.client, p.cls)
        if key in seen:
            raise ValueError(f"two payloads for client {key[0]}, class {key[1]}")
        seen.add(key)
    if not payloads:
        return []
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in payloads:
        stem = f"{p.client}_{p.cls}"
        (out / f"{stem}.safetensors").write_bytes(bytes(p.data))
        (out / f"{stem}.json").write_text(json.dumps(p.manifest, indent=1, sort_keys=True))
        written.append(out / f"{stem}.safetensors")
    return written


def load_payloads(directory: str | os.PathLike) -> list[ModulePayload]:
    """Read the payloads :func:`save_payloads` wrote (unverified: give them to the server, which verifies).

    Only the JSON manifests are parsed here; the safetensors bytes are read as bytes.

    Args:
        directory: a directory of ``<client>_<cls>.json`` / ``.safetensors`` pairs.

    Example:
        >>> load_payloads("no_such_dir")
        Traceback (most recent call last):
        ...
        ValueError: directory 'no_such_dir' does not exist
    """
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"directory {str(directory)!r} does not exist")
    manifests = sorted(p for p in path.iterdir() if _NAME.match(p.name))
    stems = {p.name[: -len(".json")] for p in manifests}
    orphans = sorted(p.name for p in path.glob("*.safetensors") if p.name[: -len(".safetensors")] not in stems)
    if orphans:
        raise ValueError(f"{orphans} in {str(directory)!r} have no <client>_<cls>.json manifest beside them")
    out = []
    for m in sorted(manifests, key=lambda p: tuple(int(g) for g in _NAME.match(p.name).groups())):
        data_path = m.with_suffix(".safetensors")
        if not data_path.is_file():
            raise ValueError(f"manifest {m.name} has no {data_path.name} beside it")
        try:
            manifest = json.loads(m.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest {m.name} is not JSON: {err}") from None
        out.append(ModulePayload(manifest=manifest, data=data_path.read_bytes()))
    return out
