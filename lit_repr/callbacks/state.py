"""Checkpoint state of a :class:`~lit_repr.callbacks.TapCallback`: its readouts, rebuilt through its factory.

Each readout is saved with its (site, target, name), the widths its factory was given and its
``state_dict``, and the *fingerprint* of what defines it (the target spec; a probe adds its task and
number of classes). On load, the readouts are rebuilt by the callback's own ``make_readouts`` and
their states restored; what the current configuration no longer has (a site, a target, a readout) is
dropped with one warning that names it; a readout whose fingerprint changed (the same target name
for another target) starts fresh with a warning naming the change, and so does one whose feature or
target width differs at the first batch.
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

    def fingerprint(self, site: str, target: str | None) -> dict[str, Any]:
        """What defines the readouts of (site, target) beyond their widths (see the subclass)."""
        return {}

    def declared_outputs(self, target: str | None) -> tuple[str, int] | None:
        """``(name, value)`` of the target width known without a batch (a probe's number of classes), else ``None``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        entries = [
            {"site": s, "target": t, "name": n, "widths": self.widths[(s, t)], "fingerprint": self.fingerprint(s, t),
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
        self.readouts, self.widths, self._restored = {}, {}, set()
        dropped: list[str] = []
        fresh: list[tuple[str, str | None]] = []
        for e in state_dict.get("readouts", []):
            site, target, rname = e["site"], e["target"], e["name"]
            label = "/".join(x for x in (site, target, rname) if x)
            if not self._site_known(site) or (target is not None and target not in self.targets):
                dropped.append(label)
                continue
            if (site, target) in fresh:
                continue
            saved, now = e.get("fingerprint"), self.fingerprint(site, target)
            keys = sorted(set(saved or {}) | set(now))
            changes = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)] \
                if saved is not None else []
            declared = self.declared_outputs(target)
            if declared is not None and declared[1] != int(e["widths"][1]):
                changes.append(f"{declared[0]} {int(e['widths'][1])} -> {declared[1]}")
            if changes:  # the same name, another readout: not restored
                fresh.append((site, target))
                where = f"site {site!r}" + (f", target {target!r}" if target is not None else "")
                rank_zero_warn(
                    f"{self.name}: the checkpoint's readouts of {where} were made for another configuration "
                    f"({'; '.join(changes)}); they are not restored and start fresh"
                )
                continue
            if (site, target) not in self.widths:
                self._create(site, target, *map(int, e["widths"]), device)
                self._restored.add((site, target))
            r = self.readouts.get((site, target, rname))
            if r is None:
                dropped.append(label)
                continue
            try:
                r.load_state_dict({k: _moved(v, device) for k, v in e["state"].items()}, strict=False)
            except RuntimeError as err:  # shapes changed with the configuration
                dropped.append(f"{label} ({str(err).splitlines()[0]})")
                self.drop(site, target)
        if dropped:
            rank_zero_warn(
                f"{self.name}: the checkpoint holds readouts this configuration no longer has; dropped: {dropped}"
            )
        self.load_extra_state(state_dict.get("extra", {}))
