"""Argument checks for ``__init__`` methods: a ``ValueError`` that names the argument, the value and what is allowed.

Example:
    >>> check_int("num_train", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: num_train must be a positive int, got 0
    >>> check_number("label_smoothing", 0.1, low=0, high=1, high_open=True)
    0.1
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_int", "check_number", "check_choice", "check_bool", "describe_bounds"]


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= low``; ``ValueError`` otherwise.

    ``True``/``False`` are refused (they are ints to Python, never a count here); numpy integers
    are accepted.

    Example:
        >>> check_int("num_val", 0, low=0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        allowed = "a positive int" if low == 1 else f"an int >= {low}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> float:
    """``value`` as a ``float`` if it is a finite number within the bounds; ``ValueError`` otherwise.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        low: lower bound (``None``: none).
        high: upper bound (``None``: none).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.
        why: appended to the message (e.g. ``" so the LeakyReLU is invertible"``).

    Example:
        >>> check_number("lr", float("nan"), low=0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number > 0, got nan
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        allowed = describe_bounds(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{allowed}{why}, got {value!r}")
    return float(value)


def describe_bounds(
    low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> str:
    """The bounds of an allowed interval in words, for error messages (empty without bounds).

    Args:
        low: smallest allowed value (``None``: none).
        high: largest allowed value (``None``: none).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Example:
        >>> describe_bounds(0, 1, high_open=True), describe_bounds(low=0, low_open=True), describe_bounds()
        (' in [0, 1)', ' > 0', '')
    """
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``allowed``; ``ValueError`` listing them otherwise.

    Example:
        >>> check_choice("layout", "flat", ("flat", "image"))
        'flat'
    """
    if value not in allowed or (isinstance(value, bool) and not any(a is value for a in allowed)):
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; ``ValueError`` otherwise (``0``, ``"no"``, ``None`` included).

    Example:
        >>> check_bool("drop_last", "false")
        Traceback (most recent call last):
        ...
        ValueError: drop_last must be True or False, got 'false'
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)
