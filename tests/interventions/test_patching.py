"""Patching sweeps: a linear read-out of patched positions adds up to the whole clean-corrupted difference."""

import pytest
import torch
from torch import nn

from lit_repr.interventions import PatchingResult, patching_figure, patching_sweep


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.site = nn.Identity()
        self.head = nn.Linear(4 * 3, 1)

    def forward(self, x):
        return self.head(self.site(x).flatten(1))


def test_positions_of_a_linear_readout_add_up_and_the_whole_site_restores():
    model = Tokens()
    clean, corrupted = torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    r = patching_sweep(model, clean, corrupted, ["site", "head"], lambda out: out[:, 0])
    assert r.sites == ["site", "head"] and r.index == [0, 1, 2, 3]
    assert float(r.recovered[0].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(r.recovered[1, 0]) == pytest.approx(1.0)  # the head's output has one unit
    assert r.clean == pytest.approx(float(model(clean)[:, 0].detach().mean()))
    assert [e.rung for e in r.evidence()] == [2] * 8


def test_units_axis_and_the_heat_map(tmp_path):
    model = Tokens()
    r = patching_sweep(model, torch.randn(2, 4, 3), torch.randn(2, 4, 3), "site", lambda out: out[:, 0],
                       axis="unit")
    assert r.patched.shape == (1, 3)
    fig = patching_figure(r, "test")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "unit" and [t.get_text() for t in ax.get_yticklabels()] == ["site"]
    fig.savefig(tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 0


def test_bad_input():
    model = Tokens()
    with pytest.raises(ValueError, match="axis must be"):
        patching_sweep(model, torch.randn(1, 4, 3), torch.randn(1, 4, 3), "site", lambda o: o[:, 0], axis="x")
    with pytest.raises(ValueError, match=r"score_fn must return a \(batch,\) tensor"):
        patching_sweep(model, torch.randn(1, 4, 3), torch.randn(1, 4, 3), "site", lambda o: o)
    with pytest.raises(ValueError, match="matches no submodule"):
        patching_sweep(model, torch.randn(1, 4, 3), torch.randn(1, 4, 3), "sight", lambda o: o[:, 0])
    r = PatchingResult(["a"], [0], "unit", torch.zeros(1, 1), clean=1.0, corrupted=1.0)
    assert torch.isnan(r.recovered).all()  # no difference to restore
