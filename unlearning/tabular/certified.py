"""Certified removal for the logistic loss (Guo et al., ICML 2020; science.md §2).

    c       = √(2·ln(1.5/δ))
    σ       = c·ε′/ε              (noise of the objective perturbation b ~ N(0, σ²I))
    bound   = γ·‖X‖₂·‖H⁻¹G‖₂·‖X·H⁻¹G‖₂,  γ = 1/4     (data-dependent residual bound)
    ε       = c·ε′/σ              for an accumulated residual bound ε′

The σ/ε/ε′ arithmetic is in noise.py. X is the matrix of D' and H the Hessian at θ* on D'. ‖X_{D'}‖₂ ≤ ‖X_D‖₂ for every request kind
here (rows are removed, or replaced by projections of themselves with columns zeroed, or keep
their x), so the spectral norm of the original training matrix, computed once per model version,
is a valid stand-in.
"""

from __future__ import annotations

import torch

from unlearning.tabular import logreg
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
    X_step = p.X_new @ step  # (n',)
    return GAMMA_LOGISTIC * spectral_norm(p) * float(X_step.abs().max()) * float(X_step.norm())

