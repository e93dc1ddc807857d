"""Purging superseded artifacts on the real stack: after a promotion, every earlier version of the
model loses its model files and aliases and is tagged `purged`, the replaced data version's DVC
objects are deleted from cache and remote; with --keep-superseded they are kept "beyond use" until
a purge date that a later comply run enforces. The certificate says what happened to each."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow import MlflowClient

from flows.cli import main
from tasks import dvc, ledger, state, tracking
from tests.flows.test_faults import remote_objects
from tests.flows.test_pipeline import add_and_train, cache_objects, request_file, run_json


@pytest.fixture(autouse=True)
def no_keep_setting(monkeypatch):
    monkeypatch.delenv("UNLEARN_KEEP_SUPERSEDED_DAYS", raising=False)


def artifact_dir(version: str) -> Path:
    return Path(urlparse(tracking.version_artifact_uri("people", version)).path)


def assert_purged(root: Path, version: str) -> None:
    tags = MlflowClient().get_model_version("people", version).tags
    assert datetime.fromisoformat(tags["purged"]) <= datetime.now(timezone.utc)
    assert MlflowClient().get_model_version("people", version).aliases == []
    assert not artifact_dir(version).exists()
    with pytest.raises(Exception):
        mlflow.pyfunc.load_model(f"models:/people/{version}")


def test_promotion_purges_every_earlier_version_and_the_replaced_data(workspace, people_csv, capsys, monkeypatch):
    add_and_train(people_csv, capsys)
    old_data = dvc.data_version(workspace)
    old_objects = cache_objects(workspace, old_data)
    tracking.connect(workspace)
    v1_run = MlflowClient().get_model_version("people", "1").run_id
    assert artifact_dir("1").is_dir() and (workspace / ".unlearn" / "cache" / f"{v1_run}.pt").exists()
    path = request_file(workspace, id="GDPR-P", delete_records=["P1003", "P1004"], fix_labels={"P1030": "yes"})
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    with monkeypatch.context() as m:  # a first run registers candidate v2, then fails to promote it
        m.setattr(tracking, "promote", lambda *a: (_ for _ in ()).throw(RuntimeError("registry down")))
        assert run_json(capsys, ["comply"])[0] == 1
    assert artifact_dir("1").is_dir() and all(p.exists() for p in old_objects)  # a failed run purges nothing

    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    (result,) = out["requests"]
    assert result["model"]["version"] == "3"
    for version in ("1", "2"):  # the previous production version and the never-promoted candidate
        assert_purged(workspace, version)
    assert not (workspace / ".unlearn" / "cache" / f"{v1_run}.pt").exists()
    kept = {q.name for q in cache_objects(workspace, dvc.data_version(workspace))}
    gone = [p for p in old_objects if p.name not in kept]
    assert gone and not any(p.exists() for p in gone + remote_objects(workspace, gone))
    assert mlflow.pyfunc.load_model("models:/people@production") is not None

    cert = json.loads((workspace / result["certificate"]).read_text())
    actions = {s["artifact"]: s for s in cert["superseded"]}
    assert {a: s["action"] for a, s in actions.items()} == {
        "model people v1": "purged", "model people v2": "purged",
        f"dvc data version {old_data}": "purged from cache and remote"}
    assert all(s["verified"] for s in actions.values())
    assert main(["certificate", "verify", str(workspace / result["certificate"])]) == 0
    # the request is identified by the ledger's salted hash, never by a plain hash of its content
    record = ledger.show(workspace, "GDPR-P")
    request = ledger.load_submitted(workspace, "GDPR-P")
    assert cert["request"]["request_hash"] == record.request_hash and "content_hash" not in cert["request"]
    plain = request.content_hash()
    assert plain not in json.dumps(cert)
    assert all(plain not in json.dumps(v.tags) for v in MlflowClient().search_model_versions("name = 'people'"))


def test_keep_superseded_keeps_them_beyond_use_until_a_later_comply_run_purges_them(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    old_data = dvc.data_version(workspace)
    old_objects = cache_objects(workspace, old_data)
    path = request_file(workspace, id="REQ-K", delete_records=["P1005"])
    code, out = run_json(capsys, ["forget", str(path), "--keep-superseded", "30"])
    assert code == 0, out
    until = (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat()
    tracking.connect(workspace)
    client = MlflowClient()
    v1 = client.get_model_version("people", "1")
    kept_state = state.model_state_files(workspace, v1.run_id)
    assert f"encoded/{v1.run_id}.pt" in kept_state  # the old data's encoded rows: a copy kept beyond use too
    assert {s["artifact"]: s["action"] for s in out["superseded"]} == {
        "model people v1": f"beyond use until {until}", f"dvc data version {old_data}": f"beyond use until {until}",
        f"private state of model people v1: {', '.join(kept_state)}": f"beyond use until {until}"}
    assert v1.aliases == [] and v1.tags["beyond_use"] == f"until {until}" and "purged" not in v1.tags
    assert v1.tags["superseded_by"] == "2" and v1.tags["purge_data"] == old_data
    assert artifact_dir("1").is_dir() and all(p.exists() for p in old_objects)  # kept, but beyond use

    code, out = run_json(capsys, ["comply"])  # not due yet: nothing purged
    assert code == 0 and out["purged"] == [] and artifact_dir("1").is_dir()

    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds")
    client.set_model_version_tag("people", "1", "purge_after", past)  # the retention has run out
    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    assert {p["artifact"]: p["action"] for p in out["purged"]} == {
        "model people v1": "purged", f"dvc data version {old_data}": "purged from cache and remote"}
    assert_purged(workspace, "1")
    kept = {q.name for q in cache_objects(workspace, dvc.data_version(workspace))}
    gone = [p for p in old_objects if p.name not in kept]
    assert gone and not any(p.exists() for p in gone + remote_objects(workspace, gone))
    assert mlflow.pyfunc.load_model("models:/people@production") is not None
    code, out = run_json(capsys, ["comply"])  # enforced once
    assert code == 0 and out["purged"] == []


@pytest.mark.parametrize("argv, env", [
    (["forget", "{req}", "--keep-superseded", "-3"], None),
    (["forget", "{req}", "--keep-superseded", "a week"], None),
    (["comply", "--keep-superseded", "99999"], None),
    (["comply"], "soon"),
])
def test_a_bad_retention_is_refused_before_anything_is_written(workspace, capsys, monkeypatch, argv, env):
    path = request_file(workspace, id="REQ-B", delete_records=["P1005"])
    if env is not None:
        monkeypatch.setenv("UNLEARN_KEEP_SUPERSEDED_DAYS", env)
    before = sorted(p.name for p in workspace.iterdir())
    capsys.readouterr()
    assert main([a.replace("{req}", str(path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "whole number of days" in err
    assert sorted(p.name for p in workspace.iterdir()) == before


def test_a_request_does_not_mark_again_the_versions_an_earlier_one_kept_beyond_use(
        workspace, people_csv, capsys, monkeypatch):
    """The cost of a request must not grow with the model's history: versions marked superseded by
    an earlier request keep their tags, and only the newly superseded one is tagged."""
    add_and_train(people_csv, capsys)
    for i, record in enumerate(("P1003", "P1004")):
        path = request_file(workspace, id=f"REQ-M{i}", delete_records=[record])
        assert run_json(capsys, ["forget", str(path), "--keep-superseded", "30"])[0] == 0
    tagged = []
    real = tracking.set_version_tags
    monkeypatch.setattr(tracking, "set_version_tags",
                        lambda name, version, tags: (tagged.append(version), real(name, version, tags)))
    path = request_file(workspace, id="REQ-M2", delete_records=["P1005"])
    code, out = run_json(capsys, ["forget", str(path), "--keep-superseded", "30"])
    assert code == 0, out
    assert tagged == ["3"]  # v1 and v2 were marked by the requests that superseded them
    tracking.connect(workspace)
    client = MlflowClient()
    for version, by in (("1", "2"), ("2", "3"), ("3", "4")):
        v = client.get_model_version("people", version)
        assert v.aliases == [] and v.tags["superseded_by"] == by and "beyond_use" in v.tags
    # and every one of them is still listed beyond use by this request's certificate
    assert {"model people v1", "model people v2", "model people v3"} <= {s["artifact"] for s in out["superseded"]}
