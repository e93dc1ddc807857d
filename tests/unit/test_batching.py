"""Group unlearning: which pending requests share one update, what the merged request asks, the
parts of a request that change nothing, and how a failed batch is split."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from unlearning.compliance.batching import (
    UNCHANGED_LABEL,
    batch_id,
    conflict,
    group_requests,
    merge_requests,
    narrowed,
    no_change_notes,
    retry_groups,
)
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError


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


T0 = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone.utc)


def test_a_batch_id_is_its_time_and_a_digest_of_its_members_content():
    a, b = req("A", delete_records=["1"]), req("B", fix_labels={"5": "no"})
    assert batch_id([a, b], T0).startswith("BATCH-20260301T123005-")
    assert batch_id([a, b], T0) == batch_id([b, a], T0)  # the order of the members does not matter
    # the same ids with a part set aside (a batch written anew) get another id
    assert batch_id([a, b], T0) != batch_id([a, req("B", fix_labels={"6": "no"})], T0)
    assert batch_id([a], T0) != batch_id([a, b], T0)


def test_a_failed_batch_without_refused_requests_is_retried_one_request_at_a_time():
    rs = [req("A", delete_records=["1"]), req("B", delete_records=["2"]), req("C", delete_records=["3"])]
    assert [[r.id for r in g] for g in retry_groups(rs, set())] == [["A"], ["B"], ["C"]]


def test_the_requests_refused_alone_leave_the_rest_as_one_batch():
    rs = [req("A", delete_records=["1"]), req("B", delete_records=["2"]), req("C", delete_records=["3"])]
    assert [[r.id for r in g] for g in retry_groups(rs, {"B"})] == [["A", "C"]]
    assert retry_groups(rs, {"A", "B", "C"}) == []


def test_a_relabel_to_the_current_label_changes_nothing():
    r = req("R", fix_labels={"7": "yes", "8": "yes"}, delete_records=["9"])
    notes = no_change_notes([r], labels={"7": "yes", "8": "no", "9": "no"}, erased={})
    assert notes == {"R": {"7": UNCHANGED_LABEL}}  # the other relabel and the deletion change the data


def test_a_label_is_compared_as_written():
    # a label read from the data may be a number where the request holds its text
    assert no_change_notes([req("R", fix_labels={"7": "1"})], labels={"7": 1}, erased={}) == {"R": {"7": UNCHANGED_LABEL}}


def test_a_record_an_earlier_request_erased_changes_nothing_and_names_that_request():
    later = req("LATER", delete_records=["7", "8"], fix_labels={"9": "no"})
    notes = no_change_notes([later], labels={"8": "yes"}, erased={"7": "DEL-A", "9": "DEL-B"})
    assert notes == {"LATER": {"7": "record erased by request DEL-A: nothing left to erase",
                               "9": "record erased by request DEL-B: nothing left to relabel"}}


def test_an_unknown_record_is_left_for_the_forget_run_to_report():
    assert no_change_notes([req("R", delete_records=["404"])], labels={}, erased={}) == {}


def test_a_narrowed_request_keeps_only_the_parts_that_change_something():
    r = req("R", delete_records=["1", "2"], fix_labels={"7": "yes", "8": "no"}, revoke_features=["sex"])
    rest = narrowed(r, {"2": "erased", "7": UNCHANGED_LABEL})
    assert (rest.id, rest.delete_records, rest.fix_labels, rest.revoke_features) == ("R", ["1"], {"8": "no"}, ["sex"])
    assert narrowed(r, None) is r and narrowed(r, {}) is r


def test_a_request_with_nothing_left_is_narrowed_to_none():
    r = req("R", delete_records=["1"], fix_labels={"7": "yes"})
    assert narrowed(r, {"1": "erased", "7": UNCHANGED_LABEL}) is None


def test_the_reason_the_ledger_keeps_for_a_failed_request_never_holds_a_secret_the_error_quoted():
    """comply records `failure_reason(exc)` as the request's reason in the append-only ledger, for good:
    a KeyError of a column named with a card number put the number there whole."""
    from unlearning.errors import failure_reason
    from unlearning.detect import mask

    card, email = "4111 1111 1111 1111", "alice@example.com"
    for exc in (KeyError(card), UnlearnError(f"unknown feature '{card}' in revoke_features; valid features: age"),
                RuntimeError(f"model {email!r} failed\nsecond line")):
        reason = failure_reason(exc)
        assert card not in reason and email not in reason and "\n" not in reason
        assert mask(card, "card") in reason or mask(email, "email") in reason
    assert failure_reason(RuntimeError("")) == "RuntimeError"


def test_a_manifest_left_half_written_by_a_kill_is_removed_by_the_next_run(tmp_path):
    """A manifest is written to `.NAME.json.PID.tmp` and renamed into place; a run killed in between
    left the temporary file (member ids and deleted images' hashes) for good (review, session 21)."""
    from tasks.batches import BATCHES, finish_promoted_batches

    folder = tmp_path / BATCHES
    folder.mkdir(parents=True)
    left = folder / ".B-1.json.4242.tmp"
    left.write_text('{"batch": "B-1", "members": ["R-1"], "erased_rows": {}}')
    assert finish_promoted_batches(tmp_path) == [] and not left.exists()


def test_members_are_not_completed_from_a_rebuilt_result_lacking_what_their_entries_record():
    """The recovery rebuilds a killed forget run's result from its registered version's tags
    (tasks.release.interrupted_result): no redacted fingerprints, no resolved class name, which a
    redaction's or a class forgetting's `completed` entry records for the gates (review, session 21).
    Such members are reclaimed, as before; deletions complete from it."""
    from tasks.batches import completes_from

    rebuilt, full = {"verified": True, "interrupted": "killed after its promotion"}, {"verified": True}
    deleting, redacting = req("D", delete_records=["1"]), req("R", redact={"findings": "all"})
    assert completes_from(rebuilt, [deleting]) and completes_from(full, [deleting, redacting])
    assert not completes_from(rebuilt, [deleting, redacting])
