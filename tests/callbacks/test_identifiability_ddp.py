"""IdentifiabilityMetrics and RepresentationSimilarity are exact under DDP (2 CPU processes, gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_identifiability_script.py")


def _run(tmp_path, devices):
    out = tmp_path / f"scores_{devices}.pt"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(devices)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=False)


def test_two_processes_equal_one(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    assert set(one) == set(two)
    assert "ident/backbone/latents/val/linear_r2" in one and "similarity/backbone/val/cka" in one
    local_one, local_two = one.pop("local"), two.pop("local")
    for k, v in one.items():
        assert two[k] == pytest.approx(v, abs=1e-6), k
    assert local_two == pytest.approx(local_one, abs=1e-9)  # rank 0 alone, no doubled statistics
