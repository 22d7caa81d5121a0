"""lit_repr reads a few private names of its dependencies, each in one place; these tests fail loudly
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


def test_torchmetrics_sync_and_merge_hooks_exist_for_shifted_moments():
    """ShiftedMoments overrides Metric._sync_dist and Metric._reduce_states and reads Metric._defaults."""
    import inspect

    from torchmetrics import Metric

    from lit_repr.metrics.moments import CentredR2Score

    where = "update lit_repr.metrics.moments.ShiftedMoments"
    assert list(inspect.signature(Metric._sync_dist).parameters) == ["self", "dist_sync_fn", "process_group"], where
    assert list(inspect.signature(Metric._reduce_states).parameters) == ["self", "incoming_state"], where
    a, b = CentredR2Score(), CentredR2Score()
    assert set(a._defaults) == {"n", "target_ref", "sum_target", "sq_target", "sse"}, where
    a.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]))
    b.update(torch.tensor([5.0]), torch.tensor([4.0]))
    seen = []
    b._sync_dist = lambda *args, **kw: seen.append("sync")  # sync() must go through _sync_dist
    b.sync(distributed_available=lambda: True)
    assert seen == ["sync"], where
    a.merge_state(CentredR2Score())  # merge_state must go through _reduce_states: an empty state changes nothing
    assert float(a.n) == 2 and float(a.target_ref) == 2.0, where


def test_lightning_logger_connector_logs_metrics_for_log_scores():
    """lit_repr.callbacks.base.log_scores logs epoch-end scores through Trainer._logger_connector.log_metrics."""
    import inspect

    import lightning.pytorch as pl

    where = "update lit_repr.callbacks.base.log_scores"
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    connector = trainer._logger_connector
    assert list(inspect.signature(connector.log_metrics).parameters) == ["metrics", "step"], where
    assert trainer.callback_metrics is trainer.callback_metrics, where  # the dict itself, updated in place
