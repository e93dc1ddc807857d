"""Repairing a fast image update whose evidence failed on utility only, before retraining (issue 13 §4).

A chain of unrolled deletions (alignment.unroll) takes every step from the chain's first model, and
the step grows with the images the chain deleted; its guard watches 64 retain images' loss, while
the evidence judges retain and test accuracy against the last exact model on fixed samples
(unlearning.images.evidence). Past a few dozen deletions a step can cost 5–10 points there, or
overshoot its own few images (a forget set at 0 % where held-out images of its classes are at
80–100 %: the Streisand side of the forget gap). Both are failures of *too much* change, not of
too little forgetting, and `auto` used to answer them with a retraining (bench.stream's month of
90 image requests: 6–7 of its 9–10 retrainings).

The repair: a few SGD steps on D' — cross-entropy on its labels plus λ_SD·T²·KL to a teacher on
the same images (alignment's recover step, here without forget steps) — and the same evidence
checks again. D' holds no removed image, so the steps add nothing of them; the teacher is the
chain's first model where the update continued a chain (the model its drift is measured from: an
exact model, or the first of a new chain), else the model before. A repaired model keeps no chain:
its next deletion starts one from it. What the repair may not mend is a failure of forgetting (a
forget set still recognised better than held-out images, a membership signal, a forgotten class
still predicted): `repairable` says which failures it is allowed to answer; the evidence after it
decides, and a repair that fails is replaced by the retraining as before.

Measured (bench.stream images, 90 requests, 3,000-image CNN, 4 epochs, seeds 0–2; docs/benchmarks.md):
12 steps at lr 0.003 cost 0.52–0.61 s against 5.9–6.1 s of retraining, and took the cadence policy's
requests that fell back to retraining from 6–7 to 0–3.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import Field

from unlearning.images.alignment import recover_loss
from unlearning.images.cnn import CNN
from unlearning.images.common import ImageMethodConfig, ImageResult, batches, student_of, teacher_of
from unlearning.images.request import ImageData


class RepairConfig(ImageMethodConfig):
    """Chosen on bench.stream's image month, seeds 0 and 1 (docs/benchmarks.md, "repair before the
    fall-back"): 6 steps at lr 0.01 left 4–5 fall-backs, sometimes making a drop worse (6 → 12
    points); 12 steps at 0.003 mended most utility failures and every Streisand one it met."""

    steps: int = Field(12, ge=1)
    lr: float = Field(0.003, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch: int = Field(64, ge=1)
    lam_sd: float = Field(1.0, ge=0, description="λ_SD, weight of the distillation to the teacher")
    T: float = Field(4.0, gt=0, description="distillation temperature")
    seed: int = 0


# The evidence checks a repair may answer (unlearning.images.evidence): a drop of retain or test
# accuracy, against the model before or the chain's exact model.
UTILITY_CHECKS = ("ra_drop", "ta_drop")
FORGET_GAP = "forget_accuracy_gap_to_heldout"


def repairable(checks: Iterable[dict]) -> bool:
    """Whether every failed check is one of too much change: a utility drop, or a forget set judged
    *below* its held-out images (over-forgetting). Anything else — a forget set still recognised,
    a membership signal, a forgotten class still predicted, a check that is not the evidence's — is
    a failure to forget, which only retraining answers."""
    failed = [c for c in checks if not c["passed"]]
    return bool(failed) and all(_too_much_change(c) for c in failed)


def _too_much_change(check: dict) -> bool:
    if check["name"].startswith(UTILITY_CHECKS):
        return True
    return check["name"] == FORGET_GAP and check["value"] < 0


def repair(model: CNN, data: ImageData, keep: torch.Tensor, teacher: CNN, cfg: RepairConfig) -> ImageResult:
    """`cfg.steps` SGD steps of cross-entropy + λ_SD·T²·KL(teacher ‖ student) on batches of the
    images `keep` (positions in `data`: D', no removed image) from a copy of `model`."""
    student, frozen = student_of(model), teacher_of(teacher)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    picks, every = batches(len(keep), cfg.batch, gen), torch.ones(cfg.batch, dtype=torch.bool)
    passes = 0
    for _ in range(cfg.steps):
        idx = keep[next(picks)]
        loss = recover_loss(student, frozen, data.X[idx], data.y[idx], every[:len(idx)], cfg.lam_sd, cfg.T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        passes += 4 * len(idx)  # forward and backward (3) + the teacher's forward
    return ImageResult(student, "repair", "empirical", {"path": "repair", "repair_steps": cfg.steps, "lr": cfg.lr,
                                                        "image_passes": passes})
