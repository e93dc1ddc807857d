"""`unlearn serve` runs the CLI's `forget` in its warm process: a real `unlearn serve` (no Prefect
server configured: a temporary one inside the service) in a project, real `unlearn forget` calls
from another process. The answers are those of a local run (one JSON object; bad input in one
line, exit 2, nothing written; the same bytes as `--local`), the runs are recorded in the
service's Prefect database, and a service killed during a release leaves one line and exit 1 to
the client, a socket nobody answers on, and a release the next (local) command rolls back before
it completes the request."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from flows.cli import main
from tasks import ledger
from tests.flows.test_cli_bad_input import snapshot
from tests.flows.test_pipeline import add_and_train, request_file
from tests.services import BIN, child_env, log_tail, run, service

# `unlearn serve`, but its release dies (as under SIGKILL: no except, no finally) at the
# promotion of any command run while the file `die-at-promotion` is in the project.
SERVE = """
import os, sys
from pathlib import Path
from tasks import tracking
promote = tracking.promote
def promote_or_die(*args, **kwargs):
    if (Path(os.environ["UNLEARN_ROOT"]) / "die-at-promotion").exists():
        os._exit(137)
    return promote(*args, **kwargs)
tracking.promote = promote_or_die
from flows.cli import main
sys.exit(main(["serve"]))
"""


def stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def served_commands(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("serve: `unlearn")]


def flow_runs(prefect_home: Path) -> list[str]:
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return [name for (name,) in db.execute("SELECT name FROM flow_run")]


def test_the_cli_hands_forget_to_a_running_serve_with_the_answers_of_a_local_run(workspace, people_csv, capsys,
                                                                                  tmp_path_factory):
    add_and_train(people_csv, capsys)
    logs = tmp_path_factory.mktemp("serve-logs")
    prefect_home = tmp_path_factory.mktemp("serve-prefect")
    env = child_env(UNLEARN_ROOT=str(workspace), PREFECT_API_URL=None, PREFECT_HOME=str(prefect_home),
                    UNLEARN_SERVICE=None, UNLEARN_KEEP_SUPERSEDED_DAYS=None)
    log = logs / "serve.log"
    ready = lambda: log.exists() and "serve: ready" in log.read_text()  # noqa: E731
    unlearn = str(BIN / "unlearn")
    with service("unlearn serve", [str(BIN / "python"), "-c", SERVE], log, ready, env=env, cwd=workspace,
                 timeout=180) as served:
        assert oct((workspace / ".unlearn" / "service.sock").stat().st_mode & 0o777) == "0o600"
        wait_for(lambda: "serve: note: no PREFECT_API_URL" in log.read_text())  # no cron would fire
        request_file(workspace, id="SRV-1", delete_records=["P1003"])
        started = time.monotonic()
        done = run([unlearn, "forget", "SRV-1.yaml", "--json"], env, cwd=workspace)  # a relative path
        warm_s = time.monotonic() - started
        assert done.returncode == 0, done.stderr + log_tail(log)
        summary = json.loads(done.stdout)  # exactly one JSON object
        assert summary["request_id"] == "SRV-1" and summary["status"] == "completed" and summary["promoted"]
        assert done.stderr == ""
        assert served_commands(log) == [served_commands(log)[0]] and "exit 0" in served_commands(log)[0]
        assert any("SRV-1" in name for name in flow_runs(prefect_home))  # in the service's Prefect UI

        # bad input: one line, exit 2, nothing written — byte for byte what a local run says
        bad = request_file(workspace, id="SRV-BAD", delete_records=["P1003"], model="nobody")
        before = snapshot(workspace)
        via_service = run([unlearn, "forget", str(bad)], env, cwd=workspace)
        assert snapshot(workspace) == before
        assert len(served_commands(log)) == 2 and "exit 2" in served_commands(log)[1]
        local = run([unlearn, "forget", str(bad), "--local"], env, cwd=workspace)
        assert (via_service.returncode, via_service.stdout, via_service.stderr) == \
            (local.returncode, local.stdout, local.stderr) == (2, "", local.stderr)
        assert local.stderr.count("\n") == 1 and local.stderr.startswith("error: ")
        assert "SRV-BAD" not in {r.id for r in ledger.list_requests(workspace)}

        # comply and audit are handed over too
        comply = run([unlearn, "comply", "--json"], env, cwd=workspace)
        assert comply.returncode == 0 and json.loads(comply.stdout)["processed"] == 0, comply.stderr
        audit = run([unlearn, "audit", "nobody"], env, cwd=workspace)
        assert audit.returncode == 2 and audit.stderr.count("\n") == 1 and "nobody" in audit.stderr
        assert [line.split("`")[1] for line in served_commands(log)[2:]] == ["unlearn comply", "unlearn audit"]

        # the service dies during a release: one line and exit 1 for the client
        (workspace / "die-at-promotion").touch()
        request_file(workspace, id="SRV-2", delete_records=["P1004"])
        try:
            died = run([unlearn, "forget", "SRV-2.yaml", "--json"], env, cwd=workspace)
            assert served.proc.wait(timeout=60) == 137
        finally:  # the temporary Prefect server the killed service started outlives it
            stop_group(served.proc.pid)
    assert died.returncode == 1 and died.stdout == ""
    assert died.stderr.count("\n") == 1 and died.stderr.startswith("error: the unlearn service stopped during")
    (workspace / "die-at-promotion").unlink()

    # the socket file is left, nobody answers: the CLI runs the request itself, saying nothing
    # about the service, and first rolls back the release the service left
    assert (workspace / ".unlearn" / "service.sock").exists()
    capsys.readouterr()
    assert main(["forget", "SRV-2.yaml", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "completed"
    assert "recovered an interrupted run of model people: rolled back" in err and "service" not in err
    print(f"warm forget through the service: {warm_s:.2f} s")
