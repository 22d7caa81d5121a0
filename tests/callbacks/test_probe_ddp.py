"""LinearProbe is exact under DDP: 2 CPU processes (gloo) give the probe and the scores of 1 process,
with ``strategy="ddp"`` and ``"ddp_spawn"`` and training and validation splits of odd size (1437 and 359
samples)."""

from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_probe_script.py")


def _same_scores(one, two):
    assert one["scores"] and set(one["scores"]) == set(two["scores"])
    for k, v in one["scores"].items():
        assert two["scores"][k] == pytest.approx(v, abs=1e-6, nan_ok=True), k  # (the 1-sample test split: NaN)


@pytest.mark.parametrize("mode", ["frozen", "online"])
def test_ddp_two_processes_equal_one(run_ddp_script, mode):
    one, two = run_ddp_script(SCRIPT, 1, mode), run_ddp_script(SCRIPT, 2, mode)
    for key in ("digit", "ink"):
        # the statistics of both processes are summed: same sample count, same probe
        # every training sample once: online, DistributedSampler pads the 1437 to 1438 and the duplicate is
        # dropped by its 'index'; frozen, the training split is sharded without padding
        assert one[key]["n"] == two[key]["n"] == 1437
        torch.testing.assert_close(one[key]["weight"], two[key]["weight"], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(one[key]["bias"], two[key]["bias"], rtol=1e-6, atol=1e-8)
    # frozen evaluation splits are sharded without padding; online, the duplicates Lightning's
    # DistributedSampler pads the 359 validation samples with are dropped by their 'index'
    _same_scores(one, two)
    assert not [w for w in two["warnings"] if "padding" in w]


def test_ddp_spawn_with_defaults(run_ddp_script):
    # everything a callback holds by default pickles (the forward function is no closure)
    one, two = run_ddp_script(SCRIPT, 1, "online"), run_ddp_script(SCRIPT, 2, "online", "ddp_spawn")
    _same_scores(one, two)


def test_online_ddp_without_index_warns_once(run_ddp_script):
    two = run_ddp_script(SCRIPT, 2, "online", "ddp", "tuples", 2)
    padding = sorted(w for w in two["warnings"] if "padding" in w or "pads" in w)
    assert len(padding) == 2, padding  # one per padded loader, not one per epoch
    assert "evaluation loader of 359 samples to 360" in padding[0] and "online scores include" in padding[0]
    assert "training loader of 1437 samples to 1438" in padding[1] and "fitting statistics include" in padding[1]
    assert all("mode='frozen'" in w for w in padding)
    assert "probe/backbone.0/digit/val/acc" in two["scores"]
