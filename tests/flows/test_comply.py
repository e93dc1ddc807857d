"""The `comply` flow on the ledger (real Prefect, MLflow, DVC, SQLite ledger): pending requests →
one batched update per model → a signed certificate per request → the ledger updated; one run at
a time; a processed request is not processed again."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.cli import main
from tasks import batches, dvc, ledger, steps
from tasks.release import project_lock
from tasks.kinds import tabular
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from unlearning.compliance.requests import UnlearningRequest


def test_comply_batches_pending_requests_and_signs_a_certificate_each(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    data_before = dvc.data_version(workspace)
    first = request_file(workspace, id="GDPR-1", delete_records=["P1003", "P1004"])
    second = request_file(workspace, id="GDPR-2", delete_records=["P1010"], fix_labels={"P1030": "yes"})
    for path in (first, second):
        code, out = run_json(capsys, ["requests", "submit", str(path), "--channel", "email"])
        assert code == 0, out

    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    done = {r["id"]: r for r in out["requests"]}
    assert set(done) == {"GDPR-1", "GDPR-2"} and all(r["status"] == "completed" for r in done.values())
    # one batched update: both requests end in the same new model version and data version
    assert done["GDPR-1"]["model"] == done["GDPR-2"]["model"] == {"name": "people", "version": "2"}
    assert dvc.data_version(workspace) != data_before
    for r in done.values():
        cert_path = workspace / r["certificate"]
        cert = json.loads(cert_path.read_text())
        assert cert["request"]["id"] == r["id"] and cert["verified"] and cert["batch"]["requests"] == ["GDPR-1", "GDPR-2"]
        # issue 13: verified without training a model, timed from the request's acceptance in the ledger
        assert cert["verification"]["mode"] == "evidence" and cert["verification"]["retrains"] == 0
        assert cert["timings"]["retrain_s"] is None and r["verification"] == cert["verification"]
        accepted = ledger.show(workspace, r["id"]).entries[0].at
        assert cert["timestamps"]["accepted"] == accepted < cert["timestamps"]["removed"]
        assert r["time_to_removal_s"] == cert["timings"]["time_to_removal_s"] > cert["timings"]["verify_s"] > 0
        report = cert_path.with_suffix(".html").read_text()
        assert "Verified by <b>evidence</b>" in report
        assert main(["certificate", "verify", str(cert_path)]) == 0
        assert ledger.show(workspace, r["id"]).status == "completed"
    assert main(["ledger", "verify"]) == 0

    # an altered certificate no longer verifies
    path = workspace / done["GDPR-1"]["certificate"]
    path.write_text(path.read_text().replace('"GDPR-1"', '"GDPR-9"', 1))
    assert main(["certificate", "verify", str(path)]) == 1

    # re-submitting a processed request is a no-op that returns the earlier result (its
    # certificate and model); a second comply run finds nothing to do
    ledger_before = (workspace / "ledger.db").read_bytes()
    code, again = run_json(capsys, ["requests", "submit", str(first)])
    assert code == 0 and again["created"] is False and again["status"] == "completed"
    assert again["response"]["certificate"] == done["GDPR-1"]["certificate"]
    assert again["response"]["model"] == done["GDPR-1"]["model"]
    assert (workspace / "ledger.db").read_bytes() == ledger_before
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and out["requests"] == []


def test_comply_with_verify_reference_retrains_each_batch_as_before(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="REF-1", delete_records=["P1003"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    code, out = run_json(capsys, ["comply", "--verify", "reference"])
    assert code == 0 and out["requests"][0]["status"] == "completed", out
    cert_path = workspace / out["requests"][0]["certificate"]
    cert = json.loads(cert_path.read_text())
    assert cert["verification"]["mode"] == "reference" and cert["verification"]["retrains"] == 1
    assert cert["timings"]["retrain_s"] > 0 and cert["fidelity"]["agreement"] >= 0.99
    report = cert_path.with_suffix(".html").read_text()
    assert 'alt="verify/coefficients.png"' in report and "data:image/png;base64," in report  # the plots


def test_comply_refuses_an_unknown_verification_mode_before_claiming_anything(workspace, people_csv, capsys):
    from flows.comply import comply_flow

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="BAD-V", delete_records=["P1003"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    ledger_before = (workspace / "ledger.db").read_bytes()
    capsys.readouterr()
    assert main(["comply", "--verify", "proof"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown verification mode 'proof': choose one of certificate, evidence, reference (--verify)"
    # the flow parameter too (a deployment run): refused before any request is claimed
    with pytest.raises(Exception, match="unknown verification mode 'proof'"):
        comply_flow(root=str(workspace), verify="proof")
    assert (workspace / "ledger.db").read_bytes() == ledger_before
    assert ledger.show(workspace, "BAD-V").status == "received"


def test_a_second_comply_run_stops_with_a_clear_message_while_one_holds_the_lock(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="GDPR-L", delete_records=["P1005"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    with project_lock(workspace, "comply"):
        assert main(["comply"]) == 1
        err = capsys.readouterr().err
        assert "another `unlearn comply` run is in progress" in err
    assert ledger.show(workspace, "GDPR-L").status == "received"  # untouched, still pending
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and [r["status"] for r in out["requests"]] == ["completed"]


def test_a_failing_request_is_recorded_as_failed_with_its_reason(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    data_before = dvc.data_version(workspace)
    path = request_file(workspace, id="GDPR-F", delete_records=["P1010"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    # submit refuses what cannot be processed now; this request becomes so after it was recorded
    assert run_json(capsys, ["train", "people", "--model", "people-b"])[0] == 0
    code, out = run_json(capsys, ["comply"])
    assert code == 1
    (result,) = out["requests"]
    assert result["status"] == "failed" and "people-b" in result["reason"]
    record = ledger.show(workspace, "GDPR-F")
    assert record.status == "failed" and "people-b" in record.failure["reason"]
    assert dvc.data_version(workspace) == data_before  # nothing written


def submit(capsys, workspace, **content) -> None:
    code, out = run_json(capsys, ["requests", "submit", str(request_file(workspace, **content))])
    assert code == 0, out


def comply_console(capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["comply"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_delete_and_a_relabel_of_one_record_are_processed_in_turn_without_tracebacks(workspace, people_csv,
                                                                                        capsys):
    add_and_train(people_csv, capsys)
    submit(capsys, workspace, id="DEL-1", delete_records=["P1005"])
    submit(capsys, workspace, id="FIX-1", fix_labels={"P1005": "yes"})
    code, console = comply_console(capsys)
    # the deletion completes; the relabel then meets data without the record: moot, completed
    # without a run, its certificate saying why
    assert code == 0, console
    assert "Traceback" not in console and "ERROR" not in console
    assert ledger.show(workspace, "DEL-1").status == "completed"
    fix = ledger.show(workspace, "FIX-1")
    assert fix.status == "completed", console
    line = next(x for x in console.splitlines() if x.strip().startswith("FIX-1:"))
    assert "P1005: record erased by request DEL-1" in line
    cert_path = workspace / ".unlearn" / "certificates" / "FIX-1.json"
    cert = json.loads(cert_path.read_text())
    assert cert["unchanged"] == [{"record": "P1005", "reason": "record erased by request DEL-1: nothing left to relabel"}]
    assert main(["certificate", "verify", str(cert_path)]) == 0
    # nothing left pending: a second run has nothing to do
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and out["requests"] == []
    assert main(["ledger", "verify"]) == 0


def test_a_record_two_requests_name_is_erased_once_and_the_later_request_still_completes(workspace, people_csv,
                                                                                         capsys):
    """DEL-A erases P1003 and P1004; DEL-B (batched after it: it relabels P1004) also deletes P1003
    and P1006. P1003 and P1004 are gone when DEL-B's turn comes: those parts are moot, the rest is
    done, and DEL-B is not failed (it would fail on every later run)."""
    add_and_train(people_csv, capsys)
    submit(capsys, workspace, id="DEL-A", delete_records=["P1003", "P1004"])
    submit(capsys, workspace, id="DEL-B", delete_records=["P1003", "P1006"], fix_labels={"P1004": "yes"})
    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    assert {r["id"]: r["status"] for r in out["requests"]} == {"DEL-A": "completed", "DEL-B": "completed"}
    cert = json.loads((workspace / ".unlearn" / "certificates" / "DEL-B.json").read_text())
    assert sorted(cert["unchanged"], key=lambda e: e["record"]) == [
        {"record": "P1003", "reason": "record erased by request DEL-A: nothing left to erase"},
        {"record": "P1004", "reason": "record erased by request DEL-A: nothing left to relabel"}]
    records = pd.read_csv(workspace / "data" / "people" / "records.csv", dtype=str)["person"]
    assert not {"P1003", "P1004", "P1006"} & set(records)
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and out["requests"] == []


def test_an_invalid_request_fails_alone_and_the_valid_ones_of_its_batch_complete(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    frame = pd.read_csv(people_csv, dtype=str).set_index("person")
    same = frame.loc["P1040", "label"]
    submit(capsys, workspace, id="OK-1", delete_records=["P1003"])
    submit(capsys, workspace, id="BAD-1", delete_records=["P1007"])
    submit(capsys, workspace, id="OK-2", delete_records=["P1010"], fix_labels={"P1040": same})
    # P1007 is erased outside the ledger after BAD-1 was accepted: BAD-1 can no longer be applied
    direct = request_file(workspace, id="DIRECT-1", delete_records=["P1007"])
    assert main(["forget", str(direct)]) == 0

    code, console = comply_console(capsys)
    assert code == 1, console  # a request failed: documented exit 1, the others completed
    assert "Traceback" not in console
    assert ledger.show(workspace, "BAD-1").status == "failed"
    reason = ledger.show(workspace, "BAD-1").failure["reason"]
    assert "P1007" in reason and "not in dataset" in reason
    (bad_line,) = [x for x in console.splitlines() if "BAD-1" in x]
    assert "failed" in bad_line and "P1007" in bad_line
    ok1, ok2 = ledger.show(workspace, "OK-1"), ledger.show(workspace, "OK-2")
    assert ok1.status == ok2.status == "completed"
    assert ok1.response["model"] == ok2.response["model"]  # still one batched update
    cert = json.loads((workspace / ".unlearn" / "certificates" / "OK-2.json").read_text())
    assert cert["verified"] and cert["unchanged"] == [
        {"record": "P1040", "reason": "label already as requested: nothing to change"}]
    table = pd.read_csv(workspace / "data" / "people" / "records.csv", dtype=str).set_index("person")
    assert not {"P1003", "P1010"} & set(table.index) and table.loc["P1040", "label"] == same


def test_the_requests_of_a_failed_batch_are_checked_alone_without_writing_anything(workspace, people_csv, capsys):
    """Each request is planned from memory (a private copy of it was written before): a request
    folder that cannot be written does not turn a valid request into a refused one."""
    add_and_train(people_csv, capsys)
    (workspace / ".unlearn").mkdir(exist_ok=True)
    (workspace / ".unlearn" / "requests").write_text("")  # not a folder: nothing can be written there
    valid = UnlearningRequest(id="OK-1", model="people", delete_records=["P1003"])
    unknown = UnlearningRequest(id="BAD-1", model="people", delete_records=["P1004", "NOPE-7"])
    refused = batches.refused_alone(workspace, [valid, unknown])
    assert list(refused) == ["BAD-1"] and "NOPE-7" in refused["BAD-1"], refused


def test_a_relabel_to_the_current_label_alone_completes_as_a_no_op(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    data_before = dvc.data_version(workspace)
    same = pd.read_csv(people_csv, dtype=str).set_index("person").loc["P1040", "label"]
    submit(capsys, workspace, id="NOOP-1", fix_labels={"P1040": same})
    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    (result,) = out["requests"]
    assert result["status"] == "completed" and result["model"] == {"name": "people", "version": "1"}
    assert result["unchanged"] == {"P1040": "label already as requested: nothing to change"}
    assert dvc.data_version(workspace) == data_before
    assert main(["certificate", "verify", str(workspace / result["certificate"])]) == 0


def test_a_batch_failing_verification_is_retried_one_request_at_a_time(workspace, people_csv, capsys, monkeypatch):
    add_and_train(people_csv, capsys)
    # a named method: `auto` would fall back to retraining instead of failing the merged batch
    submit(capsys, workspace, id="ONE-1", delete_records=["P1003"], method="second_order")
    submit(capsys, workspace, id="ONE-2", delete_records=["P1004"], method="second_order")
    real = tabular.verify_without_reference

    def strict_on_batches(lineage, after, problem, *args, **kwargs):
        metrics, checks = real(lineage, after, problem, *args, **kwargs)
        if len(problem.z_index) > 1:  # injected: the merged update fails verification
            checks = [{**c, "passed": False} for c in checks]
        return metrics, checks

    monkeypatch.setattr(tabular, "verify_without_reference", strict_on_batches)
    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    done = {r["id"]: r for r in out["requests"]}
    assert {r["status"] for r in done.values()} == {"completed"}
    # one at a time, in the order received, after the merged candidate (v2) was rolled back
    assert [done["ONE-1"]["model"]["version"], done["ONE-2"]["model"]["version"]] == ["3", "4"]
    for request_id in done:
        assert [e.event for e in ledger.show(workspace, request_id).entries] == ["received", "processing", "completed"]
