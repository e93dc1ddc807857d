"""Fit a tabular model bundle from a table (the `train` step), optionally certifiably."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearning.tabular import logreg, noise
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table, check_trainable
from unlearning.tabular.encoding import Encoder
from unlearning.tabular.erasure import training_data
from unlearning.tabular.problem import Certification


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # --lam inf trained NaN

    lam: float = Field(1e-3, gt=0, description="L2 weight per training row; Λ = lam·n is fixed for the lineage")
    certified: bool = Field(False, description="objective perturbation for (ε, δ)-certified removal")
    epsilon: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    budget: float = Field(10.0, gt=0, description="total gradient-residual bound removals may accumulate")
    seed: int = Field(0, ge=0, description="unused by tables (L-BFGS from 0 is deterministic; the noise is "
                                           "drawn from the OS: noise.draw_noise)")
    tol: float = Field(1e-9, gt=0, description="stop when ‖∇L‖ ≤ tol·n")


def train_bundle(table: Table, cfg: TrainConfig, progress=None) -> tuple[ModelBundle, torch.Tensor | None, logreg.FitReport]:
    """Fit θ on the table's training rows; returns the bundle, the private noise b and the fit report."""
    check_trainable(table)
    encoder = Encoder.fit(table)
    n_classes = len(encoder.labels)
    placeholder = ModelBundle(encoder=encoder, theta=logreg.init_theta(encoder.d, n_classes), l2=0.0)
    data = training_data(table, placeholder)
    l2 = cfg.lam * len(data.X)
    certification, b = None, None
    if cfg.certified:
        sigma = noise.noise_scale(cfg.budget, cfg.epsilon, cfg.delta)
        certification = Certification(epsilon=cfg.epsilon, delta=cfg.delta, sigma=sigma)
        b = noise.draw_noise(placeholder.theta.shape, sigma)
    report = logreg.fit(data.X, data.y, n_classes, logreg.Objective(l2=l2, b=b), tol=cfg.tol, progress=progress)
    bundle = ModelBundle(encoder=encoder, theta=report.theta, l2=l2, certification=certification)
    return bundle, b, report
