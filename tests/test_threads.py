import pytest
import torch

from lit_repr.threads import num_threads


def test_num_threads_restores_the_count_also_on_errors():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with num_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with num_threads(None):
        assert torch.get_num_threads() == before


def test_num_threads_rejects_a_bad_count():
    with pytest.raises(ValueError, match="count must be a positive int or None"):
        with num_threads(0):
            pass
