"""The repair of an image update that changed too much (unlearning.images.repair) against its references:
it reads nothing but the images it is given (a repair over D with the removed images poisoned is the
repair over D' alone, bit for bit), it brings a model that changed too much back towards its teacher
(the ordering: damaged < repaired in test accuracy and agreement with the teacher), and it answers
only failures of too much change, never a failure to forget."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from unlearning.images import ImageData, cnn
from unlearning.images.repair import RepairConfig, repair, repairable
from unlearning.linalg import single_threaded


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    X_tr, X_te, y_tr, y_te = train_test_split(X, torch.tensor(d.target), test_size=0.2, random_state=0,
                                              stratify=d.target)
    schedule = cnn.TrainSchedule.from_preset("tiny", epochs=2)
    model = cnn.CNN.from_preset("tiny", seed=0)
    with single_threaded():
        cnn.train(model, X_tr, y_tr, schedule)
    return model, ImageData(X_tr, y_tr, schedule), (X_te, y_te)


def overshot(model: cnn.CNN, scale: float) -> cnn.CNN:
    """The model moved too far: seeded noise of `scale` × each tensor's mean magnitude."""
    moved = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
    return moved


def agreement(a: cnn.CNN, b: cnn.CNN, X: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(X).argmax(1) == b(X).argmax(1)).float().mean())


def test_a_repair_reads_only_the_images_it_is_given(digits):
    model, data, _ = digits
    removed = torch.tensor([3, 70, 500, 900])
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[removed] = False
    poisoned = data.X.clone()
    poisoned[removed] = float("nan")  # a removed image read once would make every weight NaN
    over_d = repair(overshot(model, 0.4), ImageData(poisoned, data.y, data.schedule), torch.nonzero(keep).squeeze(1),
                    model, RepairConfig())
    d_prime = ImageData(data.X[keep], data.y[keep], data.schedule)
    alone = repair(overshot(model, 0.4), d_prime, torch.arange(len(d_prime)), model, RepairConfig())
    for a, b in zip(over_d.model.state_dict().values(), alone.model.state_dict().values()):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert over_d.stats["image_passes"] == RepairConfig().steps * RepairConfig().batch * 4


@pytest.mark.parametrize("scale", [0.4, 0.5])
def test_a_repair_brings_a_model_that_changed_too_much_back_towards_its_teacher(digits, scale):
    model, data, (X_te, y_te) = digits
    damaged = overshot(model, scale)
    with single_threaded():
        fixed = repair(damaged, data, torch.arange(len(data)), model, RepairConfig()).model
    before, broken, repaired = (cnn.accuracy(m, X_te, y_te) for m in (model, damaged, fixed))
    assert broken < before - 0.05  # the damage is one the evidence's 5 points would see
    assert broken < repaired <= before + 0.02
    assert agreement(damaged, model, X_te) < agreement(fixed, model, X_te)
    # the input model is never modified (every method works on a copy)
    assert cnn.accuracy(damaged, X_te, y_te) == broken


def test_the_repair_takes_its_config_steps(digits):
    model, data, _ = digits
    short = repair(model, data, torch.arange(len(data)), model, RepairConfig(steps=1))
    assert short.stats["repair_steps"] == 1 and short.method == "repair" and short.guarantee == "empirical"


def check(name: str, value: float, passed: bool) -> dict:
    return {"name": name, "value": value, "threshold": "", "passed": passed}


@pytest.mark.parametrize("failed, answers", [
    ([check("ta_drop_vs_exact_model", 7.0, False)], True),
    ([check("ra_drop_vs_original", 30.0, False), check("ta_drop_vs_original", 25.0, False)], True),
    ([check("forget_accuracy_gap_to_heldout", -100.0, False)], True),  # forgot more than unseen images: Streisand
    ([check("forget_accuracy_gap_to_heldout", 40.0, False)], False),  # still recognised: a failure to forget
    ([check("membership_auc_vs_heldout", 0.9, False)], False),
    ([check("forgotten_class_accuracy", 80.0, False)], False),
    ([check("ta_drop_vs_exact_model", 7.0, False), check("membership_auc_vs_heldout", 0.9, False)], False),
    ([check("ta_drop_vs_exact_model", 1.0, True)], False),  # nothing failed: nothing to repair
])
def test_only_failures_of_too_much_change_are_repairable(failed, answers):
    passing = [check("forget_accuracy_gap_to_heldout", 40.0, True)]
    assert repairable(passing + failed) is answers
