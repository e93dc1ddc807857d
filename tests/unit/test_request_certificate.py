"""A batch's certificate narrowed to each of its requests, and the certificate of a request that
changes nothing: what each request's certificate names (record ids only), and what it keeps of
the batch's."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone
from types import SimpleNamespace

from unlearning.compliance import deadlines, mac_chain
from unlearning.compliance import ledger as lg
from unlearning.compliance.certificate import (
    FORMAT,
    GUARANTEE_FIELDS,
    certificate,
    guarantee_block,
    interrupted_certificate,
    no_change_certificate,
    request_certificate,
    unchanged_entries,
)
from unlearning.compliance.requests import UnlearningRequest
from unlearning.tabular.methods import Result

RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
COMPLETED = datetime(2026, 3, 2, 17, 45, 30, 123456, tzinfo=timezone.utc)
BATCH = {"format": FORMAT, "method": "second_order", "guarantee": "empirical", "verified": True,
         "model": {"name": "people", "version": "3"}, "data": {"before": "a" * 32, "after": "b" * 32},
         "request": {"id": "BATCH-X", "delete_records": ["P1", "P2", "P3"]}}


def record(request: UnlearningRequest) -> lg.RequestRecord:
    return lg.RequestRecord(id=request.id, status="processing", received=RECEIVED, channel="email",
                            policy=deadlines.DeadlinePolicy.gdpr(), deadline=date(2026, 4, 1), request={},
                            request_hash="f" * 64)


def test_a_request_certificate_names_its_own_records_not_the_batch_s():
    request = UnlearningRequest(id="DEL-2", model="people", delete_records=["P3", "P2"], fix_labels={"P9": "yes"})
    cert = request_certificate(BATCH, request, record(request), "BATCH-X", ["DEL-1", "DEL-2"], completed=COMPLETED)
    assert cert["request"] == {"id": "DEL-2", "request_hash": "f" * 64, "kinds": request.kinds(),
                               "delete_records": ["P2", "P3"], "revoke_features": [],
                               "fix_labels": ["P9"],  # the ids only: the corrected label stays in the data
                               "redact": None, "forget_class": None}
    assert cert["batch"] == {"id": "BATCH-X", "requests": ["DEL-1", "DEL-2"]}
    assert cert["timestamps"] == {"received": "2026-03-01T09:00:00+00:00", "deadline": "2026-04-01",
                                  "accepted": None, "removed": None,  # no ledger entry, nothing promoted
                                  "completed": "2026-03-02T17:45:30+00:00"}
    assert cert["channel"] == "email"
    # what was done is the batch's
    assert {k: cert[k] for k in ("method", "guarantee", "verified", "model", "data")} == \
        {k: BATCH[k] for k in ("method", "guarantee", "verified", "model", "data")}
    assert BATCH["request"]["id"] == "BATCH-X"  # the batch's certificate is left as it was


def test_time_to_removal_counts_from_the_ledger_accepting_the_request_to_the_promotion():
    """A batch's run starts when comply runs (maybe the next night); each request's time to
    removal starts when the ledger accepted it, and ends when production moved."""
    request = UnlearningRequest(id="DEL-1", model="people", delete_records=["P1"])
    accepted = mac_chain.Entry(seq=1, request_id="DEL-1", event="received", status="received",
                               at="2026-03-01T22:00:00+00:00", data={}, prev_hash="", hash="")
    batch = {**BATCH, "timings": {"update_s": 0.01, "verify_s": 0.2, "time_to_removal_s": 5.0},
             "timestamps": {"accepted": "2026-03-02T02:00:00+00:00", "removed": "2026-03-02T02:00:05+00:00"}}
    cert = request_certificate(batch, request, replace(record(request), entries=[accepted]), "BATCH-X", ["DEL-1"],
                               completed=COMPLETED)
    assert cert["timings"] == {"update_s": 0.01, "verify_s": 0.2, "time_to_removal_s": 4 * 3600 + 5.0}
    assert cert["timestamps"]["accepted"] == "2026-03-01T22:00:00+00:00"
    assert cert["timestamps"]["removed"] == "2026-03-02T02:00:05+00:00"
    assert batch["timings"]["time_to_removal_s"] == 5.0  # the batch's certificate is left as it was


def test_unchanged_records_are_listed_in_order_with_why():
    notes = {"P9": "label already as requested: nothing to change", "P1": "record erased by request DEL-A"}
    assert unchanged_entries(notes) == [{"record": "P1", "reason": "record erased by request DEL-A"},
                                        {"record": "P9", "reason": "label already as requested: nothing to change"}]


def test_a_request_that_changes_nothing_leaves_model_and_data_as_they_are():
    production = SimpleNamespace(version=4, run_id="run-4")
    cert = no_change_certificate("people", production, "c" * 32, COMPLETED)
    assert cert["guarantee"] == "no change" and cert["method"] == "none" and cert["verified"] is True
    assert cert["model"] == {"name": "people", "version": "4", "run_id": "run-4"}
    assert cert["data"] == {"before": "c" * 32, "after": "c" * 32}
    assert cert["checks"] == [] and cert["superseded"] == [] and cert["format"] == FORMAT
    assert cert["issued_at"] == "2026-03-02T17:45:30+00:00"


def test_a_certificate_rebuilt_from_a_version_s_record_has_a_full_one_s_method_and_guarantee():
    """What a forget run's version records (its guarantee block, as JSON in a tag) rebuilds the
    certificate of a run that stopped after its promotion: the same fields, no checks."""
    import json

    result = Result(theta=None, method="certified", guarantee="certified", residual=0.0071, residual_bound=0.0075,
                    epsilon=0.00074, delta=1e-5, stats={"budget": 10.0, "budget_used": 0.0075, "budget_left": 9.9925})
    request = UnlearningRequest(id="DEL-1", model="people", delete_records=["P1"])
    model = {"name": "people", "version": "2", "parent_version": "1", "run_id": "r2", "parent_run_id": "r1"}
    full = certificate(request, result, model=model, data=BATCH["data"], metrics={}, checks=[], timings={},
                       code_version="1.0+abc", config={}, request_hash="f" * 64)
    recorded = json.loads(json.dumps(guarantee_block(result)))
    rebuilt = interrupted_certificate(recorded, model=model, data=BATCH["data"], verified=True, code_version="1.0+abc",
                                      timestamps=None, superseded=None, interrupted="the run stopped")
    same = (*GUARANTEE_FIELDS, "format", "model", "data", "code_version", "verified")
    assert {k: rebuilt[k] for k in same} == {k: full[k] for k in same}
    assert rebuilt["verification"] is None and "checks" not in rebuilt and rebuilt["interrupted"] == "the run stopped"
    # a version registered before its guarantee block was kept: its method and guarantee tags only
    legacy = interrupted_certificate({"method": "second_order", "guarantee": "empirical"}, model=model,
                                     data=BATCH["data"], verified=True, code_version=None, timestamps=None,
                                     superseded=None, interrupted="")
    assert (legacy["method"], legacy["guarantee"], legacy["epsilon"]) == ("second_order", "empirical", None)
