"""lit_repr.phyip: scores against scipy, the adaptation-based evaluations, the table and the figure."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader

from lit_repr.phyip import (
    METHODS,
    LatentRegressor,
    fine_tune_scores,
    format_table,
    mlp_probe_scores,
    regression_scores,
    rho_vs_loss_figure,
)


def test_pearson_and_r2_match_scipy_on_a_known_case():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(200, 3, generator=g)
    pred = true * torch.tensor([1.0, -0.5, 0.0]) + 0.7 * torch.randn(200, 3, generator=g)
    s = regression_scores(pred, true, ["a", "b", "c"])
    for i, n in enumerate("abc"):
        p, t = pred[:, i].double().numpy(), true[:, i].double().numpy()
        assert s[n]["pearson"] == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-10)
        r2 = 1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()
        assert s[n]["r2"] == pytest.approx(r2, abs=1e-10)
    assert s["b"]["pearson"] < -0.3 and s["c"]["r2"] < 0  # anti-correlated; worse than the mean


def test_scores_of_exact_and_affine_predictions():
    t = torch.linspace(0, 1, 10)
    assert regression_scores(t, t) == {"0": {"pearson": pytest.approx(1.0), "r2": pytest.approx(1.0)}}
    s = regression_scores(3 * t + 2, t)["0"]
    assert s["pearson"] == pytest.approx(1.0) and s["r2"] < 0  # correlated but not on the scale: R2 says so


def test_undefined_scores_are_nan():
    t = torch.stack([torch.linspace(0, 1, 5), torch.ones(5)], 1)
    pred = torch.stack([torch.ones(5), torch.linspace(0, 1, 5)], 1)
    s = regression_scores(pred, t, ["x", "const"])
    assert math.isnan(s["x"]["pearson"]) and math.isnan(s["const"]["pearson"]) and math.isnan(s["const"]["r2"])


@pytest.mark.parametrize(
    "pred,target,names,match",
    [
        (torch.zeros(4, 2), torch.zeros(4, 3), None, "share a shape"),
        (torch.zeros(1, 2), torch.zeros(1, 2), None, "at least 2 samples"),
        (torch.zeros(4, 2), torch.zeros(4, 2), ["a"], "one name per column"),
        (torch.tensor([1.0, float("nan")]), torch.zeros(2), None, "non-finite"),
        (np.zeros(3), torch.zeros(3), None, "must be tensors"),
    ],
)
def test_regression_scores_bad_input(pred, target, names, match):
    with pytest.raises(ValueError, match=match):
        regression_scores(pred, target, names)


def _loader(x, y, batch_size=32):
    return DataLoader([{"x": a, "latents": b} for a, b in zip(x, y)], batch_size=batch_size)


def test_fine_tuning_trains_the_body_and_scores_every_split():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g)
    y = torch.stack([x[:, 0] + x[:, 1], x[:, 2] * 2], 1)
    body = nn.Linear(3, 3)
    before = body.weight.detach().clone()
    loaders = {"train": _loader(x[:200], y[:200]), "val": _loader(x[200:250], y[200:250]),
               "ood": _loader(3 * x[250:], 3 * y[250:])}
    s = fine_tune_scores(body, loaders, ["sum", "double"], 3, max_epochs=40, lr=1e-2)
    assert set(s) == {"train", "val", "ood"} and set(s["ood"]) == {"sum", "double"}
    assert not torch.equal(before, body.weight)  # every weight of the body is trained
    assert s["ood"]["sum"]["pearson"] > 0.95 and s["val"]["double"]["r2"] > 0.9


def test_mlp_probe_scores_and_its_checks():
    g = torch.Generator().manual_seed(0)
    f = {s: torch.randn(n, 4, generator=g) for s, n in (("train", 256), ("test", 64))}
    lat = {s: v[:, :2] ** 2 for s, v in f.items()}
    s = mlp_probe_scores(f, lat, ["a", "b"], hidden=[32], max_epochs=30, lr=1e-2, batch_size=32, val_split=None)
    assert s["test"]["a"]["pearson"] > 0.8
    with pytest.raises(ValueError, match="same splits"):
        mlp_probe_scores(f, {"train": lat["train"]}, ["a", "b"])
    with pytest.raises(ValueError, match="feature rows"):
        mlp_probe_scores({"train": f["train"][:10]}, {"train": lat["train"]}, ["a", "b"])
    with pytest.raises(ValueError, match="fit_split 'fit'"):
        mlp_probe_scores(f, lat, ["a", "b"], fit_split="fit")
    with pytest.raises(ValueError, match="one name per latent"):
        mlp_probe_scores(f, lat, ["a"], max_epochs=1)
    const = {k: torch.ones_like(v) for k, v in lat.items()}
    with pytest.raises(ValueError, match="no constant latent"):
        mlp_probe_scores(f, const, ["a", "b"], max_epochs=1)


def test_latent_regressor_checks_and_scale():
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        LatentRegressor(nn.Identity(), 2, 2, torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="need 2 entries"):
        LatentRegressor(nn.Identity(), 2, 2, torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="body must be an nn.Module"):
        LatentRegressor("linear", 2, 2, torch.zeros(2), torch.ones(2))
    reg = LatentRegressor(nn.Identity(), 2, 2, torch.tensor([10.0, -1.0]), torch.tensor([2.0, 3.0]))
    x = torch.randn(4, 2)
    torch.testing.assert_close(reg.predict(x), reg(x) * torch.tensor([2.0, 3.0]) + torch.tensor([10.0, -1.0]))


def test_table_has_every_row_and_column():
    names = ["energy", "force"]
    res = {m: {s: {q: {"pearson": 0.5, "r2": 0.25} for q in names} for s in ("test", "ood")} for m in METHODS}
    res["mlp_probe"]["ood"]["force"]["pearson"] = float("nan")
    table = format_table(res, names)
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["quantity", "method", "rho", "ID", "rho", "OOD"]
    assert len(lines) == 1 + len(names) * len(METHODS)
    assert sum("frozen_linear" in ln and "rho > 0.90" in ln for ln in lines) == 2
    assert "nan" in [ln for ln in lines if ln.startswith("force") and "mlp_probe" in ln][0]
    missing = format_table({"frozen_linear": res["frozen_linear"]}, names, ood_split="far", paper=None)
    assert "n/a" in missing and "paper" not in missing


def test_rho_vs_loss_figure(tmp_path):
    hist = [{"epoch": e, "ssl_loss": 2.0 / (e + 1), "scores": {s: {"E": {"pearson": e / 4, "r2": 0.0}}
                                                              for s in ("test", "ood")}} for e in range(4)]
    fig = rho_vs_loss_figure(hist, ["E"])
    assert len(fig.axes) == 2
    xs, ys = fig.axes[1].lines[0].get_data()
    np.testing.assert_allclose(xs, [2.0, 1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(ys, [0, 0.25, 0.5, 0.75])
    fig.savefig(tmp_path / "f.png")
    with pytest.raises(ValueError, match="history is empty"):
        rho_vs_loss_figure([], ["E"])
