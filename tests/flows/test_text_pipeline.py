"""The text scenario end to end (real Prefect, MLflow, DVC; a tiny char-LSTM): scan, exposure,
redaction, unlearning, verification (evidence, the default: no model trained to verify; reference
on request), purge — and afterwards not one raw injected secret anywhere in the workspace (MLflow
store, DVC cache and remote, requests, private state), the temp folder, the Prefect database, or
the console."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prefect.settings import get_current_settings

from flows.cli import main
from tasks import state, tracking
from tests.flows.conftest import pin_project_salt
from unlearning.text.shakespeare import build_shakespeare


def injected_values() -> set[str]:
    """The raw secrets the built-in corpus carries, in every written form and digits-only."""
    corpus = build_shakespeare()
    values = {corpus.text_of(o.record)[o.start:o.end] for o in corpus.injected}
    return values | {re.sub(r"\D", "", v) for v in values if sum(c.isdigit() for c in v) >= 12}


def files_containing(root: Path, needles: set[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and ".venv" not in path.parts:
            blob = path.read_bytes()
            hits += [f"{path.relative_to(root)}" for n in needles if n.encode() in blob]
    return hits


def prefect_database() -> Path:
    url = get_current_settings().server.database.connection_url.get_secret_value()
    return Path(url.split("///", 1)[1])


def prefect_database_bytes() -> bytes:
    """What Prefect's database holds, its write-ahead log included: recent rows stay there until a
    checkpoint writes them to the main file."""
    database = prefect_database()
    return b"".join(p.read_bytes() for p in (database, database.with_name(database.name + "-wal")) if p.exists())


# The built-in corpus's tiny model is trained for a fixed number of steps, not `--seconds 4`: the
# steps a time budget buys follow the machine's load (4 s gave 260 to 954 steps on the shared 2-core
# machine), and what the model learns follows the steps. Measured on the first test's retrained
# model, whose evidence checks must all pass: exposure_above_control_band_bits (needs <= 2) reads
# -3.4 at 250 steps, -3.2 at 400, -8.8 at 700 and -6.2 at 1000.
SHAKESPEARE_STEPS = "700"

EVIDENCE_CHECKS = ["exposure_above_control_band_bits", "perplexity_increase", "contexts_regenerating",
                   "relearned_above_control_band_bits"]


@pytest.fixture
def system_tmp(tmp_path_factory, monkeypatch) -> Path:
    """The temp folder this test's processes are given (the system one, as far as they know)."""
    folder = tmp_path_factory.mktemp("system-tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_text_pipeline_removes_secrets_and_leaks_none(workspace, system_tmp, capsys):
    secrets = injected_values()
    assert len(secrets) >= 20
    pin_project_salt(workspace)
    assert main(["data", "add", "shakespeare"]) == 0
    assert main(["train", "shakespeare", "--preset", "tiny", "--steps", SHAKESPEARE_STEPS]) == 0

    capsys.readouterr()
    assert main(["scan", "shakespeare", "--model", "shakespeare", "--json"]) == 1  # findings → exit 1
    scanned = json.loads(capsys.readouterr().out)
    assert scanned["counts"] == {"card": 32, "email": 32, "phone": 32, "secret": 64}
    assert all("exposure" in f and "location" in f and "record" in f["location"] for f in scanned["findings"])
    measured = {f["fingerprint"]: f["exposure"] for f in scanned["findings"]}
    records = list((workspace / ".unlearn" / "exposures").glob("*.json"))  # by model run: fingerprints → bits
    assert len(records) == 1 and len(json.loads(records[0].read_text())) == 20

    request = workspace / "redact.yaml"
    request.write_text(yaml.safe_dump({"id": "REQ-T1", "model": "shakespeare", "method": "retrain",
                                       "redact": {"findings": "all", "policy": "token"}}))
    assert main(["forget", str(request), "--json"]) == 0  # verified by evidence, the text default
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["guarantee"] == "exact"
    assert out["findings"] == scanned["counts"] and len(out["secrets"]) == 20
    assert out["exposure"]["retrain"] is None and out["timings"]["retrain_s"] is None  # no model trained to verify
    assert out["exposure"]["control_band"] is not None
    assert [c["name"] for c in out["checks"]] == EVIDENCE_CHECKS
    assert out["metrics"]["regenerated"] == 0 and out["metrics"]["contexts"] == 160  # every occurrence's context
    assert all({"before", "after", "band", "excess_bits", "masked", "fingerprint"} <= set(r) for r in out["secrets"])
    assert all(r["before"] == measured[r["fingerprint"]] for r in out["secrets"])  # the scan's, not re-measured
    assert not records[0].exists()  # dropped with the superseded version's other private state
    # the parent's perplexity record went with it; the new version keeps its own (retrained: its own anchor),
    # and the project's signed word that it is exact binds the digest of its files as logged (register
    # returns it: no copy of it in the evidence record)
    [kept] = (workspace / ".unlearn" / "evidence").glob("*.json")
    files = tracking.load_version("shakespeare", out["model"]["version"])[1]
    assert kept.stem != records[0].stem and json.loads(kept.read_text()) == {
        "held_out_perplexity": out["perplexity"]["after"]}
    assert [p.stem for p in (workspace / ".unlearn" / "exact").glob("*.json")] == [kept.stem]
    assert json.loads((workspace / ".unlearn" / "exact" / f"{kept.stem}.json").read_text())["model_sha256"] == files
    verify_run = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                    filter_string=f"tags.step = 'verify' and tags.request_id = 'REQ-T1'")[0]
    plots = {a.path for a in MlflowClient().list_artifacts(verify_run.info.run_id)}
    assert {"exposure.png", "verification.json"} <= plots
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=verify_run.info.run_id,
                                                                 artifact_path="verification.json")).read_text())
    assert logged["mode"] == "evidence" and logged["retrains"] == 0

    # the corpus is clean now, and its superseded version (the last copy of the secrets) is gone
    assert main(["scan", "shakespeare"]) == 0
    assert files_containing(workspace, secrets) == [] and files_containing(system_tmp, secrets) == []
    database = prefect_database()
    assert database.exists() and not any(s.encode() in database.read_bytes() for s in secrets)
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in secrets)


