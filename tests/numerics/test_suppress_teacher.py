"""`suppress`'s anchor on a chain of fast updates (unlearning.text.chain, "the teacher"): each update
holds the model's predictions on untouched windows to a teacher by a KL term. Anchored to its parent,
an update keeps the drift of every update before it and adds its own, so held-out perplexity climbs
along the chain until the evidence's drift bound sends a request to retraining; anchored to the
chain's exact model, the drift does not pile up. A `tiny` model on the demo corpus, six one-secret
requests in a row, each update taking the chain's earlier secrets again (as tasks/kinds/text.py)."""

from __future__ import annotations

import pytest
import torch

from tasks.scan import scan_corpus
from unlearning import registry
from unlearning.text import lm
from unlearning.text.data import redact
from unlearning.text.shakespeare import build_shakespeare

SALT = b"tests/numerics/test_suppress_teacher"
REQUESTS = 6


@pytest.fixture(scope="module")
def chain_world():
    """The corpus, a tiny model trained on it, and the data after each of REQUESTS one-secret requests."""
    corpus = build_shakespeare()
    findings = scan_corpus(corpus, SALT)
    prints = list(dict.fromkeys(f["fingerprint"] for f in findings))[:REQUESTS]
    groups = [[f for f in findings if f["fingerprint"] == p] for p in prints]
    data = [corpus]
    for group in groups:
        data.append(redact(data[-1], lm.occurrences_of(group)))
    original, _ = lm.train_text_model(corpus, "tiny", steps=300)
    return corpus, groups, data, original


def drift_along_the_chain(world, anchored_to_exact: bool, options: dict | None = None) -> list[float]:
    """Held-out perplexity after each update of the chain, relative to the original model's."""
    corpus, groups, data, original = world
    base = lm.held_out_perplexity(original, corpus)
    model, drift = original, []
    for k, group in enumerate(groups, start=1):
        earlier = [f for g in groups[:k - 1] for f in g]
        request, windows = lm.window_request(model, corpus, data[k], group + earlier)
        teacher = original if anchored_to_exact else None
        model = registry.run("text", "suppress", lm.TextContext(model, request, windows, teacher), options).bundle
        drift.append(lm.held_out_perplexity(model, data[k]) / base - 1)
    return drift


@pytest.mark.parametrize("mean_grad", [0.0, None])
def test_anchored_to_its_parent_a_chain_piles_up_drift_anchored_to_the_exact_model_it_does_not(chain_world, mean_grad):
    # None: the default (a quarter of the hinge's gradient through the class mean), whose updates
    # drift less each (measured here: +0.19 % to +0.34 % along the chain, +0.24 % to +1.10 % with the
    # mean held fixed), so its parent chain is not climbing at every update, only over the chain
    options = None if mean_grad is None else {"mean_grad": mean_grad}
    by_parent = drift_along_the_chain(chain_world, anchored_to_exact=False, options=options)
    by_exact = drift_along_the_chain(chain_world, anchored_to_exact=True, options=options)
    assert by_parent[0] == pytest.approx(by_exact[0], abs=1e-12)  # the first update: the parent is the exact model
    if mean_grad == 0.0:
        assert all(b > a for a, b in zip(by_parent, by_parent[1:])), by_parent  # each update adds its drift
    assert by_parent[-1] > by_parent[0], by_parent  # the chain keeps what the updates before added
    assert by_exact[-1] < by_parent[-1] / 2, (by_exact, by_parent)
    assert max(by_exact) < by_parent[-1], (by_exact, by_parent)


def test_the_model_itself_as_teacher_is_the_default_bit_for_bit(chain_world):
    corpus, groups, data, original = chain_world
    request, windows = lm.window_request(original, corpus, data[1], groups[0])
    default = registry.run("text", "suppress", lm.TextContext(original, request, windows))
    itself = registry.run("text", "suppress", lm.TextContext(original, request, windows, original))
    assert default.stats["teacher"] == "the model before" and itself.stats["teacher"] == "given"
    for (name, a), (_, b) in zip(default.bundle.model.state_dict().items(), itself.bundle.model.state_dict().items()):
        assert torch.equal(a, b), name
    # and a teacher is not ignored: another model as the teacher gives another update
    other, _ = lm.train_text_model(corpus, "tiny", steps=50)
    taught = registry.run("text", "suppress", lm.TextContext(original, request, windows, other))
    assert not all(torch.equal(a, b) for a, b in zip(default.bundle.model.state_dict().values(),
                                                      taught.bundle.model.state_dict().values()))
