"""The temporary Prefect server a command starts (flows.settings.PrefectServer) ends with the
command, even when the command is killed with SIGKILL and runs no atexit handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTS_A_SERVER = """
import sys, time
from pathlib import Path
from flows.settings import start_prefect_server_early
server = start_prefect_server_early(Path(sys.argv[1]))
server.wait_ready()
print(server.process.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_command_killed_with_sigkill_leaves_no_prefect_server_behind(tmp_path):
    (tmp_path / ".prefect").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = subprocess.Popen([sys.executable, "-c", STARTS_A_SERVER, str(tmp_path)], stdout=subprocess.PIPE,
                               env={**env, "PREFECT_HOME": str(tmp_path / ".prefect")}, text=True)
    try:
        server_pid = int(command.stdout.readline())  # printed once the server answered its health check
        assert alive(server_pid)
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server_pid), "the temporary Prefect server outlived the command that started it"
    finally:
        command.kill()
        if "server_pid" in locals() and alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


FAILS_A_FLOW_RUN = """
import sys
from pathlib import Path
from flows.settings import configure_environment, flow_run_settings, keep_run_failures_off_console, \\
    start_prefect_server_early
root = Path(sys.argv[1])
configure_environment(root)
start_prefect_server_early(root)
from prefect import flow
from flows.cli import exit_without_teardown
keep_run_failures_off_console()

@flow
def fails():
    raise ValueError("the input is wrong")

try:
    with flow_run_settings():
        fails()
except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
exit_without_teardown(2)
"""


def test_a_flow_run_that_fails_in_a_command_leaves_only_the_commands_own_line(tmp_path):
    """A failed flow run's log record goes to the temporary server in the background; the command
    stopped that server at exit before the record was sent, and Prefect printed '--- Error logging
    to API --- All connection attempts failed' under the command's one-line error (seen with
    `unlearn audit` on an altered escrow, or on an imported model it cannot retrain)."""
    (tmp_path / ".prefect").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", FAILS_A_FLOW_RUN, str(tmp_path)], capture_output=True, text=True,
                          env={**env, "PREFECT_HOME": str(tmp_path / ".prefect")}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: the input is wrong"], done.stderr
