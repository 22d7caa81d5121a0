"""A text corpus that ships with every Python: the docstrings of the standard library.

:func:`stdlib_docstrings` parses the standard library's source files with :mod:`ast` (nothing is
imported), in sorted path order, leaving out test packages, IDLE, tkinter, the 2to3 and ensurepip
tools, codec tables, installed third-party packages and private modules (``_pydecimal``,
``email._parseaddr``, …). Each docstring (cleaned by :func:`inspect.cleandoc`, duplicates kept
once) comes with its module, its top-level package, its kind and its qualified name. The corpus
depends on the Python version that runs it (5,717 docstrings on Python 3.11).

:class:`TextDataModule` turns it into dict batches tokenized for all-MiniLM-L6-v2, with properties
that serve as probe targets.
"""

from __future__ import annotations

import ast
import os
import re
import sysconfig
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from lit_repr.checks import check_int, check_number
from lit_repr.data.base import ArrayDataModule, split_indices
from lit_repr_text.encoder import load_tokenizer

__all__ = ["Docstring", "TextDataModule", "stdlib_docstrings", "has_code", "trim_padding", "KINDS", "EXCLUDED"]

KINDS = ("module", "class", "function")
EXCLUDED = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "encodings",
    "site-packages", "dist-packages", "__pycache__", "__phello__",
})
_LITERAL_BLOCK = re.compile(r"::[ \t]*\n(?:[ \t]*\n)*([ \t]+)\S")


@dataclass(frozen=True)
class Docstring:
    """One docstring of the corpus.

    Attributes:
        text: the cleaned docstring.
        module: dotted module name (``"email.utils"``).
        package: top-level package or module (``"email"``).
        kind: ``"module"``, ``"class"`` or ``"function"`` (methods and ``async def`` included).
        name: qualified name inside the module (``""`` for the module docstring).
    """

    text: str
    module: str
    package: str
    kind: str
    name: str


def has_code(text: str) -> bool:
    """Whether a docstring holds code: a ``>>>`` prompt, or a reST literal block (a line ending in ``::``
    followed by an indented line).

    Example:
        >>> has_code(">>> 1 + 1\\n2"), has_code("Use it like this::\\n\\n    f(x)"), has_code("Plain text.")
        (True, True, False)
    """
    return ">>>" in text or _LITERAL_BLOCK.search(text) is not None


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path, excluded: frozenset[str]) -> list[Path]:
    found = []
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root)
        dirs[:] = sorted(d for d in dirs if d not in excluded and not d.startswith(("test", ".", "_"))
                         and not (rel == Path(".") and d.startswith("config-")))
        for f in sorted(files):
            if not f.endswith(".py") or f.startswith(("test_", "_")) and f != "__init__.py":
                continue
            path = rel / f
            if path.parts[0].startswith("_") or path.parts[0].removesuffix(".py") in excluded:
                continue
            found.append(path)
    return sorted(found)


def _docstrings_of(tree: ast.Module, module: str, package: str) -> list[Docstring]:
    out: list[Docstring] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc and doc.strip():
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    out.append(Docstring(doc.strip(), module, package, kind, name))
                visit(child, name + ".")
            elif isinstance(child, (ast.If, ast.Try, ast.With)):  # definitions under `if sys.platform ...` etc.
                visit(child, prefix)

    doc = ast.get_docstring(tree, clean=True)
    if doc and doc.strip():
        out.append(Docstring(doc.strip(), module, package, "module", ""))
    visit(tree, "")
    return out


