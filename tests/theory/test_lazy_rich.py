import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from lit_repr.theory import (
    conserved_quantity,
    lazy_rich_init,
    neuron_conserved_quantities,
    single_neuron_solution,
)

TIMES = np.array([0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])


def integrate(a0, w0, beta, t, eta_a=1.0, eta_w=1.0):
    """Reference: the gradient-flow ODE integrated numerically (DOP853, rtol 1e-11)."""
    w0, beta = np.asarray(w0, float), np.asarray(beta, float)

    def rhs(_, y):
        a, w = y[0], y[1:]
        r = a * w - beta
        return np.concatenate([[-eta_a * (w @ r)], -eta_w * a * r])

    sol = solve_ivp(rhs, (0.0, t.max()), np.concatenate([[a0], w0]), t_eval=t, method="DOP853",
                    rtol=1e-11, atol=1e-14)
    assert sol.success
    return sol.y.T


def rel_err(a, w, ref):
    x = np.concatenate([a[:, None], w], axis=1)
    return np.linalg.norm(x - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-300)


def make_init(sign, d, eta_a, eta_w, rng):
    """(a0, w0) with δ of the requested sign (δ = 0 up to rounding: a balanced init)."""
    w_dir = rng.standard_normal(d)
    w_dir /= np.linalg.norm(w_dir)
    if sign > 0:  # lazy: large output weight
        a0, w0 = 1.5, 0.2 * w_dir
    elif sign < 0:  # large input weight
        a0, w0 = 0.2, 1.5 * w_dir
    else:  # balanced, small: rich
        w0 = 0.05 * w_dir
        a0 = math.sqrt(eta_a / eta_w) * 0.05
    return a0, w0


@pytest.mark.parametrize("rates", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.25)])
@pytest.mark.parametrize("d", [1, 2, 5, 20])
@pytest.mark.parametrize("sign", [1, 0, -1])
def test_matches_ode_integration(sign, d, rates):
    eta_a, eta_w = rates
    rng = np.random.default_rng(100 * d + 10 * sign + int(4 * eta_a))
    a0, w0 = make_init(sign, d, eta_a, eta_w, rng)
    beta = rng.standard_normal(d)
    if d == 1 and sign == 0 and a0 * w0[0] * beta[0] < 0:
        # balanced and anti-aligned in 1-D is the stable manifold of the saddle (tested separately below):
        # round-off, not the dynamics, decides where an ODE integrator leaves it
        beta = -beta
    delta = conserved_quantity(a0, w0, eta_a, eta_w)
    assert (delta > 0.1) if sign > 0 else (delta < -0.1) if sign < 0 else abs(delta) < 1e-15
    # the slowest relative rate of approach to the optimum is min(2ω, ω + δ/2) (the part of w orthogonal to β*
    # shrinks slowly when δ << 0); 30 of its time constants puts the last time at the optimum
    omega = 0.5 * math.sqrt(delta**2 + 4 * eta_a * eta_w * beta @ beta)
    times = np.append(TIMES, TIMES[-1] + 30.0 / min(2 * omega, omega + delta / 2))
    a, w = single_neuron_solution(a0, w0, beta, times, eta_a, eta_w)
    assert a.shape == (len(times),) and w.shape == (len(times), d)
    ref = integrate(a0, w0, beta, times, eta_a, eta_w)
    assert rel_err(a, w, ref).max() <= 1e-6
    assert np.isclose(a[0], a0, rtol=1e-13, atol=0) and np.allclose(w[0], w0, rtol=1e-13, atol=0)  # t = 0: the init
    assert np.linalg.norm(a[-1] * w[-1] - beta) < 1e-6 * np.linalg.norm(beta)


@pytest.mark.parametrize(
    "a0,w0,beta",
    [
        (0.3, [0.0, 0.0, 0.0], [1.0, -1.0, 0.5]),  # w0 = 0
        (0.0, [0.2, 0.1, 0.0], [1.0, -1.0, 0.5]),  # a0 = 0
        (0.4, [0.5, 1.0, -0.5], [1.0, 2.0, -1.0]),  # w0 parallel to β*
        (0.4, [-0.5, -1.0, 0.5], [1.0, 2.0, -1.0]),  # w0 anti-parallel to β*
        (0.7, [0.5, 0.2, 0.1], [0.0, 0.0, 0.0]),  # β* = 0, δ > 0
        (0.2, [0.5, 0.2, 0.1], [0.0, 0.0, 0.0]),  # β* = 0, δ < 0
        (1.0, [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]),  # δ = 0 exactly, w0 ⊥ β*
        (0.0, [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]),  # a0 = 0, w0 ⊥ β*: a fixed point
    ],
)
def test_edge_cases_match_ode(a0, w0, beta):
    a, w = single_neuron_solution(a0, w0, beta, TIMES)
    ref = integrate(a0, w0, beta, TIMES)
    assert rel_err(a, w, ref).max() <= 1e-6


def test_stable_manifold_of_the_saddle():
    # δ = 0 and w = −a stays exact: da/dt = −a(a² + 1), so a(t)² = 1 / ((1 + 1/a0²) e^{2t} − 1)
    a0 = 0.8
    a, w = single_neuron_solution(a0, [-a0, 0.0], [1.0, 0.0], TIMES)
    expected = 1.0 / np.sqrt((1 + 1 / a0**2) * np.exp(2 * TIMES) - 1)
    assert np.allclose(a, expected, rtol=1e-12, atol=0)
    assert np.allclose(w[:, 0], -expected, rtol=1e-12, atol=0) and np.all(w[:, 1] == 0)


