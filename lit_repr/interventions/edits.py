"""Edits at named sites of any ``nn.Module``, applied for the duration of an :func:`intervene` block.

An edit replaces the output of a submodule (a *site*, named as :class:`~lit_repr.taps.Tap` names it:
dotted paths and globs) during the forward passes run inside ``with intervene(model, {site: edit}):``.
The hooks are registered on entry (ahead of any other forward hook, so every
:class:`~lit_repr.taps.Tap` sees the edited value unless it asks for ``record="pre"``) and removed on
exit; no parameter or buffer of the model is touched, so the model computes exactly what it computed
before once the block ends.

Every edit can be restricted to some ``units`` (indices of the last dimension of the site's output)
and some ``positions`` (indices of ``position_dim``, dimension 1 by default: the tokens of a
``(batch, tokens, width)`` sequence); elsewhere the site's own value is kept.

Interventions are rung 2 of the evidence ladder (see :mod:`lit_repr.interventions.ladder`): each edit
class carries ``rung = 2`` and a ``method`` name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lit_repr.features import features
from lit_repr.taps import mark_edited, resolve_sites
from lit_repr.targets import TargetSpec

__all__ = [
    "Edit",
    "ZeroAblation",
    "MeanAblation",
    "ResampleAblation",
    "ActivationCache",
    "cache_activations",
    "record_activations",
    "ActivationPatch",
    "DirectionalAblation",
    "Steering",
    "SAEFeatureAblation",
    "intervene",
    "bind_edits",
    "model_signature",
]

Index = int | Sequence[int] | slice | Tensor | None


def _as_index(name: str, index: Index) -> Index:
    if index is None or isinstance(index, slice):
        return index
    if isinstance(index, bool):
        raise ValueError(f"{name} must be an int, a sequence of ints, a slice or None, got {index!r}")
    if isinstance(index, int):
        return [index]
    t = torch.as_tensor(index)
    if t.ndim != 1 or t.numel() == 0 or t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"{name} must be an int, a non-empty sequence of ints, a slice or None, got {index!r}")
    return [int(i) for i in t.tolist()]


def _mask_1d(name: str, index: Index, size: int, device: torch.device) -> Tensor:
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    if isinstance(index, slice):
        mask[index] = True
        return mask
    bad = [i for i in index if not -size <= i < size]  # type: ignore[union-attr]
    if bad:
        raise ValueError(f"{name} {bad} out of range for a site output of size {size} along that dimension")
    mask[torch.as_tensor(index, device=device)] = True
    return mask


def model_signature(module: nn.Module) -> tuple:
    """What identifies a model for an activation cache: its class and every parameter's name and shape.

    Example:
        >>> model_signature(nn.Linear(2, 3))
        ('Linear', (('weight', (3, 2)), ('bias', (3,))))
    """
    return (type(module).__name__, tuple((n, tuple(p.shape)) for n, p in module.named_parameters()))


class Edit:
    """An edit of a site's output: the base of every intervention.

    A subclass implements :meth:`replace` (the full edited value of the output) and, if it needs the
    model before the first forward pass, :meth:`bind`. ``units`` and ``positions`` restrict where the
    replacement is written; elsewhere the site keeps its own value.

    Args:
        units: indices (or a slice) of the last dimension of the output to edit; ``None`` for all.
        positions: indices (or a slice) of dimension ``position_dim`` to edit; ``None`` for all.
        position_dim: the dimension ``positions`` index (1: the tokens of ``(batch, tokens, width)``).

    Example:
        >>> class Negate(Edit):
        ...     method = "negation"
        ...     def replace(self, output, site, call):
        ...         return -output
        >>> net = nn.Sequential(nn.Identity())
        >>> with intervene(net, {"0": Negate(units=[0])}):
        ...     net(torch.ones(1, 3))
        tensor([[-1.,  1.,  1.]])
    """

    #: rung of the evidence ladder an edit's effects stand on (2: intervention)
    rung: int = 2
    #: the method's name, as reports show it
    method: str = "edit"

    def __init__(self, units: Index = None, positions: Index = None, position_dim: int = 1) -> None:
        self.units = _as_index("units", units)
        self.positions = _as_index("positions", positions)
        if isinstance(position_dim, bool) or not isinstance(position_dim, int) or position_dim < 1:
            raise ValueError(f"position_dim must be an int >= 1 (dimension 0 is the batch), got {position_dim!r}")
        self.position_dim = position_dim

    def bind(self, module: nn.Module, site: str) -> None:
        """Check the edit against ``module`` and prepare it for ``site`` (run before any hook is added)."""

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        """The edited value of the whole output of ``site`` (``call``: its call index in this forward pass)."""
        raise NotImplementedError(f"{type(self).__name__} must implement replace()")

    def apply(self, output: Tensor, site: str, call: int) -> Tensor:
        """The site's new output: the replacement where ``units``/``positions`` select, the output elsewhere."""
        new = self.replace(output, site, call)
        if new.shape != output.shape:
            new = new.expand_as(output)
        new = new.to(output.dtype)
        if self.units is None and self.positions is None:
            return new
        mask = torch.ones((), dtype=torch.bool, device=output.device)
        if self.units is not None:
            mask = mask & _mask_1d("units", self.units, output.shape[-1], output.device)
        if self.positions is not None:
            d = self.position_dim
            if output.ndim <= d:
                raise ValueError(
                    f"{type(self).__name__} at site {site!r}: positions index dimension {d}, but the output has "
                    f"shape {tuple(output.shape)}; give positions only for outputs with a position dimension"
                )
            pos = _mask_1d("positions", self.positions, output.shape[d], output.device)
            shape = [1] * output.ndim
            shape[d] = output.shape[d]
            mask = mask & pos.view(shape)
        return torch.where(mask, new, output)

    def _width(self, output: Tensor, site: str, width: int, what: str) -> None:
        if output.shape[-1] != width:
            raise ValueError(
                f"{type(self).__name__} at site {site!r}: {what} has width {width} but the site's output has "
                f"shape {tuple(output.shape)} (width {output.shape[-1]} in its last dimension)"
            )

    def __repr__(self) -> str:
        extra = [f"{k}={getattr(self, k)!r}" for k in ("units", "positions") if getattr(self, k) is not None]
        return f"{type(self).__name__}({', '.join(extra)})"


