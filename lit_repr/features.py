"""Frozen-mode features: what a model computes at named sites over some data, outside any run.

:func:`features` is the public way to get ``{site: (N, D) tensor}`` for a module and a DataLoader
or a tensor. The same two context managers serve lit_repr's callbacks when they run frozen passes
inside a training run:

- :func:`frozen_mode`: eval mode and no gradients, every submodule's own mode restored after
  (BatchNorm statistics and dropout masks untouched);
- :func:`preserved_rng`: torch (CPU and CUDA), numpy and Python random states restored after, so
  iterating extra DataLoaders (whose samplers and workers draw seeds) leaves the run's random
  stream, and therefore its training trajectory, exactly as it was.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_repr.checks import check_int
from lit_repr.taps import Reduction, Tap
from lit_repr.targets import TargetSpec, get_input

__all__ = [
    "features", "frozen_mode", "preserved_rng", "default_forward", "DefaultForward", "move_to", "detached_copy",
    "device_of",
]


@contextmanager
def frozen_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the duration; every submodule's own mode is restored after.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)); _ = net.train()
        >>> with frozen_mode(net):
        ...     net.training
        False
        >>> net[1].training
        True
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU and every CUDA device), numpy and Python random states on exit.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> with preserved_rng():
        ...     _ = torch.rand(3)
        >>> float(torch.rand(1)) == float(torch.manual_seed(0) and torch.rand(1))
        True
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class DefaultForward:
    """``forward_fn(module, batch)``: feed the batch's input to the module (see :func:`~lit_repr.targets.get_input`).

    A plain class, not a closure, so that callbacks holding it pickle (``strategy="ddp_spawn"``
    sends every callback to the new processes).

    Args:
        input_key: where the input sits in a batch; default ``"x"`` for dicts, position 0 for
            tuples, the batch itself for tensors.

    Example:
        >>> import pickle
        >>> forward = pickle.loads(pickle.dumps(DefaultForward("x")))
        >>> forward(nn.Identity(), {"x": torch.ones(1, 2)})
        tensor([[1., 1.]])
    """

    def __init__(self, input_key: TargetSpec | None = None) -> None:
        self.input_key = input_key

    def __call__(self, module: nn.Module, batch: Any) -> Any:
        return module(get_input(batch, self.input_key))

    def __repr__(self) -> str:
        return f"DefaultForward(input_key={self.input_key!r})"


def default_forward(input_key: TargetSpec | None = None) -> Callable[[nn.Module, Any], Any]:
    """A forward function that feeds the batch's input to the module (a picklable :class:`DefaultForward`).

    Example:
        >>> default_forward()(nn.Identity(), (torch.ones(1, 2), torch.zeros(1)))
        tensor([[1., 1.]])
    """
    return DefaultForward(input_key)


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` (tensors, dicts, lists, tuples of them) on ``device``."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    return move_data_to_device(batch, device)


def iterate_frozen(
    module: nn.Module, tap: Tap, loader: Any, forward_fn: Callable[[nn.Module, Any], Any], device: torch.device
) -> Iterator[tuple[dict[str, Tensor], Any]]:
    """Yield ``(features, batch)`` per batch of ``loader``, the module frozen and every RNG preserved."""
    with preserved_rng(), frozen_mode(module), torch.inference_mode(False):
        was = tap.enabled
        tap.enabled = True
        try:
            for batch in loader:
                batch = move_to(batch, device)
                tap.clear()
                forward_fn(module, batch)
                yield tap.read(), batch
        finally:
            tap.enabled = was
            tap.clear()


def detached_copy(module: nn.Module, trainer: Any = None) -> nn.Module:
    """A deep copy of ``module`` without forward hooks, sharing (not copying) ``trainer``.

    Other callbacks' taps may already hook ``module``: their hooks must not come along (torch has no
    public way to drop hooks without their handles, so this reads ``_forward_hooks``; a test fails
    loudly if the name moves).

    Example:
        >>> net = nn.Linear(2, 2); _ = net.register_forward_hook(lambda *a: None)
        >>> len(detached_copy(net)._forward_hooks)
        0
    """
    ref = copy.deepcopy(module, memo={id(trainer): trainer} if trainer is not None else None)
    for m in ref.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return ref


def device_of(module: nn.Module) -> torch.device:
    """The device of the first parameter (else buffer) of ``module``; the CPU for a module with neither."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def features(
    module: nn.Module,
    sites: str | Sequence[str],
    data: DataLoader | Tensor | Mapping[str, Tensor],
    reduction: Reduction = "flatten",
    input_key: TargetSpec | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Features of ``module`` at ``sites`` over ``data``, in frozen mode: ``{site: (N, D) tensor}``.

    The module runs in eval mode without gradients (each submodule's mode is restored after) and
    every random state is left as it was; no hook stays attached.

    Args:
        module: any ``nn.Module``.
        sites: submodule names or globs (see :func:`~lit_repr.taps.resolve_sites`).
        data: a DataLoader (batches as dicts, tuples or tensors), a tensor of inputs, or a dict of
            tensors of equal length (batched along dimension 0; the input sits at ``input_key``).
        reduction: how a site's output becomes a matrix (``"flatten"``, ``"mean"``, ``"max"``,
            ``"cls"``, ``"none"``).
        input_key: where the input sits in a batch; default ``"x"`` for dicts, position 0 for
            tuples, the batch itself for tensors.
        forward_fn: replaces ``module(input)``: ``forward_fn(module, batch)``.
        batch_size: batch size when ``data`` is a tensor or a dict.
        device: where to run (default: the module's device). Features are returned on the CPU.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> out = features(net, ["0", "2"], torch.randn(10, 4), batch_size=3)
        >>> out["0"].shape, out["2"].shape
        (torch.Size([10, 8]), torch.Size([10, 2]))
    """
    check_int("batch_size", batch_size)
    if isinstance(data, Tensor):
        loader: Any = data.split(batch_size)
    elif isinstance(data, Mapping):
        lengths = {k: len(v) for k, v in data.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"data as a dict needs tensors of one common length, got lengths {lengths}")
        n = next(iter(lengths.values()))
        loader = [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]
    elif isinstance(data, (DataLoader, Sequence)) or hasattr(data, "__iter__"):
        loader = data
    else:
        raise ValueError(f"data must be a DataLoader, a tensor or a dict of tensors, got {type(data).__name__}")
    dev = torch.device(device) if device is not None else device_of(module)
    forward_fn = forward_fn or default_forward(input_key)
    chunks: dict[str, list[Tensor]] = {}
    tap = Tap(module, sites, reduction=reduction)
    try:
        for feats, _ in iterate_frozen(module, tap, loader, forward_fn, dev):
            for site, f in feats.items():
                chunks.setdefault(site, []).append(f.cpu())
    finally:
        tap.remove()
    if not chunks:
        raise ValueError("data yielded no batches: no features were computed")
    return {site: torch.cat(c) for site, c in chunks.items()}
