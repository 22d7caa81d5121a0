"""A sparse autoencoder on whitened inputs: loss spaces, checks, folding, checkpoints and the callback."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_repr.callbacks import Whitening
from lit_repr.data import SparseCodingDataModule
from lit_repr.models import PCAWhitening, fold_whitening
from lit_repr.models.sae import SparseAutoencoder
from lit_repr.models.sae.input_whitening import input_space_atoms, whitening_from_state_dict


def _x(n=512, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * torch.logspace(0, 1.5, d) + 3.0


def _trainer(tmp_path, callbacks=(), **kw):
    kw.setdefault("max_epochs", 2)
    return pl.Trainer(accelerator="cpu", callbacks=list(callbacks), logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, **kw)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_losses_in_each_space(kind):
    x = _x()
    w = PCAWhitening.from_data(x, kind=kind, eps=1e-6)
    for space in ("whitened", "original"):
        torch.manual_seed(0)
        sae = SparseAutoencoder(6, 12, "topk", {"k": 3}, whitening=w, loss_space=space, init_seed=0)
        out = sae.compute_losses(x)
        z = w(x)
        assert torch.allclose(out["codes"], sae.encode(x))
        assert torch.allclose(out["recon"], sae._decode(out["codes"]), atol=1e-5)  # whitened space
        target = z - out["recon"] if space == "whitened" else x - w.inverse(out["recon"])
        torch.testing.assert_close(out["mse_loss"], target.pow(2).sum(-1).mean(), rtol=1e-5, atol=1e-5)
        # public outputs are in the input space
        torch.testing.assert_close(sae(x), w.inverse(out["recon"]), rtol=1e-5, atol=1e-4)
    # the SAE without whitening on whitened data gives the same codes and whitened-space loss
    plain = SparseAutoencoder(6, 12, "topk", {"k": 3}, init_seed=0)
    white = SparseAutoencoder(6, 12, "topk", {"k": 3}, init_seed=0, whitening=w)
    torch.testing.assert_close(plain.encode(w(x)), white.encode(x))
    torch.testing.assert_close(plain.compute_losses(w(x))["mse_loss"], white.compute_losses(x)["mse_loss"])


def test_original_space_loss_trains_the_original_reconstruction():
    x = _x()
    w = PCAWhitening.from_data(x, kind="zca")
    sae = SparseAutoencoder(6, 24, "relu", {"l1_coefficient": 1e-3}, whitening=w, loss_space="original", lr=1e-2)
    opt = sae.configure_optimizers()
    first = float(sae.train_step(x, opt)["mse_loss"])
    for _ in range(150):
        last = float(sae.train_step(x, opt)["mse_loss"])
    assert last < 0.2 * first
    # the decoder bias was initialised in the whitened space (where the dictionary lives)
    assert float(sae.b_dec.detach().abs().max()) < 1.0 < float(x.mean(0).abs().max())


def test_width_mismatch_and_bad_whitening_raise_before_any_change():
    x = _x()
    wide = PCAWhitening.from_data(x)  # 6 -> 6
    reduced = PCAWhitening.from_data(x, kind="pca", out_features=4)  # 6 -> 4
    with pytest.raises(ValueError, match=r"whitening.out_features=6 .*in_features=5"):
        SparseAutoencoder(5, 10, whitening=wide)
    sae = SparseAutoencoder(4, 10, whitening=reduced)
    assert sae.input_features == 6 and sae(x).shape == (512, 6)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(ValueError, match=r"whitening.out_features=6 \(a whitening of 6 input features\) must equal "
                                         r"the SparseAutoencoder's in_features=4"):
        sae.whitening = wide
    assert sae.whitening is reduced
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())
    with pytest.raises(ValueError, match="must be fitted"):
        SparseAutoencoder(6, 10, whitening=PCAWhitening(6))
    with pytest.raises(ValueError, match="PCAWhitening or None, got Linear"):
        SparseAutoencoder(6, 10, whitening=torch.nn.Linear(6, 6))
    with pytest.raises(ValueError, match="loss_space"):
        SparseAutoencoder(6, 10, loss_space="raw")
    with pytest.raises(ValueError, match=r"shape \(batch, 6\), got \(3, 4\) with a whitening of 6 input features"):
        sae(torch.randn(3, 4))


@pytest.mark.parametrize("variant,args", [("relu", {"l1_coefficient": 1e-2}), ("topk", {"k": 3})])
@pytest.mark.parametrize("space", ["whitened", "original"])
def test_folding_an_sae_trained_with_its_own_whitening(variant, args, space):
    x = _x()
    w = PCAWhitening.from_data(x, kind="zca", eps=1e-5)
    sae = SparseAutoencoder(6, 16, variant, args, whitening=w, loss_space=space, init_seed=1, lr=1e-2)
    opt = sae.configure_optimizers()
    for i in range(40):
        sae.train_step(x[(i % 4) * 128:(i % 4 + 1) * 128], opt)
    sae.eval()
    folded = fold_whitening(sae)
    assert folded.whitening is None and folded.input_features == 6
    x64 = _x(seed=3)
    torch.testing.assert_close(folded.encode(x64), sae.encode(x64), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded(x64), sae(x64), rtol=1e-4, atol=1e-3)
    # the folded decoder's atoms are the SAE's atoms mapped to the input space
    torch.testing.assert_close(folded.W_dec, sae.input_space_atoms(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="its own whitening"):
        fold_whitening(sae, PCAWhitening.from_data(x))
    with pytest.raises(ValueError, match="needs a whitening"):
        fold_whitening(folded)


def test_state_dict_carries_the_whitening():
    x = _x()
    w = PCAWhitening.from_data(x, kind="pca", out_features=4, eps=1e-4)
    sae = SparseAutoencoder(4, 8, whitening=w, loss_space="original")
    sd = sae.state_dict()
    assert {"whitening.mean", "whitening.eigenvectors", "whitening.config"} <= set(sd)
    fresh = SparseAutoencoder(4, 8, loss_space="original")
    fresh.load_state_dict(sd)
    assert fresh.whitening.kind == "pca" and fresh.whitening.out_features == 4 and fresh.whitening.eps == 1e-4
    torch.testing.assert_close(fresh(x), sae(x))
    assert whitening_from_state_dict(SparseAutoencoder(4, 8).state_dict()) is None
    # a whitening of another configuration refuses the state
    other = PCAWhitening(6, kind="zca")
    with pytest.raises(ValueError, match="kind='pca'"):
        other.load_state_dict(w.state_dict())


def test_input_space_atoms_without_whitening_is_the_dictionary():
    sae = SparseAutoencoder(4, 8)
    assert input_space_atoms(sae.W_dec, None) is sae.W_dec


def _sparse_data(**kw):
    return SparseCodingDataModule(num_features=12, in_features=6, num_active=2, num_train=512, num_val=256,
                                  num_test=0, batch_size=64, correlation=0.5, mixing_condition=10.0, **kw)


def test_callback_installs_before_the_sanity_check_and_metrics_name_their_space(tmp_path):
    dm = _sparse_data()
    # a PCA reduction 6 -> 4: the SAE cannot read raw inputs, so the sanity check needs the whitening installed
    sae = SparseAutoencoder(4, 12, "topk", {"k": 2}, loss_space="original", init_seed=0)
    cb = Whitening(num_batches=4, kind="pca", out_features=4, log_figure=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, [cb, ckpt], num_sanity_val_steps=2, enable_checkpointing=True)
    trainer.fit(sae, dm)
    assert sae.whitening is cb.whitening and sae.whitening.out_features == 4
    m = trainer.callback_metrics
    for name in ("val/fve_whitened", "val/fve_original", "val/mse_whitened", "val/mse_original",
                 "train/fve_whitened", "train/fve_original", "val/dictionary_mcc", "val/code_mcc"):
        assert name in m, name
    assert "val/fve" not in m and "val/mse" not in m
    assert -1 < float(m["val/fve_original"]) <= 1 and -1 < float(m["val/fve_whitened"]) <= 1

    # the checkpoint holds the whitening: load_from_checkpoint rebuilds the same model
    loaded = SparseAutoencoder.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    x = dm.datasets["val"].tensors["x"][:32]
    assert loaded.whitening is not None and loaded.loss_space == "original"
    torch.testing.assert_close(loaded(x), sae(x))

    # resuming installs the saved whitening without refitting (a different first batch would change it)
    sae2 = SparseAutoencoder(4, 12, "topk", {"k": 2}, loss_space="original", init_seed=0)
    cb2 = Whitening(num_batches=4, kind="pca", out_features=4, log_figure=False)
    trainer2 = _trainer(tmp_path, [cb2], max_epochs=3, num_sanity_val_steps=2)
    trainer2.fit(sae2, _sparse_data(seed=9), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    torch.testing.assert_close(sae2.whitening.eigenvectors, sae.whitening.eigenvectors)
    assert cb2.whitening is sae2.whitening


def test_callback_keeps_a_whitening_the_model_already_has(tmp_path):
    dm = _sparse_data()
    dm.setup("fit")
    own = PCAWhitening.from_data(dm.datasets["train"].tensors["x"][:100])
    sae = SparseAutoencoder(6, 12, whitening=own)
    cb = Whitening(num_batches=2, log_figure=False)
    with pytest.warns(UserWarning, match="keeps its own"):
        _trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(sae, dm)
    assert sae.whitening is own and cb.whitening is own


def test_callback_width_mismatch_names_both_widths(tmp_path):
    sae = SparseAutoencoder(5, 12)  # the data have 6 features; a PCA to 4 fits neither
    cb = Whitening(num_batches=2, kind="pca", out_features=4, log_figure=False)
    with pytest.raises(ValueError, match=r"whitening.out_features=4 .*in_features=5"):
        _trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(sae, _sparse_data())
    assert sae.whitening is None
