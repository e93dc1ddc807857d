"""The example CI workflow (.github/workflows/erasure-requests.yml), its `run:` steps executed the
way a GitHub runner executes them: each step's script written to a file and run with the shell the
runner picks (`bash -e {0}` when a step names none: no pipefail), in a git checkout after a push
of several commits.

`unlearn` and `make` are small stub scripts here: the thing under test is the workflow's shell (exit
codes through pipes, which request files get submitted), not `unlearn`, whose own behaviour the
flow tests cover. The stub records its arguments and exits as told."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unlearning.documents import parse_yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "erasure-requests.yml"
REQUEST = "id: {id}\nmodel: people\ndelete_records: [P1010]\n"

STUB_UNLEARN = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
case "$1" in
  requests) case "$3" in *refused*) echo "error: refused" >&2; exit 2;; esac; echo "recorded $3";;
  comply) echo '{"processed": 1, "failed": 1}'; exit "${STUB_COMPLY_EXIT:-0}";;
esac
"""

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                                reason="needs git and bash")


def runner_shell(step: dict, job: dict, workflow: dict) -> list[str]:
    """The command a GitHub runner runs a `run:` step's script file with (Linux)."""
    shell = (step.get("shell") or job.get("defaults", {}).get("run", {}).get("shell")
             or workflow.get("defaults", {}).get("run", {}).get("shell"))
    if shell is None:
        return ["bash", "-e"]
    if shell == "bash":
        return ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
    pytest.fail(f"shell {shell!r} is not emulated by this test")


def runs_after_failure(step: dict) -> bool:
    condition = str(step.get("if", ""))
    return "always()" in condition or "!cancelled()" in condition or "failure()" in condition


def run_workflow(checkout: Path, tmp_path: Path, comply_exit: int = 0) -> tuple[list[tuple[str, int]], list[str]]:
    """Every `run:` step of the job in order, skipping those a failure skips: [(name, exit code)]
    and the stub's recorded calls."""
    workflow = parse_yaml(WORKFLOW.read_text(), "workflow")
    job = workflow["jobs"]["comply"]
    stubs = tmp_path / "stubs"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    stubs.mkdir()
    for path, text in ((checkout / ".venv" / "bin" / "unlearn", STUB_UNLEARN), (stubs / "make", "#!/bin/sh\n")):
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log),
           "STUB_COMPLY_EXIT": str(comply_exit)}
    results, failed = [], False
    for number, step in enumerate(s for s in job["steps"] if "run" in s):
        assert "${{" not in step["run"], "expressions in a script are not evaluated by this test"
        if failed and not runs_after_failure(step):
            continue
        script = tmp_path / f"step-{number}.sh"
        script.write_text(step["run"])
        done = subprocess.run([*runner_shell(step, job, workflow), str(script)], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=60)
        results.append((step.get("name", step["run"]), done.returncode))
        failed = failed or done.returncode != 0
    calls = log.read_text().splitlines() if log.exists() else []
    return results, calls


def git(checkout: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=checkout, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})


@pytest.fixture
def pushed(tmp_path) -> Path:
    """A checkout after a push of three commits, each adding one request file (one in a
    subfolder, one JSON), on top of a commit that added an earlier request."""
    checkout = tmp_path / "checkout"
    (checkout / "requests" / "web").mkdir(parents=True)
    git(checkout, "init", "-q")
    files = ["requests/OLD-1.yaml", "requests/A-1.yaml", "requests/web/B-1.json", "requests/C-1.yml"]
    for name in files:
        path = checkout / name
        path.write_text(REQUEST.format(id=path.stem))
        git(checkout, "add", name)
        git(checkout, "commit", "-q", "-m", f"add {name}")
    return checkout


def submitted(calls: list[str]) -> set[str]:
    return {c.split()[2] for c in calls if c.startswith("requests submit ") and c.endswith("--channel ci")}


def test_every_request_file_of_a_multi_commit_push_is_submitted(pushed, tmp_path):
    results, calls = run_workflow(pushed, tmp_path)
    assert all(code == 0 for _, code in results), results
    assert submitted(calls) == {"requests/OLD-1.yaml", "requests/A-1.yaml", "requests/web/B-1.json",
                                "requests/C-1.yml"}
    assert calls[-1] == "comply --json"


def test_a_request_failing_verification_fails_the_build(pushed, tmp_path):
    results, calls = run_workflow(pushed, tmp_path, comply_exit=1)
    name, code = results[-1]
    assert "pending" in name and code != 0, results
    assert (pushed / "comply.json").read_text().strip() == '{"processed": 1, "failed": 1}'


def test_a_refused_request_file_fails_the_build_after_the_others_are_submitted(pushed, tmp_path):
    (pushed / "requests" / "refused.yaml").write_text(REQUEST.format(id="R-1"))
    git(pushed, "add", "requests/refused.yaml")
    git(pushed, "commit", "-q", "-m", "a request submit refuses")
    results, calls = run_workflow(pushed, tmp_path)
    codes = dict(results)
    assert codes["Submit every request file the ledger does not hold yet"] != 0
    assert {"requests/A-1.yaml", "requests/web/B-1.json", "requests/C-1.yml"} <= submitted(calls)
    assert codes["Process every pending request"] == 0  # the valid requests are still processed
