"""Requests checked against the project before anything is written: `requests submit` refuses what
`forget` would refuse (so the append-only ledger never holds a request that can never be
processed), record ids are read exactly as written, and an erasure is refused while another
production model was trained on the same dataset. Real Prefect, MLflow and DVC; the tests of
this module share one workspace and run in file order (the last one changes the data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flows.cli import main
from tests.flows.conftest import synthetic_people

# ids YAML 1.1 would have turned into other ids: 010 → 8, 0x10 → 16, 12:30 → 750
ODD_IDS = ["010", "8", "0x10", "16", "12:30", "750"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    """The `people` table (with ids YAML 1.1 would coerce into each other) and model `people`."""
    root = tmp_path_factory.mktemp("ws")
    old_root, old_cwd = os.environ.get("UNLEARN_ROOT"), os.getcwd()
    os.environ["UNLEARN_ROOT"] = str(root)
    os.chdir(root)
    frame = synthetic_people()
    frame.loc[: len(ODD_IDS) - 1, "person"] = ODD_IDS
    frame.to_csv(root / "people.csv", index=False)
    assert main(["data", "add", "people", "--file", str(root / "people.csv"), "--target", "label", "--id",
                 "person"]) == 0
    assert main(["train", "people"]) == 0
    yield root
    os.chdir(old_cwd)
    if old_root is None:
        os.environ.pop("UNLEARN_ROOT", None)
    else:
        os.environ["UNLEARN_ROOT"] = old_root


def unlearn(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ledger_rows(capsys) -> list[dict]:
    code, out, _ = unlearn(capsys, "requests", "list", "--json")
    assert code == 0
    return json.loads(out)["requests"]


def state(root: Path) -> dict:
    """Files of the workspace (ledger and data included) and what the MLflow registry holds."""
    from mlflow import MlflowClient

    from tasks.tracking import connect

    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and ".prefect" not in p.parts and "mlflow" not in p.parts}
    connect(root)
    client = MlflowClient()
    versions = sorted((v.name, v.version, tuple(sorted(v.aliases))) for v in client.search_model_versions())
    runs = len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]))
    return {"files": files, "versions": versions, "runs": runs}


def refused(root: Path, capsys, argv: list[str], expect: str) -> str:
    before, rows = state(root), ledger_rows(capsys)
    code, out, err = unlearn(capsys, *argv)
    assert code == 2, (out, err)
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert expect.lower() in err.lower(), err
    assert ledger_rows(capsys) == rows and state(root) == before
    return err


def request_file(root: Path, name: str, text: str) -> Path:
    path = root / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


NEVER_PROCESSABLE = {
    "unknown_model": ("model: nobody\ndelete_records: [P1010]\n", "unknown model 'nobody'"),
    "unknown_record": ("model: people\ndelete_records: [P1010, NOPE-7]\n", "NOPE-7"),
    "unknown_relabelled_record": ("model: people\nfix_labels: {NOPE-8: 'yes'}\n", "NOPE-8"),
    "unknown_feature": ("model: people\nrevoke_features: [salary]\n", "unknown feature 'salary'"),
    "unknown_method": ("model: people\ndelete_records: [P1010]\nmethod: magic\n", "unknown method 'magic'"),
    "forget_class_on_a_table": ("model: people\nforget_class: 'yes'\n", "applies to image datasets"),
    "redact_on_a_table": ("model: people\nredact: {findings: all}\n", "applies to text datasets"),
    "label_outside_the_set": ("model: people\nfix_labels: {P1010: maybe}\n", "outside the label set"),
    "coerced_id_that_is_absent": ("model: people\ndelete_records: [0o17]\n", "'0o17'"),
}


@pytest.mark.parametrize("case", sorted(NEVER_PROCESSABLE))
def test_submit_refuses_a_request_that_can_never_be_processed(project, capsys, case):
    text, expect = NEVER_PROCESSABLE[case]
    path = request_file(project, f"{case}.yaml", f"id: S-{case.replace('_', '-')}\n{text}")
    refused(project, capsys, ["requests", "submit", str(path), "--channel", "email"], expect)


HOSTILE_FILES = {
    "duplicate_id.json": ('{"id": "H-1", "model": "people", "delete_records": ["P1010"], "id": "H-2"}',
                          "gives a key twice in one object (line 1, column"),  # not the key
    "duplicate_fix.yaml": ("id: H-3\nmodel: people\nfix_labels:\n  P1010: 'yes'\n  P1010: 'no'\n",
                           "gives a key twice in one mapping (line 5)"),  # not the key: a record id
    "deep.json": ('{"id": "H-4", "model": "people", "delete_records": ' + "[" * 100_000, "levels deep"),
    "deep.yaml": ("id: H-5\nmodel: people\ndelete_records: " + "[" * 100_000, "levels deep"),
    "alias.yaml": ("id: H-6\nmodel: people\ndelete_records: &a [P1010]\nfix_labels: {x: *a}\n", "alias"),
    "huge.yaml": ("id: H-7\nmodel: people\ndelete_records: [" + "P1010, " * 200_000 + "]\n", "larger than"),
    # data/../.. (a folder outside the project) was hashed while planning: a traceback
    "outside.yaml": ('id: H-8\nmodel: "../.."\ndelete_records: [P1010]\n', "model name '../..' is not allowed"),
}


@pytest.mark.parametrize("command", ["forget", "requests submit"])
@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_request_files_are_one_line_and_change_nothing(project, capsys, command, name):
    text, expect = HOSTILE_FILES[name]
    path = request_file(project, name, text)
    refused(project, capsys, [*command.split(), str(path)], expect)


def test_record_ids_are_read_as_written(project, capsys):
    """[010] is record "010" (YAML 1.1: 8), [0x10] "0x10" (16), [12:30] "12:30" (750); a relabel to
    the label a record already has is a no-op (the record keeps its label)."""
    from tasks.data import load_dataset

    labels = load_dataset(project, "people").frame["label"]
    path = request_file(project, "odd.yaml", f"id: ODD-1\nmodel: people\ndelete_records: [010, 0x10, 12:30]\n"
                                             f"fix_labels: {{8: {labels['8']}}}\n")
    code, out, err = unlearn(capsys, "requests", "submit", str(path), "--json")
    assert code == 0, err
    assert sorted(json.loads(out)["request"]["delete_records"]) == ["010", "0x10", "12:30"]
    code, out, err = unlearn(capsys, "forget", str(path), "--json")
    assert code == 0 and json.loads(out)["verified"], (out, err)
    after = load_dataset(project, "people").frame
    assert not {"010", "0x10", "12:30"} & set(after.index)
    assert {"8", "16", "750"} <= set(after.index) and after.loc["8", "label"] == labels["8"]


def test_an_erasure_must_reach_every_model_trained_on_the_dataset(project, capsys):
    """A second production model on `people`: refused at submit and at forget naming it, nothing
    written; once it is retired the request is processed and no production model is left
    trained on the erased data version."""
    from tasks import tracking

    assert main(["train", "people", "--model", "people-b"]) == 0
    path = request_file(project, "both.yaml", "id: BOTH-1\nmodel: people\ndelete_records: [P1010, P1011]\n")
    message = refused(project, capsys, ["requests", "submit", str(path)], "also used by production model(s) people-b")
    assert "unlearn model retire" in message
    refused(project, capsys, ["forget", str(path)], "people-b")
    refused(project, capsys, ["model", "retire", "nobody"], "unknown model 'nobody'")

    code, out, err = unlearn(capsys, "model", "retire", "people-b", "--json")
    assert code == 0, err
    retired = json.loads(out)
    assert retired["purge"][0]["action"] == "purged" and retired["purge"][0]["verified"]
    assert tracking.production_version("people-b") is None
    assert unlearn(capsys, "requests", "submit", str(path))[0] == 0
    code, out, err = unlearn(capsys, "forget", str(path), "--json")
    assert code == 0 and json.loads(out)["verified"], (out, err)

    from tasks.dvc import data_version

    serving = [tracking.production_version(name) for name in tracking.registered_model_names()]
    assert [(v.name, v.tags["data_version"]) for v in serving if v is not None] == [("people", data_version(project))]
