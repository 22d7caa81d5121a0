"""The command line: ``python -m lit_repr fit --config configs/quickstart.yaml``.

Built on Lightning's ``LightningCLI`` in subclass mode: ``model`` may be any LightningModule and
``data`` any LightningDataModule, named in YAML by import path or, for lit_repr's own classes and
those of installed plugins, by short class name. Configs are parsed with OmegaConf, so
interpolation such as ``${model.init_args.hidden}`` works. TensorBoard is the default logger and
the resolved config is saved beside the run as ``config.yaml``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["LitReprCLI", "main", "DEFAULT_TRAINER"]

DEFAULT_TRAINER: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit_repr"},
    },
}


def _import_components() -> None:
    """Import lit_repr's classes and installed plugins so short class names resolve."""
    import lit_repr.callbacks  # noqa: F401
    import lit_repr.data  # noqa: F401
    import lit_repr.models  # noqa: F401
    from lit_repr.plugins import load_plugins

    load_plugins(strict=True)


class LitReprCLI(LightningCLI):
    """``LightningCLI`` with lit_repr's defaults: subclass mode, OmegaConf, TensorBoard, plugins.

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
        run: run the subcommand (``fit``, ``validate``, ``test``, ``predict``) after parsing.
        **kwargs: passed on to ``LightningCLI``.

    Example:
        >>> LitReprCLI(args=["fit", "--config", "configs/quickstart.yaml"])  # doctest: +SKIP
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        _import_components()
        self._raw_args = list(args) if args is not None else sys.argv[1:]
        parser_kwargs = kwargs.pop("parser_kwargs", {}) or {}
        parser_kwargs.setdefault("parser_mode", "omegaconf")
        trainer_defaults = {**DEFAULT_TRAINER, **(kwargs.pop("trainer_defaults", None) or {})}
        save_config_kwargs = kwargs.pop("save_config_kwargs", None) or {"overwrite": True}
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args) if args is not None else None,
            run=run,
            parser_kwargs=parser_kwargs,
            trainer_defaults=trainer_defaults,
            save_config_kwargs=save_config_kwargs,
            auto_configure_optimizers=False,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                for hint in _class_path_hints(self._raw_args):
                    print(f"lit_repr: {hint}", file=sys.stderr)
            raise


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in out:
                out.add(sub)
                stack.append(sub)
    return out


def _class_path_hints(args: Sequence[str]) -> list[str]:
    """Explain unresolvable ``class_path`` values of ``model``/``data`` in the given configs."""
    import difflib
    import importlib

    import yaml

    hints = []
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    configs += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in configs:
        try:
            with open(path) as fh:
                cfg = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key, base in (("model", LightningModule), ("data", LightningDataModule)):
            entry = cfg.get(key)
            cp = entry.get("class_path") if isinstance(entry, dict) else None
            if not isinstance(cp, str):
                continue
            known = {
                c.__name__: f"{c.__module__}.{c.__qualname__}"
                for c in _all_subclasses(base)
                if not c.__module__.startswith(("lightning.", "pytorch_lightning."))
            }
            if "." not in cp:
                if cp in known:
                    continue
                close = difflib.get_close_matches(cp, list(known), n=3)
                hints.append(
                    f"{key}.class_path {cp!r} is not a known {base.__name__}"
                    + (f"; did you mean {close}?" if close else "")
                    + f" Known short names: {sorted(known)}; any other class needs its full import path "
                    f"(package.module.Class) or a plugin registered under 'lit_repr.plugins'."
                )
            else:
                mod, _, name = cp.rpartition(".")
                try:
                    getattr(importlib.import_module(mod), name)
                except (ImportError, AttributeError) as err:
                    hints.append(f"{key}.class_path {cp!r} cannot be imported: {err}")
    return hints


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lit_repr`` and the ``lit-repr`` console script."""
    LitReprCLI(args=args)  # None: Lightning reads sys.argv itself
