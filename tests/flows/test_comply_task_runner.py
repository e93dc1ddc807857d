"""`comply --task-runner dask`: every batch's verification reference is trained at once on a real
Dask cluster (prefect-dask's DaskTaskRunner, worker processes: a standing cluster given by its
scheduler address, or a local one comply starts) before the batches are released in order; a
prefetched reference is used only where its content key matches the batch as it is released — the
same results as an inline run, checked against one in a second workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import main
from tasks import ledger, tracking
from tasks import references as prefetch
from tests.flows.conftest import synthetic_people
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import SHAKESPEARE_STEPS, files_containing, injected_values, prefect_database

pytest.importorskip("prefect_dask")
from distributed import LocalCluster  # noqa: E402

REQUESTS = [
    # people: two batches (different methods cannot share an update); the second is planned for
    # prefetching before the first changes the data, so its key cannot match: trained inline
    {"id": "DSR-A", "model": "people", "delete_records": ["P1003", "P1004"], "method": "second_order"},
    {"id": "DSR-C", "model": "people", "delete_records": ["P1010"], "method": "retrain"},
    # staff: its own dataset and model, a batch of its own
    {"id": "DSR-B", "model": "staff", "delete_records": ["P1020"], "fix_labels": {"P1031": "yes"}},
]


def prepare(root: Path, capsys) -> None:
    for name, seed in (("people", 0), ("staff", 1)):
        csv = root / f"{name}.csv"
        synthetic_people(seed=seed).to_csv(csv, index=False)
        assert main(["data", "add", name, "--file", str(csv), "--target", "label", "--id", "person"]) == 0
        assert main(["train", name]) == 0
    for content in REQUESTS:
        path = root / f"{content['id']}.yaml"
        path.write_text(yaml.safe_dump(content))
        assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0


def verification_sources(root: Path) -> dict[str, str]:
    """request id → where each model's reference came from (param `reference` of its runs)."""
    tracking.connect(root)
    client = MlflowClient()
    out = {}
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        if "reference" in run.data.params:
            out.setdefault(run.data.tags.get("request_id"), []).append(run.data.params["reference"])
    return out


def completed_task_runs(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))
    return [r for r in runs if r.state is not None and r.state.is_completed()]


def certificates(root: Path, summary: dict) -> dict[str, dict]:
    return {r["id"]: json.loads((root / r["certificate"]).read_text()) for r in summary["requests"]}


def test_comply_trains_the_references_on_a_dask_cluster_with_the_same_results_as_inline(
        tmp_path, monkeypatch, capsys):
    results = {}
    for runner in ("dask", "inline"):
        root = tmp_path / runner
        root.mkdir()
        monkeypatch.setenv("UNLEARN_ROOT", str(root))
        monkeypatch.chdir(root)
        prepare(root, capsys)
        if runner == "dask":  # a standing cluster, as a scale-out deployment would have one
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                              env=prefetch.worker_environment()) as cluster:
                code, out = run_json(capsys, ["comply", "--dask-address", cluster.scheduler_address,
                                              "--verify", "reference"])
        else:
            code, out = run_json(capsys, ["comply", "--task-runner", runner, "--verify", "reference"])
        assert code == 0, out
        assert [r["status"] for r in out["requests"]] == ["completed"] * 3
        for r in out["requests"]:
            assert main(["certificate", "verify", str(root / r["certificate"])]) == 0
            assert ledger.show(root, r["id"]).status == "completed"
        assert main(["ledger", "verify"]) == 0
        results[runner] = (out, certificates(root, out), verification_sources(root))

    dask, inline = results["dask"], results["inline"]
    refs = dict(dask[0]["references"])
    assert refs.pop("seconds") > 0 and refs == {"task_runner": "dask", "prefetched": 3, "used": 2}
    assert inline[0]["references"] == {"task_runner": "inline", "prefetched": 0, "used": 0, "seconds": 0.0}
    batch_of = {r["id"]: r["batch"] for r in dask[0]["requests"]}
    sources = {rid: dask[2][batch_of[rid]] for rid in batch_of}
    assert sources["DSR-A"] == ["prefetched"] and sources["DSR-B"] == ["prefetched"]
    # DSR-C's update is retraining (verification reuses it); its data changed under it: no key match
    assert sorted(sources["DSR-C"]) == ["the update", "trained"]
    assert all(set(s) <= {"trained", "the update"} for s in inline[2].values())
    # the same verification: every metric and check of every certificate equal to the inline run's
    for rid, cert in dask[1].items():
        other = inline[1][rid]
        assert cert["verified"] and other["verified"]
        assert cert["fidelity"] == other["fidelity"], rid
        assert cert["checks"] == other["checks"], rid
        assert cert["model"]["version"] == other["model"]["version"]


