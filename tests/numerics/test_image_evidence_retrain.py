"""The image evidence checks against exact retraining on a small problem (the tiny CNN on 8×8
digits, held-out images = the last 597): a model retrained on D' passes every check (no false
alarm) for a class, random records and repaired labels; the original fails class forgetting."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from unlearning.images import ImageData, cnn, delete_records, fix_labels, forget_class
from unlearning.images.evidence import evidence_checks, evidence_of, evidence_sets
from unlearning.images.verify import ImageEvidenceConfig
from unlearning.images.registry import run_image_method
from unlearning.metrics import accuracy, model_outputs

N_TRAIN = 1200
CFG = ImageEvidenceConfig()


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]  # (1797, 1, 8, 8)
    y = torch.tensor(d.target)
    schedule = cnn.TrainSchedule.from_preset("tiny", epochs=6)
    model = cnn.CNN.from_preset("tiny", seed=0)
    cnn.train(model, X[:N_TRAIN], y[:N_TRAIN], schedule)
    return model, ImageData(X[:N_TRAIN], y[:N_TRAIN], schedule), (X[N_TRAIN:], y[N_TRAIN:])


def utility(model, data: ImageData, request, held_out) -> dict:
    """RA, and TA on the held-out images of the classes kept (as the pipeline's eval_sets: a model
    retrained without a class cannot predict it, which is not a utility drop)."""
    x, y = held_out
    kept = y != (-1 if request.forget_class is None else request.forget_class)
    outs = [model_outputs(model, *s) for s in ((data.X[request.retain], data.y[request.retain]), (x[kept], y[kept]))]
    return dict(zip(("ra", "ta"), (accuracy(o.predictions, o.labels) for o in outs)))


def checks_of(model, original, data, request, held_out) -> dict[str, bool]:
    sets = evidence_sets(data, request, held_out)
    checks = evidence_checks(evidence_of(model, sets, CFG), utility(model, data, request, held_out),
                             utility(original, data, request, held_out), CFG)
    return {c["name"]: c["passed"] for c in checks}


def test_class_forgetting_passes_the_retrained_model_and_fails_the_original(digits):
    original, data, held_out = digits
    request = forget_class(data.y, 3)
    retrained = run_image_method("retrain", original, data, request).model
    assert all(checks_of(retrained, original, data, request, held_out).values())
    failed = [name for name, ok in checks_of(original, original, data, request, held_out).items() if not ok]
    assert {"forgotten_class_accuracy", "forgotten_class_heldout_accuracy"} <= set(failed)


def random_records(data: ImageData):
    return data, delete_records(len(data.y), torch.randperm(len(data.y), generator=torch.Generator().manual_seed(1))[:120])


def repaired_labels(data: ImageData):
    """40 labels recorded wrong (the next digit), repaired to the true ones."""
    wrong = data.y.clone()
    wrong[:40] = (wrong[:40] + 1) % 10
    return ImageData(data.X, wrong, data.schedule), fix_labels(wrong, torch.arange(40), data.y[:40])


@pytest.mark.parametrize("make", [random_records, repaired_labels])
def test_no_false_alarm_on_the_retrained_model(digits, make):
    original, data, held_out = digits
    data, request = make(data)
    retrained = run_image_method("retrain", original, data, request).model
    assert all(checks_of(retrained, original, data, request, held_out).values())
