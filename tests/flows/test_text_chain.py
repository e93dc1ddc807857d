"""Two fast text updates in a row (real Prefect, MLflow, DVC; a tiny char-LSTM): the second keeps
the first request's secret down and measures it again from the sealed escrow (stacked fast updates
otherwise bring earlier secrets back, bench.stream), names both in its evidence record by masked
form and fingerprint only, and writes no raw secret anywhere or prints one."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import yaml

import torch

from tasks import audit, state, tracking
from tasks.kinds import text_teacher
from tests.flows.test_no_leak import needles
from tests.flows.test_audit_text import notes_trained_and_scanned, sealed_teacher
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import prefect_database_bytes, system_tmp  # noqa: F401 — a fixture


def fast_request(workspace: Path, detected: dict, request_id: str, fingerprint: str) -> Path:
    path = workspace / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump({**detected, "id": request_id, "method": "suppress",
                                    "redact": {**detected["redact"], "findings": [fingerprint]}}))
    return path


def latest_verification_record() -> dict:
    run = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="tags.step = 'verify'",
                             order_by=["attribute.start_time DESC"])[0]
    return json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                               artifact_path="verification.json")).read_text())


def production_version():
    return mlflow.MlflowClient().get_model_version_by_alias("notes", "production")


def test_a_second_fast_update_keeps_the_first_secret_down_and_measures_it_leaking_nothing(
        workspace, system_tmp, tmp_path_factory, capsys, monkeypatch):
    raw, secrets, prints, request = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    trained = production_version()
    trained_weights = tracking.load_version_bundle("notes", trained.version).model.state_dict()
    # each request reads the teacher of the version it starts from once (its update; the evidence
    # state and keep_teacher take it from the Update): it was read three times per request
    teacher_reads = []
    read_teacher = text_teacher.teacher_run
    monkeypatch.setattr(text_teacher, "teacher_run",
                        lambda root, run_id, guarantee: teacher_reads.append(run_id) or read_teacher(root, run_id,
                                                                                                     guarantee))

    # the card by `forget`, the password through the ledger and `comply`: both fast (suppress)
    code, first = run_json(capsys, ["forget", str(fast_request(workspace, request, "TXT-1", prints["card"]))])
    assert code == 0 and first["verified"] and first["guarantee"] == "empirical", first
    assert teacher_reads == [trained.run_id]
    fast = production_version()
    assert first["metrics"].get("earlier_secrets", 0) == 0  # a trained model: no chain yet
    # the trained model, superseded and purged, is kept sealed as the chain's teacher: the model the
    # next suppress update is anchored to (its parent would carry this update's drift on)
    assert state.load_evidence(workspace, production_version().run_id)[state.TEACHER_RUN_KEY] == trained.run_id
    teacher = sealed_teacher(workspace)
    assert teacher["anchor"] == trained.run_id and teacher["state"].keys() == trained_weights.keys()
    assert all(torch.equal(teacher["state"][k], trained_weights[k].cpu()) for k in trained_weights)
    assert not state.pending_escrow(state.teacher_file(workspace, "notes")).exists()
    [kept] = [e for e in first["superseded"] if e["kind"] == "chain_teacher"]  # the certificate says so
    assert kept["artifact"].startswith(f"model notes v{trained.version} as the chain's teacher notes/teacher.sealed")
    assert run_json(capsys, ["requests", "submit", str(fast_request(workspace, request, "TXT-2",
                                                                     prints["secret"]))])[0] == 0
    code, complied = run_json(capsys, ["comply"])
    [done] = complied["requests"]
    assert code == 0 and done["status"] == "completed", complied
    certificate = json.loads((workspace / done["certificate"]).read_text())
    assert certificate["guarantee"] == "empirical"
    assert teacher_reads == [trained.run_id, fast.run_id]
    assert not [e for e in certificate["superseded"] if e["kind"] == "chain_teacher"]  # the chain keeps its teacher

    rows = {r["fingerprint"]: r for r in certificate["fidelity"]["secrets"]}
    assert set(rows) == {prints["card"], prints["secret"]}  # the earlier secret is measured again
    card = rows[prints["card"]]
    assert card["earlier_requests"] == ["TXT-1"] and card["before"] is None
    assert card["masked"].endswith(secrets["card"][-4:]) and card["masked"] != secrets["card"]
    assert "earlier_requests" not in rows[prints["secret"]]
    # kept down: the thresholds every row is judged by hold for the first secret after the second update
    assert card["excess_bits"] <= 2.0 and card["relearned_excess_bits"] <= 2.0 and card["regenerated"] == 0
    assert certificate["fidelity"]["earlier_secrets"] == 1
    logged = latest_verification_record()  # the evidence record in MLflow names both, masked
    assert {r["fingerprint"]: r["masked"] for r in logged["secrets"]} == {f: r["masked"] for f, r in rows.items()}
    [update_run] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string="params.earlier_secrets = '1'")
    assert update_run.data.params["method"] == "suppress"  # its hinge took the earlier secret too
    assert update_run.data.params["teacher"] == trained.run_id  # anchored to the sealed trained model
    assert sealed_teacher(workspace)["anchor"] == trained.run_id  # the chain's teacher is still that one

    # the new version keeps its chain (run ids, no value): both forget runs, each escrow still held
    production = production_version()
    assert state.load_evidence(workspace, production.run_id)[state.TEACHER_RUN_KEY] == trained.run_id
    chain = state.load_evidence(workspace, production.run_id)[state.CHAIN_KEY]
    assert len(chain) == 2 and chain[0] == first["run_id"]
    assert [p.stem for p in audit.escrow_files(workspace, "notes")] == sorted(chain)

    # opening the escrow in the request path left no raw value, in any encoding, in the workspace
    # (MLflow store and artifacts, the ledger, .unlearn/, data/, DVC), the temp folder, the Prefect
    # database or the console
    for value in raw:
        forms = needles(value)
        for folder in (workspace, system_tmp):
            assert [str(p) for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes()
                                                                            for n in forms.values())] == []
        assert not any(n in prefect_database_bytes() for n in forms.values())
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in raw)


def test_a_forget_killed_before_its_promotion_leaves_no_sealed_teacher_and_its_rerun_seals_one(
        workspace, system_tmp, tmp_path_factory, capsys):
    """The first fast update seals the trained model as the chain's teacher before the release, pending:
    killed at the promotion, the next command rolls the run back and deletes it (a copy of a model
    that memorised the data, for a chain that never started); the rerun, promoted, names its own."""
    from tests.flows.test_faults import KILLED_FORGET, run_killed

    _, _, prints, request = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    trained = production_version()
    path = fast_request(workspace, request, "TXT-K", prints["card"])
    run_killed(workspace, KILLED_FORGET, str(path))
    teacher = state.teacher_file(workspace, "notes")
    assert state.pending_escrow(teacher).exists() and not teacher.exists()  # sealed, not yet named

    code, out = run_json(capsys, ["forget", str(path)])
    assert code == 0 and out["verified"] and out["guarantee"] == "empirical", out
    assert sorted(p.name for p in state.escrow_dir(workspace, "notes").iterdir()) == sorted(
        [f"{out['run_id']}.bin", "teacher.sealed"])  # the killed run's pending files are gone
    assert sealed_teacher(workspace)["anchor"] == trained.run_id
