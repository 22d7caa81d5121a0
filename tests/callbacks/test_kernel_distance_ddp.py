"""KernelDistance under DDP: every process computes the same probe, kernel and history, so no collective is needed."""

from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_kernel_distance_script.py")


def test_every_process_logs_the_same_values(run_ddp_script):
    ranks = run_ddp_script(SCRIPT, 2)
    assert len(ranks) == 2
    first, second = ranks
    assert torch.equal(first["probe"], second["probe"]) and first["probe"].shape[0] == 24
    assert torch.equal(first["kernel0"], second["kernel0"])
    assert first["history"] == second["history"]
    assert first["history"]["step"] == [0, 3, 4, 6, 8] and first["history"]["ntk/kernel_distance"][-1] > 0
