"""Named-site feature capture through forward hooks.

A :class:`Tap` reads the outputs of submodules named by dotted path (``"backbone.layer3"``,
globs such as ``"blocks.*.mlp"`` allowed) from the forward passes a run already makes. Features
are detached, optionally flattened or pooled, and kept per device until they are read; reading
clears them, so memory holds at most one forward pass worth of features.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Tap", "resolve_sites", "reduce_features", "Reduction", "first_tensor", "glob_regex", "site_names", "mark_edited",
    "pre_intervention",
]

Reduction = Literal["none", "flatten", "mean", "max", "cls"]
_REDUCTIONS = ("none", "flatten", "mean", "max", "cls")


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def glob_regex(glob: str) -> re.Pattern:
    """``*`` matches within one path component, ``**`` across components, ``?`` one character."""
    parts = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append(r"[^.]*")
            i += 1
        elif glob[i] == "?":
            parts.append(r"[^.]")
            i += 1
        elif glob[i] == "[":
            j = glob.find("]", i)
            if j < 0:
                parts.append(re.escape(glob[i:]))
                break
            parts.append(fnmatch.translate(glob[i : j + 1])[4:-3])
            i = j + 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts))


def resolve_sites(model: nn.Module, sites: str | Sequence[str]) -> list[str]:
    """Expand site names and globs against ``model.named_modules()``.

    Args:
        model: the module whose submodules are searched.
        sites: a dotted name or glob, or a sequence of them. ``""`` names the model itself. In a
            glob, ``*`` matches within one name component (``"layers.*"`` gives ``layers.0``,
            ``layers.1``, not their children) and ``**`` matches across components.

    Returns:
        The matching submodule names, in the order the sites were given, without duplicates.

    Raises:
        ValueError: if a name or glob matches nothing; the message lists the closest valid names.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> resolve_sites(net, ["0", "*"])
        ['0', '1', '2']
    """
    if isinstance(sites, str):
        sites = [sites]
    if len(sites) == 0:
        raise ValueError("sites must name at least one submodule, got an empty list")
    names = _module_names(model)
    out: list[str] = []
    for site in sites:
        if not isinstance(site, str):
            raise ValueError(f"site names must be strings, got {site!r} ({type(site).__name__})")
        if site == "":
            matches = [""]
        elif any(ch in site for ch in "*?["):
            pattern = glob_regex(site)
            matches = [n for n in names if pattern.fullmatch(n)]
        else:
            matches = [site] if site in names else []
        if not matches:
            close = difflib.get_close_matches(site, names, n=5, cutoff=0.3)
            if not close:
                close = names[:10]
            raise ValueError(
                f"site {site!r} matches no submodule of {type(model).__name__}; "
                f"closest valid names: {close} (all {len(names)} names: model.named_modules())"
            )
        for m in matches:
            if m not in out:
                out.append(m)
    return out


def first_tensor(output: Any) -> Tensor:
    """Pick the feature tensor out of a module's output (tensor, tuple, dict, HF ModelOutput)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "last_hidden_state"):
        for key in ("last_hidden_state", "features", "x", "out"):
            val = output.get(key) if isinstance(output, dict) else getattr(output, key, None)
            if isinstance(val, Tensor):
                return val
        for val in output.values() if isinstance(output, dict) else ():
            if isinstance(val, Tensor):
                return val
    if isinstance(output, (tuple, list)):
        for val in output:
            if isinstance(val, Tensor):
                return val
    raise TypeError(f"cannot find a tensor in module output of type {type(output).__name__}")


_PRE_EDIT = "_lit_repr_pre_edit"


def mark_edited(edited: Tensor, original: Tensor) -> Tensor:
    """Remember on ``edited`` (a site's output after an intervention) the value the site computed.

    :func:`lit_repr.interventions.intervene` marks every output it replaces, so a :class:`Tap` with
    ``record="pre"`` can read what the site computed before the edit. Chained edits keep the first value.
    """
    setattr(edited, _PRE_EDIT, getattr(original, _PRE_EDIT, original))
    return edited


