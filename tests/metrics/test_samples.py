import pytest
import torch

from lit_repr.metrics.samples import SampleBuffer


def test_keeps_everything_in_order_when_it_fits():
    buf = SampleBuffer(max_samples=100)
    x = torch.randn(60, 3)
    for xb, yb in zip(x.split(7), torch.arange(60).split(7)):
        buf.update(xb, yb)
    fx, fy = buf.compute()
    assert torch.equal(fx, x) and torch.equal(fy, torch.arange(60))


def test_bounded_uniform_and_aligned():
    buf = SampleBuffer(max_samples=500, seed=1)
    for chunk in torch.arange(20_000).split(333):
        buf.update(chunk[:, None].float(), chunk)
        assert buf.num_kept <= 2 * 500 + 333  # memory stays bounded while streaming
    x, y = buf.compute()
    assert x.shape == (500, 1) and torch.equal(x[:, 0].long(), y)
    assert len(set(y.tolist())) == 500  # without replacement
    assert 8_000 < float(y.float().mean()) < 12_000  # uniform over the stream, not the first rows
    assert bool((y.diff() > 0).all())  # arrival order kept


def test_reset_and_errors():
    buf = SampleBuffer(max_samples=5, num_tensors=1)
    buf.update(torch.ones(3, 2))
    buf.reset()
    assert buf.num_kept == 0
    with pytest.raises(ValueError, match="1 tensors per update"):
        buf.update(torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="same number of rows"):
        SampleBuffer(num_tensors=2).update(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="max_samples"):
        SampleBuffer(max_samples=0)


def test_state_dict_round_trip():
    a = SampleBuffer(max_samples=10)
    a.persistent(True)
    a.update(torch.randn(4, 2), torch.arange(4))
    b = SampleBuffer(max_samples=10)
    b.persistent(True)
    b.load_state_dict(a.state_dict())
    for u, v in zip(a.compute(), b.compute()):
        assert torch.equal(u, v)
