"""Plugin discovery through the ``lit_repr.plugins`` entry-point group.

A plugin is any installed package that declares, in its ``pyproject.toml``::

    [project.entry-points."lit_repr.plugins"]
    my_plugin = "my_plugin"            # a module to import
    # or "my_plugin.register:setup"    # a callable to call after import

Importing it defines its LightningModules, DataModules and Callbacks, which then resolve by short
class name in YAML configs (``class_path: MyModel``).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

__all__ = ["ENTRY_POINT_GROUP", "discover_plugins", "load_plugins"]

ENTRY_POINT_GROUP = "lit_repr.plugins"
_log = logging.getLogger(__name__)
_loaded: dict[str, object] = {}


def discover_plugins() -> list[EntryPoint]:
    """The entry points registered in the ``lit_repr.plugins`` group (not yet loaded)."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_plugins(strict: bool = True) -> dict[str, object]:
    """Import every registered plugin (and call it if the entry point names a callable).

    Args:
        strict: raise if a plugin fails to load; otherwise log a warning and go on.

    Returns:
        ``{plugin name: loaded object}`` for every plugin loaded so far.
    """
    for ep in discover_plugins():
        if ep.name in _loaded:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
            _loaded[ep.name] = obj
        except Exception as err:  # noqa: BLE001 - re-raised with context below
            msg = f"lit_repr plugin {ep.name!r} ({ep.value}) failed to load: {type(err).__name__}: {err}"
            if strict:
                raise RuntimeError(msg) from err
            _log.warning(msg)
    return dict(_loaded)