class ZeroAblation(Edit):
    """Replace a site's output by zeros.

    Args:
        units: indices of the last dimension to zero (default all).
        positions: indices of ``position_dim`` to zero (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with intervene(net, {"1": ZeroAblation()}):
        ...     bool((net(torch.randn(3, 2)) == net[2].bias).all())
        True
    """

    method = "zero ablation"

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        return torch.zeros_like(output)


def _is_empty(reference: Any) -> bool:
    if isinstance(reference, Tensor):
        return reference.ndim == 0 or reference.shape[0] == 0
    if isinstance(reference, Mapping):
        return not reference or any(len(v) == 0 for v in reference.values())
    if isinstance(reference, (list, tuple)):
        return len(reference) == 0
    return False


def _reference_features(edit: Edit, module: nn.Module, site: str, reference: Any, input_key: Any,
                        forward_fn: Any, batch_size: int) -> Tensor:
    name = type(edit).__name__
    try:
        out = features(module, site, reference, reduction="none", input_key=input_key, forward_fn=forward_fn,
                       batch_size=batch_size)
    except ValueError as err:
        if "no batches" in str(err):
            raise ValueError(f"{name}: the reference set is empty (its loader yielded no batches); give reference "
                             f"inputs with at least one example") from None
        raise
    with torch.inference_mode(False):  # usable in the forward passes of any grad mode
        return out[site].clone()


def _bound(edit: Edit, attr: str, site: str) -> Tensor:
    found = getattr(edit, attr, {}).get(site)
    if found is None:
        raise RuntimeError(f"{type(edit).__name__} has not been prepared for site {site!r}: enter "
                           f"intervene(model, edits) with bind=True (or call bind_edits) first")
    return found


