import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import SparseCoder
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

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
    assert ista.last_iterations < 5000
    # a fixed number of full-problem iterations (tol == 0): momentum gets further than plain ISTA
    few_f = FISTAEncoder(penalty=0.05, max_iter=20)(x, W)
    few_i = ISTAEncoder(penalty=0.05, max_iter=20)(x, W)
    assert lasso_objective(x, few_f, W, 0.05).mean() < lasso_objective(x, few_i, W, 0.05).mean()


def test_adaptive_iterations_and_flops():
    x, W = _problem()
    fixed = FISTAEncoder(penalty=0.05, max_iter=50)
    fixed(x, W)
    n, d = W.shape
    per_iter = 2 * n * n + 11 * n  # n <= 2d: Gram route; 4n shrinkage, 7n momentum with restart
    assert fixed.flops_per_sample() == 2 * n * d + 50 * per_iter
    adaptive = FISTAEncoder(penalty=0.05, max_iter=2000, tol=1e-4)
    s = adaptive(x, W)
    assert 1 <= adaptive.last_iterations < 2000
    # adaptive runs solve small working sets (iterations and exact solves on a few atoms, one gradient
    # product per round): counted FLOPs, fewer than the 50 full-problem iterations, to a lower objective
    assert 2 * n * d < adaptive.flops_per_sample() < fixed.flops_per_sample()
    few = fixed(x, W)
    assert bool((lasso_objective(x, s, W, 0.05) <= lasso_objective(x, few, W, 0.05) + 1e-12).all())


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


def _sklearn_codes(x, W, penalty, nonneg):
    """scikit-learn's lasso_cd codes (what SparseCoder runs) at a tight coordinate-descent tolerance."""
    lasso = Lasso(alpha=penalty / W.shape[1], fit_intercept=False, positive=nonneg, tol=1e-14, max_iter=100000)
    out = np.zeros((x.shape[0], W.shape[0]))
    with warnings.catch_warnings():  # near-duplicate atoms: coordinate descent stops short of 1e-14
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, xi in enumerate(x.double().numpy()):
            out[i] = lasso.fit(W.double().numpy().T, xi).coef_
    return torch.as_tensor(out)


