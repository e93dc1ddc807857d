"""Evaluation metrics: each checked against a definition written out here (hand-derivable values,
brute-force enumerations, autograd against finite differences), never against its own output."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from unlearning.errors import UnlearnError
from unlearning.metrics import (
    AVG_GAP_KEYS,
    accuracy,
    attack_features,
    cluster_scores,
    clustering_agreement,
    compare_to_retrain,
    da_score,
    dimensional_alignment,
    linear_probe_accuracy,
    loss_mia_auc,
    mia_efficacy,
    pairwise_f1,
    retain_basis,
    unlearn_accuracy,
)


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    """sklearn's small fits run ~10× slower with BLAS threads fighting over 2 loaded cores."""
    with threadpool_limits(1):
        yield


def orthonormal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]  # (d, d)


def coefficients(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- dimensional alignment ---------------------------------------------------------------------

def test_da_of_a_set_inside_the_retain_subspace_is_one():
    Q = orthonormal(12, 0)
    R = coefficients(40, 4, 1) @ Q[:, :4].T  # retain spans the first 4 directions
    F = coefficients(9, 4, 2) @ Q[:, :4].T
    assert float(dimensional_alignment(F, retain_basis(R, energy=1.0))) == pytest.approx(1.0, abs=1e-10)


def test_da_of_a_set_orthogonal_to_the_retain_subspace_is_zero():
    Q = orthonormal(12, 0)
    R = coefficients(40, 4, 1) @ Q[:, :4].T
    F = coefficients(9, 5, 2) @ Q[:, 4:9].T
    assert float(dimensional_alignment(F, retain_basis(R, energy=1.0))) == pytest.approx(0.0, abs=1e-10)


def test_da_is_the_share_of_energy_inside_the_subspace():
    # Each forget row is a·u + b·w with u inside, w orthogonal (unit vectors): DA = Σa² / Σ(a² + b²).
    Q = orthonormal(8, 3)
    R = coefficients(30, 2, 4) @ Q[:, :2].T
    a, b = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64)
    F = a[:, None] * Q[:, 0] + b[:, None] * Q[:, 5]
    expected = float((a**2).sum() / (a**2 + b**2).sum())
    assert float(dimensional_alignment(F, retain_basis(R, 1.0))) == pytest.approx(expected, rel=1e-12)


def test_retain_basis_keeps_the_fewest_directions_reaching_the_energy_share():
    # Singular values 3, 2, 1, 0.5: energies 9, 4, 1, 0.25 of 14.25 → cumulative .632, .912, .982, 1.
    Q = orthonormal(6, 5)
    U = torch.linalg.qr(coefficients(20, 4, 6))[0]  # (20, 4) orthonormal columns
    R = U @ torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)) @ Q[:, :4].T
    for energy, k in [(0.5, 1), (0.63, 1), (0.64, 2), (0.9, 2), (0.95, 3), (0.99, 4), (1.0, 4)]:
        V = retain_basis(R, energy)
        assert V.shape == (6, k), energy
        # Same subspace as the top-k true directions: equal orthogonal projectors.
        torch.testing.assert_close(V @ V.T, Q[:, :k] @ Q[:, :k].T, atol=1e-10, rtol=0)


def test_da_is_differentiable_in_the_forget_features():
    Q = orthonormal(7, 7)
    V = retain_basis(coefficients(25, 3, 8) @ Q[:, :3].T, 1.0)
    F = coefficients(5, 7, 9).requires_grad_()
    assert torch.autograd.gradcheck(lambda F: dimensional_alignment(F, V), (F,))


def test_da_treats_the_basis_as_a_constant():
    R = coefficients(25, 5, 10).requires_grad_()
    F = coefficients(4, 5, 11).requires_grad_()
    dimensional_alignment(F, retain_basis(R, 0.8)).backward()
    assert R.grad is None and F.grad is not None


def test_da_does_not_depend_on_feature_scale():
    R, F = coefficients(30, 6, 12), coefficients(8, 6, 13)
    assert da_score(3.0 * F, 0.1 * R, 0.8) == pytest.approx(da_score(F, R, 0.8), rel=1e-10)


def test_da_score_accepts_numpy_float32():
    R, F = coefficients(30, 6, 12), coefficients(8, 6, 13)
    assert da_score(F.numpy().astype(np.float32), R.numpy().astype(np.float32), 0.8) == pytest.approx(
        da_score(F, R, 0.8), rel=1e-5
    )


