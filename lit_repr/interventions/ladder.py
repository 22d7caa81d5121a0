"""The evidence ladder: which rung of Pearl's ladder a result stands on, and how far a claim outruns it.

- Rung 1, **association**: observations of a model's representations (linear probes, identifiability
  and similarity metrics, SAE attributions) support claims that a site's activity *covaries* with
  something.
- Rung 2, **intervention**: edits (ablation, activation patching, steering) support claims about how
  an edit changes a behavioural metric *over a set of inputs*.
- Rung 3, **counterfactual**: claims about what would have happened for *a single input* need
  controlled supervision that neither observations nor population-level edits give.

Every lit_repr result carries its rung and the method that produced it: readout callbacks have
``rung`` and ``method`` class attributes (reflected in the rows of ``summary.json``), edits and
effect metrics are rung 2 and effects are returned as :class:`Evidence`. :func:`claim_gap` says how
many rungs a claim stands above its best evidence; :func:`report` writes the table.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TextIO

__all__ = ["Rung", "Evidence", "Claim", "claim_gap", "report", "format_report", "evidence_from_scores"]


class Rung(IntEnum):
    """The rungs of the ladder: 1 association, 2 intervention, 3 counterfactual.

    Args:
        value: the rung's number, ``1``, ``2`` or ``3``.

    Example:
        >>> Rung.INTERVENTION > Rung.ASSOCIATION, int(Rung.COUNTERFACTUAL)
        (True, 3)
    """

    ASSOCIATION = 1
    INTERVENTION = 2
    COUNTERFACTUAL = 3


def _check_rung(name: str, rung: Any) -> int:
    if isinstance(rung, bool) or not isinstance(rung, int) or rung not in (1, 2, 3):
        raise ValueError(f"{name} must be a rung of the ladder: 1 (association), 2 (intervention) or "
                         f"3 (counterfactual), got {rung!r}")
    return int(rung)


@dataclass
class Evidence:
    """One result with its rung and method: a probe's accuracy, an ablation's effect with its CI, ...

    Args:
        method: what produced it (``"linear probe"``, ``"zero ablation"``, ...).
        rung: 1 association, 2 intervention, 3 counterfactual.
        quantity: what was measured (``"acc"``, ``"loss_change"``, ...).
        value: the measured value.
        ci_low: lower end of its confidence interval, if any.
        ci_high: upper end of its confidence interval, if any.
        site: where in the model (a site name, or an intervention's label).
        n: number of inputs it was measured on, if known.
        confidence: the confidence level of the interval.

    Example:
        >>> e = Evidence("zero ablation", 2, "loss_change", 1.25, 1.0, 1.5, site="backbone.0")
        >>> e.rung, e.effect_text()
        (2, '1.250 [1.000, 1.500]')
    """

    method: str
    rung: int
    quantity: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    site: str | None = None
    n: int | None = None
    confidence: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_rung("rung", self.rung)
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a non-empty string naming what produced the result, got {self.method!r}")

    def effect_text(self, digits: int = 3) -> str:
        """``value [ci_low, ci_high]`` (or the value alone)."""
        v = f"{self.value:.{digits}f}"
        if self.ci_low is None or self.ci_high is None or math.isnan(self.ci_low):
            return v
        return f"{v} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what JSON summaries hold)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _rung_of(item: Any) -> int:
    if isinstance(item, (int, Rung)) and not isinstance(item, bool):
        return _check_rung("an evidence rung", int(item))
    rung = getattr(item, "rung", None)
    if rung is None:
        raise ValueError(f"evidence must be Evidence objects, rungs (1-3) or objects with a rung attribute, got "
                         f"{type(item).__name__}")
    return _check_rung(f"the rung of {type(item).__name__}", rung)


def claim_gap(claim_rung: int, evidence: Iterable[Any]) -> int:
    """How many rungs a claim stands above its best evidence: ``claim rung - best evidence rung``, at least 0.

    Args:
        claim_rung: the rung the claim needs (1 association, 2 intervention, 3 counterfactual).
        evidence: :class:`Evidence` objects, rungs, or anything with a ``rung`` attribute (an edit, a
            readout callback). No evidence counts as rung 0.

    Example:
        >>> probe = Evidence("linear probe", 1, "acc", 0.95)
        >>> claim_gap(2, [probe]), claim_gap(1, [probe]), claim_gap(3, [])
        (1, 0, 3)
    """
    claim_rung = _check_rung("claim_rung", claim_rung)
    if isinstance(evidence, (str, bytes)) or not isinstance(evidence, Iterable):
        evidence = [evidence]
    best = max((_rung_of(e) for e in evidence), default=0)
    return max(0, claim_rung - best)


@dataclass(frozen=True)
class Claim:
    """A stated claim, the rung it needs and the evidence offered for it (``gap``: how far it outruns it).

    Args:
        text: the claim in words.
        rung: the rung the claim needs.
        evidence: the results offered for it.

    Example:
        >>> c = Claim("backbone.0 encodes the digit", 1, [Evidence("linear probe", 1, "acc", 0.9)])
        >>> c.gap
        0
    """

    text: str
    rung: int
    evidence: Sequence[Evidence] = ()

    def __post_init__(self) -> None:
        _check_rung("rung", self.rung)
        if not isinstance(self.text, str) or not self.text:
            raise ValueError(f"text must state the claim, got {self.text!r}")
        object.__setattr__(self, "evidence", tuple(self.evidence))
        for e in self.evidence:
            if not isinstance(e, Evidence):
                raise ValueError(f"evidence must be Evidence objects, got {type(e).__name__}")

    @property
    def gap(self) -> int:
        """:func:`claim_gap` of the claim and its evidence."""
        return claim_gap(self.rung, self.evidence)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_report(claims: Sequence[Claim], title: str = "Evidence ladder") -> str:
    """The markdown table of :func:`report`: one row per (claim, evidence), a claim without evidence on one row.

    Args:
        claims: the claims.
        title: a heading line (``""`` for none).

    Example:
        >>> print(format_report([Claim("x is used", 2, [Evidence("linear probe", 1, "acc", 0.9, site="x")])],
        ...                     title=""))
        | claim | claim rung | method | rung | site | quantity | effect ± CI | gap |
        |---|---|---|---|---|---|---|---|
        | x is used | 2 | linear probe | 1 | x | acc | 0.900 | **1** |
        <BLANKLINE>
        Rungs: 1 association, 2 intervention, 3 counterfactual; gap = claim rung - best evidence rung, floored at 0.
    """
    if isinstance(claims, Claim):
        claims = [claims]
    for c in claims:
        if not isinstance(c, Claim):
            raise ValueError(f"claims must be Claim objects, got {type(c).__name__}")
    levels = {e.confidence for c in claims for e in c.evidence if e.confidence is not None}
    ci = f"{round(100 * levels.pop())}% CI" if len(levels) == 1 else "CI"
    lines = [f"### {title}", ""] if title else []
    lines.append(f"| claim | claim rung | method | rung | site | quantity | effect ± {ci} | gap |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for c in claims:
        gap = c.gap
        gap_text = f"**{gap}**" if gap else "0"
        rows = c.evidence or [None]
        for e in rows:
            if e is None:
                cells = [c.text, c.rung, "(none)", "-", "-", "-", "-", gap_text]
            else:
                cells = [c.text, c.rung, e.method, e.rung, e.site or "-", e.quantity, e.effect_text(), gap_text]
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    lines.append("")
    lines.append("Rungs: 1 association, 2 intervention, 3 counterfactual; gap = claim rung - best evidence rung, "
                 "floored at 0.")
    return "\n".join(lines)


def report(claims: Sequence[Claim], stream: TextIO | None = None, logger: Any = None, tag: str = "evidence_ladder",
           step: int = 0, title: str = "Evidence ladder") -> str:
    """Write the ladder table (claim, method, rung, effect ± CI, gap) as markdown to the console and TensorBoard.

    Args:
        claims: the claims with their evidence.
        stream: where to print (default ``sys.stdout``; ``False`` prints nothing).
        logger: a Lightning ``TensorBoardLogger``, a ``Trainer`` (its TensorBoard loggers) or a
            ``SummaryWriter``; the table goes to the text tab under ``tag``.
        tag: the TensorBoard text tag.
        step: the TensorBoard global step.
        title: the table's heading.

    Returns:
        The markdown text.

    Example:
        >>> text = report([Claim("x encodes y", 1, [Evidence("linear probe", 1, "acc", 0.9)])], stream=False)
        >>> text.splitlines()[2]
        '| claim | claim rung | method | rung | site | quantity | effect ± CI | gap |'
    """
    text = format_report(claims, title=title)
    if stream is not False:
        print(text, file=stream or sys.stdout, flush=True)
    for writer in _writers(logger):
        writer.add_text(tag, text, global_step=step)
    return text


def _writers(logger: Any) -> list[Any]:
    if logger is None:
        return []
    if hasattr(logger, "add_text"):
        return [logger]
    if hasattr(logger, "loggers"):  # a Trainer
        if not getattr(logger, "is_global_zero", True):
            return []
        return [w for lg in logger.loggers for w in _writers(lg)]
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_text"):
        return [experiment]
    raise ValueError(f"logger must be a TensorBoardLogger, a Trainer or a SummaryWriter, got {type(logger).__name__}")


def evidence_from_scores(scores: Mapping[str, float], callbacks: Iterable[Any] = (),
                         quantities: Sequence[str] | None = None) -> list[Evidence]:
    """:class:`Evidence` of logged readouts ``<callback>/<site>/<target>/<split>/<quantity>``.

    The rung and method come from the callback of that name (its ``rung`` and ``method`` attributes);
    ``<quantity>_ci_low``/``_ci_high`` entries become the interval of ``<quantity>``.

    Args:
        scores: ``{tag: value}`` (a callback's ``scores``).
        callbacks: the callbacks that logged them.
        quantities: keep only these quantities (default all).

    Example:
        >>> from lit_repr.callbacks import LinearProbe
        >>> ev = evidence_from_scores({"probe/backbone.0/digit/val/acc": 0.9}, [LinearProbe("backbone.0")])
        >>> ev[0].method, ev[0].rung, ev[0].site
        ('linear probe', 1, 'backbone.0')
    """
    from lit_repr.callbacks.summary import parse_tag

    by_name = {getattr(cb, "name", None): cb for cb in callbacks}
    out = []
    for tag, value in scores.items():
        p = parse_tag(tag)
        if p is None or p["quantity"].endswith(("_ci_low", "_ci_high")):
            continue
        if quantities is not None and p["quantity"] not in quantities:
            continue
        cb = by_name.get(p["callback"])
        rung, method = getattr(cb, "rung", None), getattr(cb, "method", None)
        if rung is None or method is None:
            continue
        stem = tag
        lo, hi = scores.get(stem + "_ci_low"), scores.get(stem + "_ci_high")
        out.append(Evidence(method=method, rung=int(rung), quantity=p["quantity"], value=float(value),
                            ci_low=None if lo is None else float(lo), ci_high=None if hi is None else float(hi),
                            site=p["site"], confidence=getattr(cb, "confidence", None) if lo is not None else None))
    return out
