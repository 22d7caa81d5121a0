"""Activations of a frozen model, extracted once and served from a chunked on-disk cache.

:class:`ActivationsDataModule` runs a frozen model (every RNG and module mode left as found) over the
loaders of any DataModule in ``prepare_data`` and writes, per split, chunks of ``batches_per_chunk``
source batches as safetensors files, each written to a temporary name then renamed, and a JSON
manifest rewritten after each chunk: the model's identity (class name, sha256 of its ``state_dict``
tensors), sites, widths, dtype, rows and a sha256 per chunk. A killed extraction resumes at its last
complete chunk. Sequence outputs ``(B, T, D)`` become one row per token, with ``doc`` and ``position``;
padding tokens (``0`` in the batch's ``mask_key``, ``"attention_mask"`` by default) are left out.
``setup`` verifies every chunk: a missing or altered one is extracted again with a warning naming it
(``ValueError`` if the model and data are not at hand). A cache of another model,
other sites or another dtype raises ``ValueError`` unless ``overwrite=True``. Non-finite activations
raise before their chunk is written. Chunks stream to disk and are read one at a time (a small LRU;
the training order shuffles chunks, then rows within a chunk), so memory does not grow with the data.

The source's loaders must give the same batches in the same order on every pass: a DataModule with
``probe_dataloaders()`` (every :class:`~lit_repr.data.base.ArrayDataModule`) is read through those
unshuffled loaders, any other through ``<split>_dataloader()``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_repr.checks import check_bool, check_int
from lit_repr.data.base import EpochSeededSampler
from lit_repr.features import default_forward, device_of, iterate_frozen
from lit_repr.taps import Tap, resolve_sites
from lit_repr.targets import TargetSpec

__all__ = ["ActivationsDataModule", "ChunkedActivationsDataset", "model_identity"]

MANIFEST = "manifest.json"
_FORMAT = 1
_SITE, _KEY = "site:", "key:"


def model_identity(model: nn.Module) -> dict[str, str]:
    """``{"class": ..., "sha256": ...}``: the model's class name and a hash of its ``state_dict`` tensors.

    Example:
        >>> a = model_identity(nn.Linear(2, 2)); a["class"], len(a["sha256"])
        ('Linear', 64)
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"class": type(model).__name__, "sha256": h.hexdigest()}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


