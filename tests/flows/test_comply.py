"""The `comply` flow on the ledger (real Prefect, MLflow, DVC, SQLite ledger): pending requests →
one batched update per model → a signed certificate per request → the ledger updated; one run at
a time; a processed request is not processed again."""

from __future__ import annotations

import json

from flows.cli import main
from flows.comply import comply_lock
from tasks import dvc, ledger
from tests.flows.test_pipeline import add_and_train, request_file, run_json


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
        report = cert_path.with_suffix(".html").read_text()
        assert 'alt="verify/coefficients.png"' in report and "data:image/png;base64," in report  # the plots
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


def test_a_second_comply_run_stops_with_a_clear_message_while_one_holds_the_lock(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="GDPR-L", delete_records=["P1005"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    with comply_lock(workspace):
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
