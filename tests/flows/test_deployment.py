"""The `comply` deployment against a real `prefect server start` on 127.0.0.1: `unlearn serve`
serves it, `prefect deployment run` triggers it, the served run processes a pending request —
and afterwards no raw injected secret is in the workspace (mlflow/, the ledger, DVC, private
state), the server's database (flow-run logs included), or any log or console output.

Behind the `server` marker (`make test-scale`): a fresh server's migrations alone take 10-35 s."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.cli import main
from tasks import ledger
from tests.flows.conftest import pin_project_salt
from tests.flows.test_text_pipeline import SHAKESPEARE_STEPS, files_containing, injected_values, prefect_database
from tests.services import BIN, child_env, deployment_exists, log_tail, prefect_server, run, service

pytestmark = pytest.mark.server


def test_a_triggered_comply_deployment_processes_a_request_and_leaks_nothing(workspace, tmp_path_factory, capsys):
    secrets = injected_values()
    server_home = tmp_path_factory.mktemp("prefect-server")
    logs = server_home / "logs"
    with prefect_server(server_home / "home", logs, wait=False) as (api, server):
        # the workspace is set up (in this process, on the test harness) while the server starts
        pin_project_salt(workspace)
        assert main(["data", "add", "shakespeare"]) == 0
        assert main(["train", "shakespeare", "--preset", "tiny", "--steps", SHAKESPEARE_STEPS]) == 0
        request = workspace / "redact.yaml"
        request.write_text(yaml.safe_dump({"id": "REQ-D1", "model": "shakespeare", "method": "retrain",
                                           "redact": {"findings": "all", "policy": "token"}}))
        assert main(["requests", "submit", str(request), "--channel", "web-form"]) == 0
        server.wait_ready()

        # INFO: the flow and task runs' own log lines go to the server's database as well
        env = child_env(PREFECT_API_URL=api, PREFECT_HOME=str(server_home / "client"), UNLEARN_ROOT=str(workspace),
                        PREFECT_LOGGING_LEVEL="INFO")
        with service("unlearn serve", [str(BIN / "unlearn"), "serve"], logs / "serve.log",
                     lambda: deployment_exists(api, "comply/nightly"), env=env, cwd=workspace) as served:
            triggered = run([str(BIN / "prefect"), "deployment", "run", "comply/nightly", "--watch",
                             "--watch-timeout", "900"], env, cwd=workspace, timeout=960)
            assert triggered.returncode == 0, triggered.stdout + triggered.stderr
            assert "Completed" in triggered.stdout
    # SIGTERM (docker stop, systemd) stops `unlearn serve` by itself, within the grace period
    assert served.killed == [] and served.proc.returncode == 0, log_tail(logs / "serve.log")
    assert "serve: stopped" in (logs / "serve.log").read_text()

    record = ledger.show(workspace, "REQ-D1")
    assert record.status == "completed", record.failure
    assert [e.event for e in record.entries][-2:] == ["processing", "completed"]
    certificate = workspace / record.response["certificate"]
    cert = json.loads(certificate.read_text())
    assert cert["request"]["id"] == "REQ-D1" and cert["verified"] and cert["channel"] == "web-form"
    assert main(["certificate", "verify", str(certificate)]) == 0
    assert main(["ledger", "verify"]) == 0

    # the served run (a process of its own) redacted the corpus and purged its old version
    assert main(["scan", "shakespeare"]) == 0
    assert files_containing(workspace, secrets) == []
    # the server's home holds its SQLite database (flow runs, task runs, their logs) and, under
    # logs/, the output of the server, of `unlearn serve` and of the flow-run process
    assert (server_home / "home" / "prefect.db").exists() and (logs / "serve.log").stat().st_size > 0
    assert files_containing(server_home, secrets) == []
    harness_db = prefect_database()
    assert not any(s.encode() in harness_db.read_bytes() for s in secrets)
    console = capsys.readouterr()
    assert not any(s in console.out + console.err + triggered.stdout + triggered.stderr for s in secrets)
