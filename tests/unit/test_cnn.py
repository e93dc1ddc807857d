"""The image CNN: shapes and parameter groups, eval-mode features independent of the batch,
deterministic training that learns sklearn digits, budgets, save/load and clone."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from unlearning.images import cnn
from unlearning.images.cnn import CNN, TrainSchedule


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    return X, torch.tensor(d.target)


def test_presets_shapes_and_parameter_groups():
    tiny, small = CNN.from_preset("tiny", seed=1), CNN.from_preset("small", n_classes=7, seed=1)
    x8, x28 = torch.rand(5, 1, 8, 8), torch.rand(3, 1, 28, 28)
    assert tiny.features(x8).shape == (5, tiny.feature_dim) == (5, 32)
    assert small.features(x28).shape == (3, 64) and small(x28).shape == (3, 7)
    tiny.eval()
    assert torch.equal(tiny(x8), tiny.head(tiny.features(x8)))
    groups = tiny.parameter_groups()
    assert groups["head"] == ["head.weight", "head.bias"]
    assert set(groups["last"]) - set(groups["head"]) and all(n.startswith("blocks.1.") for n in groups["last"][:-2])
    assert set(groups["all"]) == {n for n, _ in tiny.named_parameters()}
    again = CNN.from_preset("tiny", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(tiny.parameters(), again.parameters()))
    with pytest.raises(ValueError, match="preset"):
        CNN.from_preset("huge")


def test_features_of_a_sample_do_not_depend_on_the_rest_of_the_batch(digits):
    # The property influence sums and the DA loss rely on (GroupNorm), in both modes.
    X, y = digits
    model = CNN.from_preset("tiny", seed=0)
    cnn.train(model, X[:256], y[:256], TrainSchedule(steps=5, lr=0.05, batch=64))
    assert not model.training
    for mode in (False, True):
        model.train(mode)
        alone = model.features(X[:1])
        in_batch = model.features(torch.cat([X[:1], X[500:600]]))[:1]
        torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_and_learns_digits(digits):
    X, y = digits
    train, test = slice(0, 1200), slice(1200, None)
    models, stats = [], []
    for _ in range(2):
        model = CNN.from_preset("tiny", seed=0)
        stats.append(cnn.train(model, X[train], y[train], TrainSchedule.from_preset("tiny", epochs=4)))
        models.append(model)
    assert all(torch.equal(p, q) for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values()))
    assert stats[0].steps == 4 * 19 == stats[0].planned_steps and stats[0].epochs == pytest.approx(4)
    assert cnn.accuracy(models[0], X[test], y[test]) > 0.9  # chance is 0.1; 4 epochs measured ≈ 0.95
    assert stats[0].loss < 0.5


def test_budgets(digits):
    X, y = digits
    model = CNN.from_preset("tiny", seed=0)
    s = cnn.train(model, X[:640], y[:640], TrainSchedule(steps=7, epochs=3))
    assert s.steps == 7  # the first budget to run out
    s = cnn.train(model, X[:640], y[:640], TrainSchedule(seconds=1e-9))
    assert s.steps == 1 and s.planned_steps is None  # time only: constant lr, stops after a step
    with pytest.raises(ValueError, match="budget"):
        cnn.train(model, X, y, TrainSchedule())
    with pytest.raises(ValueError, match="no samples"):
        cnn.train(model, X[:0], y[:0], TrainSchedule(steps=1))


def test_save_load_round_trip_and_clone(tmp_path, digits):
    X, y = digits
    model = CNN.from_preset("tiny", n_classes=10, seed=3)
    schedule = TrainSchedule.from_preset("tiny", steps=3, seed=5)
    cnn.train(model, X[:200], y[:200], schedule)
    cnn.save(tmp_path / "m.pt", model, "tiny", schedule)
    loaded, loaded_schedule = cnn.load(tmp_path / "m.pt")
    assert loaded.config == model.config and loaded_schedule == schedule
    torch.testing.assert_close(loaded(X[:50]), model(X[:50]), rtol=0, atol=0)
    copy = cnn.clone(model)
    with torch.no_grad():
        copy.head.bias.add_(1.0)
    assert not torch.equal(copy.head.bias, model.head.bias)
