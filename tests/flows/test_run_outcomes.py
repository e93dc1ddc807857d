"""What a user sees in the Prefect and MLflow UIs after `forget` and `comply` (real Prefect, MLflow,
DVC): a failed verification looks failed in both, runs are named after the requests, model
versions say in their description what happened to them, lineage records the code version."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
from mlflow import MlflowClient

from flows.cli import main
from tasks import tracking
from tasks.kinds import tabular
from tasks.version import code_version
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from tests.services import ctrl_c_as_in_a_terminal


def flow_runs_named(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


def mlflow_runs_named(name: str) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")


def failing_verification(monkeypatch) -> None:
    """Every update fails verification in the default (evidence) mode (a named method: `auto`
    would fall back to retraining)."""
    real = tabular.verify_without_reference

    def failing(*args, **kwargs):
        metrics, checks = real(*args, **kwargs)
        return metrics, [{**c, "passed": False} for c in checks]

    monkeypatch.setattr(tabular, "verify_without_reference", failing)


def test_a_forget_that_fails_verification_looks_failed_and_a_verified_one_does_not(workspace, people_csv, capsys,
                                                                                 monkeypatch):
    add_and_train(people_csv, capsys)
    real = tabular.verify_without_reference
    failing_verification(monkeypatch)
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="PAT-F1", delete_records=["P1003"],
                                                             method="second_order"))])
    assert code == 1 and out["status"] == "verification_failed" and out["failed_checks"]  # the CLI as before
    (flow_run,) = flow_runs_named("forget PAT-F1")
    assert flow_run.state.is_failed()
    assert flow_run.state.message == f"verification failed ({'; '.join(out['failed_checks'])}); nothing promoted"
    tracking.connect(workspace)
    parent = MlflowClient().get_run(out["run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["verified"] == "false"
    assert parent.info.run_name == "forget PAT-F1"
    candidate = MlflowClient().get_model_version("people", out["model"]["version"])
    assert candidate.description.startswith("ROLLED BACK, never promoted: verification failed")

    monkeypatch.setattr(tabular, "verify_without_reference", real)
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="PAT-OK", delete_records=["P1004"]))])
    assert code == 0 and out["verified"]
    (flow_run,) = flow_runs_named("forget PAT-OK")
    assert flow_run.state.is_completed()
    parent = MlflowClient().get_run(out["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["verified"] == "true"
    # lineage and the certificate name the code: the package version plus its commit
    assert parent.data.tags["code_version"] == code_version() and "HEAD" not in code_version()
    assert tracking.load_json(out["run_id"], "certificate.json")["code_version"] == code_version()
    # the version it superseded (purged at once: keep 0 days) says so where the UI shows it first
    first = MlflowClient().get_model_version("people", out["model"]["parent_version"])
    assert first.description.startswith("PURGED ") and f"superseded by v{out['model']['version']}" in first.description
    # a signature the UI shows: the source columns by name, no category value in it
    signature = mlflow.models.get_model_info(f"models:/people/{out['model']['version']}").signature
    assert signature.inputs.input_names() == ["age", "hours", "sex", "city"]
    assert signature.outputs.input_names() == ["prediction"]
    shown = json.dumps(signature.to_dict())
    assert not any(value in shown for value in ("female", "male", "Ames", "Boise", "Cork", "Delft"))


def test_a_comply_batch_is_named_after_its_requests_and_a_failed_request_fails_the_run(workspace, people_csv, capsys,
                                                                                     monkeypatch):
    add_and_train(people_csv, capsys)
    for request_id, record in (("PAT-001", "P1005"), ("PAT-002", "P1006")):
        path = request_file(workspace, id=request_id, delete_records=[record], method="second_order")
        assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    real = tabular.verify_without_reference
    failing_verification(monkeypatch)
    code, out = run_json(capsys, ["comply"])
    assert code == 1 and out["failed"] == 2
    (comply_run,) = flow_runs_named("comply PAT-001, PAT-002")
    assert comply_run.state.is_failed() and comply_run.state.message.startswith("2 of 2 request(s) failed — PAT-001: ")
    (batch_run,) = flow_runs_named("forget PAT-001, PAT-002")  # the merged batch, then each alone
    assert batch_run.state.is_failed() and flow_runs_named("forget PAT-002")[0].state.is_failed()
    tracking.connect(workspace)
    (batch,) = mlflow_runs_named("forget PAT-001, PAT-002")
    assert batch.data.tags["batch_requests"] == "PAT-001,PAT-002" and batch.info.status == "FAILED"

    monkeypatch.setattr(tabular, "verify_without_reference", real)
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and {r["status"] for r in out["requests"]} == {"completed"}
    states = sorted(r.state.type.value for r in flow_runs_named("comply PAT-001, PAT-002"))
    assert states == ["COMPLETED", "FAILED"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unlearn_ui_prefect_serves_the_projects_flow_runs(workspace):
    """`unlearn ui --prefect` started as a user would, asked for its health and settings, stopped
    with Ctrl-C (SIGINT): its home is the project's .prefect and its UI talks to its own API."""
    port = free_port()
    env = {**os.environ, "UNLEARN_ROOT": str(workspace)}
    env.pop("PREFECT_HOME", None)  # the harness's: a user's shell has none
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--prefect", "--port", str(port)],
                              env=env, cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=ctrl_c_as_in_a_terminal)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        settings = json.load(urllib.request.urlopen(f"{api}/admin/settings", timeout=10))
        assert settings["home"] == str(workspace / ".prefect")
        assert settings["server"]["ui"]["api_url"] == api
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode is not None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_unlearn_ui_killed_stops_its_server(workspace):
    """`kill` (SIGTERM) of `unlearn ui` stops the MLflow UI server it started: the port is free
    again. It used to end alone and leave the server holding the port."""
    port = free_port()
    env = {**os.environ, "UNLEARN_ROOT": str(workspace)}
    ui = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--port", str(port)], env=env, cwd=workspace,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not port_open(port):
            assert ui.poll() is None and time.monotonic() < deadline, ui.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        ui.send_signal(signal.SIGTERM)  # to `unlearn ui` alone, as `kill PID` does
        ui.wait(timeout=60)
        deadline = time.monotonic() + 30
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not port_open(port)
    finally:
        try:
            os.killpg(ui.pid, signal.SIGKILL)  # what the old code left in the session
        except ProcessLookupError:
            pass
        ui.wait()
