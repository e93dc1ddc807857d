"""`unlearn` as a shell user runs it (a real process and a real pipe): output piped into a reader
that stops early, a file scanned in a folder that is no project."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_scan_piped_into_head_ends_quietly_and_leaves_no_project_state_in_a_foreign_folder(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}: card 4111 1111 1111 1111\n" for i in range(20000)))  # ~2 MB of findings
    env = {k: v for k, v in os.environ.items() if k not in ("UNLEARN_ROOT", "PREFECT_HOME")}
    scan = subprocess.Popen([sys.executable, "-m", "flows.cli", "scan", str(notes)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = scan.stdout.readline()  # what `| head -1` reads before it exits
    scan.stdout.close()
    err = scan.stderr.read().decode()
    assert scan.wait(timeout=300) == 141, err  # as a process killed by SIGPIPE; no traceback
    assert first.startswith(b"file ") and b"20000 finding(s)" in first
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert "is not an unlearnflow project" in err
    assert sorted(p.name for p in folder.iterdir()) == []  # no .unlearn/salt, .prefect, mlflow/, .dvc