@lru_cache(maxsize=4)
def stdlib_docstrings(excluded: frozenset[str] = EXCLUDED) -> tuple[Docstring, ...]:
    """Every docstring of the standard library's source files, in a deterministic order (sorted paths,
    then source order), duplicates kept once (the first).

    Args:
        excluded: directory and top-level module names left out (default :data:`EXCLUDED`); directories
            starting with ``test`` or ``_`` and files starting with ``test_`` are always left out.

    Example:
        >>> docs = stdlib_docstrings()
        >>> len(docs) > 1000, {d.kind for d in docs} == set(KINDS)
        (True, True)
        >>> next(d for d in docs if d.module == "json").text.splitlines()[0]
        'JSON (JavaScript Object Notation) <https://json.org> is a subset of'
    """
    root = _stdlib_root()
    seen: set[str] = set()
    out: list[Docstring] = []
    for path in _source_files(root, frozenset(excluded)):
        parts = list(path.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old sources
                tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for d in _docstrings_of(tree, module, parts[0]):
            if d.text not in seen:
                seen.add(d.text)
                out.append(d)
    if not out:
        raise RuntimeError(f"found no docstrings in the standard library's sources at {root}; this Python ships "
                           f"without them (only .pyc files?)")
    return tuple(out)


def trim_padding(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Collate dict items, then cut the ``input_ids``/``attention_mask`` columns that are padding in every
    row of the batch (a batch is only as long as its longest text).

    Example:
        >>> items = [{"input_ids": torch.tensor([5, 6, 0]), "attention_mask": torch.tensor([1, 1, 0])}] * 2
        >>> trim_padding(items)["input_ids"].shape
        torch.Size([2, 2])
    """
    batch = default_collate(items)
    mask = batch["attention_mask"]
    used = mask.any(0).nonzero()
    t = int(used.max()) + 1 if len(used) else 1
    batch["input_ids"], batch["attention_mask"] = batch["input_ids"][:, :t], mask[:, :t]
    return batch


class TextDataModule(ArrayDataModule):
    """Docstrings of Python's standard library (:func:`stdlib_docstrings`; nothing to download) tokenized
    for all-MiniLM-L6-v2, with properties to probe for.

    Batches are dicts: ``input_ids`` and ``attention_mask`` (``(batch, tokens)``, each batch cut to its
    longest text), ``index`` (the text's row in its split: ``dm.texts(split)[index]``) and, as integer
    tensors:

    - ``package``: the top-level standard-library package or module, among the ``num_packages`` most
      frequent of the selected texts (by count, then name), or ``num_packages`` for every other one
      ("other"); the names are ``package_names``.
    - ``length_bucket``: the number of words, bucketed at ``length_bins`` (``0`` below the first bin edge).
    - ``has_code``: ``1`` if the docstring holds a ``>>>`` prompt or a reST literal block (:func:`has_code`).
    - ``kind``: ``0`` module, ``1`` class, ``2`` function or method docstring (``KINDS``).

    The texts (all of them, or ``num_texts`` drawn with ``seed``) are split at random by ``seed`` into
    train, val and test; everything is deterministic for a given Python version. ``num_classes`` gives
    each property's number of classes (for ``LinearProbe(num_classes=...)``).

    Args:
        batch_size: texts per batch.
        max_length: tokens per text at most (longer texts are truncated), at most 512.
        num_texts: use this many texts drawn at random (``None``: every docstring).
        num_packages: how many of the most frequent packages get a class of their own.
        length_bins: increasing word counts where the length buckets start.
        val_fraction: fraction of texts held out for validation.
        test_fraction: fraction of texts held out for testing.
        num_workers: DataLoader workers.
        seed: seed of the text draw, the split and the training shuffle.
        eval_batch_size: batch size of evaluation and probe loaders (default ``batch_size``).

    Example:
        >>> dm = TextDataModule(batch_size=4, num_texts=40, max_length=32); dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> sorted(b), b["input_ids"].shape[0], b["input_ids"].shape[1] <= 32
        (['attention_mask', 'has_code', 'index', 'input_ids', 'kind', 'length_bucket', 'package'], 4, True)
        >>> dm.num_classes["kind"], len(dm.package_names) == dm.num_classes["package"]
        (3, True)
    """

    collate_fn = staticmethod(trim_padding)

    def __init__(
        self,
        batch_size: int = 64,
        max_length: int = 128,
        num_texts: int | None = None,
        num_packages: int = 10,
        length_bins: Sequence[int] = (8, 32, 128),
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        self.max_length = check_int("max_length", max_length, low=2)
        if self.max_length > 512:
            raise ValueError(f"max_length must be at most 512 (all-MiniLM-L6-v2's positions), got {max_length}")
        self.num_texts = None if num_texts is None else check_int("num_texts", num_texts, low=3)
        self.num_packages = check_int("num_packages", num_packages)
        bins = list(length_bins)
        if not bins or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins) or any(
                a >= b for a, b in zip(bins, bins[1:])):
            raise ValueError(f"length_bins must be increasing word counts >= 1, got {length_bins!r}")
        self.length_bins = tuple(bins)
        self.val_fraction = check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
        self.test_fraction = check_number("test_fraction", test_fraction, low=0, high=1, high_open=True)
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1 (the rest is the training split), got "
                             f"{val_fraction} + {test_fraction}")
        self.package_names: list[str] = []
        self.num_classes: dict[str, int] = {}
        self._texts: dict[str, list[Docstring]] = {}

    def texts(self, split: str) -> list[Docstring]:
        """The docstrings of ``split`` in row order (row ``i`` is the batch ``index`` ``i``)."""
        self._splits()
        if split not in self._texts:
            raise ValueError(f"split must be one of {sorted(self._texts)}, got {split!r}")
        return self._texts[split]

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        docs = list(stdlib_docstrings())
        if self.num_texts is not None:
            if self.num_texts > len(docs):
                raise ValueError(f"num_texts must be at most the {len(docs)} docstrings of this Python's standard "
                                 f"library, got {self.num_texts}")
            keep = np.sort(np.random.default_rng(self.seed).choice(len(docs), self.num_texts, replace=False))
            docs = [docs[i] for i in keep]
        counts = Counter(d.package for d in docs)
        top = sorted(counts, key=lambda p: (-counts[p], p))[: self.num_packages]
        self.package_names = top + ["other"]
        code = {p: i for i, p in enumerate(top)}
        props = {
            "package": torch.tensor([code.get(d.package, len(top)) for d in docs]),
            "length_bucket": torch.from_numpy(
                np.searchsorted(self.length_bins, [len(d.text.split()) for d in docs], side="right")).long(),
            "has_code": torch.tensor([int(has_code(d.text)) for d in docs]),
            "kind": torch.tensor([KINDS.index(d.kind) for d in docs]),
        }
        self.num_classes = {"package": len(self.package_names), "length_bucket": len(self.length_bins) + 1,
                            "has_code": 2, "kind": len(KINDS)}
        tok = load_tokenizer()(
            [d.text for d in docs], truncation=True, max_length=self.max_length, padding="longest",
            return_tensors="pt", return_token_type_ids=False)
        data = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], **props}
        val, test, train = split_indices(len(docs), (self.val_fraction, self.test_fraction), self.seed)
        out = {}
        for name, idx in (("train", train), ("val", val), ("test", test)):
            if len(idx):
                idx = torch.from_numpy(np.sort(idx))
                out[name] = {k: v[idx] for k, v in data.items()}
                self._texts[name] = [docs[i] for i in idx.tolist()]
        return out

