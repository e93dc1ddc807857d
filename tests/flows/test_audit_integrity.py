"""What the audit meets that it did not leave itself. The next run's recovery
(tasks.audit_record.recover_audits) and `certificate verify` against leftovers that are not what an
interrupted audit wrote: a marker cut short by a full disk, a record altered while its audit was
open, the record of an audit not finished yet. The audit against a production model put back by
hand. The kills at each step are tests/flows/test_audit.py's."""

from __future__ import annotations

import json

from flows.cli import main
from tasks import audit, audit_record, ledger, tracking
from tests.flows.test_audit import comply_requests, versions
from tests.flows.test_faults import run_killed
from tests.flows.test_pipeline import add_and_train, request_file, run_json

KILLED_BEFORE_VERDICTS = """
import os, sys
import tasks.audit_record
def killed(*args, **kwargs):
    os._exit(137)
tasks.audit_record.record_verdicts = killed  # killed after the signed record, before any ledger entry
from flows.cli import main
sys.exit(main(["audit", "people"]))
"""


def test_a_marker_cut_short_by_a_full_disk_does_not_stop_every_later_audit(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "CUT-1", "delete_records": ["P1003"]})
    # what the old open_marker left when the disk was full: the file created, its content never written
    # (tests/unit/test_audit_record.py: it now leaves nothing); it used to crash every audit's recovery
    folder = workspace / audit_record.AUDIT_DIR
    folder.mkdir(parents=True)
    cut = folder / "AUDIT-people-20261206T080000000000.open"
    cut.write_text("")

    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0, out
    assert out["recovered"] == [{"id": cut.stem, "model": "people", "outcome": "rolled back"}]
    assert out["passed"] and out["covered_requests"] == ["CUT-1"] and not cut.exists()
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0


def test_an_altered_record_of_an_interrupted_audit_is_not_finished_by_the_recovery(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "ALT-1", "delete_records": ["P1003"]})
    comply_requests(workspace, capsys, {"id": "ALT-2", "delete_records": ["P1004"]})
    run_killed(workspace, KILLED_BEFORE_VERDICTS)
    [record] = list((workspace / audit_record.AUDIT_DIR).glob("*.json"))
    body = json.loads(record.read_text())
    assert body["audit"]["passed"] and sorted(r["id"] for r in body["requests"]) == ["ALT-1", "ALT-2"]
    # altered while the audit was open: the verdict flipped and one covered request dropped, so that the
    # recovery would MAC a verdict the signed audit never gave and leave ALT-2 to a later audit's verdict
    body["audit"]["passed"] = False
    body["requests"] = [r for r in body["requests"] if r["id"] == "ALT-1"]
    record.write_text(json.dumps(body))
    ledger_before = (workspace / "ledger.db").read_bytes()
    escrows = audit.escrow_files(workspace, "people")

    capsys.readouterr()
    assert main(["audit", "people"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and record.name in err and "does not verify" in err, err
    assert (workspace / "ledger.db").read_bytes() == ledger_before  # no verdict MACed from the altered record
    assert ledger.show(workspace, "ALT-1").audits == [] and ledger.show(workspace, "ALT-2").audits == []
    assert audit.escrow_files(workspace, "people") == escrows and record.exists()  # nothing deleted
    assert list((workspace / audit_record.AUDIT_DIR).glob("*.open"))
    assert tracking.production_alias("people") == "3"


KILLED_BEFORE_PROMOTION = """
import os, sys
import tasks.common
def killed(*args, **kwargs):
    os._exit(137)
tasks.common.promote = killed  # killed after the retrained model was registered and the record written
from flows.cli import main
sys.exit(main(["audit", "people", "--rebase"]))
"""


def test_the_record_of_an_audit_not_finished_does_not_verify(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    # a request outside the ledger (`unlearn forget`): no ledger verdict can say the audit did not finish
    path = request_file(workspace, id="OUT-1", delete_records=["P1003"])
    assert main(["forget", str(path)]) == 0
    run_killed(workspace, KILLED_BEFORE_PROMOTION)
    [record] = list((workspace / audit_record.AUDIT_DIR).glob("*.json"))
    body = json.loads(record.read_text())
    assert body["promoted"]["version"] == "3" and body["requests"] == [] and body["unrecorded_requests"]
    assert tracking.production_alias("people") == "2"  # the promotion it names never happened

    capsys.readouterr()
    assert main(["certificate", "verify", str(record)]) == 1  # was 0: "no ledger request to check it against"
    out = capsys.readouterr().out
    assert "INVALID" in out and "interrupted" in out, out

    code, out = run_json(capsys, ["audit", "people"])  # the recovery withdraws it and audits the request again
    assert code == 0 and {"id": record.stem, "model": "people", "outcome": "rolled back"} in out["recovered"]
    assert not record.exists() and main(["certificate", "verify", str(workspace / out["record"])]) == 0


def test_a_production_model_an_erasure_superseded_and_promoted_again_fails_the_audit(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="BACK-1", delete_records=["P1003", "P1004"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    assert run_json(capsys, ["comply", "--keep-superseded", "30"])[0] == 0
    # production put back by hand (a rollback) to the model
    # from before the request, kept beyond use: it was trained on BACK-1's two records
    tracking.promote("people", "1")
    assert versions("people")["1"]["superseded_by"] == "2"

    code, out = run_json(capsys, ["audit", "people"])
    assert code == 1, out  # the old code: passed, agreement 100 % (two records move no prediction)
    checks = {c["name"]: c for c in out["checks"]}
    assert not checks["production_not_superseded"]["passed"] and not out["passed"]
    assert out["promoted"] == "3" and tracking.production_alias("people") == "3"  # the data is out for sure
    assert versions("people")["3"]["guarantee"] == "exact"
    [entry] = ledger.show(workspace, "BACK-1").audits
    assert entry["event"] == "audit_failed" and "an erasure had superseded" in entry["reason"]
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0


def test_a_ledger_database_cut_short_stops_the_audit_in_one_line(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "CUTL-1", "delete_records": ["P1003"]})
    database = workspace / "ledger.db"
    with database.open("r+b") as f:  # a copy cut short (a full disk, a bad backup): half a SQLite file
        f.truncate(database.stat().st_size // 2)
    escrows = audit.escrow_files(workspace, "people")

    capsys.readouterr()
    assert main(["audit", "people"]) == 2  # the old code: a SQLAlchemy traceback (the CLI exited 1)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the ledger's database cannot be read" in err, err
    assert audit.escrow_files(workspace, "people") == escrows
    assert not (workspace / audit_record.AUDIT_DIR).exists()
    code, out = run_json(capsys, ["ledger", "verify"])  # LEDGER BROKEN, exit 1, as for any broken ledger
    assert code == 1 and not out["ok"] and "cannot be read" in out["message"], out