@pytest.mark.parametrize(
    "R, F, energy",
    [
        (torch.zeros(5, 3), torch.ones(2, 3), 0.95),  # no retain energy
        (torch.ones(5, 3), torch.ones(2, 3), 0.0),
        (torch.ones(5, 3), torch.ones(2, 3), 1.5),
        (torch.ones(5, 3), torch.ones(2, 4), 0.95),  # dimension mismatch
        (torch.ones(5), torch.ones(2, 3), 0.95),
    ],
)
def test_da_rejects_bad_input(R, F, energy):
    with pytest.raises(UnlearnError):
        dimensional_alignment(F, retain_basis(R, energy))


# --- accuracies --------------------------------------------------------------------------------

def test_accuracies_in_percent():
    predictions, labels = torch.tensor([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    assert accuracy(predictions, labels) == 75.0
    assert unlearn_accuracy(predictions, labels) == 25.0


@pytest.mark.parametrize("p, y", [([0, 1], [0]), ([], []), ([[0, 1]], [[0, 1]])])
def test_accuracy_rejects_bad_input(p, y):
    with pytest.raises(UnlearnError):
        accuracy(np.array(p), np.array(y))


# --- membership inference ----------------------------------------------------------------------

def auc_by_pairs(members, nonmembers) -> float:
    """Mann–Whitney: share of (member, non-member) pairs where the member has the lower loss."""
    wins = sum(1.0 if m < n else 0.5 if m == n else 0.0 for m in members for n in nonmembers)
    return wins / (len(members) * len(nonmembers))


def test_loss_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.exponential(1.0, 40).round(1), rng.exponential(1.5, 55).round(1)  # ties
    assert loss_mia_auc(members, nonmembers) == pytest.approx(auc_by_pairs(members, nonmembers), abs=1e-12)


def test_loss_auc_of_a_random_predictor_is_one_half():
    rng = np.random.default_rng(1)
    n = 2000
    auc = loss_mia_auc(rng.exponential(1.0, n), rng.exponential(1.0, n))
    # Under H0 the AUC has standard deviation sqrt((n1 + n2 + 1) / (12 n1 n2)) (Mann–Whitney).
    assert abs(auc - 0.5) < 4 * math.sqrt((2 * n + 1) / (12 * n * n))


def test_loss_auc_extremes():
    assert loss_mia_auc([0.1, 0.2], [0.5, 0.9]) == 1.0  # every member below every non-member
    assert loss_mia_auc(torch.tensor([0.5, 0.9]), torch.tensor([0.1, 0.2])) == 0.0
    with pytest.raises(UnlearnError):
        loss_mia_auc([], [0.1])


def test_attack_features_follow_their_definitions():
    rng = np.random.default_rng(2)
    p, y = rng.dirichlet(np.ones(4), 6), rng.integers(0, 4, 6)
    got = attack_features(p, y, ("confidence", "entropy", "m_entropy"))
    for i in range(6):
        assert got[i, 0] == pytest.approx(p[i, y[i]])
        assert got[i, 1] == pytest.approx(-sum(q * math.log(q) for q in p[i]))
        m_entropy = -(1 - p[i, y[i]]) * math.log(p[i, y[i]]) - sum(
            p[i, j] * math.log(1 - p[i, j]) for j in range(4) if j != y[i]
        )
        assert got[i, 2] == pytest.approx(m_entropy)
    assert attack_features(np.full((2, 5), 0.2), [0, 3], ("entropy",))[:, 0] == pytest.approx(math.log(5))
    with pytest.raises(UnlearnError):
        attack_features(p, y, ("loss",))


def outputs_with_confidence(conf: np.ndarray, K: int = 3):
    """Softmax rows whose true-class (label 0) probability is `conf`, the rest spread evenly."""
    probs = np.repeat(((1 - conf) / (K - 1))[:, None], K, axis=1)
    probs[:, 0] = conf
    return probs, np.zeros(len(conf), dtype=int)


def test_mia_efficacy_reads_forget_samples_like_their_look_alikes():
    # Members (retain) are confident, non-members (test) are not: forget samples that look like
    # test samples are predicted non-members (≈ 100 %), those that look like retain are not (≈ 0 %).
    rng = np.random.default_rng(3)
    member = lambda n: outputs_with_confidence(rng.uniform(0.9, 1.0, n))  # noqa: E731
    nonmember = lambda n: outputs_with_confidence(rng.uniform(0.3, 0.7, n))  # noqa: E731
    retain, test = member(3000), nonmember(300)  # unbalanced on purpose
    assert mia_efficacy(retain, test, nonmember(200), seed=0) >= 95.0
    assert mia_efficacy(retain, test, member(200), seed=0) <= 5.0
    half = mia_efficacy(retain, test, tuple(np.concatenate(p) for p in zip(member(100), nonmember(100))))
    assert 40.0 <= half <= 60.0


def test_mia_efficacy_balances_members_and_non_members():
    # Member confidence ~ U(0, 1) (density 1), non-member ~ U(0.5, 1) (density 2). With equal
    # counts the attack calls [0.5, 1] non-member (2 > 1); fit on the raw 10:1 counts it would call
    # it member (10 > 2) — measured: 0 % instead of 100 % on the same data.
    rng = np.random.default_rng(4)
    retain = outputs_with_confidence(rng.uniform(0.0, 1.0, 4000))
    test = outputs_with_confidence(rng.uniform(0.5, 1.0, 400))
    forget = outputs_with_confidence(rng.uniform(0.55, 0.95, 200))
    assert mia_efficacy(retain, test, forget, seed=0) >= 90.0


def test_mia_efficacy_rejects_mismatched_inputs():
    probs, labels = outputs_with_confidence(np.full(4, 0.9))
    with pytest.raises(UnlearnError):
        mia_efficacy((probs, labels[:2]), (probs, labels), (probs, labels))


# --- clustering --------------------------------------------------------------------------------

def pairwise_f1_by_enumeration(clusters, labels) -> float:
    tp = same_cluster = same_label = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        sc, sl = clusters[i] == clusters[j], labels[i] == labels[j]
        tp, same_cluster, same_label = tp + (sc and sl), same_cluster + sc, same_label + sl
    precision, recall = tp / same_cluster, tp / same_label
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def nmi_from_entropies(clusters, labels) -> float:
    """I(C; Y) / ((H(C) + H(Y)) / 2) from the empirical joint distribution."""
    n = len(labels)
    joint = {}
    for c, y in zip(clusters, labels):
        joint[c, y] = joint.get((c, y), 0) + 1
    pc = {c: sum(v for (c2, _), v in joint.items() if c2 == c) / n for c, _ in joint}
    py = {y: sum(v for (_, y2), v in joint.items() if y2 == y) / n for _, y in joint}
    mi = sum(v / n * math.log(v / n / (pc[c] * py[y])) for (c, y), v in joint.items())
    h = lambda p: -sum(q * math.log(q) for q in p.values())  # noqa: E731
    return mi / ((h(pc) + h(py)) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_cluster_agreement_matches_brute_force_definitions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 50)
    clusters = np.where(rng.random(50) < 0.6, labels, rng.integers(0, 5, 50))  # partly agreeing
    got = clustering_agreement(clusters, labels)
    assert got["f1"] == pytest.approx(pairwise_f1_by_enumeration(clusters, labels), abs=1e-12)
    assert got["nmi"] == pytest.approx(nmi_from_entropies(clusters, labels), abs=1e-12)


def test_perfect_clustering_scores_one_whatever_the_cluster_names():
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    assert clustering_agreement(np.array([5, 5, 9, 9, 9, 1, 1]), labels) == {"nmi": 1.0, "f1": 1.0}
    assert pairwise_f1(np.arange(5), np.arange(5)) == 1.0  # all singletons on both sides


def blobs(n_per_class: int, centres: np.ndarray, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, centres.shape[1])) for c in centres])
    return X, np.repeat(np.arange(len(centres)), n_per_class)


