"""Output-level accuracies (science.md §5), in percent.

UA = 100 − accuracy on the forget set; RA / TA = accuracy on the retain / test set. None of them
is "better" in absolute terms for unlearning: each is judged by its gap to the retrained model
(`compare.compare_to_retrain`).
"""

from __future__ import annotations

import numpy as np

from unlearning.errors import UnlearnError


def _as_labels(a, what: str) -> np.ndarray:
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if a.ndim != 1:
        raise UnlearnError(f"{what} must be a 1-D array of class indices, got shape {a.shape}")
    return a


def accuracy(predictions, labels) -> float:
    """Share of predictions equal to the labels, in percent (higher = fits better). Used for RA
    (retain) and TA (test); predictions are class indices (argmax of the logits)."""
    p, y = _as_labels(predictions, "predictions"), _as_labels(labels, "labels")
    if len(p) != len(y) or len(p) == 0:
        raise UnlearnError(f"need as many predictions as labels (> 0), got {len(p)} and {len(y)}")
    return 100.0 * float(np.mean(p == y))


def unlearn_accuracy(predictions, labels) -> float:
    """UA = 100 − accuracy on the forget set, in percent (higher = more forget samples misclassified;
    the target is the retrained model's UA, not 100)."""
    return 100.0 - accuracy(predictions, labels)
