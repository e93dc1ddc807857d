"""The rules of an image model's chain of unrolled deletions (unlearning.images.chain), which the
pipeline (tasks.kinds.images, images_chain) and bench.stream's image scenario both follow: which
deletion takes the chain, what it continues, and which first model the new model's chain keeps —
the last checked against the real step (alignment's unroll), which ends a chain whose guard no
halved step meets."""

from __future__ import annotations

import torch

from unlearning.images import ImageData, cnn, delete_records, forget_class
from unlearning.images import chain as rules
from unlearning.images.alignment import AlignmentConfig
from unlearning.images.common import ImageChain
from unlearning.images.registry import CHAINED, run_image_method


def images(n: int = 300, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, 28, 28, generator=g)
    return ImageData(X, torch.arange(n) % 10, cnn.TrainSchedule.from_preset("tiny", epochs=1))


def test_only_an_unrolled_deletion_takes_the_chain():
    data = images()
    few = delete_records(len(data), [3, 70])  # under unroll_below of the images: unrolled
    many = delete_records(len(data), range(int(AlignmentConfig().unroll_below * len(data)) + 1))
    assert CHAINED == ("alignment",) and rules.takes_the_chain("alignment", None, data, few)
    assert not rules.takes_the_chain("alignment", None, data, many)  # alignment's own steps start from the model
    assert not rules.takes_the_chain("alignment", None, data, forget_class(data.y, 4))
    assert not rules.takes_the_chain("alignment", {"steps": 5}, data, few)  # a length asked for: not unrolled
    assert not rules.takes_the_chain("alignment", {"no_such_option": 1}, data, few)  # running it reports that
    assert not rules.takes_the_chain("finetune", None, data, few)


def test_a_deletion_continues_the_chain_the_model_before_keeps_else_starts_one_from_it():
    before, first = cnn.CNN.from_preset("tiny", seed=0), cnn.CNN.from_preset("tiny", seed=1)
    kept = (ImageChain(first, {"w": torch.ones(1)}, 3), "run-first")
    assert rules.continued(kept, before, "run-before") is kept
    chain, named = rules.continued(None, before, "run-before")  # trained, retrained, audited and kept ...
    assert chain.model is before and chain.grad == {} and chain.images == 0 and named == "run-before"


def test_the_new_model_keeps_the_chains_first_model_unless_the_chain_ended():
    model, data = cnn.CNN.from_preset("tiny", seed=0), images()
    request = delete_records(len(data), [3, 70])
    taken = rules.continued(None, model, "run-before")
    went_on = run_image_method("auto", model, data, request, chain=taken[0])
    assert went_on.stats["guard_met"] and rules.first_model(taken, went_on.chain, "run-before") == "run-before"
    first = cnn.CNN.from_preset("tiny", seed=1)
    chain = (ImageChain(first, {n: torch.zeros_like(p) for n, p in first.named_parameters()}, 2), "run-first")
    kept = run_image_method("auto", model, data, request, chain=chain[0])
    assert kept.chain.model is first and rules.first_model(chain, kept.chain, "run-before") == "run-first"
    # an earlier gradient far too large for any halved step to meet the guard: the chain ends, and
    # the deletion, unrolled from the model before, starts a new chain from it
    earlier = run_image_method("auto", first, data, delete_records(len(data), [5, 80])).chain
    huge = (ImageChain(first, {n: 1e4 * g for n, g in earlier.grad.items()}, 2), "run-first")
    ended = run_image_method("auto", model, data, request, chain=huge[0])
    assert ended.stats["unrolled_from"] == "the model before"
    assert rules.first_model(huge, ended.chain, "run-before") == "run-before"
    assert rules.first_model(huge, None, "run-before") is None  # another path: the new model keeps no chain
