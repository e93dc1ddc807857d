"""Dimensional alignment (DA, science.md §4): how much of the forget features' energy lies inside
the subspace spanned by the retain features.

    V_k       = top-k right singular vectors of R (n_r × d), k the smallest with
                Σ_{i≤k} σ_i² ≥ τ · Σ_i σ_i²                     (τ = `energy`, 0.95 by default)
    DA(F; R)  = ‖F V_k‖²_F / ‖F‖²_F  ∈ [0, 1]                    (higher = more aligned)

Conventions (the paper's exact formula was not available; this is the documented choice):
- no centring and no per-sample normalisation: R and F are used as given, so the number is exactly
  the formula above (a forget sample weighs by its squared feature norm; the mean feature direction,
  large for post-ReLU features, is part of the retain subspace as it is for the classifier head);
- "spectral energy" is σ² (squared singular values), the same energy the ratio measures;
- the basis is a constant: `retain_basis` detaches R, `dimensional_alignment` is differentiable in F
  only, so 1 − DA can be used as a loss on forget features.

DA is not "higher is better" in absolute terms: it is judged against the retrained model's value
(a model retrained without the forget set has high DA; wrong-supervision methods lower it).
"""

from __future__ import annotations

import numpy as np
import torch

from unlearning.errors import UnlearnError

# Relative slack on the energy threshold: with τ = 1 the cumulative sum of float eigenvalues may
# stop a hair below the total, which would otherwise add numerically-zero directions.
_ENERGY_SLACK = 1e-10


def retain_basis(R: torch.Tensor, energy: float = 0.95) -> torch.Tensor:
    """V_k (d, k): orthonormal top-k right singular vectors of retain features R (n_r, d), k the
    smallest number holding ≥ `energy` of Σσ². R is detached and not centred (see module doc).

    Computed from the d × d Gram matrix RᵀR in float64 (its eigenvalues are σ²): O(n_r·d²), cheap
    for large retain sets where d ≪ n_r. Returned in R's dtype and device.
    """
    if R.ndim != 2 or R.shape[0] == 0:
        raise UnlearnError(f"retain features must be a non-empty (n, d) matrix, got shape {tuple(R.shape)}")
    if not 0.0 < energy <= 1.0:
        raise UnlearnError(f"energy must be in (0, 1], got {energy}")
    R64 = R.detach().to(torch.float64)
    eigvals, eigvecs = torch.linalg.eigh(R64.T @ R64)  # ascending; (d,), (d, d)
    eigvals = eigvals.flip(0).clamp_min(0.0)
    eigvecs = eigvecs.flip(1)
    total = eigvals.sum()
    if not total > 0:
        raise UnlearnError("retain features are all zero: the retain subspace is empty")
    cumulative = eigvals.cumsum(0)
    k = int((cumulative < energy * total * (1 - _ENERGY_SLACK)).sum()) + 1
    return eigvecs[:, :k].to(dtype=R.dtype, device=R.device)  # (d, k)


def dimensional_alignment(F: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """DA = ‖F V‖²_F / ‖F‖²_F as a 0-dim tensor, differentiable in F (V is treated as constant).

    F (n_f, d) forget features, V (d, k) orthonormal basis from `retain_basis`. Higher means more
    of the forget energy inside the retain subspace. All-zero F gives 0 (no energy to align).
    """
    if F.ndim != 2 or V.ndim != 2 or F.shape[1] != V.shape[0]:
        raise UnlearnError(f"shape mismatch: features {tuple(F.shape)} vs basis {tuple(V.shape)}")
    V = V.detach().to(dtype=F.dtype, device=F.device)
    inside = (F @ V).pow(2).sum()  # ‖F V‖²_F
    total = F.pow(2).sum()  # ‖F‖²_F
    return inside / total.clamp_min(torch.finfo(F.dtype).tiny)


def da_score(forget_feats, retain_feats, energy: float = 0.95) -> float:
    """DA(F; R) as a float from numpy arrays or tensors (computed in float64)."""
    F = torch.as_tensor(np.asarray(forget_feats) if not torch.is_tensor(forget_feats) else forget_feats)
    R = torch.as_tensor(np.asarray(retain_feats) if not torch.is_tensor(retain_feats) else retain_feats)
    F, R = F.detach().to(torch.float64), R.detach().to(torch.float64)
    return float(dimensional_alignment(F, retain_basis(R, energy)))