def test_saddle_and_fixed_points():
    a, w = single_neuron_solution(0.0, np.zeros(4), np.ones(4), TIMES)
    assert np.all(a == 0) and np.all(w == 0)
    a, w = single_neuron_solution(0.0, [0.0, 1.0], [1.0, 0.0], TIMES)
    assert np.allclose(a, 0, atol=1e-15) and np.allclose(w, [0.0, 1.0], atol=1e-14)
    a, w = single_neuron_solution(0.0, [0.0, 0.0], [0.0, 0.0], 3.0)
    assert a.shape == (1,) and w.shape == (1, 2)


@pytest.mark.parametrize("a0,w0", [(3.0, [0.01, 0.0]), (0.01, [3.0, 0.0]), (1e-4, [1e-4, 0.0]), (-0.5, [0.1, -0.3])])
def test_huge_times_are_finite_and_optimal(a0, w0):
    beta = np.array([0.5, -2.0])
    eta_a, eta_w = 2.0, 0.5
    a, w = single_neuron_solution(a0, w0, beta, [1e3, 1e6, 1e12], eta_a, eta_w)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(w))
    assert np.allclose(a[:, None] * w, beta, rtol=0, atol=1e-10)
    # δ is conserved exactly along the closed form, so the optimum on its hyperbola is known
    delta = conserved_quantity(a0, w0, eta_a, eta_w)
    a_sq = (delta + math.sqrt(delta**2 + 4 * eta_a * eta_w * beta @ beta)) / (2 * eta_w)
    assert np.allclose(a**2, a_sq, rtol=1e-10)


def test_delta_is_conserved_along_the_closed_form():
    rng = np.random.default_rng(3)
    w0, beta = rng.standard_normal(6), rng.standard_normal(6)
    a, w = single_neuron_solution(0.3, w0, beta, np.linspace(0, 20, 50), eta_a=0.7, eta_w=1.3)
    deltas = conserved_quantity(a, w, eta_a=0.7, eta_w=1.3)
    assert np.allclose(deltas, conserved_quantity(0.3, w0, 0.7, 1.3), rtol=0, atol=1e-12)


def gd_delta_drift(step, a0, w0, beta, eta_a, eta_w, horizon=2.0):
    """Largest |δ_n − δ_0| along gradient descent with step ``step`` up to time ``horizon``."""
    a, w = float(a0), np.array(w0, float)
    d0 = conserved_quantity(a, w, eta_a, eta_w)
    drift = 0.0
    for _ in range(int(round(horizon / step))):
        r = a * w - beta
        a, w = a - step * eta_a * (w @ r), w - step * eta_w * a * r
        drift = max(drift, abs(conserved_quantity(a, w, eta_a, eta_w) - d0))
    return drift


@pytest.mark.parametrize("a0,w0", [(1.5, [0.2, 0.1, 0.0]), (0.2, [1.0, -1.0, 0.5]), (0.1, [0.1, 0.0, 0.0])])
def test_delta_drift_under_gradient_descent_scales_with_step(a0, w0):
    beta = np.array([1.0, 0.5, -1.0])
    steps = [4e-3, 2e-3, 1e-3, 5e-4]
    drifts = [gd_delta_drift(s, a0, w0, beta, eta_a=1.0, eta_w=0.5) for s in steps]
    ratios = [drifts[i] / drifts[i + 1] for i in range(len(steps) - 1)]
    # first order in the step: halving the step halves the drift, and it vanishes with the step
    assert all(1.8 < r < 2.2 for r in ratios), (drifts, ratios)
    assert drifts[-1] < 1e-3


def test_lazy_rich_init_realizes_tau_and_delta_per_neuron():
    g = torch.Generator().manual_seed(0)
    tau = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    delta = torch.tensor([0.5, -4.0, 0.0, 1.0, 2.0])
    W1, W2 = lazy_rich_init(7, 5, 3, tau=tau, delta=delta, eta_a=0.5, eta_w=2.0, generator=g, dtype=torch.float64)
    assert W1.shape == (5, 7) and W2.shape == (3, 5)
    got_delta = neuron_conserved_quantities(W1, W2, eta_a=0.5, eta_w=2.0)
    got_tau_sq = 2.0 * W2.pow(2).sum(0) + 0.5 * W1.pow(2).sum(1)
    assert torch.allclose(got_delta, delta.double(), atol=1e-12)
    assert torch.allclose(got_tau_sq, tau.double() ** 2, atol=1e-12)
    assert W2[:, 3].norm() > 0  # δ = τ² keeps a_k and zeroes w_k
    assert torch.all(W1[3] == 0)


def test_lazy_rich_init_unreachable_delta():
    with pytest.raises(ValueError, match=r"delta=5\.0 is unreachable at tau=2\.0.*\[-4\.0, 4\.0\]"):
        lazy_rich_init(3, 2, 1, tau=2.0, delta=5.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        lazy_rich_init(3, 2, 1, tau=0.0, delta=0.0)
    with pytest.raises(ValueError, match="one entry per neuron"):
        lazy_rich_init(3, 2, 1, tau=[1.0, 1.0, 1.0])


def test_bad_input():
    with pytest.raises(ValueError, match="eta_a must be a finite number > 0"):
        single_neuron_solution(1.0, [1.0], [1.0], 1.0, eta_a=0.0)
    with pytest.raises(ValueError, match="eta_w"):
        conserved_quantity(1.0, [1.0], eta_w=-1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        single_neuron_solution(1.0, [1.0], [1.0], [-1.0, 1.0])
    with pytest.raises(ValueError, match="beta_star must have the shape"):
        single_neuron_solution(1.0, [1.0, 2.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        single_neuron_solution(float("nan"), [1.0], [1.0], 1.0)