def pre_intervention(output: Any) -> Any:
    """The value a site computed before any intervention replaced it (``output`` itself if none did).

    Example:
        >>> x = torch.ones(2); y = mark_edited(torch.zeros(2), x)
        >>> pre_intervention(y) is x, pre_intervention(x) is x
        (True, True)
    """
    return getattr(output, _PRE_EDIT, output) if isinstance(output, Tensor) else output


def reduce_features(x: Tensor, reduction: Reduction = "flatten") -> Tensor:
    """Turn a site's output into a ``(batch, features)`` matrix.

    Args:
        x: output of a module, batch first.
        reduction: ``"none"`` keeps the shape; ``"flatten"`` flattens all but the batch
            dimension; ``"mean"``/``"max"`` pool over spatial or token dimensions (for
            ``(B, C, H, W)`` feature maps the channel axis is kept; for ``(B, T, D)`` token
            sequences the last axis is kept); ``"cls"`` takes token 0 of a ``(B, T, D)`` sequence.

    Example:
        >>> reduce_features(torch.ones(2, 3, 4, 4), "mean").shape
        torch.Size([2, 3])
    """
    if reduction == "none":
        return x
    if x.ndim == 1:
        return x.unsqueeze(1)
    if reduction == "flatten" or x.ndim == 2:
        return x.flatten(1)
    if reduction == "cls":
        if x.ndim != 3:
            raise ValueError(f"reduction='cls' needs (batch, tokens, dim) features, got {tuple(x.shape)}")
        return x[:, 0]
    if reduction in ("mean", "max"):
        if x.ndim == 3:  # (B, T, D): pool tokens
            return x.mean(1) if reduction == "mean" else x.amax(1)
        dims = tuple(range(2, x.ndim))  # (B, C, *spatial): pool space
        return x.mean(dims) if reduction == "mean" else x.amax(dims)
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class Tap:
    """Capture the outputs of named submodules of any ``nn.Module`` with forward hooks.

    Features are detached (no graph is kept alive), reduced to ``(batch, features)`` unless
    ``reduction="none"``, and stored per device until :meth:`read` or :meth:`clear`. Outputs of
    several forward passes between two reads are concatenated along the batch dimension, which
    is what gradient accumulation and multi-forward training steps need.

    Args:
        model: any ``nn.Module`` (a LightningModule, a timm model, an ``nn.Sequential``).
        sites: dotted submodule names or globs (see :func:`resolve_sites`).
        reduction: how to turn each output into a matrix: ``"flatten"`` (default), ``"mean"``,
            ``"max"``, ``"cls"`` or ``"none"``.
        dtype: cast captured features to this dtype (``torch.float32`` by default, so probes
            accumulate in full precision under mixed-precision training); ``None`` keeps it.
        output_fn: optional callable applied to a module's raw output before reduction, for
            modules whose output is not a tensor or whose interesting tensor is not the first.
        when: ``"always"``, or ``"training"``/``"eval"`` to capture only when the model is in
            that mode.
        record: under :func:`lit_repr.interventions.intervene`, which value of an edited site to
            capture: ``"post"`` (default: what the rest of the model receives, the edited value) or
            ``"pre"`` (what the site computed before the edit). Without an intervention both are
            the site's output.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with Tap(net, ["1"]) as tap:
        ...     _ = net(torch.randn(5, 4))
        ...     feats = tap.read()
        >>> feats["1"].shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        model: nn.Module,
        sites: str | Sequence[str],
        reduction: Reduction = "flatten",
        dtype: torch.dtype | None = torch.float32,
        output_fn: Callable[[Any], Tensor] | None = None,
        when: Literal["always", "training", "eval"] = "always",
        record: Literal["post", "pre"] = "post",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if when not in ("always", "training", "eval"):
            raise ValueError(f"when must be 'always', 'training' or 'eval', got {when!r}")
        if record not in ("post", "pre"):
            raise ValueError(f"record must be 'post' (the edited value) or 'pre' (before the edit), got {record!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype must be a torch.dtype (e.g. torch.float32) or None, got {dtype!r}")
        if output_fn is not None and not callable(output_fn):
            raise ValueError(f"output_fn must be a callable module output -> tensor, or None, got {output_fn!r}")
        self.model = model
        self.sites = resolve_sites(model, sites)
        self.reduction = reduction
        self.dtype = dtype
        self.output_fn = output_fn
        self.when = when
        self.record = record
        self.enabled = True
        self._store: dict[str, dict[torch.device, list[Tensor]]] = {s: {} for s in self.sites}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.attach()

    # ------------------------------------------------------------------ hooks
    def attach(self) -> "Tap":
        """Register the forward hooks (done by ``__init__``; idempotent)."""
        if self._handles:
            return self
        modules = dict(self.model.named_modules())
        for site in self.sites:
            module = modules[site]
            self._handles.append(module.register_forward_hook(self._make_hook(site)))
        return self

    def remove(self) -> None:
        """Remove every hook and drop stored features."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _make_hook(self, site: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.enabled:
                return
            if self.when == "training" and not module.training:
                return
            if self.when == "eval" and module.training:
                return
            if self.record == "pre":
                output = pre_intervention(output)
            out = self.output_fn(output) if self.output_fn is not None else first_tensor(output)
            if out.ndim == 0:
                raise ValueError(
                    f"tap site {site!r} produced a 0-d tensor (one number for the whole batch); a site must "
                    f"output batch-first features (batch, ...): choose a submodule whose output keeps the batch"
                )
            feats = reduce_features(out.detach(), self.reduction)
            if self.dtype is not None:
                feats = feats.to(self.dtype)
            self._store[site].setdefault(feats.device, []).append(feats)

        return hook

    # ------------------------------------------------------------------ reading
    def read(self, device: torch.device | str | None = None, clear: bool = True) -> dict[str, Tensor]:
        """Return ``{site: features}`` captured since the last read, then clear them.

        Args:
            device: read the features stored on this device only (what a DDP process or a
                data-parallel replica produced); by default all devices, moved to the first.
            clear: drop the returned features from storage (default).

        Raises:
            RuntimeError: if a site has captured nothing (the forward pass did not reach it).
        """
        out: dict[str, Tensor] = {}
        for site in self.sites:
            per_device = self._store[site]
            if device is not None:
                chunks = per_device.get(torch.device(device), [])
            else:
                chunks = [c for cs in per_device.values() for c in cs]
                if chunks:
                    first = chunks[0].device
                    chunks = [c.to(first) for c in chunks]
            if not chunks:
                raise RuntimeError(
                    f"tap site {site!r} captured nothing: the forward pass did not reach it "
                    f"(is the site used by forward(), and did a forward pass run since the last read?)"
                )
            out[site] = chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)
        if clear:
            self.clear()
        return out

    def has_features(self) -> bool:
        """Whether every site has captured something since the last read."""
        return all(any(self._store[s].values()) for s in self.sites)

    def clear(self) -> None:
        """Drop stored features without reading them."""
        for site in self.sites:
            self._store[site] = {}

    def __enter__(self) -> "Tap":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Tap(sites={self.sites}, reduction={self.reduction!r}, attached={self.attached})"


def site_names(model: nn.Module, leaves_only: bool = False) -> Iterable[str]:
    """List the tappable site names of ``model`` (handy in notebooks and error messages).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
        >>> list(site_names(net)), list(site_names(net, leaves_only=True))
        (['0', '1', '1.0', '1.1'], ['0', '1.0', '1.1'])
    """
    for name, module in model.named_modules():
        if name and (not leaves_only or not any(True for _ in module.children())):
            yield name
