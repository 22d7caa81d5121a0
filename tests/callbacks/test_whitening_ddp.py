"""Whitening under DDP: the moments are summed over processes, so every process installs the same whitening."""

from pathlib import Path

import torch

from lit_repr.models import PCAWhitening

SCRIPT = Path(__file__).with_name("ddp_whitening_script.py")


def test_every_process_installs_the_whitening_of_all_fitting_batches(run_ddp_script):
    saved = run_ddp_script(SCRIPT, 2)
    first, second = saved["ranks"]
    for k in ("mean", "eigenvalues", "eigenvectors"):
        assert torch.equal(first[k], second[k])
    assert first["identity_deviation"] == second["identity_deviation"] < 1e-5
    # the whitening of the union of both processes' fitting batches
    indices = first["indices"] + second["indices"]
    assert len(set(indices)) == 128
    ref = PCAWhitening.from_data(saved["x"][indices].double(), kind="zca", eps=1e-6)
    torch.testing.assert_close(first["mean"], ref.mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(first["eigenvalues"], ref.eigenvalues, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(first["eigenvectors"], ref.eigenvectors, rtol=1e-7, atol=1e-7)
