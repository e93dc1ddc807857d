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

from flows.cli import main
from tests.flows.conftest import project_root, synthetic_people, write_request

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
    root = tmp_path_factory.mktemp("cold")
    with project_root(root):
        csv = root / "people.csv"
        synthetic_people().to_csv(csv, index=False)
        assert main(["data", "add", "people", "--file", str(csv), "--target", "label", "--id", "person"]) == 0
        assert main(["train", "people"]) == 0
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
