"""A chain of unrolled record deletions (unlearning.images.alignment.unroll's `chain`) against its
references: the chained step is the unrolling of every image the chain deleted, taken at once from the
chain's first model (checked against that one unrolling), and on a CNN that has not memorised its
images a chain of small deletions taken that way stays nearer the retrained model than doing nothing,
where the same deletions stacked on the model before drift far from it (the ordering: stacked >
nothing > chained, in average gap to retraining)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tests.unit.test_image_data import needs_fashion
from unlearning.images import ImageData, cnn, delete_records
from unlearning.images.alignment import AlignmentConfig, unroll
from unlearning.images.common import ImageChain
from unlearning.images.data import build_fashion_mnist
from unlearning.images.registry import run_image_method
from unlearning.linalg import single_threaded


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    X_tr, _, y_tr, _ = train_test_split(X, torch.tensor(d.target), test_size=0.2, random_state=0, stratify=d.target)
    schedule = cnn.TrainSchedule.from_preset("tiny", epochs=2)
    model = cnn.CNN.from_preset("tiny", seed=0)
    with single_threaded():
        cnn.train(model, X_tr, y_tr, schedule)
    return model, ImageData(X_tr, y_tr, schedule)


def without(data: ImageData, positions) -> ImageData:
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[list(positions)] = False
    return ImageData(data.X[keep], data.y[keep], data.schedule)


def test_a_chained_deletion_is_one_unrolling_of_the_chains_images_from_its_first_model(digits):
    model, data = digits
    first, second = [3, 70, 500], [10, 900]  # positions in the first model's training set
    step1 = unroll(model, data, delete_records(len(data), first), AlignmentConfig(), chain=ImageChain(model))
    assert step1.stats["unrolled_from"] == "the chain's first model" and step1.chain.model is model
    after1 = without(data, first)
    moved = [p - sum(q < p for q in first) for p in second]  # the same images among the data after the first
    step2 = unroll(step1.model, after1, delete_records(len(after1), moved), AlignmentConfig(), chain=step1.chain)
    at_once = unroll(model, data, delete_records(len(data), first + second), AlignmentConfig())
    assert at_once.stats["unrolled_from"] == "the model before"
    assert step2.stats["tau"] == at_once.stats["tau"]
    for a, b in zip(step2.model.state_dict().values(), at_once.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the chain's gradient is the sum of the deleted images' gradients at the first model (autograd)
    probe = cnn.CNN.from_preset("tiny", seed=0)
    probe.load_state_dict(model.state_dict())
    torch.nn.functional.cross_entropy(probe(data.X[first + second]), data.y[first + second], reduction="sum").backward()
    for name, p in probe.named_parameters():
        torch.testing.assert_close(step2.chain.grad[name], p.grad, rtol=1e-4, atol=1e-6)
    # the model before is not what a chained step starts from; without a chain it is
    other = run_image_method("alignment", cnn.CNN.from_preset("tiny", seed=5), after1,
                             delete_records(len(after1), moved), chain=step1.chain)
    assert all(torch.equal(a, b) for a, b in zip(other.model.state_dict().values(), step2.model.state_dict().values()))


def accuracy(model, X, y) -> float:
    return 100 * cnn.accuracy(model, X, y)


@needs_fashion
def test_chained_deletions_stay_near_retraining_where_stacked_ones_drift():
    # bench.stream's busier month, cut short: 3,000 Fashion-MNIST images, the small CNN 4 epochs
    # (train ≈ test accuracy ≈ 75 %: it does not memorise its images), 20 deletions of 1–5 images
    fm = build_fashion_mnist(n_train=3000, n_test=2000, allow_download=False)
    tensor = lambda mask: (torch.from_numpy(fm.images[mask].astype(np.float32) / 255.0),  # noqa: E731
                           torch.from_numpy(fm.labels[mask].astype(np.int64)))
    (X, y), (X_test, y_test) = tensor(fm.train), tensor(~fm.train)
    schedule = cnn.TrainSchedule.from_preset("small", epochs=4, seed=0, init_seed=0)
    original = cnn.CNN.from_preset("small", seed=0)
    with single_threaded():
        cnn.train(original, X, y, schedule)
    rng = np.random.default_rng([0, 3])
    order = list(rng.permutation(len(y)))
    requests = [sorted(int(order.pop()) for _ in range(int(rng.integers(1, 6)))) for _ in range(20)]
    alive = torch.ones(len(y), dtype=torch.bool)
    stacked = chained = original
    chain = ImageChain(original)
    for deleted in requests:
        data = ImageData(X[alive], y[alive], schedule)
        request = delete_records(len(data), [int(alive[:p].sum()) for p in deleted])
        stacked = run_image_method("auto", stacked, data, request).model
        result = run_image_method("auto", chained, data, request, chain=chain)
        chained, chain = result.model, result.chain
        alive[deleted] = False
    retrained = cnn.CNN.from_preset("small", seed=0)
    with single_threaded():
        cnn.train(retrained, X[alive], y[alive], schedule)
    forgotten = [p for deleted in requests for p in deleted]
    sets = [(X[alive], y[alive]), (X_test, y_test), (X[forgotten], y[forgotten])]  # RA, TA, UA

    def gap(model) -> float:
        return float(np.mean([abs(accuracy(model, *s) - accuracy(retrained, *s)) for s in sets]))

    drop = lambda model: accuracy(original, X[alive], y[alive]) - accuracy(model, X[alive], y[alive])  # noqa: E731
    assert drop(stacked) > 10 > 3 > drop(chained)  # stacked steps ran the model down; the chain did not
    assert gap(stacked) > gap(original) > gap(chained)


def test_a_chain_whose_guard_no_halved_step_meets_ends_and_the_deletion_starts_a_new_one(digits):
    model, data = digits
    first = run_image_method("auto", model, data, delete_records(len(data), [3, 70]))
    after = without(data, [3, 70])
    request = delete_records(len(after), [10, 900])
    # a chain whose earlier gradient is far too large for any halved step to keep the retain loss
    huge = type(first.chain)(model, {n: 1e4 * g for n, g in first.chain.grad.items()}, first.chain.images)
    ended = run_image_method("auto", first.model, after, request, chain=huge)
    fresh = run_image_method("auto", first.model, after, request)  # no chain: the model before
    assert ended.stats["unrolled_from"] == "the model before" and ended.stats["chain_images"] == 2
    assert all(torch.equal(a, b) for a, b in zip(ended.model.state_dict().values(), fresh.model.state_dict().values()))
    # the new chain starts at a frozen copy of the model before: changing it later changes nothing
    start = ended.chain.model
    assert start is not first.model and all(
        torch.equal(a, b) for a, b in zip(start.state_dict().values(), first.model.state_dict().values()))
    # a chain the guard allows keeps going and counts its images
    kept = run_image_method("auto", first.model, after, request, chain=first.chain)
    assert kept.stats["unrolled_from"] == "the chain's first model" and kept.stats["guard_met"]
    assert kept.stats["chain_images"] == 4 and kept.chain.images == 4
    with torch.no_grad():
        next(first.model.parameters()).add_(1.0)
    assert not torch.equal(next(start.parameters()), next(first.model.parameters()))
