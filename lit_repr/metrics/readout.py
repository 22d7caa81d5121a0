"""The readout contract: what :class:`~lit_repr.callbacks.TapCallback` drives.

A *readout* turns the features of one (site, target) pair into numbers. It is a torchmetrics
``Metric`` (or any ``nn.Module``) with this small protocol:

- ``update(features, target, split)``: a batch of ``(B, D)`` features and its target (``None`` for
  callbacks without targets). ``split`` is :data:`FIT` for the batches that fit the readout (the
  training batches online, the ``fit_split`` loader frozen), :data:`HELDOUT` for the batches that
  choose a hyper-parameter, and otherwise the name of an evaluation split (``"val"``, ``"test"``,
  ``"ood"``, ...).
- ``fit()`` (optional): called between the fitting and the evaluation passes, on every process.
- ``compute(split)``: a scalar or a dict for an evaluation split (named by :func:`scalars` with the
  name the callback gave the readout); ``compute(FIT)`` gives
  quantities of the fit itself (e.g. the chosen penalty), ``{}`` if none. Every process calls it
  (states are merged across processes first).
- ``reset(split=None)``: forget the statistics of one evaluation split, or everything (fitted
  parameters may stay: the online probe keeps its weights between epochs).
- ``figures(split, title)`` (optional): ``{name: matplotlib figure}``.
- ``flush()`` (optional): add the batches the readout holds back (to work on larger blocks) to its
  statistics. The callback calls it after the last training batch of an epoch, so that the
  epoch's rows are accumulated in the training step that produced them, not at validation.
- state: the module's ``state_dict`` (what a checkpoint holds).

A plain torchmetrics ``Metric`` whose ``update`` takes ``(features, target)`` (or ``(features)``)
and whose ``compute()`` returns a scalar or a dict of scalars becomes a readout through
:class:`MetricReadout`: one copy per evaluation split, fit batches ignored.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = ["FIT", "HELDOUT", "Readout", "MetricReadout", "SplitDict", "as_readout", "scalars"]

FIT = "fit"
HELDOUT = "heldout"


class SplitDict(nn.ModuleDict):
    """A ``ModuleDict`` keyed by split name, where any name is allowed (``"eval"``, ``"train"``, ...
    would clash with ``nn.Module`` attributes as plain keys: they are stored as ``split:<name>``).

    Args:
        modules: optional initial ``{split: module}``.

    Example:
        >>> d = SplitDict(); d["eval"] = nn.Identity(); "eval" in d, list(d)
        (True, ['eval'])
        >>> _ = d.pop("eval"); list(d)
        []
    """

    _PREFIX = "split:"

    def __init__(self, modules: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        for split, module in (modules or {}).items():
            self[split] = module

    def __getitem__(self, split: str) -> nn.Module:
        return super().__getitem__(self._PREFIX + split)

    def __setitem__(self, split: str, module: nn.Module) -> None:
        super().__setitem__(self._PREFIX + split, module)

    def __contains__(self, split: object) -> bool:
        return isinstance(split, str) and super().__contains__(self._PREFIX + split)

    def __iter__(self):
        return (k[len(self._PREFIX) :] for k in super().__iter__())

    def keys(self):  # type: ignore[override]
        return list(iter(self))

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in self]

    def pop(self, split: str) -> nn.Module:  # type: ignore[override]
        if split not in self:
            raise KeyError(split)
        return self._modules.pop(self._PREFIX + split)  # ModuleDict.pop would re-add the prefix


@runtime_checkable
class Readout(Protocol):
    """The protocol (see the module docstring); :class:`MetricReadout` adapts plain Metrics to it.

    Example:
        >>> from lit_repr.metrics import ProbeReadout
        >>> isinstance(ProbeReadout(3), Readout)
        True
    """

    def update(self, features: Tensor, target: Tensor | None, split: str) -> None: ...

    def compute(self, split: str) -> Mapping[str, Any]: ...

    def reset(self, split: str | None = None) -> None: ...


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1)


def scalars(result: Any, name: str = "") -> dict[str, float]:
    """``{quantity: float}`` from what a readout computed.

    A scalar becomes ``{name: value}``. A dict keeps its scalar entries, named ``<name>_<key>`` (or
    ``<key>`` when ``name`` is empty, ``<name>`` when the key is empty); a 1-D entry
    ``<stem>_per_factor`` becomes ``<stem>_factor<i>`` entries; other non-scalar entries are left out.

    Example:
        >>> import torch
        >>> scalars({"r2": torch.tensor(0.5), "r2_per_factor": torch.tensor([0.4, 0.6])}, "linear")
        {'linear_r2': 0.5, 'linear_r2_factor0': 0.4000000059604645, 'linear_r2_factor1': 0.6000000238418579}
        >>> scalars(torch.tensor(2.0), "cka"), scalars({"": 0.9, "factor0": 0.8}, "mcc")
        ({'cka': 2.0}, {'mcc': 0.9, 'mcc_factor0': 0.8})
    """
    def named(k: str) -> str:
        return f"{name}_{k}" if name and k else (k or name)

    if isinstance(result, Mapping):
        out = {}
        for k, v in result.items():
            k = str(k)
            if _scalar(v):
                out[named(k)] = float(v)
            elif k.endswith("_per_factor") and getattr(v, "ndim", 0) == 1:
                for i, vi in enumerate(torch.as_tensor(v).tolist()):
                    out[named(f"{k[: -len('_per_factor')]}_factor{i}")] = float(vi)
        return out
    if _scalar(result):
        if not name:
            raise TypeError("a readout that computes a scalar needs a name for it")
        return {name: float(result)}
    raise TypeError(f"readout {name!r} computed a {type(result).__name__}; return a scalar or a dict of scalars")


class MetricReadout(nn.Module):
    """Make a torchmetrics ``Metric`` a readout: one copy of it per evaluation split.

    Args:
        metric: the template (never updated itself); a deep copy serves each evaluation split.
        name: quantity name of a scalar result.
        update_fn: ``update_fn(metric, features, target)``; default ``metric.update(features, target)``,
            or ``metric.update(features)`` when ``update`` takes one argument.
        quantities: ``quantities(result) -> {key: value}``, named by :func:`scalars` like any dict
            result (``""`` stands for ``name`` itself); by default the result as it is.
        figure_fn: ``figure_fn(result, title) -> {name: figure}`` for the last computed result.

    Example:
        >>> from torchmetrics import MeanMetric
        >>> r = MetricReadout(MeanMetric(), "mean", update_fn=lambda m, f, t: m.update(f.norm(dim=1)))
        >>> r.update(torch.ones(4, 4), None, "fit"); r.update(torch.ones(4, 4), None, "val")
        >>> r.compute("val"), r.compute("fit")
        (tensor(2.), {})
    """

    def __init__(
        self,
        metric: Metric,
        name: str,
        update_fn: Callable[[Metric, Tensor, Tensor | None], None] | None = None,
        quantities: Callable[[Any], Mapping[str, float]] | None = None,
        figure_fn: Callable[[Any, str], Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(metric, Metric):
            raise ValueError(f"metric must be a torchmetrics Metric, got {type(metric).__name__}")
        self.template = metric
        self.name = name
        if update_fn is None:
            one_arg = len(inspect.signature(metric.update).parameters) == 1
            update_fn = (lambda m, f, t: m.update(f)) if one_arg else (lambda m, f, t: m.update(f, t))
        self.update_fn = update_fn
        self.quantities = quantities
        self.figure_fn = figure_fn
        self.splits = SplitDict()
        self.results: dict[str, Any] = {}

    def _split(self, split: str) -> Metric:
        if split not in self.splits:
            self.splits[split] = copy.deepcopy(self.template)
        return self.splits[split]  # type: ignore[return-value]

    def update(self, features: Tensor, target: Tensor | None, split: str) -> None:
        if split in (FIT, HELDOUT):
            return
        self.update_fn(self._split(split), features, target)

    def compute(self, split: str) -> Any:
        """What the metric computes on evaluation split ``split`` (through ``quantities``); ``{}`` for the fit."""
        if split in (FIT, HELDOUT):
            return {}
        result = self._split(split).compute()
        self.results[split] = result
        return self.quantities(result) if self.quantities else result

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Create the per-split copies the state names, then load it."""
        for key in state_dict:
            if key.startswith("splits." + SplitDict._PREFIX):
                self._split(key[len("splits." + SplitDict._PREFIX) :].rsplit(".", 1)[0])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def figures(self, split: str, title: str) -> Mapping[str, Any]:
        if self.figure_fn is None or split not in self.results:
            return {}
        return self.figure_fn(self.results[split], title)

    def reset(self, split: str | None = None) -> None:
        for s, m in self.splits.items():
            if split is None or s == split:
                m.reset()
                self.results.pop(s, None)


def as_readout(readout: Any, name: str) -> Any:
    """``readout`` if it follows the protocol, a :class:`MetricReadout` if it is a plain Metric.

    Example:
        >>> from torchmetrics import MeanMetric
        >>> type(as_readout(MeanMetric(), "mean")).__name__
        'MetricReadout'
    """
    params = inspect.signature(readout.update).parameters if hasattr(readout, "update") else {}
    if isinstance(readout, nn.Module) and "split" in params and hasattr(readout, "compute"):
        return readout
    if isinstance(readout, Metric):
        return MetricReadout(readout, name)
    raise TypeError(
        f"readout {name!r} is a {type(readout).__name__}: give a torchmetrics Metric or a module with "
        f"update(features, target, split), compute(split) and reset(split=None)"
    )

