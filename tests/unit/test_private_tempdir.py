"""Every command's temp files live in a private folder of its own under .unlearn/tmp, removed at its
end; a process killed before that leaves it behind and the next one removes it — never the folder
of a process still running."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flows.settings import TEMP_DIR, private_tempdir

REPO = Path(__file__).resolve().parents[2]

# Holds its temp folder with a staged file in it, then dies as SIGKILL leaves a process (no
# `finally`), or — with "wait" — stays alive until its stdin closes.
HOLDER = """
import os, sys, tempfile
from flows.settings import private_tempdir
with private_tempdir(sys.argv[1]) as own:
    with open(os.path.join(tempfile.mkdtemp(), "bundle.json"), "w") as staged:
        staged.write("{}")
    print(own, flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()
    else:
        os._exit(137)
"""


def holder(root: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(root), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def test_a_command_stages_in_its_own_private_folder_and_removes_it(tmp_path):
    (tmp_path / ".unlearn").mkdir()
    before = tempfile.gettempdir()
    with private_tempdir(tmp_path) as own:
        assert own.parent == tmp_path / TEMP_DIR and (own.parent.stat().st_mode & 0o777) == 0o700
        assert tempfile.gettempdir() == str(own) and os.environ["TMPDIR"] == str(own)
        staged = Path(tempfile.mkdtemp()) / "bundle.json"
        staged.write_text("{}")
    assert tempfile.gettempdir() == before and os.environ.get("TMPDIR") != str(own)
    assert list((tmp_path / ".unlearn").rglob("*")) == []


def test_a_killed_process_s_temp_files_are_removed_by_the_next_command(tmp_path):
    killed = holder(tmp_path, "die")
    left = Path(killed.communicate(timeout=60)[0].strip())
    assert killed.returncode == 137 and list(left.rglob("bundle.json"))
    running = holder(tmp_path, "wait")
    alive = Path(running.stdout.readline().strip())
    try:
        with private_tempdir(tmp_path):
            assert not left.exists()
            assert list(alive.rglob("bundle.json"))  # its owner still runs: left alone
    finally:
        running.communicate("", timeout=60)
    assert not alive.exists()  # removed by its owner at its end


def test_outside_a_project_nothing_is_left_behind(tmp_path):
    with private_tempdir(tmp_path) as own:
        assert own is not None
    assert list(tmp_path.iterdir()) == []


def test_where_the_project_cannot_be_written_the_system_temp_folder_stays():
    before = tempfile.gettempdir()
    not_a_folder = Path(before) / f"unwritable-{os.getpid()}"
    not_a_folder.write_text("")
    try:
        with private_tempdir(not_a_folder) as own:
            assert own is None and tempfile.gettempdir() == before
    finally:
        not_a_folder.unlink()