def test_kmeans_on_separated_blobs_recovers_the_classes():
    X, y = blobs(40, 6.0 * np.eye(4, 8), seed=5)
    assert cluster_scores(X, y, seed=0) == {"nmi": pytest.approx(1.0), "f1": pytest.approx(1.0)}


def test_kmeans_with_context_scores_forget_and_context_together():
    X, y = blobs(30, 6.0 * np.eye(3, 5), seed=6)
    forget, context = y == 2, y != 2
    scores = cluster_scores(X[forget], y[forget], seed=0, context_feats=X[context], context_labels=y[context])
    assert scores == {"nmi": pytest.approx(1.0), "f1": pytest.approx(1.0)}


# --- linear probe ------------------------------------------------------------------------------

def test_linear_probe_on_separable_features_is_perfect():
    X, y = blobs(30, 5.0 * np.eye(3, 6), seed=7)
    assert linear_probe_accuracy(X, y, seed=0) == 100.0


def test_linear_probe_on_label_free_features_is_near_chance():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(600, 5)), rng.integers(0, 3, 600)
    # Chance is 100/3; ±4 binomial standard deviations (sd = 100·sqrt(p(1−p)/n) ≈ 1.9).
    assert abs(linear_probe_accuracy(X, y, seed=0) - 100 / 3) < 4 * 100 * math.sqrt(2 / 9 / 600)


