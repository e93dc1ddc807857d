"""Verification of an unlearned model, with thresholds, in the three modes of the request path
(tasks.kinds.base.VERIFY_MODES):

- `reference`: fidelity to the exact retraining on D' (science.md §5, "fidelity to retraining");
- `evidence`: no model trained — strong convexity turns the exact gradient residual on D' into a
  bound on the distance to the retrained model and on how far any prediction can move
  (`distance_to_retrain_bound`, `convexity_checks`);
- `certificate`: no model trained — the (ε, δ) certificate of a certified update is the proof
  (`certificate_checks`).

Every check is recorded with its value, threshold and pass/fail so the certificate can show it.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearning.tabular import logreg


class VerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_agreement: float = Field(0.99, ge=0, le=1, description="share of test predictions equal to the retrained model's")
    max_accuracy_gap: float = Field(0.5, ge=0, description="|test accuracy − retrained test accuracy|, in points")
    # evidence and certificate modes (no retrained model to compare with)
    max_accuracy_drop: float = Field(1.0, ge=0, description="test accuracy lost against the model before, in points")
    accuracy_drop_alpha: float = Field(0.05, ge=0, le=1, description="a larger drop fails only where chance explains "
                                       "it less often than this (one-sided exact McNemar test; 1: the points alone)")
    max_residual_left: float = Field(0.1, ge=0, le=1, description="evidence: the share of the request's pull on the "
                                     "optimum the update may leave, ‖∇L(θ; D')‖ / ‖∇L(θ*; D')‖")


def accuracy(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    return float((logreg.predict(theta, X) == y).double().mean()) if len(y) else float("nan")


def mean_loss(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    return float(logreg.sample_losses(theta, X, y).mean()) if len(y) else float("nan")


def agreement(theta_a: torch.Tensor, theta_b: torch.Tensor, X: torch.Tensor) -> float:
    return float((logreg.predict(theta_a, X) == logreg.predict(theta_b, X)).double().mean())


def fidelity(theta: torch.Tensor, theta_ref: torch.Tensor, theta_before: torch.Tensor,
             X_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """Test accuracy/loss of the model, the reference and the model before unlearning, and the
    fidelity measures between the model and the reference."""
    return {
        "test_accuracy": accuracy(theta, X_test, y_test),
        "test_accuracy_retrain": accuracy(theta_ref, X_test, y_test),
        "test_accuracy_before": accuracy(theta_before, X_test, y_test),
        "accuracy_gap_pts": 100 * abs(accuracy(theta, X_test, y_test) - accuracy(theta_ref, X_test, y_test)),
        "agreement": agreement(theta, theta_ref, X_test),
        "agreement_before": agreement(theta_before, theta_ref, X_test),
        "test_loss": mean_loss(theta, X_test, y_test),
        "test_loss_retrain": mean_loss(theta_ref, X_test, y_test),
        "param_distance": float((theta - theta_ref).norm()),
        "param_distance_before": float((theta_before - theta_ref).norm()),
    }


def checks(metrics: dict, cfg: VerifyConfig) -> list[dict]:
    """The pass/fail checks on fidelity metrics."""
    return [
        {"name": "agreement_with_retrain", "value": metrics["agreement"], "threshold": f">= {cfg.min_agreement}",
         "passed": metrics["agreement"] >= cfg.min_agreement},
        {"name": "accuracy_gap_pts", "value": metrics["accuracy_gap_pts"], "threshold": f"<= {cfg.max_accuracy_gap}",
         "passed": metrics["accuracy_gap_pts"] <= cfg.max_accuracy_gap},
    ]


# --- evidence: strong convexity, no model trained -----------------------------------------------

# What the reference retraining reaches (logreg.fit's default tolerance, per training row): a model
# whose residual on D' is below it is as much a minimiser of L_b(·; D') as the reference.
FIT_TOLERANCE = 1e-9


def distance_to_retrain_bound(residual: float, l2: float) -> float:
    """‖θ − θ̂‖ ≤ ‖∇L_b(θ; D')‖ / Λ, θ̂ the exact minimiser of L_b(·; D') (the retrained model).

    The objective is a sum, not a mean (logreg module doc): L_b(θ; D') = Σ_i ℓ(z_i, θ) + (Λ/2)‖θ‖²
    + bᵀθ with Λ = `l2` = λ·n₀ fixed for the lineage. Each ℓ is convex in θ (logistic and softmax
    cross-entropy), bᵀθ is linear, so ∇²L_b ⪰ Λ·I: L_b is Λ-strongly convex, i.e.
    ⟨∇L_b(θ) − ∇L_b(θ̂), θ − θ̂⟩ ≥ Λ‖θ − θ̂‖². With ∇L_b(θ̂) = 0 and Cauchy–Schwarz,
    Λ‖θ − θ̂‖² ≤ ‖∇L_b(θ)‖·‖θ − θ̂‖, hence ‖θ − θ̂‖ ≤ ‖∇L_b(θ)‖/Λ (Frobenius norms for a (d, K) θ).
    A real retrained θ_r is itself a minimiser only up to its residual r_r: ‖θ − θ_r‖ ≤
    (‖∇L_b(θ)‖ + r_r)/Λ."""
    return residual / l2


def logit_margins(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """How far each row is from a different prediction (n,): |xᵀθ| for a binary model, the top
    logit minus the runner-up for a multinomial one."""
    z = logreg.logits(theta, X)
    if logreg.is_binary(theta):
        return z.abs()
    top = z.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def prediction_shift_bound(theta: torch.Tensor, X: torch.Tensor, distance: float) -> torch.Tensor:
    """The most each row's margin can differ between θ and any θ' with ‖θ − θ'‖ ≤ `distance` (n,):
    |xᵀθ − xᵀθ'| ≤ ‖x‖·‖θ − θ'‖ (Cauchy–Schwarz); for K classes the difference of two logits,
    x·(Δ_a − Δ_c), is at most ‖x‖·‖Δ_a − Δ_c‖ ≤ √2·‖x‖·‖Δ‖_F."""
    scale = 1.0 if logreg.is_binary(theta) else 2 ** 0.5
    return scale * X.norm(dim=1) * distance


def guaranteed_agreement(theta: torch.Tensor, X: torch.Tensor, distance: float) -> float:
    """A lower bound on the share of rows θ predicts as the retrained model does, knowing only
    ‖θ − θ_retrain‖ ≤ `distance`: the rows whose margin exceeds the most it can move."""
    if not len(X):
        return float("nan")
    return float((logit_margins(theta, X) > prediction_shift_bound(theta, X, distance)).double().mean())


def convexity_evidence(theta: torch.Tensor, theta_before: torch.Tensor, residual: float, residual_before: float,
                       l2: float, n_after: int, X_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """The `evidence` metrics of a table model θ on D' (θ_before = the model before the request,
    whose residual on D' is how hard the request pulls the optimum away from it)."""
    distance = distance_to_retrain_bound(residual, l2)
    return {
        "residual": residual,
        "residual_before": residual_before,
        "residual_left": residual / residual_before if residual_before > 0 else 0.0,
        "distance_bound": distance,
        "distance_bound_before": distance_to_retrain_bound(residual_before, l2),
        "guaranteed_agreement": guaranteed_agreement(theta, X_test, distance),
        "residual_floor": FIT_TOLERANCE * max(1, n_after),
        **utility(theta, theta_before, X_test, y_test),
    }


def utility(theta: torch.Tensor, theta_before: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """Test accuracy of the model and of the model before the request (no reference needed), and how
    often chance alone would lose as much (`accuracy_drop_p`, see drop_p_value)."""
    right_after, right_before = (logreg.predict(t, X_test) == y_test for t in (theta, theta_before))
    after, before = float(right_after.double().mean()), float(right_before.double().mean())  # NaN without rows
    lost, gained = int((right_before & ~right_after).sum()), int((right_after & ~right_before).sum())
    return {"test_accuracy": after, "test_accuracy_before": before, "accuracy_drop_pts": 100 * (before - after),
            "accuracy_drop_p": drop_p_value(lost, gained)}


def drop_p_value(lost: int, gained: int) -> float:
    """One-sided exact McNemar test: the chance that at least `lost` of the `lost + gained` test rows
    whose prediction the update changed would go wrong if each change were as likely right as wrong.
    On a small test split a point or two is one or two predictions, which any refit may move: on 46
    test rows one is 2.17 points, and a one-record deletion's update was refused for losing two."""
    changed, term, tail = lost + gained, math.comb(lost + gained, lost), 0
    for k in range(lost, changed + 1):  # Σ_{k ≥ lost} C(changed, k), in exact integers
        tail += term
        term = term * (changed - k) // (k + 1)
    return tail / (1 << changed)


# The `evidence` checks that judge the residual an update leaves: the distance to the retrained model
# (strong convexity bounds it by that residual) and the agreement it guarantees; not utility.
RESIDUAL_CHECKS = ("distance_to_retrain_bound", "guaranteed_agreement")


def failed_on_residual_only(checks: list[dict]) -> bool:
    """Whether some of `checks` failed, all of them RESIDUAL_CHECKS: what further Newton steps mend."""
    failed = {c["name"] for c in checks if not c["passed"]}
    return bool(failed) and failed <= set(RESIDUAL_CHECKS)


def convexity_checks(metrics: dict, cfg: VerifyConfig, exact: bool = False) -> list[dict]:
    """`evidence` checks: the update removed the request's pull on the optimum (distance bound to
    the retrained model at most `max_residual_left` of the model before's, or θ is a minimiser of
    L_b(·; D') to the reference's own tolerance), no more than 1 − `min_agreement` of the test
    predictions can differ from the retrained model's, and utility held. `exact`: θ was retrained
    on D', the model the erasure must produce, so its accuracy change is the data's own and is
    reported (metrics), not judged: on a small test split one prediction moves it by more than
    `max_accuracy_drop`, and a check on it could keep an erasure from ever completing."""
    removed = (metrics["distance_bound"] <= cfg.max_residual_left * metrics["distance_bound_before"]
               or metrics["residual"] <= metrics["residual_floor"])
    return [
        {"name": RESIDUAL_CHECKS[0], "value": metrics["distance_bound"],
         "threshold": f"<= {cfg.max_residual_left} × {metrics['distance_bound_before']:.4g} (the model before)",
         "passed": bool(removed)},
        {"name": RESIDUAL_CHECKS[1], "value": metrics["guaranteed_agreement"],
         "threshold": f">= {cfg.min_agreement}", "passed": metrics["guaranteed_agreement"] >= cfg.min_agreement},
        *([] if exact else [accuracy_drop_check(metrics, cfg)]),
    ]


def accuracy_drop_check(metrics: dict, cfg: VerifyConfig) -> dict:
    """Utility held: at most `max_accuracy_drop` points lost, or a loss chance explains at least
    `accuracy_drop_alpha` of the time (drop_p_value): the test split cannot tell it from none."""
    drop, p = metrics["accuracy_drop_pts"], metrics["accuracy_drop_p"]
    return {"name": "accuracy_drop_pts", "value": drop,
            "threshold": f"<= {cfg.max_accuracy_drop}, or chance loses as much with p >= {cfg.accuracy_drop_alpha:g} "
                         f"(p = {p:.3g})",
            "passed": drop <= cfg.max_accuracy_drop or p >= cfg.accuracy_drop_alpha}


# --- certificate: the (ε, δ) certificate is the proof ----------------------------------------------

def certificate_evidence(residual: float, residual_bound: float, epsilon: float, epsilon_target: float,
                         budget_used: float, budget: float, utility_metrics: dict) -> dict:
    """The `certificate` metrics of a certified update: the exact residual on D' (one pass), this
    request's data-dependent bound (`residual_bound`), the accumulated bound ε′ = `budget_used` of
    every certified request since the model was trained (what ε is computed from, and what the
    residual carried from the earlier requests counts against), ε at δ against the model's target,
    the budget."""
    return {"residual": residual, "residual_bound": residual_bound, "epsilon": epsilon,
            "epsilon_target": epsilon_target, "budget_used": budget_used, "budget": budget, **utility_metrics}


def certificate_checks(metrics: dict, cfg: VerifyConfig) -> list[dict]:
    """`certificate` checks: the exact residual is within the accumulated certified bound (the
    theorem's premise, ‖∇L_b(θ⁻; D')‖ ≤ ε′, holds for this model: ε′ is the sum of the bounds of
    every certified request since training, as the residual a Newton step leaves is carried into
    the next one), the accumulated bound within the budget, ε within the promised target, and
    utility held."""
    return [
        {"name": "residual_within_bound", "value": metrics["residual"],
         "threshold": f"<= {metrics['budget_used']:.4g} (ε′, the accumulated bound)",
         "passed": metrics["residual"] <= metrics["budget_used"]},
        {"name": "budget_used", "value": metrics["budget_used"], "threshold": f"<= {metrics['budget']:.4g}",
         "passed": metrics["budget_used"] <= metrics["budget"]},
        {"name": "epsilon", "value": metrics["epsilon"], "threshold": f"<= {metrics['epsilon_target']:g}",
         "passed": metrics["epsilon"] <= metrics["epsilon_target"] * (1 + 1e-12)},
        accuracy_drop_check(metrics, cfg),
    ]


def describe_failures(failed: list[dict]) -> str:
    """Failed checks with what was measured and what was needed, e.g. "agreement_with_retrain
    0.989 (needs >= 0.995)" — one line, for the console, the JSON and the ledger's reason."""
    return "; ".join(f"{c['name']} {_number(c['value'])} (needs {c['threshold']})" for c in failed)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
