import pytest
import torch
from torch import nn

from lit_repr.metrics.ntk import (
    activation_hamming,
    conserved_quantities,
    empirical_ntk,
    kernel_distance,
    ntk_chunk_size,
    param_distance,
    trainable_parameters,
)


def hand_ntk_full(w1, b1, w2, b2, x):
    """NTK of f(x) = W2 tanh(W1 x + b1) + b2 written out by hand: (N·K)×(N·K), sample-major.

    ∂f_k/∂W2[k', i] = δ_kk' s_i, ∂f_k/∂b2[k'] = δ_kk', ∂f_k/∂W1[i, :] = W2[k, i] s'_i x, ∂f_k/∂b1[i] = W2[k, i] s'_i,
    with s = tanh(z), s' = 1 − s², so
    K[(n,k),(m,l)] = δ_kl (s_n·s_m + 1) + Σ_i W2[k,i] W2[l,i] s'_ni s'_mi (x_n·x_m + 1).
    """
    n, k = x.shape[0], w2.shape[0]
    s = torch.tanh(x @ w1.T + b1)
    ds = 1 - s**2
    out = torch.zeros(n, k, n, k, dtype=torch.float64)
    xx = x @ x.T + 1
    for a in range(k):
        for c in range(k):
            second = float(a == c) * (s @ s.T + 1)
            first = ((ds * w2[a]) @ (ds * w2[c]).T) * xx
            out[:, a, :, c] = second + first
    return out.reshape(n * k, n * k)


def test_empirical_ntk_matches_hand_computation_full_and_trace():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    want = hand_ntk_full(net[0].weight, net[0].bias, net[2].weight, net[2].bias, x).detach()
    full = empirical_ntk(net, x, kernel="full")
    assert full.dtype == torch.float64 and full.shape == (12, 12)
    assert (full - want).abs().max() < 1e-12
    trace = empirical_ntk(net, x)
    assert (trace - want.reshape(6, 2, 6, 2).diagonal(dim1=1, dim2=3).sum(-1)).abs().max() < 1e-12


def test_chunked_kernel_equals_one_chunk_and_leaves_grads_and_modes_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    x = torch.randn(40, 5)
    p = sum(q.numel() for q in net.parameters())
    small = 40 * 40 * 8 / 2**20 + 2 * 3 * p * 12 * 3 / 2**20  # room for 3 samples per chunk
    assert ntk_chunk_size(40, 3, p, 4, "trace", small) == 3
    chunked = empirical_ntk(net, x, max_memory_mb=small)
    whole = empirical_ntk(net, x)
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-8)
    assert torch.allclose(chunked, chunked.T)
    assert all(q.grad is None for q in net.parameters())
    assert all(m.training for m in net.modules())


def test_chunk_size_refuses_and_names_the_sizes():
    with pytest.raises(ValueError, match=r"max_memory_mb=1.0 cannot hold .* 64 samples x 10 outputs x 100000 param"):
        ntk_chunk_size(64, 10, 100_000, max_memory_mb=1.0)
    with pytest.raises(ValueError, match=r"kernel\(s\) take 12.5 MB .* or kernel='trace'"):
        ntk_chunk_size(128, 10, 10, kernel="full", max_memory_mb=10.0)
    with pytest.raises(ValueError, match="kernel must be 'trace' or 'full'"):
        ntk_chunk_size(4, 1, 1, kernel="diag")


def test_frozen_parameters_are_constants_and_none_trainable_fails():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    net[0].requires_grad_(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    feats = torch.tanh(net[0](x)).detach()
    assert (empirical_ntk(net, x) - (feats @ feats.T + 1)).abs().max() < 1e-12  # random features: Φ Φᵀ + 1
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="needs trainable parameters, but Sequential has none"):
        trainable_parameters(net)
    with pytest.raises(ValueError, match="needs trainable parameters"):
        empirical_ntk(net, x)


def test_distances_and_conserved_quantities():
    k = torch.randn(4, 4, dtype=torch.float64)
    k = k @ k.T
    assert abs(kernel_distance(k, 3.0 * k)) < 1e-15
    assert kernel_distance(k, torch.eye(4, dtype=torch.float64)) > 0
    assert kernel_distance(torch.zeros(2, 2), torch.eye(2)) != kernel_distance(torch.zeros(2, 2), torch.eye(2))  # NaN
    with pytest.raises(ValueError, match="one shape"):
        kernel_distance(k, torch.eye(3))
    assert param_distance({"a": torch.zeros(3)}, {"a": torch.ones(3)}) == pytest.approx(3**0.5)
    assert activation_hamming(torch.ones(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 1.0
    w1, b1, w2 = torch.randn(4, 3), torch.randn(4), torch.randn(2, 4)
    d = conserved_quantities(w1, w2, b1, lr_first=0.1, lr_second=0.3)
    want = 0.1 * (w2.double() ** 2).sum(0) - 0.3 * ((w1.double() ** 2).sum(1) + b1.double() ** 2)
    assert torch.allclose(d, want)
    with pytest.raises(ValueError, match=r"W1 of shape \(h, d\) and W2 of shape \(k, h\)"):
        conserved_quantities(w1, torch.randn(2, 5))
