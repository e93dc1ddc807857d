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
