"""Plugin discovery through the ``lit_repr.plugins`` entry-point group.

A plugin is any installed package that declares, in its ``pyproject.toml``::

    [project.entry-points."lit_repr.plugins"]
    my_plugin = "my_plugin"            # a module to import
    # or "my_plugin.register:setup"    # a callable to call after import

Importing it defines its LightningModules, DataModules and Callbacks, which then resolve by short
class name in YAML configs (``class_path: MyModel``). A plugin that fails to load is named in a
warning and skipped: a run stops only if its config names a class that cannot be resolved, and then
the error shows why the plugin failed (see :func:`failed_plugins`).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

__all__ = ["ENTRY_POINT_GROUP", "discover_plugins", "load_plugins", "failed_plugins"]

ENTRY_POINT_GROUP = "lit_repr.plugins"
_log = logging.getLogger(__name__)
_loaded: dict[str, object] = {}
_failed: dict[str, tuple[str, str]] = {}


def discover_plugins() -> list[EntryPoint]:
    """The entry points registered in the ``lit_repr.plugins`` group (not yet loaded)."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def failed_plugins() -> dict[str, tuple[str, str]]:
    """``{plugin name: (entry point value, "ErrorType: message")}`` for every plugin that failed to load."""
    return dict(_failed)


def load_plugins(strict: bool = False) -> dict[str, object]:
    """Import every registered plugin (and call it if the entry point names a callable).

    A plugin that fails is recorded (:func:`failed_plugins`) and named in one warning, once per process.

    Args:
        strict: raise ``RuntimeError`` at the first plugin that fails to load instead of warning.

    Returns:
        ``{plugin name: loaded object}`` for every plugin loaded so far.
    """
    for ep in discover_plugins():
        if ep.name in _loaded or (ep.name in _failed and not strict):
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
            _loaded[ep.name] = obj
            _failed.pop(ep.name, None)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not stop runs that do not need it
            reason = f"{type(err).__name__}: {err}"
            msg = f"lit_repr plugin {ep.name!r} ({ep.value}) failed to load: {reason}"
            if strict:
                raise RuntimeError(msg) from err
            _failed[ep.name] = (ep.value, reason)
            _log.warning(f"{msg}; skipped (its classes are unavailable)")
    return dict(_loaded)
