"""The error contract where the machine, not the input, is at fault: an MLflow tracking server that
cannot be reached fails fast in one line naming MLFLOW_TRACKING_URI; a second `comply` while one
runs stops in one line. No traceback reaches the console."""

from __future__ import annotations

import socket
import time

import pytest

from flows.cli import main
from tasks.release import project_lock


@pytest.fixture
def silent_listener():
    """A port that accepts connections (the kernel completes the handshake) but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connections are refused
    return f"http://user:secret-pw@127.0.0.1:{port}"


@pytest.fixture
def closed_port_token(closed_port):
    """A token in the URI's query (a proxy's credentials): it was echoed whole."""
    return closed_port.replace("user:secret-pw@", "") + "/?token=secret-pw"


@pytest.mark.parametrize("server", ["closed_port", "closed_port_token", "silent_listener"])
def test_an_unreachable_tracking_server_fails_fast_in_one_line(workspace, capsys, monkeypatch, request, server):
    uri = request.getfixturevalue(server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("UNLEARN_TRACKING_URI", uri)
    capsys.readouterr()
    started = time.monotonic()
    code = main(["train", "people"])
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    (line,) = (captured.out + captured.err).strip().splitlines()
    assert code == 2 and elapsed < 30, (code, elapsed)
    assert line.startswith("error: ") and "MLFLOW_TRACKING_URI=http://127.0.0.1:" in line
    assert "secret-pw" not in line  # credentials in the URI are not echoed
    assert not (workspace / "mlflow").exists()


def test_a_second_comply_run_stops_in_one_line_without_a_traceback(workspace, capsys):
    with project_lock(workspace, "comply"):
        capsys.readouterr()
        assert main(["comply"]) == 1
        captured = capsys.readouterr()
    (line,) = (captured.out + captured.err).strip().splitlines()
    assert "another `unlearn comply` run is in progress" in line


def test_a_forget_while_comply_runs_stops_in_one_line(workspace, people_csv, capsys):
    from tests.flows.test_pipeline import add_and_train, request_file

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="BUSY-1", delete_records=["P1003"])
    with project_lock(workspace, "comply"):
        capsys.readouterr()
        assert main(["forget", str(path)]) == 1
        captured = capsys.readouterr()
    (line,) = (captured.out + captured.err).strip().splitlines()
    assert "another `unlearn comply` run is in progress" in line


def test_data_train_and_retire_wait_for_no_release_they_could_break(workspace, people_csv, capsys):
    """`data add --replace`, `train` and `model retire` change what a running forget/comply release
    reads or promotes: while one holds the project lock they stop in one line, changing nothing."""
    from tests.flows.test_pipeline import add_and_train

    add_and_train(people_csv, capsys)
    capsys.readouterr()
    assert main(["comply"]) == 0  # a project where comply has run: its lock file exists
    commands = [["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person",
                 "--replace"], ["train", "people"], ["model", "retire", "people"]]
    for argv in commands:
        before = {p: p.stat().st_mtime_ns for p in (workspace / "data").rglob("*") if p.is_file()}
        with project_lock(workspace, "comply"):
            capsys.readouterr()
            assert main(argv) == 1, argv
            captured = capsys.readouterr()
        (line,) = (captured.out + captured.err).strip().splitlines()
        assert "another `unlearn comply` run is in progress" in line, argv
        assert {p: p.stat().st_mtime_ns for p in (workspace / "data").rglob("*") if p.is_file()} == before
    capsys.readouterr()
    assert main(["model", "retire", "people", "--json"]) == 0  # production was left as it was


def test_a_model_with_open_requests_is_not_retired(workspace, people_csv, capsys):
    """Retiring it would leave the request failing on every comply and its records in the data."""
    from tests.flows.test_pipeline import add_and_train, request_file

    add_and_train(people_csv, capsys)
    assert main(["requests", "submit", str(request_file(workspace, id="OPEN-1", delete_records=["P1003"]))]) == 0
    capsys.readouterr()
    assert main(["model", "retire", "people"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "open erasure requests (OPEN-1)" in line and "unlearn comply" in line
    assert main(["comply"]) == 0
    capsys.readouterr()
    assert main(["model", "retire", "people"]) == 0
