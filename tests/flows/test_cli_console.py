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


def test_refused_commands_in_an_empty_folder_leave_it_empty(tmp_path):
    """Bad input writes nothing, Prefect's home included: it makes that folder when it is first
    imported, before a command's input is refused (flows.cli.execute removes it again)."""
    env = {k: v for k, v in os.environ.items() if k not in ("UNLEARN_ROOT", "PREFECT_HOME", "UNLEARN_SERVICE")}
    env["UNLEARN_SERVICE"] = "off"
    for argv in (["train", "nosuch"], ["data", "add", "Bad"], ["comply", "--verify", "bogus"]):
        done = subprocess.run([sys.executable, "-m", "flows.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [], argv
