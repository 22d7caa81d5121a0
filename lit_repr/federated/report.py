"""Evaluation and the run report of a federation: accuracy, balanced accuracy, macro AUROC, per class, timings.

Metrics are torchmetrics': ``MulticlassAccuracy(average="micro")`` (accuracy),
``MulticlassAccuracy(average="macro")`` (balanced accuracy), ``MulticlassAUROC(average="macro")`` and
``MulticlassAccuracy(average=None)`` (per-class accuracy, i.e. recall). A class that no client holds
cannot be synthesised: its per-class accuracy is reported as ``NaN`` and it is listed under
``missing_classes`` (it still counts, as the errors it causes, in the overall figures).

Example:
    >>> probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    >>> r = evaluate(probs, torch.tensor([0, 1, 2]), num_classes=3, missing_classes=[2])
    >>> round(r["accuracy"], 3), r["per_class_accuracy"]
    (0.667, [1.0, 1.0, nan])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["evaluate", "format_table", "write_report", "log_report"]


def evaluate(
    probs: Tensor, labels: Tensor, num_classes: int, missing_classes: Iterable[int] = ()
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUROC and per-class accuracy of class probabilities.

    Args:
        probs: ``(N, num_classes)`` class probabilities (rows sum to one).
        labels: ``(N,)`` true classes.
        num_classes: number of classes.
        missing_classes: classes the model could not learn (no module): their per-class accuracy is NaN.

    Example:
        >>> evaluate(torch.eye(2), torch.tensor([0, 1]), 2)["balanced_accuracy"]
        1.0
    """
    from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[1] != num_classes:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be (N, {num_classes}), got {shape}")
    labels = torch.as_tensor(labels).long()
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must be ({probs.shape[0]},), got {tuple(labels.shape)}")
    if not torch.isfinite(probs).all():
        raise ValueError("probs hold NaN or infinite values")
    missing = sorted({int(c) for c in missing_classes})
    probs = probs.float()
    acc = MulticlassAccuracy(num_classes, average="micro")(probs, labels).item()
    bal = MulticlassAccuracy(num_classes, average="macro")(probs, labels).item()
    per = MulticlassAccuracy(num_classes, average=None)(probs, labels).tolist()
    auroc = MulticlassAUROC(num_classes, average="macro")(probs, labels).item()
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    per = [float("nan") if (c in missing or counts[c] == 0) else float(v) for c, v in enumerate(per)]
    return {
        "accuracy": float(acc),
        "balanced_accuracy": float(bal),
        "macro_auroc": float(auroc),
        "per_class_accuracy": per,
        "test_counts": counts,
        "missing_classes": missing,
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    return f"{100 * v:.2f}" if isinstance(v, float) else str(v)


def format_table(methods: Mapping[str, Mapping[str, Any]], timings: Mapping[str, float] | None = None) -> str:
    """A printable table: one row per method (accuracy, balanced accuracy, macro AUROC in %), then timings.

    Args:
        methods: method name -> result of :func:`evaluate`.
        timings: phase -> seconds.

    Example:
        >>> print(format_table({"server": {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_auroc": 0.75}}))
        method  accuracy  balanced_acc  macro_auroc
        server     50.00         50.00        75.00
    """
    rows = [("method", "accuracy", "balanced_acc", "macro_auroc")]
    for name, r in methods.items():
        rows.append((name, _fmt(r.get("accuracy")), _fmt(r.get("balanced_accuracy")), _fmt(r.get("macro_auroc"))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for name, r in methods.items():
        missing = r.get("missing_classes") or []
        if missing:
            lines.append(f"{name}: class(es) {missing} held by no client: not synthesised, per-class accuracy missing")
    if timings:
        lines.append("wall time: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: NaN is written as null
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    return obj


def write_report(report: Mapping[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write ``report.json`` (strict JSON; NaN as ``null``) into ``run_dir``; its path.

    Args:
        report: the report dict.
        run_dir: the run directory (created if needed).

    Example:
        >>> import tempfile
        >>> write_report({"a": float("nan")}, tempfile.mkdtemp()).read_text()
        '{\\n "a": null\\n}'
    """
    text = json.dumps(_jsonable(report), indent=1, allow_nan=False)
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    out = path / "report.json"
    out.write_text(text)
    return out


def log_report(
    logger: Any, methods: Mapping[str, Mapping[str, Any]], timings: Mapping[str, float] | None = None,
    step: int = 0, prefix: str = "federated",
) -> None:
    """Log each method's figures as TensorBoard scalars (``federated/<method>/<metric>``) and the table as text.

    Args:
        logger: a Lightning ``TensorBoardLogger`` (or anything whose ``experiment`` has ``add_scalar``/``add_text``).
        methods: method name -> result of :func:`evaluate`.
        timings: phase -> seconds (``federated/time/<phase>``).
        step: global step of the scalars.
        prefix: tag prefix.

    Example:
        >>> log_report(None, {})  # no logger: nothing happens
    """
    experiment = getattr(logger, "experiment", None)
    if experiment is None:
        return
    for name, r in methods.items():
        for key in ("accuracy", "balanced_accuracy", "macro_auroc"):
            v = r.get(key)
            if isinstance(v, float) and math.isfinite(v):
                experiment.add_scalar(f"{prefix}/{name}/{key}", v, step)
        per: Sequence[float] = r.get("per_class_accuracy") or []
        for c, v in enumerate(per):
            if isinstance(v, float) and math.isfinite(v):
                experiment.add_scalar(f"{prefix}/{name}/class_{c}/accuracy", v, step)
    for phase, seconds in (timings or {}).items():
        experiment.add_scalar(f"{prefix}/time/{phase}", seconds, step)
    table = format_table(methods, timings)
    experiment.add_text(f"{prefix}/report", "```\n" + table + "\n```", step)
    if hasattr(experiment, "flush"):
        experiment.flush()