class _ReferenceEdit(Edit):
    def __init__(self, reference: Any, input_key: TargetSpec | None = None,
                 forward_fn: Callable[[nn.Module, Any], Any] | None = None, batch_size: int = 1024,
                 units: Index = None, positions: Index = None, position_dim: int = 1) -> None:
        super().__init__(units, positions, position_dim)
        if reference is None:
            raise ValueError(f"{type(self).__name__}: reference must be reference inputs (a tensor, a dict of "
                             f"tensors or a DataLoader), got None")
        if _is_empty(reference):  # an empty tensor or dict fails here; an empty loader when intervene enters
            raise ValueError(f"{type(self).__name__}: the reference set is empty; give reference inputs (a tensor, "
                             f"a dict of tensors or a DataLoader) with at least one example")
        self.reference, self.input_key, self.forward_fn, self.batch_size = reference, input_key, forward_fn, batch_size

    def _check_example_shape(self, ref: Tensor, output: Tensor, site: str) -> None:
        if tuple(ref.shape[1:]) != tuple(output.shape[1:]):
            raise ValueError(
                f"{type(self).__name__} at site {site!r}: reference activations have shape {tuple(ref.shape[1:])} "
                f"per example but this forward pass produced {tuple(output.shape[1:])}"
            )


class MeanAblation(_ReferenceEdit):
    """Replace a site's output by its mean over a reference set (computed when :func:`intervene` enters).

    The mean is taken over the examples (dimension 0) of the site's outputs on ``reference``, with the
    model frozen (eval mode, no gradients, every RNG restored), so it keeps per-position structure.

    Args:
        reference: reference inputs: a tensor, a dict of tensors or a DataLoader (as
            :func:`lit_repr.features` takes).
        input_key: where the input sits in a reference batch.
        forward_fn: replaces ``module(input)`` on reference batches: ``forward_fn(module, batch)``.
        batch_size: batch size when ``reference`` is a tensor or a dict.
        units: indices of the last dimension to ablate (default all).
        positions: indices of ``position_dim`` to ablate (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Identity())
        >>> with intervene(net, {"0": MeanAblation(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))}):
        ...     net(torch.zeros(1, 2))
        tensor([[2., 3.]])
    """

    method = "mean ablation"

    def bind(self, module: nn.Module, site: str) -> None:
        ref = _reference_features(self, module, site, self.reference, self.input_key, self.forward_fn,
                                  self.batch_size)
        self.means = getattr(self, "means", {})
        self.means[site] = ref.to(torch.float64).mean(0).to(ref.dtype).unsqueeze(0)

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        mean = _bound(self, "means", site)
        self._check_example_shape(mean, output, site)
        return mean.to(output.device).expand_as(output)


class ResampleAblation(_ReferenceEdit):
    """Replace each example's site output by the output of a random reference example.

    Reference examples are drawn uniformly with replacement, from a generator seeded by ``seed`` when
    :func:`intervene` enters (the global RNG is not used), so a block is reproducible.

    Args:
        reference: reference inputs: a tensor, a dict of tensors or a DataLoader.
        seed: seed of the draws.
        input_key: where the input sits in a reference batch.
        forward_fn: replaces ``module(input)`` on reference batches.
        batch_size: batch size when ``reference`` is a tensor or a dict.
        units: indices of the last dimension to ablate (default all).
        positions: indices of ``position_dim`` to ablate (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Identity())
        >>> with intervene(net, {"0": ResampleAblation(torch.full((4, 2), 7.0))}):
        ...     net(torch.zeros(2, 2))
        tensor([[7., 7.],
                [7., 7.]])
    """

    method = "resample ablation"

    def __init__(self, reference: Any, seed: int = 0, input_key: TargetSpec | None = None,
                 forward_fn: Callable[[nn.Module, Any], Any] | None = None, batch_size: int = 1024,
                 units: Index = None, positions: Index = None, position_dim: int = 1) -> None:
        super().__init__(reference, input_key, forward_fn, batch_size, units, positions, position_dim)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def bind(self, module: nn.Module, site: str) -> None:
        self.pools = getattr(self, "pools", {})
        self.pools[site] = _reference_features(self, module, site, self.reference, self.input_key, self.forward_fn,
                                               self.batch_size)
        self.generator = torch.Generator().manual_seed(self.seed)

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        pool = _bound(self, "pools", site)
        self._check_example_shape(pool, output, site)
        idx = torch.randint(pool.shape[0], (output.shape[0],), generator=self.generator)
        return pool[idx].to(output.device)


