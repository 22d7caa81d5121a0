"""LinearProbe is exact under DDP: 2 CPU processes (gloo) give the probe of 1 process."""

from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_probe_script.py")


@pytest.mark.parametrize("mode", ["frozen", "online"])
def test_ddp_two_processes_equal_one(run_ddp_script, mode):
    one, two = run_ddp_script(SCRIPT, 1, mode), run_ddp_script(SCRIPT, 2, mode)
    for key in ("digit", "ink"):
        # the statistics of both processes are summed: same sample count, same probe
        assert one[key]["n"] == 1438 if mode == "online" else True
        torch.testing.assert_close(one[key]["weight"], two[key]["weight"], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(one[key]["bias"], two[key]["bias"], rtol=1e-6, atol=1e-8)
    if mode == "frozen":  # frozen evaluation splits are sharded without padding: identical scores
        for k, v in one["scores"].items():
            assert two["scores"][k] == pytest.approx(v, abs=1e-6), k
