"""The (ε, δ) arithmetic of objective perturbation (Guo et al., ICML 2020; science.md §2): how the
noise σ, the promised ε, δ and the residual budget ε′ determine each other, and the draw of b itself
(`draw_noise`, from the OS's random source). Apart from certified.py
(the residual bounds, which need a Problem) because a Problem's Certification needs its budget.

    c = √(2·ln(1.5/δ)),   σ = c·ε′/ε,   ε = c·ε′/σ
"""

from __future__ import annotations

import math
import secrets

import torch


def noise_multiplier(delta: float) -> float:
    """c = √(2 ln(1.5/δ))."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def noise_scale(budget: float, epsilon: float, delta: float) -> float:
    """σ = c·ε′/ε: the noise that lets a total residual of `budget` stay (ε, δ)-certified."""
    return noise_multiplier(delta) * budget / epsilon


def residual_budget(sigma: float, epsilon: float, delta: float) -> float:
    """ε′_max = σ·ε/c: the residual total a model trained with noise σ can absorb."""
    return sigma * epsilon / noise_multiplier(delta)


def epsilon_for(residual: float, sigma: float, delta: float) -> float:
    """ε = c·ε′/σ for an accumulated residual bound ε′."""
    return noise_multiplier(delta) * residual / sigma


def draw_noise(shape, sigma: float) -> torch.Tensor:
    """b ~ N(0, σ²I) from the OS's random source. The certificate's (ε, δ) holds only while b is
    unknown: drawn from `--seed` (logged with the fit, 0 by default) or anything else MLflow or the
    ledger records, anyone reading them rebuilt b, trained every candidate of a deleted record on
    the data left and found the one whose certified update gives the published θ bit for bit."""
    gen = torch.Generator().manual_seed(secrets.randbits(63))
    return torch.randn(shape, generator=gen, dtype=torch.float64) * sigma
