"""RunSummary: the final readouts of a run, as a table on stdout and as ``summary.json`` in the run directory.

Readout callbacks log ``<callback>/<site>/<target>/<split>/<quantity>`` (the site may contain dots, never
slashes) and keep their last logged values in a ``scores`` dict. At the end of ``fit``, ``validate`` and
``test``, :class:`RunSummary` gathers those values (and any other logged metric of that shape), prints
one compact table and writes it beside the logs. A score logged as NaN (undefined: one sample, one
class, an empty split) shows as ``undefined``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["RunSummary", "parse_tag", "collect_scores", "summary_rows", "format_summary"]

# Shown first, in this order; any other quantity follows alphabetically.
MAIN_QUANTITIES = (
    "acc",
    "r2",
    "auroc",
    "pearson",
    "spearman",
    "mse",
    "linear_r2",
    "mcc",
    "kernel_r2",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "cka",
    "cka_debiased",
    "mutual_knn",
)
# Kept in summary.json but left out of the printed table: per-factor values, fitted penalties and the ends of
# confidence intervals (the evidence-ladder report shows those).
_DETAIL = re.compile(r"(_factor\d+|(^|/|_)alpha|_gamma|_ci_low|_ci_high)$")


def parse_tag(tag: str) -> dict[str, str] | None:
    """Split ``<callback>/<site>/<target>/<split>/<quantity>`` into its parts; ``None`` for other shapes.

    Args:
        tag: a logged metric name.

    Example:
        >>> parse_tag("probe/encoder.3/energy/val/r2")["site"]
        'encoder.3'
        >>> parse_tag("val/acc") is None
        True
    """
    parts = str(tag).split("/")
    if len(parts) < 5 or not all(parts):
        return None
    return {
        "callback": parts[0],
        "site": "/".join(parts[1:-3]),
        "target": parts[-3],
        "split": parts[-2],
        "quantity": parts[-1],
    }


def _as_float(value: Any) -> float | None:
    try:
        if hasattr(value, "numel"):
            if value.numel() != 1:
                return None
            value = value.item()
        return float(value)
    except (TypeError, ValueError):
        return None


def collect_scores(trainer: pl.Trainer) -> tuple[dict[str, float], dict[str, float]]:
    """The last values of a run's readouts, and every other scalar metric it logged.

    Readouts are the ``scores`` dicts of the trainer's callbacks plus any ``trainer.callback_metrics``
    entry of the ``<callback>/<site>/<target>/<split>/<quantity>`` shape. Returns
    ``(readouts, other)``, both ``{tag: value}``; ``other`` holds the remaining tags (e.g. the
    model's own ``val/acc``, or a callback's tags of another shape).
    """
    readouts: dict[str, float] = {}
    other: dict[str, float] = {}
    for cb in trainer.callbacks:
        scores = getattr(cb, "scores", None)
        if not isinstance(scores, Mapping):
            continue
        for tag, value in scores.items():
            v = _as_float(value)
            if v is not None:
                (readouts if parse_tag(tag) is not None else other)[str(tag)] = v
    for tag, value in trainer.callback_metrics.items():
        if tag in readouts or tag in other:
            continue
        v = _as_float(value)
        if v is not None:
            (readouts if parse_tag(tag) is not None else other)[tag] = v
    return readouts, other


def _quantity_order(q: str) -> tuple[int, str]:
    return (MAIN_QUANTITIES.index(q), "") if q in MAIN_QUANTITIES else (len(MAIN_QUANTITIES), q)


def summary_rows(readouts: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per (callback, site, target, split) with its quantities, in order of first appearance.

    Args:
        readouts: ``{tag: value}`` for tags of the ``<callback>/<site>/<target>/<split>/<quantity>`` shape
            (others are skipped).

    Example:
        >>> rows = summary_rows({"probe/layer.1/digit/val/acc": 0.9, "probe/layer.1/digit/val/auroc": 0.99})
        >>> rows[0]["site"], rows[0]["scores"]
        ('layer.1', {'acc': 0.9, 'auroc': 0.99})
    """
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for tag, value in readouts.items():
        p = parse_tag(tag)
        if p is None:
            continue
        key = (p["callback"], p["site"], p["target"], p["split"])
        row = rows.setdefault(key, {**dict(zip(("callback", "site", "target", "split"), key)), "scores": {}})
        row["scores"][p["quantity"]] = value
    for row in rows.values():
        row["scores"] = dict(sorted(row["scores"].items(), key=lambda kv: _quantity_order(kv[0])))
    return list(rows.values())


def _fmt(v: float) -> str:
    if math.isnan(v):  # a readout without a definition here (one sample, one class, an empty split)
        return "undefined"
    if math.isinf(v):
        return str(v)
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"


