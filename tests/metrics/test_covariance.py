import numpy as np
import pytest
import torch

from lit_repr.metrics import CovarianceMoments


def _data(n=300, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64) + 3


def test_matches_numpy():
    x = _data()
    m = CovarianceMoments(5)
    m.update(x)
    mean, cov = m.compute()
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy(), rowvar=False, bias=True), rtol=1e-10, atol=1e-10)


def test_streaming_equals_one_batch():
    x = _data()
    one, many = CovarianceMoments(5), CovarianceMoments(5)
    one.update(x)
    for chunk in x.split(37):
        many.update(chunk)
    for a, b in zip(one.compute(), many.compute()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert many.sum_xxT.dtype == torch.float64


def test_states_combine_like_processes():
    # merge_state applies each state's dist_reduce_fx, as a DDP sync does
    x = _data()
    a, b, whole = CovarianceMoments(5), CovarianceMoments(5), CovarianceMoments(5)
    a.update(x[:100])
    b.update(x[100:])
    whole.update(x)
    a.merge_state(b)
    for got, want in zip(a.compute(), whole.compute()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_errors_leave_state_unchanged():
    m = CovarianceMoments(3)
    m.update(torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.ones(2, 4))
    bad = torch.ones(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        m.update(bad)
    assert float(m.n) == 2 and torch.equal(m.compute()[0], torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_features"):
        CovarianceMoments(0)
    with pytest.raises(ValueError, match="no samples"), pytest.warns(UserWarning, match="before the ``update``"):
        CovarianceMoments(2).compute()


@pytest.mark.parametrize("offset", [1e4, 1e5, 1e6, 1e7, 1e8])
def test_covariance_unchanged_by_an_offset(grid_features, shifted, offset):
    h, _ = grid_features(500, 6, offset)
    ref, got = CovarianceMoments(6), CovarianceMoments(6)
    for hb in h.split(64):
        ref.update(hb.float())
        got.update(shifted(hb, offset))
    (m0, c0), (m1, c1) = ref.compute(), got.compute()
    scale = float(c0.abs().max())
    torch.testing.assert_close(c1, c0, rtol=1e-9, atol=1e-9 * scale)
    torch.testing.assert_close(m1 - offset, m0, rtol=0, atol=1e-6 * scale**0.5)
    torch.testing.assert_close(c0, torch.from_numpy(np.cov(h.numpy().T, bias=True)), rtol=1e-9, atol=1e-9 * scale)
