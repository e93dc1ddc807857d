"""The CLI's fast exit (flows.cli.exit_without_teardown) must end the process with its exit code
and its output even when an idle concurrent.futures worker is alive: such workers only leave on
the interpreter's shutdown hook, which os._exit skips (an unbounded join would hang the CLI)."""

from __future__ import annotations

import subprocess
import sys

CHILD = r'''
import concurrent.futures
import flows.cli as cli
cli.EXIT_JOIN_S = 1.0
pool = concurrent.futures.ThreadPoolExecutor(1)
pool.submit(lambda: None).result()  # an idle worker thread stays behind
print("result", flush=False)
cli.exit_without_teardown(3)
'''


def test_the_fast_exit_does_not_wait_for_an_idle_executor_worker():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout.strip() == "result"
