"""Kernels: sparse TopK autograd against dense autograd, straight-through estimators, AuxK, geometric median."""

import pytest
import torch

from lit_repr.models.sae import (
    SparseAutoencoder,
    auxk_loss,
    geometric_median,
    heaviside_step,
    sparse_decode,
    topk_encode,
)


def test_topk_encode_and_sparse_decode_match_dense_autograd():
    g = torch.Generator().manual_seed(0)
    x, W_enc, b_enc = torch.randn(9, 6, generator=g), torch.randn(20, 6, generator=g), torch.randn(20, generator=g)
    W_dec, b_dec, target = torch.randn(20, 6, generator=g), torch.randn(6, generator=g), torch.randn(9, 6, generator=g)
    leaves = [t.clone().requires_grad_(True) for t in (x, W_enc, b_enc, W_dec, b_dec)]
    vals, idx, pre = topk_encode(leaves[0], leaves[1], leaves[2], 4)
    ((sparse_decode(vals, idx, leaves[3], leaves[4]) - target) ** 2).sum().backward()
    dense = [t.clone().requires_grad_(True) for t in (x, W_enc, b_enc, W_dec, b_dec)]
    p = dense[0] @ dense[1].T + dense[2]
    top, i = p.topk(4, dim=-1)
    codes = torch.zeros_like(p).scatter(-1, i, top.relu())
    ((codes @ dense[3] + dense[4] - target) ** 2).sum().backward()
    assert torch.equal(idx, i) and torch.allclose(pre, p.detach()) and not pre.requires_grad
    for a, b in zip(leaves, dense):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_heaviside_step_straight_through_to_threshold_only():
    pre = torch.tensor([[0.55, 0.1], [0.45, 0.9]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5], requires_grad=True)
    out = heaviside_step(pre, theta, 0.2)
    assert torch.equal(out.detach(), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out.sum().backward()
    assert pre.grad is None or not pre.grad.any()
    assert torch.allclose(theta.grad, torch.tensor([-2 / 0.2, 0.0]))  # two samples inside the rectangle


def test_geometric_median_minimizes_the_sum_of_distances():
    x = torch.randn(200, 3) + torch.tensor([5.0, 0.0, -2.0])
    x[:10] += 1000.0  # outliers move the mean, not the median
    m = geometric_median(x)
    cost = lambda c: float((x - c).norm(dim=1).sum())
    assert all(cost(m) <= cost(m + 0.01 * d) + 1e-3 for d in torch.eye(3).unbind() + (-torch.eye(3)).unbind())
    assert float((m - x.mean(0)).norm()) > 10


def test_auxk_matches_hand_computation():
    torch.manual_seed(0)
    n, d, b = 6, 4, 5
    W = torch.nn.functional.normalize(torch.randn(n, d), dim=1)
    pre = torch.randn(b, n)
    e = torch.randn(b, d)
    dead = torch.tensor([True, False, True, True, False, False])
    aux_k = 2
    expected = 0.0
    for i in range(b):
        cand = [(float(pre[i, j]), j) for j in range(n) if dead[j]]
        cand.sort(reverse=True)
        ehat = torch.zeros(d)
        for v, j in cand[:aux_k]:
            ehat += max(v, 0.0) * W[j]  # no decoder bias: e carries none
        expected += float(((e[i] - ehat) ** 2).sum())
    expected /= b
    assert float(auxk_loss(e, pre, dead, W, aux_k)) == pytest.approx(expected, rel=1e-5)
    # k_aux is capped at the number of dead latents; no dead latent means no loss
    assert float(auxk_loss(e, pre, dead, W, 100)) == pytest.approx(float(auxk_loss(e, pre, dead, W, 3)))
    assert float(auxk_loss(e, pre, torch.zeros(n, dtype=torch.bool), W, 2)) == 0.0


@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_topk_kernels_match_dense_gradients(with_dead):
    torch.manual_seed(0)
    kw = dict(in_features=12, num_latents=40, variant="topk", variant_args={"k": 5, "aux_k": 4}, init_seed=1)
    sparse, dense = SparseAutoencoder(**kw, sparse_kernels=True), SparseAutoencoder(**kw, sparse_kernels=False)
    dense.load_state_dict(sparse.state_dict())
    with torch.no_grad():
        for m in (sparse, dense):
            m.b_dec.copy_(torch.linspace(-0.5, 0.5, 12))
            m.encoder.linear.bias.copy_(torch.linspace(-0.2, 0.2, 40))
    if with_dead:
        for m in (sparse, dense):
            m.samples_since_fired[::3] = m.dead_after
    x = torch.randn(30, 12)
    for m in (sparse, dense):
        m.train()
        m.zero_grad()
        out = m.compute_losses(x)
        out["loss"].backward()
        m._out = out
    assert sparse.uses_sparse_kernels() and not dense.uses_sparse_kernels()
    assert torch.allclose(sparse._out["loss"], dense._out["loss"], atol=1e-5)
    assert ("auxk" in sparse._out) == ("auxk" in dense._out)
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
