"""The certified bound without a pass over D' (certified.fast_bound) against exact computation.

The bound reads only the version's cache (XᵀX, ‖X‖₂, max row norm, H(θ*; D), ∇L_b(θ*; D)) and
the touched rows. Here every one of its factors is recomputed on D' rebuilt by hand, the bound
is checked to cover the true residual ‖∇L_b(θ; D')‖₂ on many seeded binary problems (also for a
step that is not the Newton step, and for a θ* trained only to a loose tolerance), and the
`certified` method is checked to spend it only where the rule allows.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.numerics.test_influence import (binary_hessian_by_hand, corrected_data, grad_by_hand, problem,
                                           request, residual_by_hand, trained)
from unlearning.tabular import certified, logreg
from unlearning.tabular.methods import run_method
from unlearning.tabular.problem import Certification, make_problem

CERT = Certification(epsilon=1.0, delta=1e-4, sigma=1000.0)  # budget ≈ 228: room for the fast bound of a small request


def version_cache(p) -> dict:
    """What a registered version keeps (erasure.model_cache), computed here from D directly."""
    H = binary_hessian_by_hand(p.theta, p.X, p.obj.l2)
    return {"H": H, "X_norm": float(torch.linalg.matrix_norm(p.X, ord=2)),
            "gradient": grad_by_hand(p.theta, p.X, p.y, p.obj), "gradient_at": p.theta.clone(),
            **certified.data_cache(p.X)}


def cached_problem(n, seed, kind, m, req_seed, sigma=None, tol=1e-12, certification=CERT):
    p = problem(n, 8, 2, seed, kind, m, req_seed, sigma=sigma, certification=certification, tol=tol)
    return replace(p, cache=version_cache(p))


KINDS = [("delete", 1), ("delete", 5), ("delete", 30), ("label", 1), ("label", 10), ("mixed", 4), ("revoke", 1)]


@pytest.mark.parametrize("kind,m", KINDS)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sigma,tol", [(None, 1e-12), (1.0, 1e-12), (1.0, 1e-4)])
def test_fast_bound_covers_the_true_residual(kind, m, seed, sigma, tol):
    """tol 1e-4: θ* is the optimum of D only roughly; its own residual must be counted too."""
    p = cached_problem(400, seed, kind, m, req_seed=seed, sigma=sigma, tol=tol)
    # (a revocation here touches every row, where `certified` takes the pass; the bound holds anyway)
    assert certified.fast_bound_applies(p) == (kind != "revoke")
    theta = run_method("second_order", p, {}).theta
    bound = certified.fast_bound(p, theta)
    true_residual = residual_by_hand(p, theta)
    assert true_residual > 0
    assert bound.bound >= true_residual, (bound, true_residual)
    # ...and for a step that is not the Newton step: the solver error enters through ‖g − H'Δ‖.
    g = torch.Generator().manual_seed(seed)
    off = theta + 1e-3 * torch.randn(theta.shape, generator=g, dtype=theta.dtype)
    assert certified.fast_bound(p, off).bound >= residual_by_hand(p, off)


@pytest.mark.parametrize("kind,m", [("delete", 1), ("delete", 20), ("label", 5), ("mixed", 3), ("revoke", 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_bound_is_the_guo_formula_on_explicit_D_prime(kind, m, seed):
    """Each factor against D' materialised: ‖X′Δ‖₂ exactly, ‖X′‖₂ from above (and equal to ‖X_D‖₂
    for a deletion), ‖g − H'Δ‖ with H' = H(θ*; D') and g = ∇L_b(θ*; D') formed by hand, and the
    remainder equal to Guo et al.'s γ·‖X′‖₂·‖Δ‖₂·‖X′Δ‖₂ with ρ = max ‖x_i‖ (≤ 1 here)."""
    p = cached_problem(300, seed, kind, m, req_seed=seed + 10, sigma=0.5)
    theta = run_method("second_order", p, {}).theta
    fast = certified.fast_bound(p, theta)
    X_new, y_new = corrected_data(p)
    step = p.theta - theta
    assert fast.step_norm == pytest.approx(float(step.norm()), rel=1e-12)
    # ≥: the rounding allowance; a revocation cancels ‖X_ZΔ‖² against all of Δᵀ(XᵀX)Δ, so looser
    assert fast.x_step_norm >= float((X_new @ step).norm())
    assert fast.x_step_norm == pytest.approx(float((X_new @ step).norm()), rel=1e-9 if kind != "revoke" else 1e-6)
    spectral = float(torch.linalg.matrix_norm(X_new, ord=2))
    assert fast.x_norm >= spectral
    if kind == "delete":
        assert fast.x_norm == pytest.approx(float(torch.linalg.matrix_norm(p.X, ord=2)), rel=1e-12)
    rho = float(X_new.norm(dim=1).max())
    assert rho <= fast.row_norm <= max(rho, float(p.X.norm(dim=1).max())) * (1 + 1e-12) <= 1.0 + 1e-12
    guo = certified.GAMMA_LOGISTIC * spectral * float(step.norm()) * float((X_new @ step).norm())
    assert fast.remainder == pytest.approx(
        certified.GAMMA_LOGISTIC * fast.row_norm * fast.x_norm * fast.step_norm * fast.x_step_norm, rel=1e-12)
    assert fast.remainder >= guo * rho * (1 - 1e-9)
    H_new = binary_hessian_by_hand(p.theta, X_new, p.obj.l2)
    linear = float((grad_by_hand(p.theta, X_new, y_new, p.obj) - H_new @ step).norm())
    assert fast.linear == pytest.approx(linear, rel=1e-6, abs=1e-10)
    assert fast.bound >= fast.remainder + fast.linear


