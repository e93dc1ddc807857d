"""Membership-inference attacks used as unlearning metrics (science.md §5).

- `mia_efficacy` follows the SalUn / ℓ1-sparse convention (their `SVC_MIA` with the "confidence"
  feature): an RBF SVC (C = 3, gamma = "auto") is fit on per-sample features of the model's softmax
  output on retain samples (label member) vs test samples (label non-member), with equal counts,
  and applied to the forget set; the result is the percentage of forget samples predicted
  non-member. Caveat (measured): when retain and test outputs are indistinguishable (no
  overfitting), the hard prediction is arbitrary and the percentage can land anywhere in [0, 100];
  always read it beside the retrained model's value.
- `loss_mia_auc`: ROC AUC of the loss-threshold attack (lower loss ⇒ member); 0.5 = chance.
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import SVC

from unlearning.errors import UnlearnError

# Per-sample attack features derivable from (softmax probabilities, true label).
FEATURES = ("confidence", "entropy", "m_entropy")
_EPS = 1e-30  # keeps log finite at p = 0 or 1


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def attack_features(probs, labels, features: tuple[str, ...] = ("confidence",)) -> np.ndarray:
    """(n, len(features)) attack inputs from softmax probabilities (n, K) and true labels (n,).

    confidence = p_y; entropy = −Σ p log p; m_entropy = Song & Mittal's modified entropy
    −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i) (uses the label, decreases as p_y → 1).
    """
    p = _np(probs).astype(np.float64)  # (n, K)
    y = _np(labels).astype(np.int64)  # (n,)
    if p.ndim != 2 or y.shape != (len(p),) or len(p) == 0:
        raise UnlearnError(f"need probabilities (n, K) and labels (n,), got {p.shape} and {y.shape}")
    unknown = set(features) - set(FEATURES)
    if unknown or not features:
        raise UnlearnError(f"unknown MIA features {sorted(unknown)}; choose from {list(FEATURES)}")
    rows = np.arange(len(p))
    p_y = p[rows, y]
    columns = {
        "confidence": lambda: p_y,
        "entropy": lambda: -(p * np.log(p + _EPS)).sum(1),
        "m_entropy": lambda: (
            -(1 - p_y) * np.log(p_y + _EPS)
            - (p * np.log(1 - p + _EPS)).sum(1)
            + p_y * np.log(1 - p_y + _EPS)  # remove the i = y term from the sum
        ),
    }
    return np.stack([columns[f]() for f in features], axis=1)


def _balanced_subsample(n_a: int, n_b: int, cap: int, rng: np.random.Generator):
    """Indices giving both groups the same size m = min(n_a, n_b, cap)."""
    m = min(n_a, n_b, cap)
    return rng.choice(n_a, m, replace=False), rng.choice(n_b, m, replace=False)


def mia_efficacy(
    retain: tuple,
    test: tuple,
    forget: tuple,
    *,
    features: tuple[str, ...] = ("confidence",),
    seed: int = 0,
    max_per_group: int = 2000,
) -> float:
    """MIA-efficacy in percent: share of forget samples the attack predicts as non-members.

    Each argument is a pair (softmax probabilities (n, K), true labels (n,)). Members (retain) and
    non-members (test) are subsampled to the same count, at most `max_per_group` each (the SVC fit
    is O(n²); 2000 per group takes about a second). Higher = forget samples look less like training
    data; the target is the retrained model's value (not 100).
    """
    rng = np.random.default_rng(seed)
    X_member = attack_features(*retain, features)
    X_nonmember = attack_features(*test, features)
    X_forget = attack_features(*forget, features)
    i_m, i_n = _balanced_subsample(len(X_member), len(X_nonmember), max_per_group, rng)
    X = np.concatenate([X_member[i_m], X_nonmember[i_n]])
    is_member = np.concatenate([np.ones(len(i_m)), np.zeros(len(i_n))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(X, is_member)
    return 100.0 * float(np.mean(attack.predict(X_forget) == 0))


def loss_mia_auc(member_losses, nonmember_losses) -> float:
    """ROC AUC of the loss-threshold attack, score = −loss (members have lower loss).

    0.5 = members and non-members indistinguishable by loss; 1 = every member has a lower loss
    than every non-member. For unlearning, members = forget samples, non-members = test samples,
    and the target is the retrained model's AUC (≈ 0.5 for random forgetting).
    """
    m = _np(member_losses).astype(np.float64).ravel()
    n = _np(nonmember_losses).astype(np.float64).ravel()
    if len(m) == 0 or len(n) == 0:
        raise UnlearnError(f"need member and non-member losses, got {len(m)} and {len(n)}")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        return float("nan")  # a diverged model: no AUC, so every check on it fails (nan compares false)
    # The Mann–Whitney form of the ROC AUC (ties count one half), as roc_auc_score computes it:
    # exact, and without its input validation, which cost ~10 ms a call (the image evidence makes
    # one per class of the forget set per model)
    n = np.sort(n)
    higher = len(n) - np.searchsorted(n, m, side="right")
    ties = np.searchsorted(n, m, side="right") - np.searchsorted(n, m, side="left")
    return float((higher.sum() + 0.5 * ties.sum()) / (len(m) * len(n)))
