"""LineProgressBar: one line per epoch, for output that is not a terminal (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar
from typing_extensions import override

__all__ = ["LineProgressBar", "stdout_is_terminal"]


def stdout_is_terminal() -> bool:
    """Whether ``sys.stdout`` is an interactive terminal (where redrawn progress bars belong)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class LineProgressBar(ProgressBar):
    """A Lightning progress bar that prints one line per training epoch instead of redrawing per step.

    Each line names the epoch, the global step, the elapsed time and the metrics the model shows in
    its progress bar (``self.log(..., prog_bar=True)``); ``validate`` and ``test`` print one line when
    they end. The lit_repr command line uses it whenever stdout is not a terminal; in your own Trainer:
    ``pl.Trainer(callbacks=[LineProgressBar()])``.

    Args:
        every_n_epochs: print every n-th training epoch (and always the last).
        stream: where to print (default: ``sys.stdout`` at print time).

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[LineProgressBar()], logger=False, enable_checkpointing=False)
        >>> trainer.progress_bar_callback.every_n_epochs
        1
    """

    def __init__(self, every_n_epochs: int = 1, stream: TextIO | None = None) -> None:
        super().__init__()
        if not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int >= 1, got {every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs
        self.stream = stream
        self._enabled = True
        self._start = time.monotonic()

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    @override
    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            kwargs.setdefault("file", self.stream or sys.stdout)
            kwargs.setdefault("flush", True)
            print(*args, **kwargs)

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        items = self.get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(items.items()) if not isinstance(v, dict))

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        elapsed = time.monotonic() - self._start
        self.print(
            f"epoch {epoch + 1}{total}  step {trainer.global_step}  {elapsed:.1f}s  {self._metrics(trainer, pl_module)}"
            .rstrip()
        )

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._start = time.monotonic()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self.print(f"validation done  {time.monotonic() - self._start:.1f}s  {self._metrics(trainer, pl_module)}")

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.print(f"test done  {time.monotonic() - self._start:.1f}s  {self._metrics(trainer, pl_module)}")

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.print(f"predict done  {time.monotonic() - self._start:.1f}s")
