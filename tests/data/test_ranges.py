import numpy as np
import pytest

from lit_repr.data.ranges import check_ood_range, check_range, ranges_overlap


def test_check_range_accepts_pairs():
    assert check_range("mu", (1, 2)) == (1.0, 2.0)
    assert check_range("mu", [0.5, 0.5]) == (0.5, 0.5)  # one fixed value
    assert check_range("mu", np.array([0.1, 0.2])) == (0.1, 0.2)
    assert check_range("e", (0.0, 0.99), low=0, high=1, high_open=True) == (0.0, 0.99)


@pytest.mark.parametrize(
    "value,kw",
    [((2, 1), {}), ((1,), {}), ((1, 2, 3), {}), ("ab", {}), (None, {}), ((1, float("inf")), {}), ((True, 2), {}),
     ((0.0, 1.0), {"low": 0, "low_open": True}), ((0.5, 1.0), {"high": 1, "high_open": True}),
     ((-1.0, 1.0), {"low": 0}), (np.zeros((2, 2)), {})],
)
def test_check_range_refuses(value, kw):
    with pytest.raises(ValueError, match=r"^x must be a \(low, high\) range with low <= high"):
        check_range("x", value, **kw)


def test_overlap_rules():
    assert not ranges_overlap((0, 1), (1, 2))  # sharing an end point only
    assert ranges_overlap((0, 1), (0.999, 2))
    assert ranges_overlap((0, 2), (0.5, 0.5)) and ranges_overlap((1, 1), (1, 1))
    assert ranges_overlap((0.5, 0.5), (0.5, 1.0))  # a single value on the other's end
    assert not ranges_overlap((0, 1), (2, 3)) and not ranges_overlap((2, 3), (0, 1))


def test_check_ood_range_raises_or_warns():
    check_ood_range("ood_mu", (2.0, 3.0), "mu", (0.5, 2.0), allow_overlap=False)
    with pytest.raises(ValueError, match=r"ood_mu=\(1.0, 3.0\) overlaps the training range mu=\(0.5, 2.0\)"):
        check_ood_range("ood_mu", (1.0, 3.0), "mu", (0.5, 2.0), allow_overlap=False)
    with pytest.warns(UserWarning, match="allowed by allow_overlap=True"):
        check_ood_range("ood_mu", (1.0, 3.0), "mu", (0.5, 2.0), allow_overlap=True)
