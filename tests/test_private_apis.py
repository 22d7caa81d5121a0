"""lit_repr reads two private names of its dependencies, each in one function; these tests fail loudly
if a new release moves them."""

import torch
from torch import nn

from lit_repr.features import detached_copy
from lit_repr.metrics.ridge import StreamingRidge, synced


def test_torchmetrics_is_synced_flag_exists_and_synced_works():
    m = StreamingRidge(2, 1)
    assert hasattr(m, "_is_synced"), "torchmetrics moved Metric._is_synced: update lit_repr.metrics.ridge.synced"
    m.update(torch.randn(5, 2), torch.randn(5, 1))
    with synced(m, None):
        assert float(m.n) == 5


def test_torch_forward_hook_dicts_exist_and_copies_drop_them():
    net = nn.Sequential(nn.Linear(2, 2))
    assert hasattr(net, "_forward_hooks") and hasattr(net, "_forward_pre_hooks"), (
        "torch moved Module._forward_hooks: update lit_repr.features.detached_copy"
    )
    seen = []
    net[0].register_forward_hook(lambda *a: seen.append(1))
    copy = detached_copy(net, None)
    copy(torch.randn(1, 2))
    assert seen == []
