"""What an interrupted audit leaves, met by the next run's recovery (tasks.audit_record.recover_audits)
when the leftovers are not what the audit wrote: a marker cut short by a full disk, a record altered
while its audit was open. The kills at each step are tests/flows/test_audit.py's."""

from __future__ import annotations

from flows.cli import main
from tasks import audit_record
from tests.flows.test_audit import comply_requests
from tests.flows.test_pipeline import add_and_train, run_json


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
