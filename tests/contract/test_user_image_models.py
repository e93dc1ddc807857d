"""The images contract (test_every_method.py) over a user's own model: every registered image
method — built in or a plugin — run on tests.custom_models:build (built through
unlearning.images.factory) returns its declared guarantee, leaves a usable model of the same
factory and its inputs untouched, ends no farther from the model retrained through the same
factory than doing nothing, and is deterministic."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.contract.kinds import PRESETS
from unlearning import registry
from unlearning.images import ImageData, cnn, factory, forget_class
from unlearning.images.registry import ImageContext
from unlearning.linalg import single_threaded

SPEC = "tests.custom_models:build"
NAMES = registry.names("images")


@functools.cache
def world():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images[:600] / 16.0, dtype=torch.float32)[:, None]  # (600, 1, 8, 8)
    y = torch.tensor(d.target[:600])
    schedule = cnn.TrainSchedule(epochs=15, lr=0.2, batch=64)
    model = factory.build(SPEC, 10, 1, (8, 8), seed=0)
    with single_threaded():
        cnn.train(model, X, y, schedule)
    context = ImageContext(model, ImageData(X, y, schedule), forget_class(y, 3))
    initial = [t.detach().clone() for t in (*model.parameters(), X, y)]
    return context, initial


@functools.cache
def run(name: str):
    return registry.run("images", name, world()[0], PRESETS["images"].get(name, {}))


def forget_accuracy(model, context) -> float:
    with torch.no_grad():
        forget = context.request.forget
        return float((model(context.data.X[forget]).argmax(1) == context.data.y[forget]).float().mean())


@pytest.mark.parametrize("name", NAMES)
def test_guarantee_usable_model_and_untouched_inputs(name):
    context, initial = world()
    result = run(name)
    assert result.method == name and result.guarantee == registry.get("images", name).guarantee
    assert isinstance(result.model, factory.UserModel) and result.model.config == context.model.config
    with torch.no_grad():
        logits = result.model(context.data.X[:32])
    assert logits.shape == (32, 10) and bool(torch.isfinite(logits).all())
    for before, now in zip(initial, (*context.model.parameters(), context.data.X, context.data.y), strict=True):
        assert torch.equal(before, now), f"{name} changed its input"


@pytest.mark.parametrize("name", NAMES)
def test_not_farther_from_the_model_retrained_through_the_factory_than_doing_nothing(name):
    context, _ = world()
    reference = forget_accuracy(run("retrain").model, context)
    nothing = abs(forget_accuracy(context.model, context) - reference)
    assert abs(forget_accuracy(run(name).model, context) - reference) <= nothing


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    context, _ = world()
    again = registry.run("images", name, context, PRESETS["images"].get(name, {}))
    for a, b in zip(run(name).model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