def test_text_request_validation(workspace, capsys):
    assert main(["data", "add", "shakespeare"]) == 0
    assert main(["train", "shakespeare", "--preset", "tiny", "--steps", "100"]) == 0  # any trained model
    bad = {
        "table kinds on text": {"delete_records": ["x"]},
        "no such fingerprint": {"redact": {"findings": ["0123456789abcdef01234567"]}},
        "certified on a language model": {"redact": {"findings": "all"}, "method": "certified"},
    }
    for name, content in bad.items():
        path = workspace / "bad.yaml"
        path.write_text(yaml.safe_dump({"id": "REQ-B", "model": "shakespeare", **content}))
        capsys.readouterr()
        assert main(["forget", str(path)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (name, err)


def test_auto_falls_back_to_the_retrained_model_when_the_fast_update_fails(workspace, capsys):
    """`auto`: a suppress update that misses the thresholds (here: a learning rate too small to move) is
    not promoted; the reference verification retrained on the redacted corpus is, as `exact`.
    (A request touching more windows than lm.AUTO_MAX_WINDOWS goes to retraining directly: the
    first test's request, with method retrain, covers that path.)"""
    from flows.forget import forget_flow
    from flows.train import train_flow
    from unlearning.text.lm import TextTrainConfig

    pin_project_salt(workspace)
    assert main(["data", "add", "shakespeare"]) == 0
    # a step budget, not a time budget: on a loaded machine 4 s gave a model too weak to have
    # memorised the card more than the reference, and the stalled update then passed (no fallback)
    train_flow(root=str(workspace), dataset="shakespeare", text_config=TextTrainConfig(preset="tiny", steps=400))
    capsys.readouterr()
    assert main(["scan", "shakespeare", "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    card = next(f["fingerprint"] for f in findings if f["detector"] == "card")
    request = workspace / "redact.yaml"  # one card number: few enough windows for auto to try suppress
    request.write_text(yaml.safe_dump({"id": "REQ-T2", "model": "shakespeare", "method": "auto",
                                       "redact": {"findings": [card], "policy": "token"}}))
    stalled = {"lr": 1e-9, "steps": 1}  # a learning rate too small to move
    out = forget_flow(root=str(workspace), request_path=str(request), options=stalled, verify="reference")
    attempt = out["fallback"]
    assert attempt["method"] == "suppress" and "exposure_vs_retrain_bits" in attempt["failed_checks"]
    assert attempt["reference"] == "trained by the verification"
    assert abs(attempt["exposure_after"] - out["exposure"]["before"]) < 1e-3  # the tiny step barely moved
    assert out["verified"] and out["promoted"] and out["method"] == "retrain" and out["guarantee"] == "exact"
    assert out["exposure"]["after"] == out["exposure"]["retrain"] and out["affected_windows"] <= 16
    capsys.readouterr()
    assert main(["forget", str(request), "--json"]) == 0  # the same request again: the recorded result
    again = json.loads(capsys.readouterr().out)
    assert again["status"] == "already_processed" and again["model"] == out["model"]

    # Evidence mode (the default) trained no reference: the fall-back trains it, then judges it.
    # The update: suppress at a learning rate that wrecks the model.
    phone = next(f["fingerprint"] for f in findings if f["detector"] == "phone")
    request.write_text(yaml.safe_dump({"id": "REQ-T3", "model": "shakespeare", "method": "auto",
                                       "redact": {"findings": [phone], "policy": "token"}}))
    out = forget_flow(root=str(workspace), request_path=str(request), options={"lr": 1.0, "steps": 5})
    attempt = out["fallback"]
    assert attempt["method"] == "suppress" and "perplexity_increase" in attempt["failed_checks"]
    assert "by the fall-back" in attempt["reference"]
    assert out["verified"] and out["method"] == "retrain" and out["guarantee"] == "exact"
    assert out["timings"]["retrain_s"] > 0 and out["exposure"]["retrain"] is None
    assert [c["name"] for c in out["checks"]] == EVIDENCE_CHECKS and all(c["passed"] for c in out["checks"])
