import warnings

import numpy as np
import pytest
import torch

from lit_repr.metrics import CovarianceMoments
from lit_repr.models import PCAWhitening


def _data(n=400, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + torch.arange(d, dtype=torch.float64)


def test_zca_matches_numpy():
    x = _data()
    eps = 1e-3
    w = PCAWhitening.from_data(x, kind="zca", eps=eps)
    xn = x.numpy()
    mu = xn.mean(0)
    lam, E = np.linalg.eigh(np.cov(xn, rowvar=False, bias=True))
    ref = (xn - mu) @ (E @ np.diag((lam + eps) ** -0.5) @ E.T).T
    np.testing.assert_allclose(w(x).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_pca_matches_numpy_up_to_sign():
    x = _data()
    w = PCAWhitening.from_data(x, kind="pca", eps=0.0)
    xn = x.numpy()
    lam, E = np.linalg.eigh(np.cov(xn, rowvar=False, bias=True))
    lam, E = lam[::-1], E[:, ::-1]
    ref = (xn - xn.mean(0)) @ E / np.sqrt(lam)
    np.testing.assert_allclose(np.abs(w(x).numpy()), np.abs(ref), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(w.eigenvalues.numpy(), lam, rtol=1e-10)


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whitened_covariance_is_identity_within_eps(kind):
    x = _data()
    eps = 1e-4
    w = PCAWhitening.from_data(x, kind=kind, eps=eps)
    cov = w(x).T.cov(correction=0)
    lam_min = float(w.eigenvalues.min())
    assert (cov - torch.eye(6, dtype=torch.float64)).abs().max() <= eps / (lam_min + eps) + 1e-10
    m = CovarianceMoments(6)
    m.update(x)
    assert w.identity_deviation(m) <= eps / (lam_min + eps) + 1e-10


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_inverse_is_exact(kind):
    x = _data()
    w = PCAWhitening.from_data(x, kind=kind, eps=1e-2)
    torch.testing.assert_close(w.inverse(w(x)), x, rtol=1e-10, atol=1e-10)
    xf = x.float()
    assert w(xf).dtype == torch.float32
    torch.testing.assert_close(w.inverse(w(xf)), xf, rtol=1e-4, atol=1e-4)


def test_out_features_reduction():
    x = _data()
    w = PCAWhitening.from_data(x, kind="pca", eps=0.0, out_features=3)
    z = w(x)
    assert z.shape == (400, 3)
    torch.testing.assert_close(z.T.cov(correction=0), torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-10)
    # the inverse is the projection onto the leading 3 principal directions
    E = w.eigenvectors[:, :3]
    proj = (x - w.mean) @ E @ E.T + w.mean
    torch.testing.assert_close(w.inverse(z), proj, rtol=1e-10, atol=1e-10)
    full = PCAWhitening.from_data(x, kind="pca", eps=0.0)
    torch.testing.assert_close(z, full(x)[:, :3])


def test_state_dict_round_trip():
    x = _data()
    w = PCAWhitening.from_data(x, kind="zca", eps=1e-3)
    sd = w.state_dict()
    assert {"mean", "eigenvalues", "eigenvectors"} <= set(sd)
    w2 = PCAWhitening(6, kind="zca", eps=1e-3)
    with pytest.raises(RuntimeError, match="not fitted"):
        w2(x)
    w2.load_state_dict(sd)
    torch.testing.assert_close(w2(x), w(x), rtol=0, atol=0)


def test_streaming_equals_one_batch():
    x = _data()
    m = CovarianceMoments(6)
    for chunk in x.split(51):
        m.update(chunk)
    a = PCAWhitening(6, kind="zca").fit(m)
    b = PCAWhitening.from_data(x, kind="zca")
    torch.testing.assert_close(a(x), b(x), rtol=1e-9, atol=1e-9)


def test_rank_deficient_warns_and_regularises():
    x = _data(n=4, d=6)
    with pytest.warns(UserWarning, match=r"4 samples in 6 dimensions.*3 of 6 kept eigenvalues are below eps"):
        w = PCAWhitening.from_data(x, kind="zca", eps=1e-3)
    assert torch.isfinite(w(x)).all()
    with pytest.raises(ValueError, match="eps=0"):
        PCAWhitening.from_data(x, kind="zca", eps=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PCAWhitening.from_data(_data(), kind="zca")


def test_errors():
    with pytest.raises(ValueError, match="kind"):
        PCAWhitening(3, kind="svd")
    with pytest.raises(ValueError, match="eps"):
        PCAWhitening(3, eps=-1.0)
    with pytest.raises(ValueError, match="in_features"):
        PCAWhitening(0)
    with pytest.raises(ValueError, match="kind='pca'"):
        PCAWhitening(3, kind="zca", out_features=2)
    with pytest.raises(ValueError, match="out_features"):
        PCAWhitening(3, kind="pca", out_features=4)
    x = _data()
    w = PCAWhitening.from_data(x)
    before = {k: v.clone() for k, v in w.state_dict().items()}
    with pytest.raises(ValueError, match="in_features=6"):
        w.fit(CovarianceMoments(5))
    with pytest.raises(ValueError, match="shape"):
        w.fit(torch.ones(10, 5))
    bad = x.clone()
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        w.fit(bad)
    for k, v in w.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="last dimension 6"):
        w(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        PCAWhitening.from_data(torch.ones(3))


def _random_sae(in_features, variant="relu", variant_args=None, encoder=None):
    from lit_repr.models import SparseAutoencoder

    sae = SparseAutoencoder(in_features=in_features, num_latents=12, variant=variant, variant_args=variant_args,
                            encoder=encoder, decoder_bias_init="zeros", init_seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.b_dec.copy_(0.1 * torch.randn(in_features, generator=g))
        if hasattr(sae.encoder, "linear"):
            sae.encoder.linear.weight.add_(0.3 * torch.randn(sae.encoder.linear.weight.shape, generator=g))
            sae.encoder.linear.bias.copy_(0.05 * torch.randn(12, generator=g))
    return sae


@pytest.mark.parametrize(
    "kind,out_features,variant,variant_args",
    [("zca", None, "relu", None), ("pca", None, "topk", {"k": 3}), ("pca", 4, "relu", None),
     ("zca", None, "jumprelu", None)],
)
def test_fold_whitening_gives_identical_outputs(kind, out_features, variant, variant_args):
    from lit_repr.models import fold_whitening

    x = _data().float()
    w = PCAWhitening.from_data(x, kind=kind, eps=1e-4, out_features=out_features)
    sae = _random_sae(w.out_features, variant, variant_args)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    folded = fold_whitening(sae, w)
    assert folded.in_features == 6
    torch.testing.assert_close(folded.encode(x), sae.encode(w(x)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded(x), w.inverse(sae(w(x))), rtol=1e-4, atol=1e-4)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, before[k])


def test_fold_whitening_errors():
    from lit_repr.models import fold_whitening

    w = PCAWhitening.from_data(_data(), kind="zca")
    with pytest.raises(ValueError, match="AmortizedEncoder"):
        fold_whitening(_random_sae(6, encoder="ista"), w)
    with pytest.raises(ValueError, match="in_features=5"):
        fold_whitening(_random_sae(5), w)
    with pytest.raises(RuntimeError, match="not fitted"):
        fold_whitening(_random_sae(6), PCAWhitening(6))
