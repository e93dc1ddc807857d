"""A table request loads only what tables need (issue 14): a real `unlearn forget` of a table model,
in a process of its own, imports nothing of the text or image stacks — no image model code, no
language model, no membership-inference metrics, no scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import trained_people_project, write_request

# Of unlearning.images only the package (its names load lazily) and the thresholds the forget
# flow's parameters name (unlearning.images.verify: pydantic settings, no torch) may be loaded.
ALLOWED_IMAGE_MODULES = {"unlearning.images", "unlearning.images.verify"}
FORBIDDEN_PREFIXES = ("unlearning.text", "unlearning.metrics", "sklearn", "matplotlib", "tasks.kinds.text",
                      "tasks.kinds.images", "unlearning.builtin")

CHILD = """
import json, sys
from flows.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    with trained_people_project(tmp_path_factory, "cold") as root:
        yield root


def modules_of_a_cli_call(root: Path, argv: list[str]) -> tuple[int, set[str], str]:
    """Run `unlearn ARGV` in a fresh interpreter in `root` (against the session's Prefect server);
    returns its exit code, every module it had imported at the end, and its stderr."""
    from prefect.settings import PREFECT_API_URL

    listing = root / "modules.json"
    env = {**os.environ, "UNLEARN_ROOT": str(root), "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, "-c", CHILD, str(listing), *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    modules = set(json.loads(listing.read_text())) if listing.exists() else set()
    listing.unlink(missing_ok=True)
    return done.returncode, modules, done.stderr


def not_for_tables(modules: set[str]) -> list[str]:
    images = {m for m in modules if m.startswith("unlearning.images")} - ALLOWED_IMAGE_MODULES
    return sorted(images | {m for m in modules if m.startswith(FORBIDDEN_PREFIXES)})


def test_a_table_forget_imports_nothing_of_the_text_or_image_stacks(trained):
    request = write_request(trained, "r1.yaml", "id: COLD-1\nmodel: people\ndelete_records: [P1003]\n")
    code, modules, err = modules_of_a_cli_call(trained, ["forget", str(request), "--json"])
    assert code == 0, err
    assert "tasks.kinds.tabular" in modules and "flows.forget" in modules  # the request really ran
    assert not not_for_tables(modules), f"a table request imported {not_for_tables(modules)}"


def test_the_text_and_image_kinds_still_load_when_asked_for():
    from tasks.kinds import IMAGES, KINDS, TABULAR, TEXT, kind_named

    assert [k.name for k in KINDS] == ["table", "text", "images"]
    assert (TABULAR, TEXT, IMAGES) == tuple(kind_named(n) for n in ("table", "text", "images"))


def test_the_marker_files_named_in_tasks_formats_are_the_libraries():
    """tasks.formats recognises text and image folders without importing their libraries, by the
    file names those libraries write."""
    from tasks import formats
    from unlearning.images import bundle, data as image_data
    from unlearning.text import data as text_data, lm

    assert formats.SCHEMA_FILE == text_data.SCHEMA_FILE == image_data.SCHEMA_FILE
    assert formats.TEXT.model_marker == lm.META_FILE
    assert formats.IMAGES.model_marker == bundle.META_FILE


def servers_on(home: Path) -> list[int]:
    """Processes (temporary Prefect servers) started with PREFECT_HOME=`home`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and f"PREFECT_HOME={home}".encode() in environ:
            found.append(int(proc.name))
    return found


def flow_runs(home: Path) -> list[tuple[str, str]]:
    import sqlite3

    if not (home / "prefect.db").exists():
        return []
    with sqlite3.connect(home / "prefect.db") as db:
        return db.execute("select name, state_name from flow_run order by created").fetchall()


def test_a_cold_forget_starts_its_own_server_early_records_its_run_and_stops_it(trained):
    """Without PREFECT_API_URL the command starts the project's temporary server itself, first
    (flows.settings.PrefectServer): the run is in the project's Prefect database as before, bad
    input still records no run (exit 2), and no server outlives the command."""
    home = trained / ".prefect"
    home.mkdir(exist_ok=True)  # a project that has recorded flow runs before
    env = {**os.environ, "UNLEARN_ROOT": str(trained), "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    bad = write_request(trained, "bad.yaml", "id: COLD-BAD\nmodel: people\ndelete_records: [NOPE]\n")
    good = write_request(trained, "good.yaml", "id: COLD-2\nmodel: people\ndelete_records: [P1004]\n")
    cli = [sys.executable, "-m", "flows.cli", "forget"]
    refused = subprocess.run([*cli, str(bad)], cwd=trained, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr
    assert flow_runs(home) == []
    done = subprocess.run([*cli, str(good), "--json"], cwd=trained, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["request_id"] == "COLD-2"  # stdout: exactly the one JSON object
    assert flow_runs(home) == [("forget COLD-2", "Completed")]
    assert servers_on(home) == []
