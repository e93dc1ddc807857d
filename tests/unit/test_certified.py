"""unlearning.tabular.certified: the (ε, δ) constants, σ/budget/ε round trips, ‖X‖₂ and the bound formula,
against values worked out by hand or with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearning.tabular import certified, noise
from unlearning.tabular.logreg import DTYPE, Objective
from unlearning.tabular.problem import Certification, make_problem


@pytest.mark.parametrize(
    "delta,c",
    [
        # c = √(2 ln(1.5/δ)), evaluated by hand: ln 150 = 5.010635, ln 15000 = 9.615805, ln 1.5e6 = 14.220976
        (1e-2, 3.1656391),
        (1e-4, 4.3853861),
        (1e-6, 5.3330995),
        (1.5 * math.exp(-2.0), 2.0),  # δ = 1.5·e^{−c²/2} with c = 2
    ],
)
def test_noise_multiplier_values(delta, c):
    assert noise.noise_multiplier(delta) == pytest.approx(c, rel=1e-7)


@pytest.mark.parametrize("delta", [1e-2, 1e-5, 1e-9, 0.3])
def test_noise_multiplier_inverts_delta(delta):
    c = noise.noise_multiplier(delta)
    assert 1.5 * math.exp(-c * c / 2) == pytest.approx(delta, rel=1e-12)


def test_reference_sigma_of_the_paper():
    """science.md §2: λ = 1, ε = 0.1, δ = 0.01 gives σ ≈ 31.7 × residual."""
    assert noise.noise_scale(1.0, 0.1, 0.01) == pytest.approx(31.656, abs=1e-3)
    assert noise.noise_scale(2.5, 0.1, 0.01) == pytest.approx(2.5 * 31.656, abs=1e-2)


@pytest.mark.parametrize("budget,epsilon,delta", [(1.0, 0.1, 0.01), (0.03, 1.0, 1e-5), (7.5, 2.0, 1e-3)])
def test_sigma_budget_epsilon_round_trip(budget, epsilon, delta):
    sigma = noise.noise_scale(budget, epsilon, delta)
    assert sigma == pytest.approx(math.sqrt(2 * math.log(1.5 / delta)) * budget / epsilon, rel=1e-12)
    assert noise.residual_budget(sigma, epsilon, delta) == pytest.approx(budget, rel=1e-12)
    assert noise.epsilon_for(budget, sigma, delta) == pytest.approx(epsilon, rel=1e-12)
    # half the budget spent → half the ε; ε is linear in the accumulated residual
    assert noise.epsilon_for(budget / 2, sigma, delta) == pytest.approx(epsilon / 2, rel=1e-12)
    cert = Certification(epsilon=epsilon, delta=delta, sigma=sigma)
    assert cert.budget == pytest.approx(budget, rel=1e-12)


def _problem(n=60, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DTYPE)
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1.0)
    y = (torch.rand(n, generator=g) < 0.5).long()
    theta = torch.randn(d, generator=g, dtype=DTYPE)
    return make_problem(theta, Objective(l2=1.0), X, y, 2, [3, 10, 20], X[[20]], 1 - y[[20]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectral_norm_matches_numpy(seed):
    p = _problem(seed=seed)
    expected = np.linalg.norm(p.X.numpy(), 2)
    assert certified.spectral_norm(p) == pytest.approx(expected, rel=1e-12)
    # the stand-in is valid: removing or relabelling rows cannot increase it
    assert np.linalg.norm(p.X_new.numpy(), 2) <= expected + 1e-12


def test_spectral_norm_is_cached_per_model_version():
    p = _problem()
    first = certified.spectral_norm(p)
    assert p.cache["X_norm"] == first
    p.cache["X_norm"] = 123.0  # a stale entry is reused as is: the cache belongs to one θ*/D
    assert certified.spectral_norm(p) == 123.0


def test_data_dependent_bound_formula():
    """γ·‖X_D‖₂·‖X_{D'}Δ‖_∞·‖X_{D'}Δ‖₂ with γ = 1/4 (binary), evaluated with numpy on D' rebuilt
    by hand; and never above Guo et al.'s γ·‖X‖₂·‖Δ‖₂·‖XΔ‖₂ (rows have ‖x‖ ≤ 1)."""
    p = _problem(seed=4)
    g = torch.Generator().manual_seed(9)
    step = torch.randn(5, generator=g, dtype=DTYPE)
    X = p.X.numpy()
    keep = np.ones(len(X), bool)
    keep[[3, 10, 20]] = False
    X_new = np.concatenate([X[keep], X[[20]]])
    s = step.numpy()
    X_step = X_new @ s
    expected = 0.25 * np.linalg.norm(X, 2) * np.abs(X_step).max() * np.linalg.norm(X_step)
    bound = certified.data_dependent_bound(p, step)
    assert bound == pytest.approx(expected, rel=1e-12)
    assert bound <= 0.25 * np.linalg.norm(X, 2) * np.linalg.norm(s) * np.linalg.norm(X_step)


def test_starting_residual_is_the_gradient_norm_on_D():
    p = _problem(seed=5)
    X, y, theta = p.X.numpy(), p.y.numpy(), p.theta.numpy()
    s = 1 / (1 + np.exp(-(X @ theta)))
    expected = np.linalg.norm(X.T @ (s - y) + 1.0 * theta)
    assert certified.starting_residual(p) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("revocation", [False, True])
def test_residual_bound_is_the_exact_residual_on_D_prime_plus_rounding(revocation):
    """The certificate's ε′ for one request: ‖∇L_b(θ; D')‖₂ evaluated with numpy on D' rebuilt by
    hand, plus a float64 allowance that is non-negative and tiny next to it."""
    p = _problem(seed=6)
    X, y = p.X.numpy(), p.y.numpy()
    b = torch.full((5,), 0.3, dtype=DTYPE)
    if revocation:  # every row replaced by itself with column 1 zeroed
        X_tilde = p.X.clone()
        X_tilde[:, 1] = 0.0
        p = make_problem(p.theta, Objective(l2=1.0, b=b), p.X, p.y, 2, range(len(X)), X_tilde, p.y, revoked=(1,))
        X_new, y_new = X_tilde.numpy(), y
    else:
        p = make_problem(p.theta, Objective(l2=1.0, b=b), p.X, p.y, 2, [3, 10, 20], p.X[[20]], 1 - p.y[[20]])
        keep = np.ones(len(X), bool)
        keep[[3, 10, 20]] = False
        X_new, y_new = np.concatenate([X[keep], X[[20]]]), np.concatenate([y[keep], 1 - y[[20]]])
    theta = p.theta.numpy() + 0.1
    s = 1 / (1 + np.exp(-(X_new @ theta)))
    expected = np.linalg.norm(X_new.T @ (s - y_new) + 1.0 * theta + 0.3)
    residual, bound = certified.residual_bound(p, torch.from_numpy(theta))
    assert residual == pytest.approx(expected, rel=1e-12)
    assert residual <= bound <= residual + 1e-10
