import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lit_repr
from lit_repr.features import features, frozen_mode, preserved_rng


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))


def test_features_tensor_loader_and_dict_agree():
    net, x = _net(), torch.randn(23, 4)
    y = torch.arange(23)
    a = lit_repr.features(net, ["0", "3"], x, batch_size=5)
    b = features(net, "0", DataLoader(TensorDataset(x, y), batch_size=7))
    c = features(net, ["0"], {"x": x, "y": y}, batch_size=4)
    with torch.no_grad():
        ref = net[0](x)
    for out in (a, b, c):
        torch.testing.assert_close(out["0"], ref)
    assert a["3"].shape == (23, 2)


def test_features_leaves_module_rng_and_hooks_as_found():
    net, x = _net(), torch.randn(10, 4)
    net.train()
    torch.manual_seed(1)
    np.random.seed(1)
    expected = torch.rand(2), np.random.rand(2)
    torch.manual_seed(1)
    np.random.seed(1)
    loader = DataLoader(TensorDataset(x), batch_size=3, shuffle=True)
    out = features(net, "1", loader)  # dropout off in frozen mode: equal to the linear layer's output
    assert out["1"].shape == (10, 8)
    assert net.training and net[1].training
    assert all(not m._forward_hooks for m in net.modules())
    torch.testing.assert_close(torch.rand(2), expected[0])
    np.testing.assert_array_equal(np.random.rand(2), expected[1])


def test_features_errors():
    net = _net()
    with pytest.raises(ValueError, match="nearest|closest|did you mean|valid"):
        features(net, "nope", torch.randn(3, 4))
    with pytest.raises(ValueError, match="batch_size"):
        features(net, "0", torch.randn(3, 4), batch_size=0)
    with pytest.raises(ValueError, match="one common length"):
        features(net, "0", {"x": torch.randn(3, 4), "y": torch.zeros(2)})
    with pytest.raises(ValueError, match="no batches"):
        features(net, "0", [])


def test_frozen_mode_and_preserved_rng():
    net = _net()
    net.train()
    with frozen_mode(net):
        assert not net.training and not torch.is_grad_enabled()
    assert net[1].training
    torch.manual_seed(3)
    with preserved_rng():
        torch.rand(5)
    a = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(a, torch.rand(1))
