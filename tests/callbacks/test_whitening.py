import random

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_repr.callbacks import Whitening
from lit_repr.callbacks.whitening import spectrum_figure
from lit_repr.models import PCAWhitening


class _Dicts(Dataset):
    def __init__(self, n=256, d=5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 2.0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.x[i].sum()}


class _Model(pl.LightningModule):
    def __init__(self, d=5):
        super().__init__()
        self.whitening = None
        self.seen = []
        self.lin = nn.Linear(d, 1)

    def forward(self, x):
        return self.lin(self.whitening(x) if self.whitening is not None else x)

    def training_step(self, batch, _):
        self.seen.append(batch["x"].clone())
        return (self(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _trainer(tmp_path, cb, logger=False, **kw):
    callbacks = [cb] if cb is not None else []
    return pl.Trainer(accelerator="cpu", max_steps=3, callbacks=callbacks, logger=logger, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path, **kw)


def _loader(ds):
    return DataLoader(ds, batch_size=32, shuffle=True)


def test_installs_whitening_fitted_on_first_batches(tmp_path):
    ds = _Dicts()
    cb = Whitening(num_batches=4, eps=1e-6)
    model = _Model()
    _trainer(tmp_path, cb).fit(model, DataLoader(ds, batch_size=32))
    assert isinstance(model.whitening, PCAWhitening) and model.whitening is cb.whitening
    assert cb.identity_deviation < 1e-5
    ref = PCAWhitening.from_data(ds.x[:128].double(), kind="zca", eps=1e-6)
    torch.testing.assert_close(model.whitening(ds.x.double()), ref(ds.x.double()), rtol=1e-9, atol=1e-9)


def test_reading_batches_leaves_rng_unchanged(tmp_path):
    ds = _Dicts()
    seen = []
    draws = []
    for cb in (None, Whitening(num_batches=3)):
        pl.seed_everything(7)
        model = _Model()
        _trainer(tmp_path, cb).fit(model, _loader(ds))
        seen.append(torch.cat(model.seen))
        draws.append((torch.rand(1).item(), np.random.rand(), random.random()))
    assert torch.equal(seen[0], seen[1])
    assert draws[0] == draws[1]


def test_logs_deviation_and_figure(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    added = {}
    orig = logger.experiment.add_figure

    def spy(tag, fig, global_step=None):
        added[tag] = fig
        return orig(tag, fig, global_step=global_step)

    logger.experiment.add_figure = spy
    metrics = {}
    orig_log = logger.log_metrics
    logger.log_metrics = lambda m, step=None: (metrics.update(m), orig_log(m, step))
    model = _Model()
    model.lin = nn.Linear(3, 1)
    cb = Whitening(num_batches=2, kind="pca", out_features=3)
    _trainer(tmp_path, cb, logger=logger).fit(model, _loader(_Dicts()))
    assert "whitening/spectrum" in added
    assert metrics["whitening/identity_deviation"] < 1e-4


def test_spectrum_figure_renders(tmp_path):
    w = PCAWhitening.from_data(_Dicts().x.double(), kind="pca", eps=1e-3, out_features=3)
    fig = spectrum_figure(w)
    fig.savefig(tmp_path / "spectrum.png")
    assert (tmp_path / "spectrum.png").stat().st_size > 1000


def test_resume_installs_the_saved_whitening(tmp_path):
    cb = Whitening(num_batches=2)
    _trainer(tmp_path, cb).fit(_Model(), _loader(_Dicts()))
    state = cb.state_dict()
    cb2 = Whitening(num_batches=2)
    cb2.load_state_dict(state)
    model = _Model()
    _trainer(tmp_path, cb2).fit(model, _loader(_Dicts(seed=5)))
    torch.testing.assert_close(model.whitening.eigenvectors, cb.whitening.eigenvectors)


class _NoWhitening(_Model):
    def __init__(self):
        super().__init__()
        del self.whitening


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="num_batches"):
        Whitening(num_batches=0)
    with pytest.raises(ValueError, match="kind"):
        Whitening(kind="svd")
    with pytest.raises(ValueError, match="eps"):
        Whitening(eps=-1)
    with pytest.raises(ValueError, match="out_features"):
        Whitening(kind="zca", out_features=2)
    with pytest.raises(ValueError, match="input_key"):
        Whitening(input_key=None)
    with pytest.raises(ValueError, match="settable attribute 'whitening'"):
        _trainer(tmp_path, Whitening()).fit(_NoWhitening(), _loader(_Dicts()))
