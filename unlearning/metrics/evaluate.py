"""Every metric of issue 4 for one classifier in one dict.

Model interface (minimal): `model.features(x) -> (n, d)` features before the classifier head, and
`model.head(features) -> (n, K)` logits, with model(x) = model.head(model.features(x)).
`model_outputs` runs it once per set (eval mode, no grad, batched); `evaluate_outputs` computes the
metrics from those outputs, so a caller can reuse the outputs of a model evaluated before.

Keys (`METRIC_KEYS`): ua, ra, ta, mia_efficacy, lp in percent; mia_auc, da, nmi, f1 in [0, 1].
The test set given is used as is (TA, MIA non-members): for class forgetting the caller decides
whether it holds the forgotten class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F_nn

from unlearning.metrics.accuracy import accuracy, unlearn_accuracy
from unlearning.metrics.alignment import dimensional_alignment, retain_basis
from unlearning.metrics.mia import loss_mia_auc, mia_efficacy
from unlearning.metrics.representation import cluster_scores, linear_probe_accuracy

METRIC_KEYS = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi", "f1")


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on one labelled set (float64 on CPU)."""

    features: torch.Tensor  # (n, d)
    logits: torch.Tensor  # (n, K)
    labels: torch.Tensor  # (n,)

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(1)

    @property
    def losses(self) -> torch.Tensor:
        return F_nn.cross_entropy(self.logits, self.labels, reduction="none")


@torch.no_grad()
def model_outputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> Outputs:
    """Features and logits of `model` on (x, y), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        feats, logits = [], []
        for start in range(0, len(x), batch_size):
            f = model.features(x[start : start + batch_size].to(device))
            feats.append(f.double().cpu())
            logits.append(model.head(f).double().cpu())
    finally:
        model.train(was_training)
    return Outputs(torch.cat(feats), torch.cat(logits), torch.as_tensor(y).long().cpu())


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


def evaluate_outputs(
    forget: Outputs,
    retain: Outputs,
    test: Outputs,
    *,
    seed: int = 0,
    energy: float = 0.95,
    max_feature_samples: int = 2000,
    max_mia_per_group: int = 2000,
) -> dict[str, float]:
    """All METRIC_KEYS from the outputs on the forget, retain and test sets.

    - ua / ra / ta: accuracies (`accuracy`), ua = 100 − forget accuracy.
    - mia_efficacy: SalUn confidence attack fit on retain vs test, applied to forget (`mia.py`).
    - mia_auc: loss-threshold AUC, members = forget, non-members = test.
    - da: DA of forget features in the basis of *all* retain features (`alignment.py`).
    - lp, nmi, f1: on at most `max_feature_samples` forget samples (seeded subsample: the probe's
      cross-validation is the slow part). When the forget set holds one class (class forgetting,
      or one deleted record) an equal-sized subsample of the retain samples of the other classes
      is added as context (`representation.py`).
    """
    rng = np.random.default_rng(seed)
    metrics = {
        "ua": unlearn_accuracy(forget.predictions, forget.labels),
        "ra": accuracy(retain.predictions, retain.labels),
        "ta": accuracy(test.predictions, test.labels),
        "mia_efficacy": mia_efficacy(
            (retain.probs, retain.labels), (test.probs, test.labels), (forget.probs, forget.labels),
            seed=seed, max_per_group=max_mia_per_group,
        ),
        "mia_auc": loss_mia_auc(forget.losses, test.losses),
        "da": float(dimensional_alignment(forget.features, retain_basis(retain.features, energy))),
    }
    i_f = _subsample(len(forget.labels), max_feature_samples, rng)
    f_feats, f_labels = forget.features[i_f], forget.labels[i_f]
    context = {}
    if len(torch.unique(f_labels)) == 1:
        # Context from the other classes only: a context of the forget set's own class adds no second
        # class to the probe (one deleted record beside one retained image of its class crashed it).
        others = (retain.labels != f_labels[0]).nonzero().flatten()
        i_c = others[_subsample(len(others), len(i_f), rng)]
        context = {"context_feats": retain.features[i_c], "context_labels": retain.labels[i_c]}
    metrics["lp"] = linear_probe_accuracy(f_feats, f_labels, seed, **context)
    metrics.update(cluster_scores(f_feats, f_labels, seed=seed, **context))
    return metrics


def evaluate_model(
    model: torch.nn.Module,
    forget: tuple[torch.Tensor, torch.Tensor],
    retain: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    seed: int = 0,
    batch_size: int = 512,
    energy: float = 0.95,
    max_feature_samples: int = 2000,
    max_mia_per_group: int = 2000,
) -> dict[str, float]:
    """Every metric (METRIC_KEYS) of `model` given (x, y) tensors for forget, retain and test."""
    outs = [model_outputs(model, x, y, batch_size) for x, y in (forget, retain, test)]
    return evaluate_outputs(
        *outs, seed=seed, energy=energy,
        max_feature_samples=max_feature_samples, max_mia_per_group=max_mia_per_group,
    )
