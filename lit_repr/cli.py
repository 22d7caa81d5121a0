"""The command line: ``python -m lit_repr fit --config configs/quickstart.yaml``.

Built on Lightning's ``LightningCLI`` in subclass mode: ``model`` may be any LightningModule and
``data`` any LightningDataModule, named in YAML by import path or, for lit_repr's own classes and
those of installed plugins, by short class name. Configs are parsed with OmegaConf, so
interpolation such as ``${model.init_args.hidden}`` works. TensorBoard is the default logger, writing
to ``runs/<config file name>/version_N`` with the resolved config saved beside the run as
``config.yaml``. Every run ends with a table of its final readouts (also written as ``summary.json``);
when stdout is not a terminal, progress is one line per epoch. A parse error prints its cause first,
in one line; a run that fails before its first training step removes the run directory it created.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["LitReprCLI", "main", "DEFAULT_TRAINER", "config_name", "default_trainer"]

DEFAULT_TRAINER: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit_repr"},
    },
}


def config_name(args: Sequence[str] | None) -> str | None:
    """The file stem of the last ``--config``/``-c`` in ``args`` (``None`` if there is none).

    Example:
        >>> config_name(["fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs=2"])
        'quickstart'
    """
    if not args or not all(isinstance(a, str) for a in args):
        return None
    found = None
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith("--config="):
            found = a.split("=", 1)[1]
    return Path(found).stem if found else None


def default_trainer(name: str | None) -> dict[str, Any]:
    """Trainer defaults of the command line: TensorBoard under ``runs/<name>`` (``runs/lit_repr`` without a name)."""
    logger = {**DEFAULT_TRAINER["logger"], "init_args": {**DEFAULT_TRAINER["logger"]["init_args"]}}
    if name:
        logger["init_args"]["name"] = name
    return {**DEFAULT_TRAINER, "logger": logger}


class _DropTips(logging.Filter):
    """Lightning's advertisements for optional cloud packages ("💡 Tip: ...") are not about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in str(record.msg)


def _import_components() -> None:
    """Import lit_repr's classes and installed plugins so short class names resolve."""
    import lit_repr.callbacks  # noqa: F401
    import lit_repr.callbacks.progress  # noqa: F401
    import lit_repr.callbacks.summary  # noqa: F401
    import lit_repr.data  # noqa: F401
    import lit_repr.models  # noqa: F401
    from lit_repr.plugins import load_plugins

    load_plugins(strict=False)


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name == "lit-repr" else "python -m lit_repr"