class ChunkedActivationsDataset(Dataset):
    """Rows of a cached split, read lazily one chunk at a time (a small LRU of loaded chunks).

    Args:
        files: chunk files (safetensors) in order.
        rows: number of rows of each chunk.
        sites: site names; the first is served as ``"x"``, the others under their names.
        max_cached_chunks: how many loaded chunks to keep in memory.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "c.safetensors")
        >>> save_file({"site:fc": torch.ones(3, 2), "key:y": torch.arange(3)}, f)
        >>> ds = ChunkedActivationsDataset([f], [3], ["fc"])
        >>> sorted(ds[2]), int(ds[2]["y"]), len(ds)
        (['index', 'x', 'y'], 2, 3)
    """

    def __init__(self, files: Sequence[str | Path], rows: Sequence[int], sites: Sequence[str],
                 max_cached_chunks: int = 2) -> None:
        if len(files) != len(rows):
            raise ValueError(f"files and rows need one entry per chunk, got {len(files)} files and rows={rows}")
        self.files = [str(f) for f in files]
        self.rows = [int(r) for r in rows]
        self.sites = list(sites)
        self.max_cached_chunks = check_int("max_cached_chunks", max_cached_chunks)
        self.starts = [sum(self.rows[:i]) for i in range(len(self.rows))]  # first row of each chunk
        self._cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return sum(self.rows)

    def _chunk(self, c: int) -> dict[str, Tensor]:
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        first = _SITE + self.sites[0]
        out = {"x" if k == first else k.split(":", 1)[1]: v for k, v in load_file(self.files[c]).items()}
        self._cache[c] = out
        while len(self._cache) > self.max_cached_chunks:
            self._cache.popitem(last=False)
        return out

    def locate(self, i: int) -> tuple[int, int]:
        """``(chunk, row within chunk)`` of row ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        c = bisect.bisect_right(self.starts, i) - 1
        return c, i - self.starts[c]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        c, r = self.locate(int(i))
        item = {k: v[r] for k, v in self._chunk(c).items()}
        item["index"] = torch.tensor(int(i))
        return item


class ChunkShuffleSampler(EpochSeededSampler):
    """Chunk order shuffled, then rows within each chunk (``rows`` per chunk; epoch ``e`` draws from ``seed``, ``e``).

    Example:
        >>> sorted(ChunkShuffleSampler([2, 3], seed=0))
        [0, 1, 2, 3, 4]
    """

    def __init__(self, rows: Sequence[int], seed: int = 0) -> None:
        self.rows = [int(r) for r in rows]
        super().__init__(sum(self.rows), seed)

    def __iter__(self):
        g = self.generator()
        starts = [sum(self.rows[:i]) for i in range(len(self.rows))]
        for c in torch.randperm(len(self.rows), generator=g).tolist():
            yield from (starts[c] + torch.randperm(self.rows[c], generator=g)).tolist()


class ActivationsDataModule(pl.LightningDataModule):
    """Activations of a frozen ``model`` at ``sites`` over ``data``, cached on disk in chunks.

    ``prepare_data`` extracts (or resumes) the cache; ``setup`` verifies it and builds the datasets.
    Batches: ``"x"`` (the first site), every further site under its name, ``"index"`` (row in the
    split) and the source batches' ground truth aligned per row (``"doc"``/``"position"`` for
    sequence outputs, padding tokens left out). Give ``model=None, data=None`` to read an existing cache only.

    Args:
        model: the frozen model (any ``nn.Module``); ``None`` to only read an existing cache.
        sites: submodule names or globs (see :func:`~lit_repr.taps.resolve_sites`).
        data: the source LightningDataModule; ``None`` to only read an existing cache.
        cache_dir: directory of the chunks and ``manifest.json``.
        dtype: dtype of the stored activations (``torch.float32``, ``torch.float16``, ``torch.bfloat16``).
        splits: source splits to extract (those the source has).
        batches_per_chunk: source batches per chunk file.
        batch_size: batch size of this DataModule's loaders.
        input_key: where the input sits in a source batch (default ``"x"`` for dicts).
        sequence: treat 3-D outputs ``(B, T, D)`` as token sequences (default ``True``); ``False``
            flattens them per sample.
        mask_key: the key of a source batch's ``(B, T)`` attention mask (default ``"attention_mask"``):
            of sequence outputs only the tokens with mask 1 are written (padding is dropped), their
            ``doc`` and ``position`` those of the token in its document. Batches without this key, and
            ``None``, keep every token.
        overwrite: replace a cache made by another model, other sites or another dtype.
        seed: seed of the training order.

    Example:
        >>> import tempfile
        >>> from lit_repr.data import SparseCodingDataModule
        >>> src = SparseCodingDataModule(in_features=8, num_train=64, num_val=32, num_test=32, batch_size=16)
        >>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
        >>> dm = ActivationsDataModule(net, ["0"], src, cache_dir=tempfile.mkdtemp())
        >>> dm.prepare_data(); dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader())); batch["x"].shape[1], dm.in_features
        (4, 4)
    """

    def __init__(
        self,
        model: nn.Module | None,
        sites: str | Sequence[str],
        data: pl.LightningDataModule | None,
        cache_dir: str | os.PathLike,
        dtype: torch.dtype = torch.float32,
        splits: Sequence[str] = ("train", "val", "test"),
        batches_per_chunk: int = 1,
        batch_size: int = 256,
        input_key: TargetSpec | None = None,
        sequence: bool = True,
        mask_key: str | None = "attention_mask",
        overwrite: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise ValueError(f"dtype must be torch.float32, float16, bfloat16 or float64, got {dtype!r}")
        if isinstance(splits, str) or not splits:
            raise ValueError(f"splits must be a non-empty list of split names, got {splits!r}")
        self.model, self.data = model, data
        given = [sites] if isinstance(sites, str) else list(sites)
        self.sites = resolve_sites(model, sites) if model is not None else given
        self.cache_dir = Path(cache_dir)
        self.dtype = dtype
        self.splits = list(splits)
        self.batches_per_chunk = check_int("batches_per_chunk", batches_per_chunk)
        self.batch_size = check_int("batch_size", batch_size)
        self.input_key = input_key
        self.sequence = check_bool("sequence", sequence)
        if mask_key is not None and not isinstance(mask_key, str):
            raise ValueError(f"mask_key must be a batch key (str) or None, got {mask_key!r}")
        self.mask_key = mask_key
        self.overwrite = check_bool("overwrite", overwrite)
        self.seed = check_int("seed", seed, low=0)
        self.datasets: dict[str, ChunkedActivationsDataset] = {}
        self.manifest: dict[str, Any] | None = None

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.cache_dir / MANIFEST

    def _header(self) -> dict[str, Any]:
        return {"format": _FORMAT, "model": model_identity(self.model), "sites": self.sites,
                "dtype": str(self.dtype).replace("torch.", ""), "batches_per_chunk": self.batches_per_chunk,
                "mask_key": self.mask_key}

    def _read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"manifest {self.manifest_path} is unreadable ({err}); use a new cache_dir "
                             f"or overwrite=True") from err

    def _save_manifest(self) -> None:
        _write_atomic(self.manifest_path, lambda p: p.write_text(json.dumps(self.manifest, indent=1)))

    def _check_writable(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / ".write_test").write_bytes(b"")
            (self.cache_dir / ".write_test").unlink()
        except OSError as err:
            raise ValueError(f"cache_dir must be a writable directory, got {str(self.cache_dir)!r} ({err})") from err

    def _open_cache(self) -> None:
        """Load the manifest, or start one; a cache of another run raises unless ``overwrite``."""
        header = self._header()
        found = self._read_manifest()
        if found is not None:
            mine = {k: header[k] for k in ("model", "sites", "dtype", "batches_per_chunk", "mask_key")}
            theirs = {k: found.get(k) for k in mine}
            if mine != theirs:
                if not self.overwrite:
                    raise ValueError(
                        f"cache_dir {str(self.cache_dir)!r} holds a cache of another run: it has {theirs}, this "
                        f"run needs {mine}. Use a new cache_dir, or overwrite=True to replace it")
                for f in self.cache_dir.glob("*.safetensors"):
                    f.unlink()
                found = None
        self.manifest = found if found is not None else {**header, "shapes": {}, "splits": {}}

    # ------------------------------------------------------------------ extraction
    def _source_loaders(self) -> dict[str, Any]:
        self.data.prepare_data()
        self.data.setup("fit")
        if hasattr(self.data, "probe_dataloaders"):
            loaders = self.data.probe_dataloaders()
            return {s: loaders[s] for s in self.splits if s in loaders}
        loaders = {s: getattr(self.data, f"{s}_dataloader", lambda: None)() for s in self.splits}
        return {s: loader for s, loader in loaders.items() if loader is not None and not isinstance(loader, list)}

    def _rows(self, feats: dict[str, Tensor], batch: Any, start_doc: int) -> dict[str, Tensor]:
        """One source batch as flat rows: ``{"site:<s>": (R, D), "key:<k>": (R, ...)}``."""
        out: dict[str, Tensor] = {}
        first = feats[self.sites[0]]
        b = first.shape[0]
        seq = self.sequence and first.ndim == 3
        t = first.shape[1] if seq else 1
        keep = self._kept_tokens(batch, b, t) if seq else None  # (B*T,) bool, or None: every row
        for site in self.sites:
            f = feats[site]
            if f.shape[0] != b or (seq and (f.ndim != 3 or f.shape[1] != t)):
                raise ValueError(f"sites must give one row per sample (and token); {self.sites[0]!r} gives "
                                 f"{tuple(first.shape)}, {site!r} gives {tuple(f.shape)}")
            f = f.reshape(b * t, -1) if seq else f.reshape(b, -1)
            if keep is not None:
                f = f[keep]
            if not torch.isfinite(f).all():
                raise ValueError(f"activations at site {site!r} are not finite (NaN or inf); nothing is "
                                 f"written for this chunk")
            out[_SITE + site] = f.to(self.dtype).cpu().contiguous()
        gt = dict(batch) if isinstance(batch, dict) else {}
        x_key = self.input_key if isinstance(self.input_key, str) else "x"
        doc = gt.pop("index", None)
        doc = torch.as_tensor(doc).reshape(b) if doc is not None else torch.arange(start_doc, start_doc + b)
        for k, v in gt.items():
            if k == x_key or not isinstance(v, Tensor) or v.ndim == 0 or v.shape[0] != b:
                continue
            if keep is not None and k == self.mask_key:  # every written token has mask 1
                continue
            v = v.detach().cpu()
            if seq:  # per-token ground truth (B, T, ...) is flattened like the activations, per-sample repeated
                v = v.flatten(0, 1) if v.ndim >= 2 and v.shape[1] == t else v.repeat_interleave(t, 0)
                v = v[keep] if keep is not None else v
            out[_KEY + k] = v.contiguous()
        doc = doc.cpu().repeat_interleave(t)
        out[_KEY + "doc"] = doc[keep] if keep is not None else doc
        if seq:
            position = torch.arange(t).repeat(b)
            out[_KEY + "position"] = position[keep] if keep is not None else position
        return out

    def _kept_tokens(self, batch: Any, b: int, t: int) -> Tensor | None:
        """The tokens to write, flat ``(B*T,)``: those where the batch's mask is 1; ``None`` keeps all."""
        if self.mask_key is None or not isinstance(batch, dict) or self.mask_key not in batch:
            return None
        mask = torch.as_tensor(batch[self.mask_key]).detach().cpu()
        if mask.shape != (b, t):
            raise ValueError(f"the batch's {self.mask_key!r} (mask_key) must have the shape (batch, tokens) = "
                             f"{(b, t)} of the sequence outputs, got {tuple(mask.shape)}; pass mask_key=None to "
                             f"keep every token")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"the batch's {self.mask_key!r} (mask_key) must hold 0 (padding) and 1 (token), got "
                             f"values {torch.unique(mask).tolist()[:10]}")
        return mask.reshape(b * t).bool()

    def _extract_split(self, split: str, loader: Any, only: set[int] | None = None) -> None:
        """Compute the chunks of ``split`` that are missing (or those in ``only``), chunk by chunk."""
        entry = self.manifest["splits"].setdefault(split, {"chunks": {}, "complete": False})
        todo = (lambda c: c in only) if only is not None else (lambda c: str(c) not in entry["chunks"])
        tap = Tap(self.model, self.sites, reduction="none", dtype=None)
        pending: list[dict[str, Tensor]] = []
        docs, last_batch = 0, -1

        def batches():
            nonlocal docs
            for i, batch in enumerate(loader):
                c = i // self.batches_per_chunk
                if only is not None and c > max(only):
                    return
                if todo(c):
                    yield i, batch
                else:
                    docs += _batch_len(batch)

        def flush(c: int) -> None:
            rows = {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
            name = f"{split}-{c:06d}.safetensors"
            _write_atomic(self.cache_dir / name, lambda p: save_file(rows, str(p)))
            n = next(iter(rows.values())).shape[0]
            entry["chunks"][str(c)] = {"file": name, "rows": n, "sha256": _sha256(self.cache_dir / name)}
            self.manifest["shapes"] = {s: list(rows[_SITE + s].shape[1:]) for s in self.sites}
            self._save_manifest()
            pending.clear()

        base = default_forward(self.input_key)
        try:
            for feats, (i, batch) in iterate_frozen(self.model, tap, batches(), lambda m, ib: base(m, ib[1]),
                                                    device_of(self.model)):
                pending.append(self._rows(feats, batch, docs))
                docs += _batch_len(batch)
                last_batch = i
                if (i + 1) % self.batches_per_chunk == 0:
                    flush(i // self.batches_per_chunk)
            if pending:
                flush(last_batch // self.batches_per_chunk)
        finally:
            tap.remove()
        if only is None:
            entry["complete"] = True
            entry["rows"] = sum(c["rows"] for c in entry["chunks"].values())
            self._save_manifest()

    def prepare_data(self) -> None:
        """Extract the cache, or resume it at its last complete chunk (one process)."""
        if self.model is None or self.data is None:
            return
        self._check_writable()
        self._open_cache()
        loaders = self._source_loaders()
        if not loaders:
            raise ValueError(f"data must have at least one of the splits {self.splits}, it has none")
        for split, loader in loaders.items():
            entry = self.manifest["splits"].get(split)
            if entry is None or not entry.get("complete"):
                self._extract_split(split, loader)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        """Verify the manifest and every chunk's hash; re-extract a bad chunk if the source is at hand."""
        if self.datasets:
            return
        if self.model is not None:
            self._check_writable()
            self._open_cache()
        else:
            self.manifest = self._read_manifest()
            if self.manifest is None:
                raise ValueError(f"cache_dir {str(self.cache_dir)!r} holds no {MANIFEST}; give model and data "
                                 f"to extract the activations")
            if self.manifest.get("sites") != self.sites:
                raise ValueError(f"sites must match the cache's: cache has {self.manifest.get('sites')}, "
                                 f"got {self.sites}")
        splits = self.manifest["splits"]
        bad = {s: [c for c, ch in e["chunks"].items() if not self._chunk_ok(ch)] for s, e in splits.items()}
        bad = {s: cs for s, cs in bad.items() if cs}
        if bad:
            names = [splits[s]["chunks"][c]["file"] for s, cs in bad.items() for c in cs]
            if self.model is None or self.data is None:
                raise ValueError(f"cached chunks {names} in {str(self.cache_dir)!r} are missing or do not match "
                                 f"their sha256; give model and data to extract them again")
            warnings.warn(f"cached chunks {names} are missing or do not match their sha256; extracting them "
                          f"again", UserWarning, stacklevel=2)
            loaders = self._source_loaders()
            for s, cs in bad.items():
                self._extract_split(s, loaders[s], only={int(c) for c in cs})
        for s, e in splits.items():
            order = sorted(e["chunks"], key=int)
            self.datasets[s] = ChunkedActivationsDataset(
                [self.cache_dir / e["chunks"][c]["file"] for c in order], [e["chunks"][c]["rows"] for c in order],
                self.sites)

    def _chunk_ok(self, chunk: dict[str, Any]) -> bool:
        path = self.cache_dir / chunk["file"]
        return path.is_file() and _sha256(path) == chunk["sha256"]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        if split not in self.datasets:
            raise ValueError(f"split must be one of the cached splits {sorted(self.datasets)}, got {split!r}")
        ds = self.datasets[split]
        sampler = ChunkShuffleSampler(ds.rows, self.seed) if shuffle else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    @property
    def in_features(self) -> int:
        """Width of the first site's activations (``"x"``)."""
        return int(torch.Size(self.manifest["shapes"][self.sites[0]]).numel())


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0]
    return _batch_len(next(iter(batch.values())) if isinstance(batch, dict) else batch[0])