def _coherent_problem(n=128, d=32, b=24, active=6, seed=1, nonneg=False):
    """Four atoms per dimension (strongly coherent), samples mixing ``active`` atoms."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    s = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        v = torch.randn(active, generator=g, dtype=torch.float64)
        s[i, torch.randperm(n, generator=g)[:active]] = v.abs() if nonneg else v
    return s @ W + 0.01 * torch.randn(b, d, generator=g, dtype=torch.float64), W


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nonneg", [True, False])
def test_exact_working_set_solves_match_sklearn_to_1e8(nonneg, dtype):
    x, W = _coherent_problem(nonneg=nonneg)
    penalty = 0.05
    enc = FISTAEncoder(penalty=penalty, max_iter=5000, tol=1e-7, nonnegative=nonneg)
    s = enc(x.to(dtype), W.to(dtype))
    assert s.dtype == dtype and bool(torch.isfinite(s).all())
    x64, W64 = x.to(dtype).double(), W.to(dtype).double()
    ref = _sklearn_codes(x64, W64, penalty, nonneg)
    obj, obj_ref = lasso_objective(x64, s.double(), W64, penalty), lasso_objective(x64, ref, W64, penalty)
    assert float((obj - obj_ref).max()) <= 1e-8
    assert float((obj - obj_ref).abs().max()) <= 1e-8
    if nonneg:
        assert bool((s >= 0).all())
    assert enc.last_iterations < 200  # the exact solves finish long before the iterates would


@pytest.mark.parametrize("steps", [0, 1, 12])
@pytest.mark.parametrize("nonneg", [True, False])
def test_active_set_steps_and_the_working_sets_they_leave_match_sklearn_to_1e8(nonneg, steps):
    # 0: working sets only; 1: one active-set step, after which most samples go on with working sets;
    # 12 (the default): the steps finish most samples themselves
    x, W = _coherent_problem(nonneg=nonneg)
    penalty = 0.05
    enc = FISTAEncoder(penalty=penalty, max_iter=5000, tol=1e-7, nonnegative=nonneg)
    enc._AS_STEPS = steps
    passes = []
    steps_of = enc._active_set
    enc._active_set = lambda *args: passes.append(steps_of(*args)) or passes[-1]
    s = enc(x, W)
    assert len(passes) == (1 if steps else 0)
    if steps:
        codes, done, used, _ = passes[0]
        assert bool((used <= steps).all()) and bool((codes[~done] == 0).all())
        assert (float(done.double().mean()) >= 0.5) == (steps > 1)
        # the samples the steps finish satisfy the lasso's optimality conditions on every atom
        sd = codes[done]
        grad = (x[done] - sd @ W) @ W.T
        on = sd != 0
        assert bool((sd[on] * grad[on] > 0).all())
        assert bool(((grad if nonneg else grad.abs()) - penalty <= penalty * math.sqrt(1e-7))[~on].all())
        assert bool(((grad - penalty * sd.sign()).abs() <= penalty * math.sqrt(1e-7))[on].all())
    ref = _sklearn_codes(x, W, penalty, nonneg)
    assert float((lasso_objective(x, s, W, penalty) - lasso_objective(x, ref, W, penalty)).abs().max()) <= 1e-8
    if nonneg:
        assert bool((s >= 0).all())


def test_support_solves_flag_a_failed_factorisation_whatever_its_pivots():
    from lit_repr.models.encoders import _solve_supports

    # not positive definite: the factorisation fails at the second pivot and leaves -3 there, a pivot
    # large enough to pass the small-pivot test on its own
    G = torch.tensor([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.5], [0.5, 1.0]]], dtype=torch.float64)
    rhs = torch.ones(2, 2, dtype=torch.float64)
    sol, ok, dependent = _solve_supports(G, rhs, torch.ones(2, 2, dtype=torch.bool))
    assert ok.tolist() == [False, True] and dependent.tolist() == [1, -1]
    assert bool((sol[0] == 0).all()) and torch.allclose(sol[1], torch.full((2,), 1 / 1.5, dtype=torch.float64))


def test_supports_beyond_the_first_working_set_and_sign_corrections():
    # 16 atoms of largest correlation form the first set; the supports here need atoms outside it
    x, W = _coherent_problem(n=96, d=24, b=16, active=8, seed=3)
    penalty = 0.05
    s = FISTAEncoder(penalty=penalty, max_iter=5000, tol=1e-8, nonnegative=False)(x, W)
    first = (x @ W.T).abs().topk(16, dim=1).indices
    outside = torch.ones_like(s, dtype=torch.bool).scatter_(1, first, False)
    assert bool(((s != 0) & outside).any())  # the support changed during the solve
    ref = _sklearn_codes(x, W, penalty, False)
    assert float((lasso_objective(x, s, W, penalty) - lasso_objective(x, ref, W, penalty)).max()) <= 1e-8
    # an active-set guess with a wrong sign and a missing atom is corrected by the exact solves
    enc = FISTAEncoder(penalty=penalty, nonnegative=False)
    G, c = W @ W.T, x @ W.T
    on = (ref[0] != 0).nonzero().squeeze(1)
    small = on[ref[0, on].abs().argsort()[:2]]  # the two smallest codes: one flips sign, one is missed
    guess = ref[:1].clone()
    guess[0, small[0]] *= -1.0
    guess[0, small[1]] = 0.0
    sol, ok, solves = enc._solve_support(guess, G[None], c[:1], eps=1e-9)
    assert bool(ok[0]) and int(solves[0]) > 1
    assert torch.allclose(sol[0], ref[0], atol=1e-7)


def test_all_zero_samples_and_a_penalty_that_zeroes_every_code():
    x, W = _coherent_problem()
    x[3] = 0.0
    for nonneg in (True, False):
        s = FISTAEncoder(penalty=0.03, max_iter=5000, tol=1e-7, nonnegative=nonneg)(x, W)
        assert bool((s[3] == 0).all()) and bool(torch.isfinite(s).all())
        big = float((x @ W.T).abs().max()) * 1.01  # above every |x·wⱼ|: the zero code is optimal
        enc = FISTAEncoder(penalty=big, max_iter=5000, tol=1e-7, nonnegative=nonneg)
        assert bool((enc(x, W) == 0).all())
        assert enc.last_iterations <= 2
        assert enc(x[:0], W).shape == (0, W.shape[0])  # an empty batch


@pytest.mark.parametrize("steps", [0, 12])  # working sets alone, or after the active-set steps
@pytest.mark.parametrize("offset, bound", [(1e-3, 1e-8), (1e-6, 1e-6)])
@pytest.mark.parametrize("nonneg", [True, False])
def test_duplicate_and_strongly_correlated_atoms_fall_back_and_never_give_nan(nonneg, offset, bound, steps):
    x, W = _coherent_problem(n=40, d=16, b=20, active=4, seed=5, nonneg=nonneg)
    g = torch.Generator().manual_seed(7)
    near = W[6:12] + offset * torch.randn(6, 16, generator=g, dtype=torch.float64)
    W = torch.cat([W, W[:6], near])
    W = W / W.norm(dim=1, keepdim=True)  # 6 exact duplicates and 6 near-duplicates: singular set systems
    penalty = 0.05
    enc = FISTAEncoder(penalty=penalty, max_iter=20000, tol=1e-9, nonnegative=nonneg)
    enc._AS_STEPS = steps
    s = enc(x, W)
    assert bool(torch.isfinite(s).all())
    ref = _sklearn_codes(x, W, penalty, nonneg)
    # atoms 1e-6 apart leave the objective a curvature of ~1e-12 along their difference: within the
    # optimality tolerance, neither solver pins the split down to 1e-8 (scikit-learn does not converge)
    assert float((lasso_objective(x, s, W, penalty) - lasso_objective(x, ref, W, penalty)).max()) <= bound


def test_working_set_blocks_shared_among_threads_give_the_same_codes():
    x, W = _coherent_problem(n=64, d=16, b=600, active=3, seed=2)  # 600 rows: two blocks on two threads
    enc = FISTAEncoder(penalty=0.05, max_iter=2000, tol=1e-7, nonnegative=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        shared = enc(x, W)
        torch.set_num_threads(1)
        alone = enc(x, W)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    # the blocks differ (two of 300 rows, one of 600), not the solutions
    assert torch.allclose(lasso_objective(x, shared, W, 0.05), lasso_objective(x, alone, W, 0.05), atol=1e-10)
    ref = _sklearn_codes(x[:40], W, 0.05, False)
    assert float((lasso_objective(x[:40], shared[:40], W, 0.05) - lasso_objective(x[:40], ref, W, 0.05)).max()) <= 1e-8


@pytest.mark.parametrize("nonneg", [True, False])
def test_supports_as_large_as_the_dimension_keep_the_optimality_conditions(nonneg):
    # dense data: supports reach the dimension, exact solves fail on dependent sets and samples fall
    # back to iterating; whatever the path, no atom outside a returned support violates optimality
    g = torch.Generator().manual_seed(0)
    W = torch.randn(300, 20, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    x = torch.randn(33, 20, generator=g, dtype=torch.float64)
    tol, penalty = 1e-6, 0.05
    s = FISTAEncoder(penalty=penalty, max_iter=3000, tol=tol, nonnegative=nonneg)(x, W)
    grad = (x - s @ W) @ W.T
    excess = (grad if nonneg else grad.abs()) - penalty
    assert float(excess[s == 0].max()) <= penalty * math.sqrt(tol) + 1e-12
