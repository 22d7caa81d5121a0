import pytest
import torch

from lit_repr.targets import check_finite, check_target_spec, get_target


def test_dict_tuple_callable():
    batch = {"x": torch.zeros(2, 3), "y": torch.tensor([1, 2])}
    assert get_target(batch, "y").tolist() == [1, 2]
    assert get_target((batch["x"], batch["y"]), 1).tolist() == [1, 2]
    assert get_target(batch, lambda b: b["y"] * 2).tolist() == [2, 4]


def test_missing_key_lists_keys():
    with pytest.raises(KeyError, match=r"latents.*keys \['x', 'y'\]"):
        get_target({"x": 1, "y": 2}, "latents")
    with pytest.raises(IndexError, match="out of range"):
        get_target((1, 2), 5)
    with pytest.raises(KeyError, match="position"):
        get_target({"x": 1}, 0)


def test_bad_spec_and_nan():
    with pytest.raises(ValueError, match="dict key"):
        check_target_spec(3.5)
    with pytest.raises(ValueError, match="non-finite"):
        check_finite(torch.tensor([1.0, float("nan")]), "features")
