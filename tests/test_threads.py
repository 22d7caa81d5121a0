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


def test_blas_threads_sets_and_restores_scipys_blas_threads_also_on_errors():
    from threadpoolctl import threadpool_info

    from lit_repr.threads import blas_threads

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = counts()
    with pytest.raises(RuntimeError, match="boom"):
        with blas_threads(1):
            assert set(counts()) == {1}
            raise RuntimeError("boom")
    assert counts() == before
    with blas_threads(None):
        assert counts() == before
    with pytest.raises(ValueError, match="count must be a positive int or None"):
        with blas_threads(0):
            pass
