import numpy as np
import pytest

from lit_repr.checks import check_bool, check_choice, check_int, check_number


def test_check_int_accepts_integers_and_refuses_bools_floats_and_small_values():
    assert check_int("n", 3) == 3 and check_int("n", np.int64(3)) == 3 and check_int("n", 0, low=0) == 0
    for bad in (True, 2.0, "2", 0):
        with pytest.raises(ValueError, match=f"^n must be a positive int, got {bad!r}$"):
            check_int("n", bad)
    with pytest.raises(ValueError, match=r"^n must be an int >= 2, got 1$"):
        check_int("n", 1, low=2)


@pytest.mark.parametrize(
    "kw, value, message",
    [
        ({"low": 0, "low_open": True}, 0.0, "x must be a finite number > 0, got 0.0"),
        ({"low": 0}, -1, "x must be a finite number >= 0, got -1"),
        ({"high": 1, "high_open": True}, 1, "x must be a finite number < 1, got 1"),
        ({"low": 0, "high": 1, "high_open": True}, 1.0, r"x must be a finite number in \[0, 1\), got 1.0"),
        ({"low": 0, "high": 1, "low_open": True}, 0, r"x must be a finite number in \(0, 1\], got 0"),
        ({}, float("inf"), "x must be a finite number, got inf"),
        ({}, float("nan"), "x must be a finite number, got nan"),
        ({}, True, "x must be a finite number, got True"),
        ({}, "1", "x must be a finite number, got '1'"),
        ({"low": 1, "why": " (a ratio)"}, 0.5, r"x must be a finite number >= 1 \(a ratio\), got 0.5"),
    ],
)
def test_check_number_names_argument_value_and_interval(kw, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_number("x", value, **kw)


def test_check_number_returns_float_at_the_closed_bounds():
    assert check_number("x", 0, low=0, high=1) == 0.0 and check_number("x", np.float32(1), low=0, high=1) == 1.0


def test_check_choice_and_check_bool():
    assert check_choice("size", 64, (28, 64)) == 64
    with pytest.raises(ValueError, match=r"^size must be one of \(28, 64\), got 32$"):
        check_choice("size", 32, (28, 64))
    with pytest.raises(ValueError, match="got True"):
        check_choice("n", True, (1, 2))  # True == 1, but a flag is not a choice of number
    assert check_bool("flag", np.bool_(True)) is True
    for bad in (0, 1, "false", None):
        with pytest.raises(ValueError, match=f"^flag must be True or False, got {bad!r}$"):
            check_bool("flag", bad)