class ActivationCache:
    """The outputs of named sites in one forward pass, for :class:`ActivationPatch`.

    Made by :func:`cache_activations`. ``values[site]`` lists the site's outputs in call order (a module
    called twice in one forward pass, such as a shared embedding, has two entries).

    Args:
        values: ``{site: [output of call 0, output of call 1, ...]}``.
        signature: :func:`model_signature` of the model that produced them.
        output: what the model returned.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> cache = cache_activations(net, "0", torch.ones(3, 2))
        >>> cache.sites, cache["0"].shape
        (['0'], torch.Size([3, 2]))
    """

    def __init__(self, values: Mapping[str, list[Tensor]], signature: tuple, output: Any = None) -> None:
        self.values = {k: list(v) for k, v in values.items()}
        self.signature = signature
        self.output = output

    @property
    def sites(self) -> list[str]:
        return list(self.values)

    def __getitem__(self, site: str) -> Tensor:
        return self.values[site][0]

    def __repr__(self) -> str:
        shapes = {s: [tuple(v.shape) for v in vs] for s, vs in self.values.items()}
        return f"ActivationCache({self.signature[0]}, {shapes})"


def cache_activations(module: nn.Module, sites: str | Sequence[str], *args: Any, **kwargs: Any) -> ActivationCache:
    """Run ``module(*args, **kwargs)`` and keep the (detached) outputs of ``sites``.

    The module's mode and the grad mode are the caller's (call ``module.eval()`` first for a deterministic
    cache; patch in the same grad mode, since the fast paths some torch modules take without gradients
    differ from their slow paths in the last bits).

    Args:
        module: any ``nn.Module``.
        sites: submodule names or globs (see :func:`~lit_repr.taps.resolve_sites`).
        *args: positional inputs of the forward pass.
        **kwargs: keyword inputs of the forward pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> sorted(cache_activations(net, "*", torch.ones(1, 2)).sites)
        ['0', '1', '2']
    """
    return record_activations(module, sites, lambda: module(*args, **kwargs))


