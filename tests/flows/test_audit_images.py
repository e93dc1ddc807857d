"""The audit of an image model (real Prefect, MLflow, DVC): the forgotten images, gone from the data
at request time, come from the request's sealed escrow; the production CNN is judged against one
retrained on the current data by the gaps of unlearning.images.verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from flows.cli import main
from tasks import audit, ledger, tracking
from tests.flows.test_pipeline import run_json
from tests.image_folders import write_image_folder
from unlearning.images.data import load_images


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


def shapes_trained_with_a_class_request(workspace, request_id: str) -> None:
    """The shapes images added, a CNN trained on them, and a request to forget one class submitted."""
    write_image_folder(workspace / "incoming" / "shapes")
    assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", "16"]) == 0
    assert main(["train", "shapes", "--epochs", "15"]) == 0
    path = workspace / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump({"id": request_id, "model": "shapes", "forget_class": "vstripes"}))
    assert main(["requests", "submit", str(path)]) == 0


def test_a_ledger_request_whose_escrow_was_deleted_does_not_pass_its_audit(workspace, capsys):
    """Deleting `.unlearn/escrow/<model>/<run>.bin` (a tampered store, or a cleanup script) must
    not turn the audit of the request it belonged to into a pass that never judged its images."""
    shapes_trained_with_a_class_request(workspace, "IMG-E1")
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


def test_an_altered_escrow_fails_its_requests_audit_and_no_longer_blocks_the_models_audits(workspace, capsys):
    """One changed byte of a sealed escrow made every later `unlearn audit` of the model stop (exit 2,
    "does not open with this project's key"). It is now judged as a missing escrow is: its requests
    fail the audit (the retrained model is promoted), the record names the file, the audit deletes it."""
    shapes_trained_with_a_class_request(workspace, "IMG-T1")
    assert run_json(capsys, ["comply"])[0] == 0
    outside = workspace / "IMG-T2.yaml"  # outside the ledger: its request id is sealed in its escrow only
    dataset = load_images(workspace / "data" / "shapes")
    gone = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train & (dataset.labels == 0))[:2]]
    outside.write_text(yaml.safe_dump({"id": "IMG-T2", "model": "shapes", "delete_records": gone}))
    code, forgot = run_json(capsys, ["forget", str(outside)])
    assert code == 0 and forgot["promoted"], forgot
    sealed = audit.escrow_files(workspace, "shapes")
    assert len(sealed) == 2
    for file in sealed:
        altered = bytearray(file.read_bytes())
        altered[-1] ^= 1
        file.write_bytes(bytes(altered))
    run = forgot["run_id"]

    capsys.readouterr()
    code = main(["audit", "shapes", "--json"])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # was 2: "audit escrow … does not open with this project's key"
    out = json.loads(captured.out)
    assert not out["passed"], out
    assert out["promoted"] == tracking.production_alias("shapes")  # the data is out for sure
    [intact] = [c for c in out["checks"] if c["name"] == "escrow_intact"]
    assert intact["value"] == 2 and not intact["passed"]
    assert {"check": "escrow_intact", "requests": ["IMG-T1"], "runs": [run]} in out["shortfall"]
    warned = [line for line in captured.err.splitlines() if "does not open" in line]
    assert sorted(warned) == sorted(f"warning: audit escrow .unlearn/escrow/{audit.escrow_name(f)} does not open with "
                                    "this project's key (altered, renamed or sealed under another signing key): its "
                                    "request fails this audit (its removed data cannot be judged); it is deleted when "
                                    "the audit completes" for f in sealed)
    body = json.loads((workspace / out["record"]).read_text())
    assert sorted(body["escrow"]["unreadable"]) == sorted(audit.escrow_name(f) for f in sealed)
    assert not audit.escrow_files(workspace, "shapes")  # deleted as a judged escrow is
    assert sorted(out["escrow_deleted"]) == sorted(audit.escrow_name(f) for f in sealed)
    [entry] = ledger.show(workspace, "IMG-T1").audits
    assert entry["audit"] == out["audit"] and entry["reason"] == "its audit escrow did not open"
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0
    capsys.readouterr()
    assert main(["audit", "shapes"]) == 0  # nothing left to audit, nothing blocked
    assert "no request since its last audit" in capsys.readouterr().out


def test_an_audit_that_no_forget_set_check_could_decide_says_so_and_promotes_its_retrained_model(workspace, capsys):
    """One deleted image: the UA gap's band covers every UA one image allows, so the audit's only
    forget-set check is undecided. It recorded `passed` and kept production, as if the image were
    judged forgotten; now it says `decided: false` and promotes the reference it already trained."""
    from unlearning.checks import too_few_images

    write_image_folder(workspace / "incoming" / "shapes")
    assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", "16"]) == 0
    assert main(["train", "shapes", "--epochs", "15"]) == 0
    dataset = load_images(workspace / "data" / "shapes")
    [gone] = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train)[:1]]
    path = workspace / "IMG-U1.yaml"
    path.write_text(yaml.safe_dump({"id": "IMG-U1", "model": "shapes", "delete_records": [gone]}))
    assert main(["requests", "submit", str(path)]) == 0
    code, complied = run_json(capsys, ["comply"])
    assert code == 0 and complied["requests"][0]["status"] == "completed", complied
    before = tracking.production_alias("shapes")

    code, out = run_json(capsys, ["audit", "shapes"])
    assert code == 0 and out["passed"], out  # an undecided check fails nothing
    assert out["decided"] is False and out["undecided_reason"] == too_few_images(1)
    assert out["promoted"] == tracking.production_alias("shapes") != before  # the data is out for sure
    assert not out["rebased"] and "undecided" in out["why_promoted"] and too_few_images(1) in out["why_promoted"]
    assert out["message"] == f"model shapes: audit undecided, retrained v{out['promoted']} promoted"
    body = json.loads((workspace / out["record"]).read_text())
    assert body["audit"]["decided"] is False and body["audit"]["undecided_reason"] == too_few_images(1)
    assert body["promoted"]["why"] == out["why_promoted"] and not body["audit"]["rebased"]
    [entry] = ledger.show(workspace, "IMG-U1").audits
    assert entry["audit"] == out["audit"] and entry["event"] == "audited", entry
    assert too_few_images(1) in entry["reason"] and f"v{out['promoted']} was promoted" in entry["reason"]
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0
