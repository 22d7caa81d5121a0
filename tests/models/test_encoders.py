import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import SparseCoder

from lit_repr.models.encoders import (
    AmortizedEncoder,
    FISTAEncoder,
    InferenceTimeOptimization,
    ISTAEncoder,
    MLPEncoder,
    build_encoder,
    lasso_objective,
)


def _problem(n=32, d=16, b=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    s = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        idx = torch.randperm(n, generator=g)[:3]
        s[i, idx] = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    x = s @ W + 0.01 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return x, W


@pytest.mark.parametrize("nonneg", [True, False])
def test_fista_matches_sklearn_objective(nonneg):
    x, W = _problem()
    penalty = 0.05
    ours = FISTAEncoder(penalty=penalty, max_iter=3000, tol=1e-10, nonnegative=nonneg)(x, W)
    coder = SparseCoder(
        W.numpy(),
        transform_algorithm="lasso_cd",
        transform_alpha=penalty,
        positive_code=nonneg,
        transform_max_iter=10000,
    )
    ref = torch.as_tensor(coder.transform(x.numpy()))
    obj_ours = lasso_objective(x, ours, W, penalty)
    obj_ref = lasso_objective(x, ref, W, penalty)
    assert torch.all(obj_ours <= obj_ref + 1e-4)
    assert torch.allclose(obj_ours, obj_ref, atol=1e-4)
    if nonneg:
        assert bool((ours >= 0).all())


def test_ista_converges_to_fista_and_needs_more_iterations():
    x, W = _problem()
    fista = FISTAEncoder(penalty=0.05, max_iter=5000, tol=1e-7)
    ista = ISTAEncoder(penalty=0.05, max_iter=5000, tol=1e-7)
    sf, si = fista(x, W), ista(x, W)
    assert torch.allclose(lasso_objective(x, sf, W, 0.05), lasso_objective(x, si, W, 0.05), atol=1e-5)
    assert fista.last_iterations < ista.last_iterations < 5000


def test_adaptive_iterations_and_flops():
    x, W = _problem()
    fixed = FISTAEncoder(penalty=0.05, max_iter=50)
    fixed(x, W)
    n, d = W.shape
    per_iter = 2 * n * n + 11 * n  # n <= 2d: Gram route; 4n shrinkage, 7n momentum with restart
    assert fixed.flops_per_sample() == 2 * n * d + 50 * per_iter
    adaptive = FISTAEncoder(penalty=0.05, max_iter=2000, tol=1e-4)
    adaptive(x, W)
    assert 1 <= adaptive.last_iterations < 2000
    # adaptive runs iterate on small working sets: counted FLOPs, fewer than the full-problem iterations
    assert 2 * n * d < adaptive.flops_per_sample() < 2 * n * d + adaptive.last_iterations * per_iter


def test_warm_start_saves_iterations():
    x, W = _problem()
    x, W = x.float(), W.float()
    warm = AmortizedEncoder(16, 32)
    with torch.no_grad():
        warm.linear.weight.copy_(W)  # a matched-filter start
        warm.linear.bias.fill_(-0.3)
    cold_enc = FISTAEncoder(penalty=0.05, max_iter=3000, tol=1e-5)
    warm_enc = FISTAEncoder(penalty=0.05, max_iter=3000, tol=1e-5, warm_start=warm)
    cold, hot = cold_enc(x, W), warm_enc(x, W)
    assert torch.allclose(lasso_objective(x, cold, W, 0.05), lasso_objective(x, hot, W, 0.05), atol=1e-3)
    assert warm_enc.flops_per_sample() > 0


def test_inference_time_optimisation_improves_on_its_init():
    x, W = _problem()
    x, W = x.float(), W.float()
    init = AmortizedEncoder(16, 32)
    with torch.no_grad():
        init.linear.weight.copy_(W)
        init.linear.bias.zero_()
    s0 = init(x, W).clamp_min(0)
    ito = InferenceTimeOptimization(penalty=0.05, steps=300, lr=0.02, init=init)
    s = ito(x, W)
    assert bool((s >= 0).all())
    assert lasso_objective(x, s, W, 0.05).mean() < 0.5 * lasso_objective(x, s0, W, 0.05).mean()
    assert ito.flops_per_sample() == init.flops_per_sample() + 300 * (4 * 32 * 16 + 3 * 16 + 14 * 32)


def test_amortized_and_mlp_flops_and_lazy_build():
    enc = AmortizedEncoder()
    out = enc(torch.randn(3, 4), torch.randn(6, 4))
    assert out.shape == (3, 6) and enc.flops_per_sample() == 2 * 4 * 6 + 6
    mlp = MLPEncoder(hidden=[10, 5])
    assert mlp(torch.randn(2, 4), torch.randn(6, 4)).shape == (2, 6)
    assert mlp.flops_per_sample() == (2 * 4 * 10 + 10) + (2 * 10 * 5 + 5) + (2 * 5 * 6 + 6) + 15
    with pytest.raises(ValueError, match="num_latents=6"):
        mlp.build(4, 7)


def test_encoder_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="penalty"):
        FISTAEncoder(penalty=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        ISTAEncoder(max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        ISTAEncoder(tol=-1.0)
    with pytest.raises(ValueError, match="hidden"):
        MLPEncoder(hidden=[])
    with pytest.raises(ValueError, match="encoder must be"):
        build_encoder("nope")
    enc = AmortizedEncoder(4, 6)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        enc(torch.randn(2, 5), torch.randn(6, 4))
    with pytest.raises(ValueError, match="dictionary must have shape"):
        enc(torch.randn(2, 4), torch.randn(7, 4))


def test_iterative_encoders_do_not_build_a_graph():
    x, W = _problem()
    W = W.float().requires_grad_(True)
    s = FISTAEncoder(max_iter=5)(x.float(), W)
    assert not s.requires_grad
    assert math.isfinite(float(s.sum()))
    assert np.isfinite(s.numpy()).all()


@pytest.mark.parametrize("penalty", [0.05, 0.002])  # 0.002: supports too large for working sets (full problem)
@pytest.mark.parametrize("nonneg", [True, False])
def test_converged_codes_satisfy_the_lasso_optimality_conditions(penalty, nonneg):
    x, W = _problem()
    enc = FISTAEncoder(penalty=penalty, max_iter=20000, tol=1e-10, nonnegative=nonneg)
    s = enc(x, W)
    g = (x - s @ W) @ W.T  # minus the gradient of the smooth part
    active = s != 0
    if nonneg:
        assert bool((s >= 0).all()) and float(g.max()) <= penalty + 1e-6
        assert torch.allclose(g[active], torch.full_like(g[active], penalty), atol=1e-6)
    else:
        assert float(g.abs().max()) <= penalty + 1e-6
        assert torch.allclose(g[active], penalty * s[active].sign(), atol=1e-6)
    ref = SparseCoder(
        W.numpy(),
        transform_algorithm="lasso_cd",
        transform_alpha=penalty,
        positive_code=nonneg,
        transform_max_iter=20000,
    ).transform(x.numpy())
    obj_ref = lasso_objective(x, torch.as_tensor(ref), W, penalty)
    assert torch.all(lasso_objective(x, s, W, penalty) <= obj_ref + 1e-8)
    if penalty < 0.01:
        assert int(active.sum(1).max()) > W.shape[0] // 4  # the full-problem finish ran
