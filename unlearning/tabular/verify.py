"""Verification of an unlearned model: fidelity to a retrained reference, with thresholds.

The reference is the exact retraining on D' (science.md §5, "fidelity to retraining"); every
check is recorded with its value, threshold and pass/fail so the certificate can show it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearning.tabular import logreg


class VerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_agreement: float = Field(0.99, ge=0, le=1, description="share of test predictions equal to the retrained model's")
    max_accuracy_gap: float = Field(0.5, ge=0, description="|test accuracy − retrained test accuracy|, in points")


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


def describe_failures(failed: list[dict]) -> str:
    """Failed checks with what was measured and what was needed, e.g. "agreement_with_retrain
    0.989 (needs >= 0.995)" — one line, for the console, the JSON and the ledger's reason."""
    return "; ".join(f"{c['name']} {_number(c['value'])} (needs {c['threshold']})" for c in failed)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