def record_activations(module: nn.Module, sites: str | Sequence[str], run: Callable[[], Any]) -> ActivationCache:
    """Like :func:`cache_activations`, for a forward pass run by ``run()`` (e.g. ``lambda: forward_fn(model, batch)``).

    Args:
        module: the model whose sites are recorded.
        sites: submodule names or globs.
        run: runs the forward pass and returns its output.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> record_activations(net, "0", lambda: net(torch.ones(1, 2))).sites
        ['0']
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    names = resolve_sites(module, sites)
    modules = dict(module.named_modules())
    values: dict[str, list[Tensor]] = {s: [] for s in names}
    handles = []

    def hook_for(site: str) -> Callable:
        def hook(m: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"cache_activations: site {site!r} returned {type(output).__name__}, not a tensor; an "
                    f"activation patch needs a site whose output is a tensor (pick one of its submodules)"
                )
            values[site].append(output.detach().clone())

        return hook

    try:
        for s in names:
            handles.append(modules[s].register_forward_hook(hook_for(s)))
        out = run()
    finally:
        for h in handles:
            h.remove()
    missing = [s for s, v in values.items() if not v]
    if missing:
        raise ValueError(f"cache_activations: the forward pass did not reach sites {missing}")
    return ActivationCache(values, model_signature(module), out)


class ActivationPatch(Edit):
    """Write cached activations (usually of a clean run) into another run (usually a corrupted one).

    Patch a whole site, some ``units`` or some ``positions``. The cache must come from the same model
    (same class, parameter names and shapes) and the patched run must produce outputs of the cached
    shapes (a cache of batch size 1 is broadcast over any batch).

    Args:
        cache: an :class:`ActivationCache` from :func:`cache_activations`.
        units: indices of the last dimension to patch (default all).
        positions: indices of ``position_dim`` to patch (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> clean, corrupted = torch.ones(1, 2), torch.zeros(1, 2)
        >>> cache = cache_activations(net, "1", clean)
        >>> with intervene(net, {"1": ActivationPatch(cache)}):
        ...     torch.equal(net(corrupted), net(clean))
        True
    """

    method = "activation patching"

    def __init__(self, cache: ActivationCache, units: Index = None, positions: Index = None,
                 position_dim: int = 1) -> None:
        super().__init__(units, positions, position_dim)
        if not isinstance(cache, ActivationCache):
            raise ValueError(f"cache must be an ActivationCache (see cache_activations), got {type(cache).__name__}")
        self.cache = cache

    def bind(self, module: nn.Module, site: str) -> None:
        sig = model_signature(module)
        if sig != self.cache.signature:
            mine, theirs = dict(sig[1]), dict(self.cache.signature[1])
            diff = [n for n in sorted(set(mine) | set(theirs)) if mine.get(n) != theirs.get(n)][:3]
            detail = ", ".join(f"{n}: cache {theirs.get(n)} vs model {mine.get(n)}" for n in diff)
            raise ValueError(
                f"ActivationPatch: the cache was recorded on another model ({self.cache.signature[0]}) than "
                f"{sig[0]} it is patched into" + (f"; parameters differ: {detail}" if detail else "")
            )
        if site not in self.cache.values:
            raise ValueError(f"ActivationPatch: the cache holds no activations of site {site!r}; cached sites: "
                             f"{self.cache.sites}")

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        calls = self.cache.values[site]
        if call >= len(calls):
            raise ValueError(f"ActivationPatch at site {site!r}: the site ran {call + 1} times in this forward pass "
                             f"but the cache holds {len(calls)} call(s)")
        cached = calls[call]
        ok = cached.shape == output.shape or (cached.shape[0] == 1 and cached.shape[1:] == output.shape[1:])
        if not ok:
            raise ValueError(
                f"ActivationPatch at site {site!r}: the cache has shape {tuple(cached.shape)} but this forward pass "
                f"produced {tuple(output.shape)}; patch into a run whose inputs have the cached run's shapes"
            )
        return cached.to(output.device)


def _vector(name: str, vector: Any) -> Tensor:
    v = torch.as_tensor(vector).detach()
    if not v.is_floating_point():
        v = v.float()
    if v.ndim != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be a 1-D vector (one value per unit of the site), got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains non-finite values")
    return v


class DirectionalAblation(Edit):
    """Project a direction out of a site's output: ``x - (x·d̂) d̂`` along the last dimension.

    Args:
        direction: a vector of the site's width (normalized here).
        units: indices of the last dimension the edit is written to (default all).
        positions: indices of ``position_dim`` to edit (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Identity())
        >>> with intervene(net, {"0": DirectionalAblation(torch.tensor([1.0, 0.0]))}):
        ...     net(torch.tensor([[3.0, 4.0]]))
        tensor([[0., 4.]])
    """

    method = "directional ablation"

    def __init__(self, direction: Any, units: Index = None, positions: Index = None, position_dim: int = 1) -> None:
        super().__init__(units, positions, position_dim)
        d = _vector("direction", direction)
        norm = d.norm()
        if norm == 0:
            raise ValueError("direction must be a non-zero vector")
        self.direction = d / norm

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        self._width(output, site, self.direction.numel(), "the direction")
        d = self.direction.to(output)
        return output - (output @ d).unsqueeze(-1) * d


class Steering(Edit):
    """Add ``scale · vector`` to a site's output along its last dimension.

    The vector may be a fitted probe's weight vector (:meth:`from_probe`) or an SAE atom
    (:meth:`from_sae`).

    Args:
        vector: a vector of the site's width.
        scale: its multiplier.
        units: indices of the last dimension to steer (default all).
        positions: indices of ``position_dim`` to steer (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> net = nn.Sequential(nn.Identity())
        >>> with intervene(net, {"0": Steering(torch.tensor([1.0, -1.0]), scale=2.0)}):
        ...     net(torch.zeros(1, 2))
        tensor([[ 2., -2.]])
    """

    method = "steering"

    def __init__(self, vector: Any, scale: float = 1.0, units: Index = None, positions: Index = None,
                 position_dim: int = 1) -> None:
        super().__init__(units, positions, position_dim)
        self.vector = _vector("vector", vector)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not torch.isfinite(torch.tensor(scale)):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        self.scale = float(scale)

    @classmethod
    def from_probe(cls, probe: Any, output: int = 0, scale: float = 1.0, normalize: bool = True,
                   **kwargs: Any) -> Steering:
        """Steer along a fitted linear probe's weight vector for ``output`` (a class or a target dimension).

        ``probe`` is a fitted :class:`~lit_repr.metrics.ProbeReadout` (e.g. ``LinearProbe.readout(site,
        target)``) or any object whose ``weight`` is ``(width, outputs)``. With ``normalize`` the vector
        has unit norm, so ``scale`` is a distance in feature space.
        """
        weight = getattr(probe, "weight", None)
        if not isinstance(weight, Tensor) or weight.numel() == 0:
            raise ValueError(f"probe must be a fitted linear probe with a (width, outputs) weight, got "
                             f"{type(probe).__name__} without one (fit it first)")
        w = weight if weight.ndim == 2 else weight.unsqueeze(1)
        if not isinstance(output, int) or not 0 <= output < w.shape[1]:
            raise ValueError(f"output must be an int in [0, {w.shape[1]}) (the probe's outputs), got {output!r}")
        v = w[:, output].to(torch.float32)
        return cls(v / v.norm() if normalize else v, scale=scale, **kwargs)

    @classmethod
    def from_sae(cls, sae: Any, feature: int, scale: float = 1.0, **kwargs: Any) -> Steering:
        """Steer along atom ``feature`` of a :class:`~lit_repr.models.SparseAutoencoder`'s dictionary."""
        W = getattr(sae, "W_dec", None)
        if not isinstance(W, Tensor):
            raise ValueError(f"sae must be a SparseAutoencoder (with a W_dec dictionary), got {type(sae).__name__}")
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < W.shape[0]:
            raise ValueError(f"feature must be an int in [0, {W.shape[0]}), got {feature!r}")
        return cls(W[feature].detach().to(torch.float32), scale=scale, **kwargs)

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        self._width(output, site, self.vector.numel(), "the steering vector")
        return output + self.scale * self.vector.to(output)


class SAEFeatureAblation(Edit):
    """Zero some features of a sparse autoencoder at a site and keep the SAE's error term.

    The site's output ``x`` (``(..., in_features)``) becomes ``decode(codes with features zeroed) +
    (x - decode(codes))``: only what the ablated features contributed is removed, whatever the SAE
    fails to reconstruct stays.

    Args:
        sae: a :class:`~lit_repr.models.SparseAutoencoder` trained on the site's outputs.
        features: indices of the latents to zero.
        units: indices of the last dimension the edit is written to (default all).
        positions: indices of ``position_dim`` to edit (default all).
        position_dim: the dimension ``positions`` index.

    Example:
        >>> from lit_repr.models import SparseAutoencoder
        >>> sae = SparseAutoencoder(in_features=4, num_latents=8, decoder_bias_init="zeros")
        >>> net = nn.Sequential(nn.Identity())
        >>> x = torch.randn(3, 4)
        >>> with intervene(net, {"0": SAEFeatureAblation(sae, features=[])}):
        ...     torch.allclose(net(x), x, atol=1e-6)  # no feature ablated: the error term restores x
        True
    """

    method = "SAE feature ablation"

    def __init__(self, sae: Any, features: Sequence[int], units: Index = None, positions: Index = None,
                 position_dim: int = 1) -> None:
        super().__init__(units, positions, position_dim)
        if not all(hasattr(sae, a) for a in ("encode_with_hidden_pre", "decode", "num_latents", "in_features")):
            raise ValueError(f"sae must be a SparseAutoencoder (encode/decode), got {type(sae).__name__}")
        if isinstance(features, int):
            features = [features]
        feats = list(features)
        bad = [f for f in feats if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < sae.num_latents]
        if bad:
            raise ValueError(f"features must be latent indices in [0, {sae.num_latents}), got {bad}")
        self.sae, self.features = sae, feats

    def replace(self, output: Tensor, site: str, call: int) -> Tensor:
        self._width(output, site, self.sae.in_features, "the SAE's input")
        flat = output.reshape(-1, output.shape[-1])
        codes, _, support = self.sae.encode_with_hidden_pre(flat)
        recon = self.sae.decode(codes, support)
        error = flat.to(recon.dtype) - recon
        ablated = codes.clone()
        ablated[:, self.features] = 0
        return (self.sae.decode(ablated) + error).reshape(output.shape)


def _plan(module: nn.Module, edits: Mapping[str, Edit]) -> list[tuple[str, Edit]]:
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(edits, Mapping) or not edits:
        raise ValueError(f"edits must be a non-empty {{site: Edit}} dict, e.g. {{'backbone.0': ZeroAblation()}}, "
                         f"got {edits!r}")
    plan: list[tuple[str, Edit]] = []
    for pattern, edit in edits.items():
        if not isinstance(edit, Edit):
            raise ValueError(f"edits[{pattern!r}] must be an Edit (ZeroAblation(), Steering(...), ...), got "
                             f"{type(edit).__name__}")
        for site in resolve_sites(module, pattern):
            plan.append((site, edit))
    return plan


def bind_edits(module: nn.Module, edits: Mapping[str, Edit]) -> list[tuple[str, Edit]]:
    """Resolve the sites of ``edits`` on ``module`` and prepare every edit (:meth:`Edit.bind`); no hook is added.

    Args:
        module: any ``nn.Module``.
        edits: ``{site name or glob: Edit}``.

    Returns:
        ``[(site, edit)]`` with the globs expanded.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> bind_edits(net, {"*": ZeroAblation()})
        [('0', ZeroAblation()), ('1', ZeroAblation())]
    """
    plan = _plan(module, edits)
    for site, edit in plan:
        edit.bind(module, site)
    return plan


@contextmanager
def intervene(module: nn.Module, edits: Mapping[str, Edit], bind: bool = True) -> Iterator[dict[str, Edit]]:
    """Apply edits at named sites of ``module`` for the duration of a ``with`` block.

    Sites are resolved as :class:`~lit_repr.taps.Tap` resolves them (dotted names, globs; an unknown name
    lists the nearest valid ones), every edit is checked against the model (:meth:`Edit.bind`) before
    any hook is added, and the hooks are removed on exit, also on error: the model is unchanged after.
    Edit hooks run ahead of the forward hooks already registered, so taps see edited values (a
    ``Tap(record="pre")`` sees the values before the edit).

    Args:
        module: any ``nn.Module``.
        edits: ``{site name or glob: Edit}``.
        bind: prepare each edit on entry (:meth:`Edit.bind`: reference means, resample pools, cache
            checks). ``False`` reuses what the edits prepared when last bound to this model, for the
            same edits over many batches (see :func:`bind_edits`).

    Yields:
        ``{site: edit}`` with the globs expanded.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> x = torch.randn(4, 2); before = net(x)
        >>> with intervene(net, {"1": ZeroAblation()}) as applied:
        ...     list(applied)
        ['1']
        >>> torch.equal(net(x), before)
        True
    """
    plan = bind_edits(module, edits) if bind else _plan(module, edits)
    modules = dict(module.named_modules())
    calls: dict[tuple[str, int], int] = {}

    def hook_for(site: str, i: int, edit: Edit) -> Callable:
        def hook(m: nn.Module, inputs: Any, output: Any) -> Tensor:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"{type(edit).__name__} at site {site!r}: the site returned {type(output).__name__}, not a "
                    f"tensor; edit a submodule whose output is a tensor (site_names(model) lists them)"
                )
            call = calls.get((site, i), 0)
            calls[(site, i)] = call + 1
            return mark_edited(edit.apply(output, site, call), output)

        return hook

    handles = []
    try:
        handles.append(module.register_forward_pre_hook(lambda m, a: calls.clear()))
        for i, (site, edit) in enumerate(plan):
            handles.append(modules[site].register_forward_hook(hook_for(site, i, edit), prepend=True))
        yield {site: edit for site, edit in plan}
    finally:
        for h in handles:
            h.remove()
