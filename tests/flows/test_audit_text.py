"""The audit of a language model (real Prefect, MLflow, DVC): the removed secrets, purged from the
data at request time, are measured from the sealed escrow in the production model and in the model
retrained on the current corpus; the escrow is deleted when the audit completes; no raw secret is
written anywhere or printed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from flows.cli import main
from flows.detect import detect_flow
import mlflow

from tasks import audit, state
from unlearning.compliance import escrow as sealing
from unlearning.compliance import signing
from tests.flows.conftest import pin_project_salt
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import files_containing
from tests.flows.test_user_text import NOTES_STEPS, notes_corpus, request_from


def notes_trained_and_scanned(workspace, tmp_path_factory, capsys):
    """The user-text notes added, a tiny model trained on them and the corpus scanned: (the raw
    values it holds, in every written form; the secrets by detector; fingerprint by detector; the
    request detect wrote)."""
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    text, secrets = notes_corpus()
    source.write_text(text, encoding="utf-8")
    raw = set(secrets.values()) | {secrets["card"].replace(" ", "")}
    pin_project_salt(workspace)
    assert run_json(capsys, ["data", "add", "notes", "--file", str(source)])[0] == 0
    assert run_json(capsys, ["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS])[0] == 0
    detected = detect_flow(root=str(workspace), dataset="notes")
    fingerprints = {r["detector"]: r["fingerprint"] for r in detected["secrets"]}
    return raw, secrets, fingerprints, yaml.safe_load(Path(detected["request"]).read_text())


def sealed_teacher(workspace: Path, model: str = "notes") -> dict:
    """The chain's sealed teacher, opened: {"anchor": the exact model's id, "state": its weights}."""
    path = state.teacher_file(workspace, model)
    return sealing.open_sealed(path.read_bytes(), signing.signing_key(workspace), state.sealed_name(path))


def test_a_text_audit_measures_the_removed_secret_from_its_escrow(workspace, tmp_path_factory, capsys, monkeypatch):
    raw, secrets, fingerprints, detected_request = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    trained_run = mlflow.MlflowClient().get_model_version_by_alias("notes", "production").run_id
    request = request_from(workspace, detected_request, "TXT-1", fingerprints["card"])
    request.write_text(request.read_text().replace("method: retrain", "method: suppress"))  # a fast update
    code, forgot = run_json(capsys, ["forget", str(request)])
    assert code == 0 and forgot["verified"] and forgot["guarantee"] == "empirical", forgot

    [sealed] = audit.escrow_files(workspace, "notes")  # kept for the audit, sealed: no raw value on disk
    # the certificate names the copy of the removed secret kept for the audit
    assert {"artifact": f"audit escrow {audit.escrow_name(sealed)}", "kind": "audit_escrow"}.items() <= \
        next(e for e in forgot["superseded"] if e["kind"] == "audit_escrow").items()
    assert files_containing(workspace, {secrets["card"], secrets["card"].replace(" ", "")}) == []

    from tasks.kinds import text_chain

    reads = []  # production's chain, read once per audit (it was read by the exposure rows and again by judge)
    monkeypatch.setattr(text_chain, "chain_runs", lambda *a, chain_runs=text_chain.chain_runs: reads.append(a)
                        or chain_runs(*a))
    production = mlflow.MlflowClient().get_model_version_by_alias("notes", "production")
    anchor = state.load_evidence(workspace, production.run_id)["anchor_perplexity"]
    assert sealed_teacher(workspace)["anchor"] == trained_run  # the trained model, which saw the card
    digest = hashlib.sha256(state.teacher_file(workspace, "notes").read_bytes()).hexdigest()
    code, out = run_json(capsys, ["audit", "notes"])
    assert code == 0, out
    assert len(reads) == 1, reads
    assert out["passed"] and out["covered_requests"] == ["TXT-1"]
    assert {c["name"] for c in out["checks"]} == {"exposure_vs_retrain_bits", "perplexity_vs_retrain",
                                                   "secrets_regenerated"}
    assert out["metrics"]["secrets"] == 1 and out["metrics"]["exposure_retrain"] is not None
    assert out["metrics"]["secrets_removed_exactly"] == 0  # production saw the card: its exposure is judged
    assert out["metrics"]["perplexity_after"] > 1 and out["metrics"]["perplexity_retrain"] > 1
    body = json.loads((workspace / out["record"]).read_text())
    assert body["unrecorded_requests"] == ["TXT-1"] and body["escrow"]["files"] == [audit.escrow_name(sealed)]
    assert [s["fingerprint"] for s in body["metrics"]["secrets_measured"]] == [fingerprints["card"]]
    assert not sealed.exists()  # deleted once the audit covering the request completed
    # the chain's teacher, the trained model, which saw the card, is deleted with the escrow; production,
    # passed and left in place, teaches the updates after it; the drift is still held to the trained model
    assert not state.teacher_file(workspace, "notes").exists()
    kept = state.load_evidence(workspace, production.run_id)
    assert kept[state.TEACHER_RUN_KEY] == production.run_id and kept["anchor_perplexity"] == anchor
    assert out["teacher"] == body["teacher"] == {"deleted": True, "file_sha256": digest,  # signed
                                                 "production_teaches": True}
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0
    assert files_containing(workspace, {secrets["card"], secrets["card"].replace(" ", "")}) == []
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in raw)


def test_a_secret_a_retraining_removed_is_not_judged_on_exposure_by_the_audit(workspace, tmp_path_factory, capsys):
    """Production never saw a secret its own retraining left out: the audit records it (masked, `exact`)
    and judges regeneration and perplexity, not its exposure against another retraining (noise); the
    secret of the fast update since is judged on exposure as usual."""
    _, _, fingerprints, detected_request = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    code, forgot = run_json(capsys, ["forget", str(request_from(workspace, detected_request, "TXT-R",
                                                                 fingerprints["card"]))])
    assert code == 0 and forgot["guarantee"] == "exact", forgot
    # a fast update since, so that production is not the retraining itself (an audit of that retrains nothing)
    request = request_from(workspace, detected_request, "TXT-S", fingerprints["secret"])
    request.write_text(request.read_text().replace("method: retrain", "method: suppress"))
    code, forgot = run_json(capsys, ["forget", str(request)])
    assert code == 0 and forgot["guarantee"] == "empirical", forgot

    assert state.teacher_file(workspace, "notes").exists()  # the retrained v2, the chain's teacher
    digest = hashlib.sha256(state.teacher_file(workspace, "notes").read_bytes()).hexdigest()
    code, out = run_json(capsys, ["audit", "notes", "--rebase"])
    assert code == 0 and out["passed"] and sorted(out["covered_requests"]) == ["TXT-R", "TXT-S"], out
    # rebased: production is the retrained model now, its own teacher; the sealed one (v2) is deleted
    assert out["rebased"] and not state.teacher_file(workspace, "notes").exists()
    assert out["teacher"] == {"deleted": True, "file_sha256": digest, "production_teaches": False}
    assert {c["name"] for c in out["checks"]} == {"exposure_vs_retrain_bits", "perplexity_vs_retrain",
                                                   "secrets_regenerated"}
    assert out["metrics"]["secrets"] == 2 and out["metrics"]["secrets_removed_exactly"] == 1
    body = json.loads((workspace / out["record"]).read_text())
    rows = {row["fingerprint"]: row for row in body["metrics"]["secrets_measured"]}
    row = rows[fingerprints["card"]]
    assert row["fingerprint"] == fingerprints["card"] and row["exact"] is True
    assert rows[fingerprints["secret"]]["exact"] is False
