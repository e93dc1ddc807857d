"""Evaluation metrics for unlearning (science.md §4–5): pure numpy/torch/sklearn, no I/O.

Output level: `unlearn_accuracy`, `accuracy`, `mia_efficacy`, `loss_mia_auc`.
Feature level: `retain_basis` + `dimensional_alignment` (differentiable, usable as a loss),
`da_score`, `linear_probe_accuracy`, `cluster_scores` (NMI, `pairwise_f1`).
All at once: `evaluate_model` / `evaluate_outputs`; gaps to retraining: `compare_to_retrain`.
"""

from unlearning.metrics.accuracy import accuracy, unlearn_accuracy
from unlearning.metrics.alignment import da_score, dimensional_alignment, retain_basis
from unlearning.metrics.compare import AVG_GAP_KEYS, compare_to_retrain
from unlearning.metrics.evaluate import METRIC_KEYS, Outputs, evaluate_model, evaluate_outputs, model_outputs
from unlearning.metrics.mia import attack_features, loss_mia_auc, mia_efficacy
from unlearning.metrics.representation import (
    cluster_scores,
    clustering_agreement,
    linear_probe_accuracy,
    pairwise_f1,
)

__all__ = [
    "AVG_GAP_KEYS",
    "METRIC_KEYS",
    "Outputs",
    "accuracy",
    "attack_features",
    "cluster_scores",
    "clustering_agreement",
    "compare_to_retrain",
    "da_score",
    "dimensional_alignment",
    "evaluate_model",
    "evaluate_outputs",
    "linear_probe_accuracy",
    "loss_mia_auc",
    "mia_efficacy",
    "model_outputs",
    "pairwise_f1",
    "retain_basis",
    "unlearn_accuracy",
]
