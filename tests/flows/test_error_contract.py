"""The error contract where the machine, not the input, is at fault: an MLflow tracking server that
cannot be reached fails fast in one line naming MLFLOW_TRACKING_URI; a second `comply` while one
runs stops in one line. No traceback reaches the console."""

from __future__ import annotations

import socket
import time

import pytest

from flows.cli import main
from flows.comply import comply_lock


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


@pytest.mark.parametrize("server", ["closed_port", "silent_listener"])
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
    with comply_lock(workspace):
        capsys.readouterr()
        assert main(["comply"]) == 1
        captured = capsys.readouterr()
    (line,) = (captured.out + captured.err).strip().splitlines()
    assert "another `unlearn comply` run is in progress" in line


def test_a_forget_while_comply_runs_stops_in_one_line(workspace, people_csv, capsys):
    from tests.flows.test_pipeline import add_and_train, request_file

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="BUSY-1", delete_records=["P1003"])
    with comply_lock(workspace):
        capsys.readouterr()
        assert main(["forget", str(path)]) == 1
        captured = capsys.readouterr()
    (line,) = (captured.out + captured.err).strip().splitlines()
    assert "another `unlearn comply` run is in progress" in line
