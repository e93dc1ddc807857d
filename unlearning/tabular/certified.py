"""Certified removal for the logistic loss (Guo et al., ICML 2020; science.md §2).

    c       = √(2·ln(1.5/δ))
    σ       = c·ε′/ε              (noise of the objective perturbation b ~ N(0, σ²I))
    bound   = γ·‖X‖₂·‖H⁻¹G‖₂·‖X·H⁻¹G‖₂,  γ = 1/4     (data-dependent residual bound)
    ε       = c·ε′/σ              for an accumulated residual bound ε′

Theorem 3 asks for ‖∇L_b(θ_new; D')‖₂ ≤ ε′. The `certified` method spends one of two amounts:
`fast_bound`, a data-dependent bound evaluated in O(|Z|·p + p²) from the model version's cache
(XᵀX, Σ‖x_i‖²x_i x_iᵀ, H, ∇L_b(θ*; D): no pass over D'; the bound above with the curvature's true
Lipschitz constant averaged along the step and each row weighted by its own norm, 5–10× below it),
when it is at most FAST_BOUND_SHARE of the budget left; else the residual itself, computed exactly
in one pass over D' (`residual_bound`) plus a float64 rounding allowance — 7–10× smaller than the
fast bound on Adult, so big requests keep a cheap budget.
`data_dependent_bound` below is the same bound with max_i |x_iᵀΔ| read in a pass over D'.

The σ/ε/ε′ arithmetic is in noise.py. X is the matrix of D' and H the Hessian at θ* on D'. ‖X_{D'}‖₂ ≤ ‖X_D‖₂ for every request kind
here (rows are removed, or replaced by projections of themselves with columns zeroed, or keep
their x), so the spectral norm of the original training matrix, computed once per model version,
is a valid stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.tabular import influence, logreg
from unlearning.tabular.problem import Problem

GAMMA_LOGISTIC = 0.25  # Guo et al.'s Lipschitz constant of ℓ'' = σ(1−σ), and also max σ(1−σ)
# The best such constant: |d/du σ(1−σ)| = σ(1−σ)|1−2σ| peaks at σ = (3 ± √3)/6, where σ(1−σ) = 1/6 and
# |1−2σ| = 1/√3. (fast_bound averages it along the step, which halves it again: 1/(12√3) ≈ 0.048.)
CURVATURE_LIPSCHITZ = 1.0 / (6.0 * 3.0 ** 0.5)


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


@dataclass(frozen=True)
class ExactResidual:
    gradient: torch.Tensor  # ∇L_b(θ; D') as computed, shaped like θ: a further Newton step needs no other pass
    residual: float  # its norm
    bound: float  # a bound on the exact norm (rounding allowance added)


def exact_residual(p: Problem, theta: torch.Tensor) -> ExactResidual:
    """‖∇L_b(θ; D')‖₂ as computed and a bound on the exact value: one pass over D' (binary θ).

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
    return ExactResidual(g, residual, residual + allowance)


def residual_bound(p: Problem, theta: torch.Tensor) -> tuple[float, float]:
    """(‖∇L_b(θ; D')‖₂ as computed, a bound on the exact value): `exact_residual`'s numbers."""
    exact = exact_residual(p, theta)
    return exact.residual, exact.bound


# A request whose exact residual would spend more than this share of the budget left takes one
# more Newton step, on the gradient its certificate's pass has just computed, and is certified
# again by a second pass: one pass more (≈ 5 ms on Adult) for a residual that is usually orders
# of magnitude smaller (a 1 % label fix on Adult: 1.04 of the budget 10 → see docs/tabular.md).
# Below the share, one pass certifies (a revocation on Adult: 0.015–0.023 of 10, i.e. 0.15–0.23 %).
REFINE_SHARE = 1e-2


# --- the O(p²) bound: no pass over D' ------------------------------------------------------------

# The fast bound is spent when it is at most this share of the budget left: each such request
# then uses at most 0.1 % of what remains (at least 690 of them fit before half of any budget is
# gone), and a request whose bound is larger pays the exact pass and spends its residual, 7–10×
# smaller on Adult (deleting 1000 records: 0.27 against 0.038; deleting 100: 0.0068 against 8.9e-4,
# under the share, so spent without a pass; deleting 1: 4e-6 against 5e-7).
FAST_BOUND_SHARE = 1e-3

DATA_KEYS = ("gram", "row_norm_max", "gram_by_row_norm")  # entries that describe D itself


def without_data_keys(cache: dict) -> dict:
    """The cache less what the O(p²) bound reads of D: for a request whose D is not provably the
    one the cache was computed from (a certificate must not rest on another table's XᵀX)."""
    return {k: v for k, v in cache.items() if k not in DATA_KEYS}


def data_cache(X: torch.Tensor) -> dict:
    """What a model version keeps of its training matrix for the O(p²) bound: XᵀX (p×p), max_i ‖x_i‖₂
    and Σ_i ‖x_i‖²·x_i x_iᵀ (p×p, bounds Σ_i (x_iᵀΔ)⁴: see FastBound). O(n·p²) once per version, at
    registration, like H."""
    row_sq = X.pow(2).sum(dim=1)  # (n,)
    return {"gram": X.T @ X, "row_norm_max": float(X.norm(dim=1).max()) if len(X) else 0.0,
            "gram_by_row_norm": X.T @ (row_sq[:, None] * X)}


@dataclass(frozen=True)
class FastBound:
    """A bound on ‖∇L_b(θ_new; D')‖₂ from the version's cache and the touched rows only.

    With Δ = θ* − θ_new, g = ∇L_b(θ*; D'), H' = H(θ*; D'), and for each row of D' the logit
    u_i = x_iᵀθ* and its change v_i = x_iᵀΔ, the gradient of L_b is exactly
        ∇L_b(θ_new; D') = g − H'Δ + X′ᵀe,   e_i = v_i·∫₀¹ (w(u_i) − w(u_i − t·v_i)) dt,  w = σ(1−σ)
    (σ(u) − σ(u − v) = v·∫₀¹ w(u − tv) dt). |w′| = σ(1−σ)|1−2σ| ≤ κ = 1/(6√3) (CURVATURE_LIPSCHITZ), so
    |w(u) − w(u − tv)| ≤ κ·t·|v| and, integrated, |e_i| ≤ (κ/2)·v_i². Hence
        ‖∇L_b(θ_new; D')‖ ≤ ‖g − H'Δ‖ + ‖X′‖₂·(κ/2)·(Σ_{D'} v_i⁴)^½
    and, by Cauchy–Schwarz row by row (v_i² ≤ ‖x_i‖²‖Δ‖²),
        Σ_{D'} v_i⁴ ≤ ‖Δ‖²·(Δᵀ(Σ_D ‖x_i‖² x_i x_iᵀ)Δ − Σ_Z ‖x_z‖² v_z²) + Σ_Z̃ v_i⁴.
    This is science.md §2's data-dependent bound made tighter in two places, each never larger:
    Guo et al. take the curvature change at one point of the step with γ = 1/4 (≥ 2.6·κ, and the
    average along the step halves κ again), and bound every |v_i| by ρ‖Δ‖₂ (ρ = max ‖x_i‖ ≤ 1),
    i.e. (Σ v_i⁴)^½ ≤ ρ‖Δ‖₂‖X′Δ‖₂; weighting each row by its own ‖x_i‖² keeps short rows short.
    Their γ·‖X′‖₂·‖Δ‖₂·‖X′Δ‖₂ is at least 5.2× this remainder when ρ = 1; on Adult (deleting 100
    records) it is 9.6× (0.065 against 0.0068; the true residual is 8.9e-4).

    Every factor is O(p²) or O(|Z|·p) from the cache:
      g        = ∇L_b(θ*; D) (cached) + G                       — any solver error of the step and
      H'Δ      = H(θ*; D)Δ (cached) − Σ_Z w x xᵀΔ + Σ_Z̃ w x̃ x̃ᵀΔ   θ*'s own residual are in ‖g − H'Δ‖
      Σ_D ‖x_i‖² x_i x_iᵀ  cached (`gram_by_row_norm`); a cache without it uses ρ_D²·XᵀX ⪰ it
      ‖X′Δ‖²   = Δᵀ(XᵀX)Δ − ‖X_ZΔ‖² + ‖X̃Δ‖²                     (exact; XᵀX cached; reported)
      ‖X′‖₂²   ≤ ‖X‖₂² + Σ‖x̃‖²                                  (Weyl: X′ᵀX′ ⪯ XᵀX + X̃ᵀX̃)
    plus a float64 allowance for the cached sums over n rows (as `residual_bound`).
    """

    bound: float
    remainder: float  # ‖X′‖₂·(κ/2)·(Σ v_i⁴)^½ (its factors below)
    linear: float  # ‖g − H'Δ‖₂
    allowance: float
    x_norm: float  # the bound on ‖X′‖₂
    row_norm: float  # ρ, a bound on max ‖x_i‖ over D'
    step_norm: float  # ‖Δ‖₂
    x_step_norm: float  # ‖X′Δ‖₂ (with its rounding allowance)
    quartic: float  # the bound on (Σ_{D'} (x_iᵀΔ)⁴)^½


def fast_bound_applies(p: Problem) -> bool:
    """Binary, few touched rows (beyond n/4 the exact pass costs about the same as the row terms
    and gives the smaller residual), and a cache of this θ* holding everything the bound reads."""
    if not logreg.is_binary(p.theta) or p.touched * 4 > p.n:
        return False
    if any(p.cache.get(k) is None for k in ("gram", "row_norm_max", "X_norm", "H", "gradient", "gradient_at")):
        return False
    # Z's sums are subtracted from D's: a row listed twice would be subtracted twice.
    # the bound's Taylor term reads H at θ* itself, not a Newton matrix kept from a θ nearby
    at = p.cache.get("hessian_at", p.cache["gradient_at"])
    return (torch.equal(p.cache["gradient_at"], p.theta) and torch.equal(at, p.theta)
            and len(torch.unique(p.z_index)) == len(p.z_index))


def fast_bound(p: Problem, theta: torch.Tensor, start_gradient: torch.Tensor | None = None) -> FastBound:
    """The O(|Z|·p + p²) bound on ‖∇L_b(θ; D')‖₂ for θ = θ* − Δ (see FastBound); needs
    `fast_bound_applies(p)`. `start_gradient`: ∇L_b(θ*; D') = ∇L_b(θ*; D) + G if the caller holds
    it (influence.NewtonResult.start_gradient), else computed here the same way."""
    step = p.theta - theta  # Δ, over every coordinate (revoked ones included)
    z, t = _row_terms(p.theta, p.X_z, step), _row_terms(p.theta, p.X_tilde, step)
    g = (start_gradient if start_gradient is not None
         else p.cache["gradient"] + influence.influence_gradient(p)).reshape(-1)
    gram, weighted = p.cache["gram"], p.cache.get("gram_by_row_norm")
    H_step = p.cache["H"] @ step - z.curvature_step + t.curvature_step
    linear = float((g - H_step).norm())

    frob2 = float(gram.diagonal().sum()) + t.norm_sq  # ≥ ‖X′‖_F²
    step_norm = float(step.norm())
    rounding = (p.n + step.numel() + p.touched + 2) * UNIT_ROUNDOFF
    x_step_sq = float(step @ (gram @ step)) - z.step_sq + t.step_sq
    x_step_norm = (max(x_step_sq, 0.0) + 2 * rounding * frob2 * step_norm ** 2) ** 0.5
    x_norm = (float(p.cache["X_norm"]) ** 2 + t.norm_sq) ** 0.5 * (1 + rounding)
    row_norm_d = float(p.cache["row_norm_max"]) * (1 + rounding)
    row_norm = max(row_norm_d, t.norm_sq_max ** 0.5 * (1 + rounding))

    # (Σ_{D'} v_i⁴)^½: ‖Δ‖²·Δᵀ(Σ_D ‖x_i‖²x_i x_iᵀ)Δ less Z's share, plus Z̃'s exactly. The cached
    # matrix (or ρ_D²·XᵀX, which dominates it) sums n rows: its rounding in the quadratic form is
    # at most rounding·ρ_D²·‖X‖_F²·‖Δ‖².
    weighted_sq = float(step @ (weighted @ step)) if weighted is not None else row_norm_d ** 2 * float(step @ (gram @ step))
    kept = max(weighted_sq - z.weighted_step_sq, 0.0) + 2 * rounding * row_norm_d ** 2 * frob2 * step_norm ** 2
    quartic = ((step_norm ** 2 * kept + t.step_quartic) * (1 + rounding)) ** 0.5
    remainder = 0.5 * CURVATURE_LIPSCHITZ * x_norm * quartic

    # Rounding of the cached gradient (n rows, |r_i| ≤ 1) and of H'Δ (H's entries sum n rows, w ≤ 1/4).
    d = step.numel()
    extra = float((p.obj.l2 * p.theta).norm()) + (float(p.obj.b.norm()) if p.obj.b is not None else 0.0)
    allowance = 2 * rounding * (d ** 0.5 * x_norm * (p.n + p.touched) ** 0.5 + extra
                                + (GAMMA_LOGISTIC * frob2 + p.obj.l2) * step_norm)
    bound = (remainder + linear + allowance) * (1 + 4 * rounding)
    return FastBound(bound, remainder, linear, allowance, x_norm, row_norm, step_norm, x_step_norm, quartic)


@dataclass(frozen=True)
class RowTerms:
    """What the touched rows X (Z or Z̃) contribute to the bound, for the step Δ (v = XΔ)."""

    curvature_step: torch.Tensor | float  # Σ w(x·θ*)·x·v, part of H'Δ
    step_sq: float  # Σ v²
    weighted_step_sq: float  # Σ ‖x‖²·v²
    step_quartic: float  # Σ v⁴
    norm_sq: float  # Σ ‖x‖²
    norm_sq_max: float  # max ‖x‖²


def _row_terms(theta: torch.Tensor, X: torch.Tensor, step: torch.Tensor) -> RowTerms:
    if not len(X):
        return RowTerms(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    v, norm_sq = X @ step, X.pow(2).sum(dim=1)
    v_sq = v * v
    return RowTerms(X.T @ (_curvature(theta, X) * v), float(v_sq.sum()), float(norm_sq @ v_sq),
                    float(v_sq @ v_sq), float(norm_sq.sum()), float(norm_sq.max()))


def _curvature(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(X @ theta)
    return s * (1 - s)
