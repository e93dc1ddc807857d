"""The audit of an image model (real Prefect, MLflow, DVC): the forgotten images, gone from the data
at request time, come from the request's sealed escrow; the production CNN is judged against one
retrained on the current data by the gaps of unlearning.images.verify."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.cli import main
from tasks import audit, tracking
from tests.flows.test_pipeline import run_json
from tests.image_folders import write_image_folder


def test_an_image_audit_judges_the_forgotten_class_from_its_escrow(workspace, capsys):
    write_image_folder(workspace / "incoming" / "shapes")
    assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", "16"]) == 0
    assert main(["train", "shapes", "--epochs", "15"]) == 0
    path = workspace / "IMG-A1.yaml"
    path.write_text(yaml.safe_dump({"id": "IMG-A1", "model": "shapes", "forget_class": "vstripes"}))
    code, forgot = run_json(capsys, ["forget", str(path)])
    assert code == 0 and forgot["promoted"], forgot
    [sealed] = audit.escrow_files(workspace, "shapes")

    code, out = run_json(capsys, ["audit", "shapes"])
    assert code == (0 if out["passed"] else 1), out
    assert {c["name"] for c in out["checks"]} == {"ua_gap_to_retrain", "ta_drop_vs_retrain", "ra_drop_vs_retrain"}
    assert out["covered_requests"] == ["IMG-A1"] and out["metrics"]["forget_images"] > 0
    assert out["metrics"]["ua_retrain"] == 100.0  # the retrained CNN never saw the class: it gets none right
    assert out["promoted"] is None if out["passed"] else tracking.production_alias("shapes") == out["promoted"]
    assert not sealed.exists()
    body = json.loads((workspace / out["record"]).read_text())
    assert body["audit"]["kind"] == "images" and body["escrow"]["files"] == [audit.escrow_name(sealed)]
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0


def test_a_ledger_request_whose_escrow_was_deleted_does_not_pass_its_audit(workspace, capsys):
    """Deleting `.unlearn/escrow/<model>/<run>.bin` (a tampered store, or a cleanup script) must
    not turn the audit of the request it belonged to into a pass that never judged its images."""
    write_image_folder(workspace / "incoming" / "shapes")
    assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", "16"]) == 0
    assert main(["train", "shapes", "--epochs", "15"]) == 0
    path = workspace / "IMG-E1.yaml"
    path.write_text(yaml.safe_dump({"id": "IMG-E1", "model": "shapes", "forget_class": "vstripes"}))
    assert main(["requests", "submit", str(path)]) == 0
    code, complied = run_json(capsys, ["comply"])
    assert code == 0 and complied["requests"][0]["status"] == "completed", complied
    [sealed] = audit.escrow_files(workspace, "shapes")
    sealed.unlink()

    code, out = run_json(capsys, ["audit", "shapes"])
    assert out["covered_requests"] == ["IMG-E1"]
    assert code == 1 and not out["passed"], out  # its forgotten images were never judged
    assert {"name": "escrow_present", "value": 1, "threshold": "== 0", "passed": False} in out["checks"]
    body = json.loads((workspace / out["record"]).read_text())
    assert {"check": "escrow_present", "requests": ["IMG-E1"]} in body["shortfall"]
    assert out["promoted"] == tracking.production_alias("shapes")  # as any failed audit: the retrained model
