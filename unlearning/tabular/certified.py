"""Certified removal for the logistic loss (Guo et al., ICML 2020; science.md §2).

    c       = √(2·ln(1.5/δ))
    σ       = c·ε′/ε              (noise of the objective perturbation b ~ N(0, σ²I))
    bound   = γ·‖X‖₂·‖H⁻¹G‖₂·‖X·H⁻¹G‖₂,  γ = 1/4     (data-dependent residual bound)
    ε       = c·ε′/σ              for an accumulated residual bound ε′

Theorem 3 asks for ‖∇L_b(θ_new; D')‖₂ ≤ ε′: the `certified` method computes that residual exactly
(one pass over D', `residual_bound`) and spends it, plus a float64 rounding allowance; the
data-dependent bound below, its a-priori upper bound, cost as much (a pass for ‖X_{D'}Δ‖) and was
10–25× larger on Adult (deleting 100: 0.022 against 9e-4; revoking `sex`: 7.7 against 0.31).

The σ/ε/ε′ arithmetic is in noise.py. X is the matrix of D' and H the Hessian at θ* on D'. ‖X_{D'}‖₂ ≤ ‖X_D‖₂ for every request kind
here (rows are removed, or replaced by projections of themselves with columns zeroed, or keep
their x), so the spectral norm of the original training matrix, computed once per model version,
is a valid stand-in.
"""

from __future__ import annotations

import torch

from unlearning.tabular import influence, logreg
from unlearning.tabular.problem import Problem

GAMMA_LOGISTIC = 0.25  # Lipschitz constant of the logistic loss's second derivative


def spectral_norm(p: Problem) -> float:
    """‖X_D‖₂, cached per model version (an upper bound on ‖X_{D'}‖₂, see module doc)."""
    if "X_norm" not in p.cache:
        p.cache["X_norm"] = float(torch.linalg.matrix_norm(p.X, ord=2))
    return p.cache["X_norm"]


def starting_residual(p: Problem) -> float:
    """‖∇L_b(θ*; D)‖₂: how far θ* is from the exact minimiser the theorem assumes (cached per model
    version). A Newton step carries it into θ_new unchanged, so the certificate must count it."""
    if "start_residual" not in p.cache:
        p.cache["start_residual"] = float(logreg.gradient(p.theta, p.X, p.y, p.obj).norm())
    return p.cache["start_residual"]


def data_dependent_bound(p: Problem, step: torch.Tensor) -> float:
    """γ·‖X‖₂·‖X_{D'}Δ‖_∞·‖X_{D'}Δ‖₂ for the Newton step Δ = H⁻¹G (shaped like θ, binary).

    Guo et al. (Cor. 1) bound the remainder of the Newton step by γ‖X‖₂‖Δ‖₂‖XΔ‖₂; their proof
    uses ‖Δ‖₂ only to bound the change of each row's curvature, |w_i(θ*+tΔ) − w_i(θ*)| ≤
    γ·|x_iᵀΔ| ≤ γ·‖Δ‖₂ (‖x_i‖ ≤ 1). Keeping max_i |x_iᵀΔ| instead is the same argument one step
    earlier, never larger, and ignores coordinates that are zero in D' (revoked features, whose
    change is exact). The result is still checked against the true residual in the tests.
    """
    X_step = torch.cat([X @ step if weight is None else (X @ step)[weight > 0]
                        for X, _, weight in p.new_blocks()])  # (n',), D' read in place
    return GAMMA_LOGISTIC * spectral_norm(p) * float(X_step.abs().max()) * float(X_step.norm())


UNIT_ROUNDOFF = 2.0 ** -53  # float64


def residual_bound(p: Problem, theta: torch.Tensor) -> tuple[float, float]:
    """(‖∇L_b(θ; D')‖₂ as computed, a bound on the exact value): one pass over D' (binary θ).

    The computed norm is exact up to float64 rounding of the sums Xᵀr over n' rows (and x·θ over
    d): |fl(Xᵀr) − Xᵀr| ≤ γ·|X|ᵀ|r| with γ ≈ (n'+d)·u, and ‖|X|ᵀ|r|‖₂ ≤ ‖X‖_F·‖r‖₂ ≤ √d·‖X_D‖₂·‖r‖₂.
    The bound adds that allowance (≈ 1e-7 on Adult), so the certificate never rests on rounding."""
    g = p.obj.l2 * theta + (p.obj.b if p.obj.b is not None else 0.0)
    r_norm2 = 0.0
    for X, r in influence.link_residuals(p, theta):  # (b, d), (b,)
        g = g + X.T @ r
        r_norm2 += float(r @ r)
    residual = float(g.norm())
    d = p.X.shape[1]
    gamma = (p.n_new + d + 2) * UNIT_ROUNDOFF
    extra = float((p.obj.l2 * theta).norm()) + (float(p.obj.b.norm()) if p.obj.b is not None else 0.0)
    allowance = gamma * (d ** 0.5 * spectral_norm(p) * r_norm2 ** 0.5 + extra)
    return residual, residual + allowance