def _table(header: list[str], body: list[list[str]], numeric_from: int) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_summary(rows: list[dict[str, Any]], other: Mapping[str, float] | None = None, title: str = "") -> str:
    """The printed form of :func:`summary_rows`: one table per callback, then the other metrics.

    Args:
        rows: output of :func:`summary_rows`.
        other: further ``{tag: value}`` printed on one line each, 4 to a line.
        title: first line.

    Example:
        >>> print(format_summary(summary_rows({"probe/layer.1/digit/val/acc": 0.9}), {"val/loss": 0.31}))
        callback  site     target  split    acc
        probe     layer.1  digit   val    0.900
        other: val/loss=0.310
    """
    lines = [title] if title else []
    by_callback: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if any(not _DETAIL.search(q) for q in row["scores"]):  # rows of details only (a fit's penalty) stay in the JSON
            by_callback.setdefault(row["callback"], []).append(row)
    for i, (_, group) in enumerate(by_callback.items()):
        quantities = sorted(
            {q for row in group for q in row["scores"] if not _DETAIL.search(q)}, key=_quantity_order
        )
        header = ["callback", "site", "target", "split", *quantities]
        body = [
            [row["callback"], row["site"], row["target"], row["split"]]
            + [_fmt(row["scores"][q]) if q in row["scores"] else "-" for q in quantities]
            for row in group
        ]
        if i:
            lines.append("")
        lines.extend(_table(header, body, numeric_from=4))
    items = [f"{k}={_fmt(v)}" for k, v in sorted((other or {}).items()) if not _DETAIL.search(k)]
    for j in range(0, len(items), 4):
        lines.append(("other: " if j == 0 else "       ") + "  ".join(items[j : j + 4]))
    return "\n".join(lines)


class RunSummary(Callback):
    """Print the final readouts of ``fit``, ``validate`` and ``test`` as a table; write ``summary.json``.

    The rows come from every callback's ``scores`` (lit_repr's readout callbacks keep their last
    logged values there) and from logged metrics of the ``<callback>/<site>/<target>/<split>/<quantity>``
    shape; the model's own metrics (``val/acc``, ...) follow on an ``other:`` line. ``summary.json`` in
    the logger's directory holds one entry per stage (``"fit"``, ``"validate"``, ``"test"``), each with
    ``rows`` (each with the ``rung`` and ``method`` of the callback that produced it, when it declares them), the
    full ``scores`` by tag and the ``other`` metrics. Only the global-zero process prints
    and writes. The lit_repr command line adds it to every run.

    Args:
        filename: name of the JSON file in the logger's ``log_dir``; ``None`` writes no file (nor does a
            run without a logger).
        print_table: print the table to ``stream`` at the end of each stage.
        stream: where to print (default: ``sys.stdout`` at print time).

    Example:
        >>> import lightning.pytorch as pl
        >>> class Readout(pl.Callback):  # any callback with a ``scores`` dict
        ...     scores = {"probe/encoder.1/digit/val/acc": 0.93, "probe/encoder.1/digit/val/auroc": 0.99}
        >>> summary = RunSummary()
        >>> trainer = pl.Trainer(callbacks=[Readout(), summary], logger=False)  # trainer.fit(...) ends with:
        >>> _ = summary.summarise(trainer, "fit")
        Final readouts (fit, epoch 0, step 0)
        callback  site       target  split    acc  auroc
        probe     encoder.1  digit   val    0.930  0.990
    """

    def __init__(self, filename: str | None = "summary.json", print_table: bool = True, stream: TextIO | None = None):
        super().__init__()
        if filename is not None and (not isinstance(filename, str) or not filename or os.sep in filename):
            raise ValueError(f"filename must be a plain file name such as 'summary.json' or None, got {filename!r}")
        if not isinstance(print_table, bool):
            raise ValueError(f"print_table must be True or False, got {print_table!r}")
        self.filename = filename
        self.print_table = print_table
        self.stream = stream
        self.last: dict[str, Any] | None = None
        self.path: str | None = None

    def summarise(self, trainer: pl.Trainer, stage: str) -> dict[str, Any]:
        """Gather the readouts now; print and write them (global zero only); return the summary."""
        readouts, other = collect_scores(trainer)
        rows = summary_rows(readouts)
        ladder = {cb.name: (cb.rung, cb.method) for cb in trainer.callbacks if hasattr(cb, "rung") and
                  hasattr(cb, "method") and hasattr(cb, "name")}
        for row in rows:  # each row carries the rung of the evidence ladder it stands on and its method
            if row["callback"] in ladder:
                row["rung"], row["method"] = ladder[row["callback"]]
        summary = {
            "stage": stage,
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "rows": rows,
            "scores": readouts,
            "other": other,
        }
        self.last = summary
        if not trainer.is_global_zero:
            return summary
        self.path = self._write(trainer, stage, summary)
        if self.print_table and (summary["rows"] or other):
            title = f"Final readouts ({stage}, epoch {trainer.current_epoch}, step {trainer.global_step})"
            text = format_summary(summary["rows"], other, title=title)
            if self.path:
                text += f"\nsaved: {self.path}"
            import sys

            print(text, file=self.stream or sys.stdout, flush=True)
        return summary

    def _write(self, trainer: pl.Trainer, stage: str, summary: dict[str, Any]) -> str | None:
        if self.filename is None or not trainer.loggers:
            return None
        log_dir = trainer.log_dir
        if not log_dir:
            return None
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, self.filename)
        stages: dict[str, Any] = {}
        if os.path.exists(path):  # the same run directory: keep the other stages' summaries
            try:
                with open(path) as fh:
                    loaded = json.load(fh)
                stages = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                stages = {}
        stages[stage] = summary
        with open(path, "w") as fh:
            json.dump(stages, fh, indent=2, allow_nan=True)
        return path

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.summarise(trainer, "fit")

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self.summarise(trainer, "validate")

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.summarise(trainer, "test")
