"""Group unlearning: which pending requests share one update, and what the merged request asks."""

from __future__ import annotations

import pytest

from unlearning.batching import conflict, group_requests, merge_requests
from unlearning.errors import UnlearnError
from unlearning.requests import UnlearningRequest


def req(id_, model="people", **kw):
    return UnlearningRequest(id=id_, model=model, **kw)


def test_merged_request_is_the_union_of_what_each_asks():
    a = req("A", delete_records=["1", "2"], fix_labels={"7": "yes"})
    b = req("B", delete_records=["2", "3"], revoke_features=["sex"], fix_labels={"8": "no"})
    m = merge_requests([a, b], "BATCH-1")
    assert m.id == "BATCH-1" and m.model == "people"
    assert m.delete_records == ["1", "2", "3"] and m.revoke_features == ["sex"]
    assert m.fix_labels == {"7": "yes", "8": "no"} and m.method == "auto"


def test_redactions_merge_by_fingerprint_and_all_wins():
    a = req("A", model="lm", redact={"findings": ["f1", "f2"]})
    b = req("B", model="lm", redact={"findings": ["f2", "f3"]})
    assert merge_requests([a, b], "X").redact.findings == ["f1", "f2", "f3"]
    c = req("C", model="lm", redact={"findings": "all"})
    assert merge_requests([a, c], "X").redact.findings == "all"


@pytest.mark.parametrize("a, b, why", [
    (req("A", fix_labels={"7": "yes"}), req("B", fix_labels={"7": "no"}), "relabelled differently"),
    (req("A", delete_records=["7"]), req("B", fix_labels={"7": "no"}), "deleted by A and relabelled by B"),
    (req("A", fix_labels={"7": "no"}), req("B", delete_records=["1", "7"]), "deleted by B and relabelled by A"),
    (req("A", model="lm", redact={"policy": "token"}), req("B", model="lm", redact={"policy": "same_format"}),
     "redaction policies"),
    (req("A", delete_records=["1"], method="retrain"), req("B", delete_records=["2"], method="second_order"),
     "methods"),
])
def test_conflicting_requests_are_kept_apart(a, b, why):
    assert why in conflict(a, b)
    assert [[r.id for r in g] for g in group_requests([a, b])] == [["A"], ["B"]]
    with pytest.raises(UnlearnError, match="cannot share an update"):
        merge_requests([a, b], "X")


def test_batches_are_per_model_in_submission_order():
    rs = [req("A", delete_records=["1"]), req("B", model="other", delete_records=["1"]),
          req("C", delete_records=["2"], fix_labels={"5": "no"}), req("D", fix_labels={"5": "yes"})]
    assert [[r.id for r in g] for g in group_requests(rs)] == [["A", "C"], ["B"], ["D"]]
    with pytest.raises(UnlearnError, match="per model"):
        merge_requests(rs[:2], "X")


def test_a_request_conflicting_with_an_earlier_one_is_batched_after_it():
    # C agrees with A but conflicts with B, received between them: merging C into A's batch
    # would apply B's label last although C came later
    rs = [req("A", fix_labels={"5": "yes"}), req("B", fix_labels={"5": "no"}), req("C", fix_labels={"5": "yes"}),
          req("D", delete_records=["9"]), req("E", model="other", fix_labels={"5": "no"})]
    assert [[r.id for r in g] for g in group_requests(rs)] == [["A", "D"], ["B"], ["C"], ["E"]]
