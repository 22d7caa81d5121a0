"""Parameter ranges of simulated data sets: checks of ``(low, high)`` pairs and of out-of-distribution shifts.

A simulator draws each physical parameter uniformly from a ``(low, high)`` range; an out-of-distribution
(OOD) split draws it from another range that must not overlap the training one. Two closed ranges
overlap when they share more than a single end point, or when one is a single value lying inside
the other.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from lit_repr.checks import check_number, describe_bounds

__all__ = ["check_range", "ranges_overlap", "check_ood_range", "check_ood_ranges"]


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of floats with ``low <= high``, both within the bounds.

    A range with ``low == high`` is one fixed value. Anything else (not two finite numbers, an
    inverted range, an end outside the bounds) raises ``ValueError`` naming the argument, the value
    and what is allowed.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        low: smallest allowed end (``None``: none).
        high: largest allowed end (``None``: none).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Example:
        >>> check_range("mu", [0.5, 2])
        (0.5, 2.0)
        >>> check_range("eccentricity", (0.5, 0.2), low=0, high=1, high_open=True)
        Traceback (most recent call last):
        ...
        ValueError: eccentricity must be a (low, high) range with low <= high, both in [0, 1), got (0.5, 0.2)
    """
    bounds = describe_bounds(low, high, low_open, high_open)
    message = f"{name} must be a (low, high) range with low <= high{', both' + bounds if bounds else ''}, got {value!r}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise ValueError(message)
    ends = []
    for v in list(value):
        try:
            ends.append(check_number(name, v, low, high, low_open, high_open))
        except ValueError:
            raise ValueError(message) from None
    if ends[0] > ends[1]:
        raise ValueError(message)
    return ends[0], ends[1]


def ranges_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the closed ranges ``a`` and ``b`` overlap: they share more than an end point, or one is a
    single value inside the other.

    Example:
        >>> ranges_overlap((0, 1), (1, 2)), ranges_overlap((0, 1), (0.5, 2)), ranges_overlap((1, 1), (0, 1))
        (False, True, True)
    """
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    if lo < hi:
        return True
    return lo == hi and (a[0] == a[1] or b[0] == b[1])


def check_ood_range(
    name: str, ood: tuple[float, float], train_name: str, train: tuple[float, float], allow_overlap: bool,
    stacklevel: int = 3,
) -> None:
    """Raise ``ValueError`` if the OOD range ``ood`` overlaps the training range ``train``; with
    ``allow_overlap`` warn instead.

    Example:
        >>> check_ood_range("ood_mu", (2.0, 3.0), "mu", (0.5, 2.0), allow_overlap=False)
        >>> check_ood_range("ood_mu", (1.0, 3.0), "mu", (0.5, 2.0), allow_overlap=False)
        Traceback (most recent call last):
        ...
        ValueError: ood_mu=(1.0, 3.0) overlaps the training range mu=(0.5, 2.0): ...
    """
    if not ranges_overlap(ood, train):
        return
    message = (
        f"{name}={ood} overlaps the training range {train_name}={train}: the 'ood' split would not be "
        f"out of distribution. Choose {name} entirely below {train[0]:g} or above {train[1]:g}, or pass "
        f"allow_overlap=True to accept the overlap"
    )
    if not allow_overlap:
        raise ValueError(message)
    warnings.warn(message.split(". Choose")[0] + " (allowed by allow_overlap=True)", UserWarning,
                  stacklevel=stacklevel)


def check_ood_ranges(
    ranges: dict[str, tuple[Any, str, tuple[float, float], dict[str, Any]]], allow_overlap: bool, num_ood: int
) -> dict[str, tuple[float, float] | None]:
    """The OOD ranges of a simulator, each checked (:func:`check_range`) and against its training range
    (:func:`check_ood_range`); ``None`` stays ``None`` (that parameter keeps its training range).

    Args:
        ranges: ``{ood name: (value, training name, training range, bounds)}``, ``bounds`` the keyword
            arguments of :func:`check_range`.
        allow_overlap: warn instead of raising on an overlap.
        num_ood: size of the OOD split: with ``num_ood > 0`` at least one range must be given.

    Example:
        >>> check_ood_ranges({"ood_mu": ((2.5, 4.0), "mu", (0.5, 2.0), {"low": 0})}, False, num_ood=8)
        {'ood_mu': (2.5, 4.0)}
        >>> check_ood_ranges({"ood_mu": (None, "mu", (0.5, 2.0), {}), "ood_r": (None, "r", (1, 2), {})}, False, 8)
        Traceback (most recent call last):
        ...
        ValueError: ood_mu and ood_r are both None: the 'ood' split would be in distribution; ...
    """
    ood: dict[str, tuple[float, float] | None] = {}
    for name, (value, train_name, train, bounds) in ranges.items():
        ood[name] = None if value is None else check_range(name, value, **bounds)
        if ood[name] is not None:
            check_ood_range(name, ood[name], train_name, train, allow_overlap, stacklevel=4)
    if num_ood > 0 and all(v is None for v in ood.values()):
        names = list(ood)
        listed = (
            f"{names[0]} is" if len(names) == 1
            else f"{names[0]} and {names[1]} are both" if len(names) == 2
            else f"{', '.join(names[:-1])} and {names[-1]} are all"
        )
        raise ValueError(
            f"{listed} None: the 'ood' split would be in distribution; give at least one of them a range outside "
            f"training, or num_ood=0"
        )
    return ood
