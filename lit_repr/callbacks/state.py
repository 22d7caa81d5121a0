"""Checkpoint state of a :class:`~lit_repr.callbacks.TapCallback`: its readouts, rebuilt through its factory.

Each readout is saved with its (site, target, name), the widths its factory was given and its
``state_dict``. On load, the readouts are rebuilt by the callback's own ``make_readouts`` and their
states restored; what the current configuration no longer has (a site, a target, a readout, a
width) is dropped with one warning that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lit_repr.taps import glob_regex

__all__ = ["ReadoutState"]


def _moved(value: Any, device: Any) -> Any:
    """A state entry (a tensor, or the list of tensors of a bounded sample) on ``device``, detached."""
    if isinstance(value, list):
        return [v.detach().to(device) for v in value]
    return value.detach().to(device) if hasattr(value, "detach") else value


class ReadoutState:
    """Mixin of :class:`~lit_repr.callbacks.TapCallback`: ``state_dict``/``load_state_dict`` of its readouts.

    Example:
        >>> from lit_repr.callbacks import LinearProbe
        >>> LinearProbe("backbone").state_dict()
        {'readouts': [], 'extra': {}}
    """

    def extra_state(self) -> dict[str, Any]:
        """What a subclass keeps beyond its readouts (saved with them)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def state_dict(self) -> dict[str, Any]:
        entries = [
            {"site": s, "target": t, "name": n, "widths": self.widths[(s, t)],
             "state": {k: _moved(v, "cpu") for k, v in r.state_dict().items()}}
            for (s, t, n), r in self.readouts.items()
        ]
        return {"readouts": entries, "extra": self.extra_state()}

    def _site_known(self, site: str) -> bool:
        if self.tap is not None:
            return site in self.tap.sites
        return any(glob_regex(p).fullmatch(site) for p in self.site_patterns)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        device = self._module.device if self._module is not None else "cpu"
        self.readouts, self.widths = {}, {}
        dropped = []
        for e in state_dict.get("readouts", []):
            site, target, rname = e["site"], e["target"], e["name"]
            label = "/".join(x for x in (site, target, rname) if x)
            if not self._site_known(site) or (target is not None and target not in self.targets):
                dropped.append(label)
                continue
            if (site, target) not in self.widths:
                self._create(site, target, *map(int, e["widths"]), device)
            r = self.readouts.get((site, target, rname))
            if r is None:
                dropped.append(label)
                continue
            try:
                r.load_state_dict({k: _moved(v, device) for k, v in e["state"].items()}, strict=False)
            except RuntimeError as err:  # shapes changed with the configuration
                dropped.append(f"{label} ({str(err).splitlines()[0]})")
                for k in [k for k in self.readouts if k[:2] == (site, target)]:
                    del self.readouts[k]
                del self.widths[(site, target)]
        if dropped:
            rank_zero_warn(
                f"{self.name}: the checkpoint holds readouts this configuration no longer has; dropped: {dropped}"
            )
        self.load_extra_state(state_dict.get("extra", {}))