def test_image_and_text_references_trained_on_dask_are_the_ones_their_batches_use(workspace, capsys):
    """The key of a reference planned before the run (from the request file and the production
    version) equals the key the batch computes when it runs, for a CNN and a language model too:
    both retrain updates take their model from the Dask workers."""
    assert main(["data", "add", "digits"]) == 0
    assert main(["train", "digits", "--epochs", "2"]) == 0
    assert main(["data", "add", "shakespeare"]) == 0
    assert main(["train", "shakespeare", "--preset", "tiny", "--steps", SHAKESPEARE_STEPS]) == 0
    for content in ({"id": "IMG-R", "model": "digits", "forget_class": "3", "method": "retrain"},
                    {"id": "TXT-R", "model": "shakespeare", "method": "retrain",
                     "redact": {"findings": "all", "policy": "token"}}):
        path = workspace / f"{content['id']}.yaml"
        path.write_text(yaml.safe_dump(content))
        assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0

    capsys.readouterr()
    code = main(["comply", "--task-runner", "dask", "--workers", "2", "--verify", "reference", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    assert code == 0, out
    refs = dict(out["references"])
    assert refs.pop("seconds") > 0 and refs == {"task_runner": "dask", "prefetched": 2, "used": 2}
    # the workers recorded their task runs beside the flow run, in the same Prefect API
    assert len(completed_task_runs("retrain reference")) >= 2
    # what went to the workers was D' (redacted): no raw secret in the workspace, Prefect's
    # database (task runs of the Dask workers included) or the console
    secrets = injected_values()
    assert files_containing(workspace, secrets) == []
    database = prefect_database()
    assert database.exists() and not any(v.encode() in database.read_bytes() for v in secrets)
    assert not [v for v in secrets if v in console.out + console.err]
    assert [r["status"] for r in out["requests"]] == ["completed", "completed"]
    sources = verification_sources(workspace)
    # the retrain update takes the prefetched model; `--verify reference` verification reuses it
    for r in out["requests"]:
        assert sorted(sources[r["batch"]]) == ["prefetched", "the update"], r["id"]
        cert = json.loads((workspace / r["certificate"]).read_text())
        assert cert["verified"] and cert["method"] == "retrain" and cert["guarantee"] == "exact"


def test_an_unreachable_dask_scheduler_is_reported_and_the_batches_verify_inline(workspace, people_csv, capsys):
    from tests.flows.test_pipeline import add_and_train, request_file

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="DSR-U", delete_records=["P1005"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    capsys.readouterr()
    code = main(["comply", "--dask-address", "tcp://127.0.0.1:1", "--verify", "reference", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    assert code == 0 and [r["status"] for r in out["requests"]] == ["completed"]
    assert out["references"]["prefetched"] == 0 and out["references"]["used"] == 0
    assert "the Dask scheduler tcp://127.0.0.1:1 cannot be reached" in console.err
    assert "Traceback" not in console.err
    assert verification_sources(workspace)[out["requests"][0]["batch"]] == ["trained"]


def test_comply_trains_no_reference_unless_asked_to(workspace, people_csv, capsys):
    """Issue 13: the default modes (certificate, evidence) train no model per request, so the
    Dask prefetch of references does not run (the scheduler is not even contacted) and no
    certificate records a retraining."""
    from tests.flows.test_pipeline import add_and_train, request_file

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="DSR-N", delete_records=["P1005"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    capsys.readouterr()
    code = main(["comply", "--dask-address", "tcp://127.0.0.1:1", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    assert code == 0 and [r["status"] for r in out["requests"]] == ["completed"]
    assert out["references"]["prefetched"] == 0 and "cannot be reached" not in console.err
    cert = json.loads((workspace / out["requests"][0]["certificate"]).read_text())
    assert cert["verification"]["mode"] == "evidence" and cert["verification"]["retrains"] == 0
    assert cert["timings"]["retrain_s"] is None and "retrain_seconds" not in cert["fidelity"]
    assert verification_sources(workspace) == {}


def test_a_scheduler_address_with_a_password_reaches_neither_the_console_nor_prefect_nor_the_project(
        workspace, people_csv, capsys):
    """`--dask-address tcp://user:secret@host:8786`: the warning printed it whole, and the flow run's
    parameter `dask_address` kept it in Prefect's database."""
    from prefect.logging.handlers import APILogWorker

    from tests.flows.test_pipeline import add_and_train, request_file
    from tests.flows.test_text_pipeline import prefect_database_bytes

    password = "Hunter2-Hunter2"
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="DSR-P", delete_records=["P1005"])
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    capsys.readouterr()
    code = main(["comply", "--dask-address", f"tcp://alice:{password}@127.0.0.1:1", "--verify", "reference",
                 "--json"])
    console = capsys.readouterr()
    assert code == 0 and json.loads(console.out)["requests"][0]["status"] == "completed"
    assert "the Dask scheduler tcp://***@127.0.0.1:1 cannot be reached" in console.err
    APILogWorker.drain_all(timeout=30)
    for needle in (password, f"alice:{password}"):
        assert needle not in console.out + console.err
        assert files_containing(workspace, {needle}) == []  # MLflow's database, the ledger, certificates
        assert needle.encode() not in prefect_database_bytes()


def test_a_scheduler_address_given_to_the_flow_by_position_is_kept_from_prefect(workspace):
    """Only a keyword `dask_address` was handed to Prefect as a SecretStr: `comply_flow(root, None,
    "dask", address)` stored the address, password and all, in the flow run's parameters."""
    from flows.comply import comply_flow
    from tests.flows.test_text_pipeline import prefect_database_bytes

    password = "Positional-Hunter2"
    summary = comply_flow(str(workspace), None, "dask", f"tcp://alice:{password}@127.0.0.1:1")
    assert summary["requests"] == []
    assert password.encode() not in prefect_database_bytes()
