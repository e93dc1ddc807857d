"""Metrics on real measurements: DA against an SVD written out in numpy, and the behaviour of
every metric on a class-forgetting toy (a small MLP on sklearn's digits, trained on all classes
and retrained without one class — real training, seconds on one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits
from torch import nn

from unlearning.metrics import METRIC_KEYS, compare_to_retrain, da_score, evaluate_model, model_outputs

FORGET_CLASS = 3
SEEDS = (0, 1)


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    with threadpool_limits(1):
        yield


def da_by_numpy_svd(F: np.ndarray, R: np.ndarray, energy: float) -> float:
    """The formula of science.md §4 straight from numpy's SVD of R (not the Gram route)."""
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.argmax(share >= energy)) + 1
    return float(np.sum((F @ Vt[:k].T) ** 2) / np.sum(F**2))


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.95, 0.99])
def test_da_matches_a_numpy_svd_reference(energy):
    rng = np.random.default_rng(0)
    R = rng.normal(size=(200, 16)) * np.geomspace(5, 0.05, 16)  # decaying spectrum, non-centred
    R += 2.0
    F = rng.normal(size=(30, 16)) + 1.0
    assert da_score(F, R, energy) == pytest.approx(da_by_numpy_svd(F, R, energy), rel=1e-9)


# --- class-forgetting toy ----------------------------------------------------------------------

class MLP(nn.Module):
    """The interface evaluate_model needs: features(x) → (n, 32), head: Linear(32, 10)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def features(self, x):
        return self.body(x)  # (n, 32)

    def forward(self, x):
        return self.head(self.features(x))


def train(x, y, seed: int, steps: int = 150) -> MLP:
    torch.manual_seed(seed)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):  # full batch: ~1400 samples
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def toy():
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16, dtype=torch.float32), torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = order[:1400], order[1400:]
    forget = train_idx[y[train_idx] == FORGET_CLASS]
    retain = train_idx[y[train_idx] != FORGET_CLASS]
    with threadpool_limits(1):
        models = {
            seed: (train(X[train_idx], y[train_idx], seed), train(X[retain], y[retain], seed)) for seed in SEEDS
        }
    sets = {"forget": (X[forget], y[forget]), "retain": (X[retain], y[retain]), "test": (X[test_idx], y[test_idx])}
    return models, sets


def test_da_of_the_retrained_model_exceeds_the_original(toy):
    # science.md §4: features of samples a model never trained on lie inside the retain subspace.
    # Single runs agree in 28 of 30 (class, seed) pairs swept; the test averages two seeds of a
    # class fixed beforehand.
    models, sets = toy
    da = {"original": [], "retrain": []}
    for original, retrained in models.values():
        for name, model in (("original", original), ("retrain", retrained)):
            F = model_outputs(model, *sets["forget"]).features
            R = model_outputs(model, *sets["retain"]).features
            da[name].append(da_score(F, R))
    assert np.mean(da["retrain"]) > np.mean(da["original"])


def test_every_metric_separates_the_original_from_the_retrained_model(toy):
    models, sets = toy
    original, retrained = models[SEEDS[0]]
    rows = [
        {"method": name, **evaluate_model(model, sets["forget"], sets["retain"], sets["test"], seed=0)}
        for name, model in (("original", original), ("retrain", retrained))
    ]
    orig, ret = rows
    assert set(METRIC_KEYS) <= set(orig)
    # The retrained head never saw the class: every forget sample is misclassified; the original
    # fits its training data.
    assert ret["ua"] == 100.0 and orig["ua"] <= 5.0
    assert orig["ra"] >= 95.0 and ret["ra"] >= 95.0
    # Confident on the forget class only when trained on it: the attack calls the forget samples
    # members for the original, non-members for the retrained model.
    assert orig["mia_efficacy"] < 50.0 < ret["mia_efficacy"]
    # Test holds the forgotten class too, so the retrained model's forget losses exceed test losses.
    assert ret["mia_auc"] < orig["mia_auc"]
    for key in ("mia_auc", "da", "nmi", "f1"):
        assert 0.0 <= orig[key] <= 1.0 and 0.0 <= ret[key] <= 1.0
    assert 0.0 <= orig["lp"] <= 100.0
    gaps = {r["method"]: r for r in compare_to_retrain(rows)}
    assert gaps["retrain"]["avg_gap"] == 0.0 and gaps["original"]["avg_gap"] > 20.0