def test_certified_spends_the_fast_bound_only_where_the_rule_allows():
    """A small request on a version with the cache: no pass, the fast bound is spent. Without the
    cache, or when the fast bound exceeds FAST_BOUND_SHARE of the budget left: the exact pass,
    spending the (smaller) residual itself."""
    p = cached_problem(400, 3, "delete", 2, req_seed=1, sigma=1.0)
    fast = run_method("certified", p, {})
    assert fast.stats["exact_pass"] == 0
    theta_bound = certified.fast_bound(p, fast.theta).bound
    assert fast.residual_bound == theta_bound
    assert fast.residual_bound <= certified.FAST_BOUND_SHARE * CERT.budget
    assert fast.residual == pytest.approx(residual_by_hand(p, fast.theta), rel=1e-9)  # the diagnostic
    assert fast.residual <= fast.residual_bound

    exact = run_method("certified", replace(p, cache={}), {})
    assert exact.stats["exact_pass"] == 1
    assert exact.residual_bound < fast.residual_bound

    # nearly spent: what is left is too little for the fast bound, so the exact residual is spent
    almost = Certification(CERT.epsilon, CERT.delta, CERT.sigma, spent=CERT.budget - 0.5 * theta_bound / certified.FAST_BOUND_SHARE)
    late = run_method("certified", replace(p, certification=almost), {})
    assert late.stats["exact_pass"] == 1
    assert late.residual_bound == pytest.approx(late.residual, rel=1e-6)


def test_fast_bound_needs_this_versions_cache():
    p = cached_problem(300, 0, "delete", 1, req_seed=0)
    assert certified.fast_bound_applies(p)
    assert not certified.fast_bound_applies(replace(p, cache={**p.cache, "gradient_at": p.theta + 1e-3}))
    assert not certified.fast_bound_applies(replace(p, cache={k: v for k, v in p.cache.items() if k != "gram"}))
    big = cached_problem(300, 0, "delete", 100, req_seed=0)  # more than n/4 rows touched: the pass
    assert not certified.fast_bound_applies(big)


def test_certified_chain_on_the_fast_bound_stays_within_what_was_spent():
    """Sequential certified requests, each version with its cache (as registration builds it):
    every model's exact residual on its data stays within the accumulated spent bound."""
    X, y, obj, theta = trained(600, 8, 2, 5, sigma=1.0, tol=1e-9)
    cert, fast_steps = CERT, 0
    for step in range(4):
        z, X_tilde, y_tilde, _ = request(X, y, 2, "mixed", 2, step)
        p = make_problem(theta, obj, X, y, 2, z, X_tilde, y_tilde, certification=cert)
        p = replace(p, cache=version_cache(p))
        out = run_method("certified", p, {})
        fast_steps += 1 - out.stats["exact_pass"]
        cert = replace(cert, spent=cert.spent + out.residual_bound)
        assert residual_by_hand(p, out.theta) <= out.residual_bound <= cert.spent
        theta, (X, y) = out.theta, corrected_data(p)
    assert fast_steps == 4
    assert logreg.is_binary(theta)


def test_a_small_certified_deletion_reads_no_pass_over_D_prime(monkeypatch):
    """Issue 14: certified deletions within 2× of second_order. The update itself (its diagnostic
    residual, timed apart by the registry, aside) must not sweep D': before, it always did, for
    the exact residual it spent (6–9 ms on Adult against 0.6–0.8 ms for the step)."""
    from unlearning.tabular import influence, methods

    p = cached_problem(400, 2, "label", 2, req_seed=3, sigma=1.0)
    swept = []
    real = influence.link_residuals
    monkeypatch.setattr(influence, "link_residuals", lambda *a: swept.append(1) or real(*a))
    out = methods.certified_update(p, methods.CertifiedConfig())
    assert not swept
    assert out.residual_bound >= residual_by_hand(p, out.theta)


def test_a_cache_not_tied_to_this_D_certifies_by_the_exact_pass():
    """The pipeline drops XᵀX and the row norm when the request's D was not read
    from the version's kept encoding (tasks.kinds.tabular.update_model): `certified` then pays
    the pass instead of trusting sums of another table."""
    p = cached_problem(400, 4, "delete", 1, req_seed=2, sigma=1.0)
    cache = certified.without_data_keys(p.cache)
    assert set(p.cache) - set(cache) == set(certified.DATA_KEYS)
    out = run_method("certified", replace(p, cache=cache), {})
    assert out.stats["exact_pass"] == 1
