"""Nothing of an erased record survives anywhere the pipeline writes (issue 11, item 1).

A people table whose categorical column `note` holds a fake secret in five rows (an e-mail, an
AWS key, a password, a card number, an IBAN). Three records are erased with `forget`, the other two
with `requests submit` + `comply` — whose first run is SIGKILLed while MLflow stages the new
model — and the superseded versions are purged. Afterwards no secret is found, raw or encoded
(hex, base64, URL-encoded, UTF-16), in the workspace (MLflow store and artifacts, `.unlearn/`,
data/, the DVC cache and remote, logs), the Prefect database, the temp folders or the console."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, quote_plus

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.cli import main
from tasks import dvc, ledger, tracking
from tests.flows.conftest import synthetic_people
from tests.flows.test_faults import run_killed
from tests.flows.test_pipeline import cache_objects, request_file
from tests.flows.test_text_pipeline import prefect_database_bytes

SECRETS = {
    "P1010": "dana.whitfield@example.org",
    "P1011": "AKIAQ3EGRZ7T5XK2LW9M",
    "P1012": "password=Tr0ub4dor&3-hunter2",
    "P1013": "4539 1488 0343 6467",
    "P1014": "DE89 3704 0044 0532 0130 00",
}
BY_FORGET, BY_COMPLY = ["P1010", "P1011", "P1012"], ["P1013", "P1014"]

# Killed (SIGKILL-like: no `finally` runs) while MLflow stages the corrected model's files.
KILLED_WHILE_LOGGING = """
import os, sys
from pathlib import Path
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
staged = LocalArtifactRepository.log_artifacts
def killed(self, local_dir, artifact_path=None):
    if any(Path(local_dir).rglob("bundle.json")):
        os._exit(137)
    return staged(self, local_dir, artifact_path)
LocalArtifactRepository.log_artifacts = killed
from flows.cli import main
sys.exit(main(["comply"]))
"""


def needles(value: str) -> dict[str, bytes]:
    """`value` as it could be written: raw, hex, base64 (every alignment), URL-encoded, UTF-16."""
    raw = value.encode()
    forms = {"raw": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode(),
             "url": quote(value, safe="").encode(), "url+": quote_plus(value).encode(),
             "utf-16-le": value.encode("utf-16-le"), "utf-16-be": value.encode("utf-16-be")}
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 12:
        forms["digits"] = digits.encode()
    for offset in range(3):  # the characters that only the value's own bytes determine
        first, last = -(-8 * offset // 6), (8 * offset + 8 * len(raw)) // 6
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            forms[f"{name}@{offset}"] = encode(b"\0" * offset + raw)[first:last]
    return forms


def found_in(blob: bytes) -> list[str]:
    """The erased records whose secret `blob` holds, each with the first form found."""
    return [f"{record} ({form})" for record, value in SECRETS.items()
            for form in [next((f for f, n in needles(value).items() if n in blob), None)] if form]


def files_holding_secrets(folder: Path) -> dict[str, list[str]]:
    hits = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found = found_in(path.read_bytes())
            if found:
                hits[str(path.relative_to(folder))] = found
    return hits


def temp_folders_of_other_processes(workspace: Path) -> list[Path]:
    """The per-process temp folders under .unlearn/tmp (named `<pid>.*`) not of this process."""
    folder = workspace / ".unlearn" / "tmp"
    return [p for p in folder.glob("*") if not p.name.startswith(f"{os.getpid()}.")] if folder.exists() else []


@pytest.fixture(autouse=True)
def purge_at_once(monkeypatch):
    monkeypatch.delenv("UNLEARN_KEEP_SUPERSEDED_DAYS", raising=False)


@pytest.fixture
def system_tmp(tmp_path_factory, monkeypatch) -> Path:
    """The temp folder this test's processes are given (the system one, as far as they know)."""
    folder = tmp_path_factory.mktemp("system-tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


class Console:
    """Runs CLI commands in-process and keeps everything they print."""

    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def run(self, *argv: str) -> tuple[int, dict | None]:
        self.read()
        code = main([*argv, "--json"] if argv[0] in ("train", "forget", "requests", "comply") else list(argv))
        out = self.read()
        return code, (json.loads(out) if out.startswith("{") else None)

    def read(self) -> str:
        captured = self.capsys.readouterr()
        self.text += captured.out + captured.err
        return captured.out


def test_an_erased_value_survives_nowhere(workspace, system_tmp, tmp_path_factory, capsys):
    console = Console(capsys)
    frame = synthetic_people()
    frame.insert(4, "note", frame["person"].map(SECRETS).fillna(pd.Series(["none", "vip", "ok"] * 200)))
    source = tmp_path_factory.mktemp("source") / "people.csv"  # the user's file, not the pipeline's
    frame.to_csv(source, index=False)
    assert console.run("data", "add", "people", "--file", str(source), "--target", "label", "--id", "person")[0] == 0
    assert console.run("train", "people")[0] == 0
    # the search finds what is there: every secret is in the data before the erasure
    assert {h.split(" ")[0] for h in files_holding_secrets(workspace / "data")["people/records.csv"]} == set(SECRETS)
    old_objects = cache_objects(workspace, dvc.data_version(workspace))

    code, out = console.run("forget", str(request_file(workspace, id="S-0", delete_records=BY_FORGET)))
    assert code == 0, out
    assert console.run("requests", "submit", str(request_file(workspace, id="S-1", delete_records=BY_COMPLY)))[0] == 0
    run_killed(workspace, KILLED_WHILE_LOGGING)
    staged = [*system_tmp.rglob("bundle.json"), *(workspace / ".unlearn" / "tmp").rglob("bundle.json")]
    assert staged  # the kill left the model files MLflow was staging
    code, out = console.run("comply")
    assert code == 0, out
    assert [r["status"] for r in out["requests"]] == ["completed"] and ledger.show(workspace, "S-1").status == "completed"

    # every superseded version and data version is purged: production alone holds a model
    tracking.connect(workspace)
    production = tracking.production_alias("people")
    versions = MlflowClient().search_model_versions("name = 'people'")
    assert all("purged" in v.tags for v in versions if str(v.version) != production)
    kept = {p.name for p in cache_objects(workspace, dvc.data_version(workspace))}
    assert not any(p.exists() for p in old_objects if p.name not in kept)
    # production still serves rows with known, erased and unseen notes
    served = mlflow.pyfunc.load_model("models:/people@production").predict(frame.drop(columns=["label"]))
    assert set(served) <= {"yes", "no"} and len(served) == len(frame)

    assert console.run("requests", "list")[0] == 0 and console.run("ledger", "verify")[0] == 0
    console.read()
    leaks = {"workspace": files_holding_secrets(workspace), "prefect database": found_in(prefect_database_bytes()),
             "temp folder": files_holding_secrets(system_tmp), "console": found_in(console.text.encode())}
    found = {where: hits for where, hits in leaks.items() if hits}
    assert found == {}, json.dumps(found, indent=1)
    assert temp_folders_of_other_processes(workspace) == []  # the killed run's were removed by the next command