def test_linear_probe_counts_a_class_unseen_in_training_as_wrong():
    X, y = blobs(20, 5.0 * np.eye(2, 4), seed=9)
    X, y = np.vstack([X, np.full((1, 4), -9.0)]), np.append(y, 7)  # a singleton class
    n = len(y)
    assert linear_probe_accuracy(X, y, seed=0) == pytest.approx(100.0 * (n - 1) / n)


def test_linear_probe_needs_two_classes_or_context():
    X, y = blobs(20, 5.0 * np.eye(3, 4), seed=10)
    forget = y == 0
    with pytest.raises(UnlearnError, match="context"):
        linear_probe_accuracy(X[forget], y[forget])
    # Separable from the context classes: every forget sample is recognised.
    assert linear_probe_accuracy(X[forget], y[forget], context_feats=X[~forget], context_labels=y[~forget]) == 100.0
    # Forget features drawn like a context class: the probe cannot tell them apart.
    mixed = linear_probe_accuracy(
        X[y == 1] + 0.0, np.full(20, 0), context_feats=X[~forget], context_labels=y[~forget]
    )
    assert mixed < 70.0


# --- gaps to retraining ------------------------------------------------------------------------

def test_gaps_to_retrain_and_their_average():
    rows = [
        {"method": "retrain", "ua": 5.0, "ra": 100.0, "ta": 94.0, "mia_efficacy": 12.0, "da": 0.9},
        {"method": "salun", "ua": 3.0, "ra": 99.0, "ta": 93.0, "mia_efficacy": 14.0, "da": 0.7},
    ]
    retrain, salun = compare_to_retrain(rows)
    assert retrain["avg_gap"] == 0.0 and retrain["gap_da"] == 0.0
    assert salun["gap_ua"] == 2.0 and salun["gap_ra"] == 1.0 and salun["gap_mia_efficacy"] == 2.0
    assert salun["gap_da"] == pytest.approx(0.2)
    assert salun["avg_gap"] == pytest.approx((2 + 1 + 1 + 2) / 4)  # DA reported, not averaged
    assert "gap_method" not in salun and "avg_gap" not in rows[1]  # inputs untouched
    assert set(AVG_GAP_KEYS) == {"ua", "ra", "ta", "mia_efficacy"}
    _, custom = compare_to_retrain(rows, keys=("da",), average_over=("da",))
    assert custom["avg_gap"] == pytest.approx(0.2) and "gap_ua" not in custom


@pytest.mark.parametrize(
    "rows",
    [
        [{"method": "salun", "ua": 1.0}],  # no reference
        [{"method": "retrain", "ua": 1.0}, {"method": "retrain", "ua": 2.0}],  # two references
        [{"method": "retrain", "ua": 1.0, "ra": 1, "ta": 1, "mia_efficacy": 1}, {"method": "x", "ua": 1.0}],
    ],
)
def test_gaps_reject_rows_they_cannot_compare(rows):
    with pytest.raises(UnlearnError):
        compare_to_retrain(rows)


def test_one_deleted_record_gets_context_of_other_classes():
    """A forget set of one image: the probe's context came from any retain images, so one deleted
    record with context drawn from its own class crashed the verification ("linear probe needs at
    least 2 classes"; 1 in 3 single-record deletions on a 3-class image dataset). Context is
    drawn from the other classes, as for class forgetting."""
    from unlearning.metrics.evaluate import Outputs, evaluate_outputs

    def outputs(labels):
        y = torch.tensor(labels)
        feats = torch.nn.functional.one_hot(y, 2).double() + 0.01 * torch.arange(len(y)).double()[:, None]
        return Outputs(feats, 4.0 * feats, y)

    retain = outputs([0] * 30 + [1] * 2)  # nearly every retain image shares the deleted one's class
    metrics = evaluate_outputs(outputs([0]), retain, outputs([0, 1] * 5))
    assert metrics["lp"] == 0.0 and metrics["ua"] == 0.0  # one sample beside one context: unseen class
    # every class a singleton (e.g. two records of two classes deleted): each held-out sample's
    # class is absent from its training fold, so wrong by definition (it raised a ValueError)
    assert linear_probe_accuracy(np.eye(2), np.array([0, 1])) == 0.0


def test_loss_auc_of_a_diverged_model_is_not_a_number_so_its_checks_fail():
    """A NaN loss has no rank: the AUC is NaN (roc_auc_score refused it; the pair count would have
    given a number), and a check comparing it with a tolerance fails."""
    from unlearning.images.evidence import within

    auc = loss_mia_auc([float("nan"), 1.0], [0.5, 2.0])
    assert math.isnan(auc)
    assert within(auc - 0.5, 0.1, one_sided=False)[1] is False