class LitReprCLI(LightningCLI):
    """``LightningCLI`` with lit_repr's defaults: subclass mode, OmegaConf, TensorBoard, plugins, run summary.

    Runs are logged to ``runs/<config file name>/version_N`` (the user's own ``trainer.logger``
    settings take precedence). Each run gets a :class:`~lit_repr.callbacks.summary.RunSummary` and,
    when stdout is not a terminal and the progress bar is enabled, a
    :class:`~lit_repr.callbacks.progress.LineProgressBar`.

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
        run: run the subcommand (``fit``, ``validate``, ``test``, ``predict``) after parsing.
        **kwargs: passed on to ``LightningCLI``.

    Example:
        >>> LitReprCLI(args=["fit", "--config", "configs/quickstart.yaml"])  # doctest: +SKIP
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        _import_components()
        self._raw_args = list(args) if isinstance(args, Sequence) and not isinstance(args, str) else sys.argv[1:]
        self._created_dirs: list[list[str]] = []
        tips = _DropTips()
        rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        rank_zero_logger.addFilter(tips)
        parser_kwargs = kwargs.pop("parser_kwargs", {}) or {}
        parser_kwargs.setdefault("parser_mode", "omegaconf")
        trainer_defaults = {
            **default_trainer(config_name(self._raw_args)),
            **(kwargs.pop("trainer_defaults", None) or {}),
        }
        save_config_kwargs = kwargs.pop("save_config_kwargs", None) or {"overwrite": True}
        try:
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
        except BaseException:
            self._remove_unused_run_dir()
            raise
        finally:
            rank_zero_logger.removeFilter(tips)

    # ------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as ``LightningCLI`` does; on a bad value print its cause in one line and exit with status 2."""
        from jsonargparse import ArgumentError
        from omegaconf.errors import OmegaConfBaseException

        from lit_repr.cli_errors import explain_config_error, explain_parse_error

        subparsers = getattr(self, "_subcommand_parsers", {})
        for sub in ("validate", "test"):  # the run summary replaces Lightning's own results table
            if sub in subparsers and any(a.dest == "verbose" for a in subparsers[sub]._actions):
                subparsers[sub].set_defaults(verbose=False)
        parsers = [parser, *subparsers.values()]
        for p in parsers:
            p.exit_on_error = False
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            sub = next((a for a in self._raw_args if a in subparsers), None)
            try:
                lines = explain_parse_error(str(err), parser=parser, subcommand=sub, prog=_prog())
            except Exception:  # noqa: BLE001 - never hide the original message behind a second error
                lines = [f"error: {err}"]
            print("\n".join(lines), file=sys.stderr)
            raise SystemExit(2) from None
        except OmegaConfBaseException as err:
            print(explain_config_error(err), file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            for p in parsers:
                p.exit_on_error = True

    # ------------------------------------------------------------------ trainer
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured Trainer plus a run summary and, when stdout is not a terminal, one line per epoch."""
        from lit_repr.callbacks.progress import LineProgressBar, stdout_is_terminal
        from lit_repr.callbacks.summary import RunSummary

        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {}) or {}
        callbacks = kwargs.pop("callbacks", trainer_config.get("callbacks"))
        if not isinstance(callbacks, (list, tuple)):
            callbacks = [] if callbacks is None else [callbacks]
        callbacks = list(callbacks)
        wants_bar = trainer_config.get("enable_progress_bar", None) is not False
        if wants_bar and not stdout_is_terminal() and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(LineProgressBar())
        if not any(isinstance(c, RunSummary) for c in callbacks):
            callbacks.append(RunSummary())  # after the progress bar: the table is the last thing printed
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def after_instantiate_classes(self) -> None:
        """Note which directories of the run's log directory do not exist yet (removed if the run fails early)."""
        super().after_instantiate_classes()
        self._created_dirs = []
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.loggers or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            log_dir = getattr(logger, "log_dir", None)
            if not log_dir:
                continue
            path = Path(log_dir).absolute()
            missing = []
            while not path.exists() and path != path.parent:
                missing.append(str(path))
                path = path.parent
            if missing:
                self._created_dirs.append(missing)  # the log directory first, then its new parents

    def _remove_unused_run_dir(self) -> None:
        """After a failure before the first training step: delete the run directory this run created."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.global_step > 0 or not trainer.is_global_zero or not self._created_dirs:
            return
        for logger in trainer.loggers:
            try:
                logger.finalize("failed")  # close open event files before deleting them
            except Exception:  # noqa: BLE001 - cleaning up after another error
                pass
        for log_dir, *parents in self._created_dirs:
            shutil.rmtree(log_dir, ignore_errors=True)
            for d in parents:  # only if nothing else has appeared in them meanwhile
                if os.path.isdir(d) and not os.listdir(d):
                    os.rmdir(d)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lit_repr`` and the ``lit-repr`` console script.

    ``fit``/``validate``/``test``/``predict`` go to :class:`LitReprCLI`; ``federate`` runs a whole
    federation (:class:`~lit_repr.federated.factory.FederatedFactory`) from its config.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["federate"]:
        from lit_repr.federated.factory import federate_main

        federate_main(argv[1:])
        return
    if argv in (["-h"], ["--help"]):
        try:
            LitReprCLI(args=args)
        finally:  # LightningCLI's help exits; the federation runner is not one of its subcommands
            print(
                "\nalso:\n  federate            Run a whole federation (partition, clients, exchange, synthesis,"
                f" classifier, report) from its config: {_prog()} federate --config configs/federated_digits.yaml"
            )
        return
    LitReprCLI(args=args)  # None: Lightning reads sys.argv itself
