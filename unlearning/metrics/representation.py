"""Feature-space evaluation of forget samples (Seo et al.; science.md §4): linear probe (LP) and
k-means cluster agreement (NMI, pairwise F1) with the true labels, on features taken before the
classifier head of a frozen model.

All three measure how much class information about the forget samples the features still carry.
None is "better" in absolute terms: each is judged by its gap to the retrained model.

Class forgetting leaves one class in the forget set, where "predict / cluster the forget labels"
is trivial. Both functions therefore accept optional context samples (e.g. a retain subsample):
the probe or k-means is then fit on forget ∪ context, which asks whether the forget samples are
still separable from the other classes. LP scores forget samples only; NMI / F1 score the union.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from unlearning.errors import UnlearnError


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _with_context(feats, labels, context_feats, context_labels):
    """(X, y, is_forget): forget rows first, then the optional context rows."""
    X, y = _np(feats).astype(np.float64), _np(labels).astype(np.int64)
    if X.ndim != 2 or y.shape != (len(X),) or len(X) == 0:
        raise UnlearnError(f"need features (n, d) and labels (n,), got {X.shape} and {y.shape}")
    is_forget = np.ones(len(X), dtype=bool)
    if context_feats is not None:
        Xc, yc = _np(context_feats).astype(np.float64), _np(context_labels).astype(np.int64)
        if Xc.ndim != 2 or Xc.shape[1] != X.shape[1] or yc.shape != (len(Xc),):
            raise UnlearnError(f"context features {Xc.shape} / labels {yc.shape} do not match {X.shape}")
        X, y = np.concatenate([X, Xc]), np.concatenate([y, yc])
        is_forget = np.concatenate([is_forget, np.zeros(len(Xc), dtype=bool)])
    return X, y, is_forget


def _fit_predict_probe(X_train, y_train, X_test) -> np.ndarray:
    if len(np.unique(y_train)) == 1:  # a fold saw one class: the only possible prediction
        return np.full(len(X_test), y_train[0])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return probe.fit(X_train, y_train).predict(X_test)


def linear_probe_accuracy(
    forget_feats,
    forget_labels,
    seed: int = 0,
    *,
    n_splits: int = 5,
    context_feats=None,
    context_labels=None,
) -> float:
    """LP: cross-validated accuracy (%) of a linear classifier predicting true labels from frozen
    features of the forget samples (higher = more label information left in the features).

    Probe: standardised features + multinomial logistic regression (C = 1). Every forget sample is
    predicted once, by a probe trained on the other folds (stratified k-fold, shuffled with `seed`;
    k = min(n_splits, size of the smallest class), at least 2). A sample of a class absent from
    its training folds counts as wrong. With context samples, the probe trains on forget ∪ context
    and only the forget predictions are scored.
    """
    X, y, is_forget = _with_context(forget_feats, forget_labels, context_feats, context_labels)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise UnlearnError(
            "linear probe needs at least 2 classes; for class forgetting pass context features "
            "(e.g. a retain subsample) with their labels"
        )
    if counts.max() < 2:  # every class a singleton: no fold can train on a held-out sample's class
        return 0.0
    k = int(np.clip(counts.min(), 2, n_splits))
    predicted = np.empty_like(y)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # singleton classes: warned about, handled above
        warnings.simplefilter("ignore", UserWarning)
        for train, held_out in folds.split(X, y):
            predicted[held_out] = _fit_predict_probe(X[train], y[train], X[held_out])
    return 100.0 * float(np.mean(predicted[is_forget] == y[is_forget]))


def pairwise_f1(clusters, labels) -> float:
    """F1 over sample pairs: a pair is predicted "same" when both share a cluster, true "same"
    when both share a label. With TP = same-cluster-and-label pairs, P = same-cluster pairs and
    L = same-label pairs, precision = TP/P, recall = TP/L, F1 = 2·TP/(P + L).

    Counted from the contingency table (Σ C(n_ij, 2)), O(n + clusters·labels) memory, no pair list.
    Both partitions all singletons (P = L = 0) agree perfectly: F1 = 1.
    """
    c, y = _np(clusters).ravel(), _np(labels).ravel()
    _, c_idx = np.unique(c, return_inverse=True)
    _, y_idx = np.unique(y, return_inverse=True)
    table = np.zeros((c_idx.max() + 1, y_idx.max() + 1), dtype=np.float64)
    np.add.at(table, (c_idx, y_idx), 1)

    def pairs(n):
        return float((n * (n - 1) / 2).sum())

    tp, p, l_ = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    return 1.0 if p + l_ == 0 else 2 * tp / (p + l_)


def clustering_agreement(clusters, labels) -> dict[str, float]:
    """{"nmi", "f1"} of a clustering against true labels, both in [0, 1], 1 = same partition.
    NMI = I(C; Y) / mean(H(C), H(Y)) (sklearn, arithmetic normalisation); F1 = `pairwise_f1`."""
    c, y = _np(clusters).ravel(), _np(labels).ravel()
    if len(c) != len(y) or len(c) == 0:
        raise UnlearnError(f"need one cluster per label (> 0), got {len(c)} and {len(y)}")
    return {"nmi": float(normalized_mutual_info_score(y, c)), "f1": pairwise_f1(c, y)}


def cluster_scores(
    forget_feats,
    labels,
    n_clusters: int | None = None,
    seed: int = 0,
    *,
    context_feats=None,
    context_labels=None,
) -> dict[str, float]:
    """k-means clusters of the features against true labels: {"nmi", "f1"}, both in [0, 1]
    (higher = clusters follow the classes more closely).

    k-means on the raw features (no scaling: the network's geometry is what is measured), k =
    `n_clusters` or the number of distinct labels, k-means++ with 4 restarts seeded by `seed`.
    Scores from `clustering_agreement`. With context samples both are computed on forget ∪ context.
    """
    X, y, _ = _with_context(forget_feats, labels, context_feats, context_labels)
    k = len(np.unique(y)) if n_clusters is None else n_clusters
    if k < 1:
        raise UnlearnError(f"n_clusters must be ≥ 1, got {k}")
    k = min(k, len(X))
    clusters = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(X)
    return clustering_agreement(clusters, y)
