"""Every bad-input case of the CLI: one line on stderr naming the problem, exit code 2, and
nothing written — no data version, no model version, no run, no file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from tests.flows.conftest import synthetic_people, trained_people_project
from tests.unit.test_errors import SECRETS  # one of each kind the detectors know: (value, detector)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """A workspace with the `people` dataset and a trained model `people` (v1, production)."""
    with trained_people_project(tmp_path_factory, "ws") as root:
        yield root


def snapshot(root: Path) -> dict:
    """Every file under the workspace (but the Prefect home) with its size and modification time,
    plus what the MLflow store holds."""
    files = {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in root.rglob("*") if p.is_file() and ".prefect" not in p.parts and p.name != "mlflow.db"}
    from mlflow import MlflowClient

    from tasks.tracking import connect
    connect(root)
    client = MlflowClient()
    versions = [(v.name, v.version) for v in client.search_model_versions()]
    runs = len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]))
    return {"files": files, "versions": versions, "runs": runs}


def run_bad(trained: Path, capsys, argv: list[str], expect: str) -> str:
    os.chdir(trained)
    before = snapshot(trained)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    message = err.strip()
    assert "\n" not in message, message
    assert message.startswith("error: ")
    assert expect.lower() in message.lower(), message
    assert snapshot(trained) == before
    return message


REQUESTS = {
    "malformed_yaml": ("req.yaml", "id: R1\nmodel: people\ndelete_records: [P1001, \n", "yaml"),
    "malformed_json": ("req.json", '{"id": "R1", "model": "people", "delete_records": [', "json"),
    "unknown_field": ("req.yaml", "id: R1\nmodel: people\ndelete_records: [P1001]\nforget_everything: true\n",
                      "forget_everything"),
    "unknown_record": ("req.yaml", "id: R1\nmodel: people\ndelete_records: [P1001, NOPE-7]\n", "NOPE-7"),
    "unknown_feature": ("req.yaml", "id: R1\nmodel: people\nrevoke_features: [salary]\n", "salary"),
    "label_outside_set": ("req.yaml", "id: R1\nmodel: people\nfix_labels: {P1001: maybe}\n", "outside the label set"),
    "unknown_model": ("req.yaml", "id: R1\nmodel: nobody\ndelete_records: [P1001]\n", "nobody"),
    "empty_request": ("req.yaml", "id: R1\nmodel: people\n", "asks for nothing"),
    "unknown_method": ("req.yaml", "id: R1\nmodel: people\ndelete_records: [P1001]\nmethod: magic\n", "magic"),
}


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_bad_request(trained, capsys, tmp_path, case):
    name, text, expect = REQUESTS[case]
    path = tmp_path / name
    path.write_text(text)
    run_bad(trained, capsys, ["forget", str(path)], expect)


def test_missing_request_file(trained, capsys, tmp_path):
    run_bad(trained, capsys, ["forget", str(tmp_path / "absent.yaml")], "absent.yaml")


def _table_file(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_data_missing_target(trained, capsys, tmp_path):
    path = _table_file(tmp_path, synthetic_people().drop(columns=["label"]))
    run_bad(trained, capsys, ["data", "add", "more", "--file", str(path), "--target", "label"], "label")


def test_data_missing_id(trained, capsys, tmp_path):
    path = _table_file(tmp_path, synthetic_people())
    run_bad(trained, capsys, ["data", "add", "more", "--file", str(path), "--target", "label", "--id", "pid"], "pid")


def test_data_duplicate_ids(trained, capsys, tmp_path):
    frame = synthetic_people()
    frame.loc[5, "person"] = frame.loc[4, "person"]
    path = _table_file(tmp_path, frame)
    run_bad(trained, capsys, ["data", "add", "more", "--file", str(path), "--target", "label", "--id", "person"],
            "duplicate")


def test_data_feature_that_cannot_be_encoded(trained, capsys, tmp_path):
    frame = synthetic_people()
    frame["note"] = [f"free text {i}" for i in range(len(frame))]
    path = _table_file(tmp_path, frame)
    run_bad(trained, capsys, ["data", "add", "more", "--file", str(path), "--target", "label", "--id", "person"],
            "note")


def test_a_dataset_name_too_long_for_its_folder_is_one_line(trained, capsys, tmp_path):
    """A name over MAX_NAME characters: refused by its length before anything is written (any
    length was accepted, up to what the file system's 255-byte file names refuse)."""
    from unlearning.storage import MAX_NAME

    path = _table_file(tmp_path, synthetic_people())
    name = "p" * (MAX_NAME + 1)
    run_bad(trained, capsys, ["data", "add", name, "--file", str(path), "--target", "label", "--id", "person"],
            f"a dataset name of {MAX_NAME + 1} characters is too long; use at most {MAX_NAME}")


def test_a_model_name_mlflow_or_the_file_system_would_refuse_is_one_line(trained, capsys, tmp_path):
    """`train --model ../evil` got MLflow's traceback (exit 1) after the run was recorded, `..` the
    same, and any length was accepted (the name is a folder under .unlearn/): one line, exit 2,
    nothing written; `model import NAME` alike."""
    from unlearning.storage import MAX_NAME

    for name in ("../evil", "..", "a:b", "m" * (MAX_NAME + 1), "_under"):
        run_bad(trained, capsys, ["train", "people", "--model", name], "is not allowed; use letters, digits")
    run_bad(trained, capsys, ["model", "import", "../evil", "--from-pretrained", str(tmp_path), "--dataset", "people"],
            "model name '../evil' is not allowed")


def test_a_table_file_over_the_limit_is_one_line(trained, capsys, tmp_path):
    from unlearning.tabular.files import MAX_FILE_BYTES

    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:  # sparse: the size without the disk
        handle.write(synthetic_people().to_csv(index=False).encode())
        handle.truncate(MAX_FILE_BYTES + 1)
    run_bad(trained, capsys, ["data", "add", "more", "--file", str(path), "--target", "label", "--id", "person"],
            f"'huge.csv' is {MAX_FILE_BYTES + 1:,} bytes, more than the {MAX_FILE_BYTES:,}")


def test_unknown_builtin(trained, capsys):
    run_bad(trained, capsys, ["data", "add", "nosuchset"], "nosuchset")


def test_train_unknown_dataset(trained, capsys):
    run_bad(trained, capsys, ["train", "nosuchset"], "nosuchset")


@pytest.mark.parametrize("argv, env, expect", [
    (["comply", "--task-runner", "gpu"], {}, "unknown task runner 'gpu'"),
    (["comply"], {"UNLEARN_TASK_RUNNER": "spark"}, "unknown task runner 'spark'"),
    (["comply", "--task-runner", "inline", "--dask-address", "tcp://127.0.0.1:8786"], {}, "needs --task-runner dask"),
    (["comply", "--task-runner", "threads"], {}, "unknown task runner 'threads'"),
    (["comply", "--task-runner", "dask", "--workers", "0"], {}, "--workers must be a whole number"),
    (["comply", "--task-runner", "dask", "--workers", "two"], {}, "--workers must be a whole number"),
    (["serve", "--task-runner", "gpu"], {}, "unknown task runner 'gpu'"),
    (["serve", "--verify", "sometimes"], {}, "sometimes"),
    (["serve", "--audit-min-requests", "0"], {}, "--audit-min-requests must be a whole number"),
    (["serve", "--audit-min-requests", "30", "--audit-max-age", "-1"], {}, "--audit-max-age must be a positive"),
], ids=["unknown runner", "unknown runner in the environment", "address without dask", "no thread pool", "zero workers",
        "workers not a number", "serve: unknown runner", "serve: unknown verify mode", "serve: zero requests",
        "serve: negative age"])
def test_comply_bad_task_runner(trained, capsys, monkeypatch, argv, env, expect):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_bad(trained, capsys, argv, expect)


@pytest.mark.parametrize("argv, expect", [(["serve", "--cron", "nightly"], "--cron"),
                                          (["serve", "--audit-cron", "61 * * * *"], "--audit-cron")],
                         ids=["not a cron", "minute 61"])
def test_serve_bad_cron(trained, capsys, argv, expect):
    run_bad(trained, capsys, argv, expect)


# --- an unknown name that holds a secret is refused without printing it ----------------------------
REQUEST_SITES = {  # request field → what the message must still name
    "revoke_features": ("id: R1\nmodel: people\nrevoke_features: [{v}]\n", "revoke_features"),
    "model": ("id: R1\nmodel: {v}\ndelete_records: [P1001]\n", "model"),
    "delete_records": ("id: R1\nmodel: people\ndelete_records: [{v}]\n", "id column 'person'"),
    "method": ("id: R1\nmodel: people\ndelete_records: [P1001]\nmethod: {v}\n", "method"),
}


def run_bad_secret(trained: Path, capsys, argv: list[str], value: str, detector: str, expect: str) -> None:
    """Refused as any bad input (exit 2, one line naming `expect`, nothing written), the value shown masked."""
    from unlearning.detect import mask

    message = run_bad(trained, capsys, argv, expect)
    assert value not in message and mask(value, detector) in message, message


@pytest.mark.parametrize("site", sorted(REQUEST_SITES))
@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_a_secret_named_in_a_request_is_not_printed(trained, capsys, tmp_path, kind, site):
    """`unlearn forget` with `revoke_features: ["4111 1111 1111 1111"]` printed the card number whole."""
    value, detector = SECRETS[kind]
    template, expect = REQUEST_SITES[site]
    path = tmp_path / "req.yaml"
    path.write_text(template.format(v=json.dumps(value)))
    run_bad_secret(trained, capsys, ["forget", str(path)], value, detector, expect)


OPTION_SITES = {  # the command line, the option's value left to fill in, what the message must still name
    "train --model": (["train", "people", "--model", "{v}"], "model name"),
    "data add NAME": (["data", "add", "{v}", "--file", "{table}", "--target", "label", "--id", "person"], "dataset name"),
    "forget --method": (["forget", "{request}", "--method", "{v}"], "method"),
    "data add --target": (["data", "add", "more", "--file", "{table}", "--target", "{v}"], "target column"),
    "data add --id": (["data", "add", "more", "--file", "{table}", "--target", "label", "--id", "{v}"], "id column"),
}


@pytest.mark.parametrize("site", sorted(OPTION_SITES))
@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_a_secret_given_as_a_name_on_the_command_line_is_not_printed(trained, capsys, tmp_path, kind, site):
    value, detector = SECRETS[kind]
    argv, expect = OPTION_SITES[site]
    request = tmp_path / "req.yaml"
    request.write_text("id: R1\nmodel: people\ndelete_records: [P1001]\n")
    table = _table_file(tmp_path, synthetic_people())
    argv = [a.format(v=value, request=request, table=table) for a in argv]
    run_bad_secret(trained, capsys, argv, value, detector, expect)


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_argparse_does_not_print_a_secret_given_as_a_choice(trained, capsys, kind):
    """`unlearn demo --scenario 4111…`: argparse's `invalid choice: '…'` quoted it whole."""
    from unlearning.detect import mask

    value, detector = SECRETS[kind]
    os.chdir(trained)
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["demo", "--scenario", value])
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and out == ""
    assert "argument --scenario: invalid choice" in err and "choose from" in err, err
    assert value not in err and mask(value, detector) in err, err


@pytest.mark.parametrize("word", ["order", "invoice", "ref"])
@pytest.mark.parametrize("kind", ["card", "phone"])
def test_a_word_inside_a_requested_name_does_not_excuse_the_number_in_it(trained, capsys, tmp_path, kind, word):
    """`revoke_features: ["order +44 20 7946 0958"]` printed the phone number whole: "order" inside the
    same quote was read as the message naming an order number."""
    value, detector = SECRETS[kind]
    path = tmp_path / "req.yaml"
    path.write_text(REQUEST_SITES["revoke_features"][0].format(v=json.dumps(f"{word} {value}")))
    run_bad_secret(trained, capsys, ["forget", str(path)], value, detector, f"unknown feature '{word} ")


PATH_OPTIONS = {  # a path given on the command line, the value inside it, what the message must still name
    "data add --file": (["data", "add", "more", "--file", "/ckpt/{v}/x.csv", "--target", "label"], "not found"),
    "scan PATH": (["scan", "/data/{v}.txt"], "is neither a dataset under data/ nor a file"),
}


@pytest.mark.parametrize("site", sorted(PATH_OPTIONS))
@pytest.mark.parametrize("kind", ["card", "card, no spaces", "phone"])
def test_a_secret_in_a_path_on_the_command_line_is_not_printed(trained, capsys, kind, site):
    """`--file /ckpt/4111111111111111/x.csv` printed the number whole: right after a '/', a number is a
    file name to the detectors."""
    value, detector = SECRETS[kind]
    argv, expect = PATH_OPTIONS[site]
    run_bad_secret(trained, capsys, [a.format(v=value) for a in argv], value, detector, expect)


@pytest.mark.parametrize("kind", ["card", "card, no spaces", "phone"])
def test_argparse_does_not_print_a_secret_in_an_unknown_path_argument(trained, capsys, kind):
    """`unlearn train people --base /ckpt/4111…`: argparse's `unrecognized arguments:` printed the path whole."""
    from unlearning.detect import mask

    value, detector = SECRETS[kind]
    os.chdir(trained)
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["train", "people", "--base", f"/ckpt/{value}"])
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and out == ""
    assert "unrecognized arguments: --base /ckpt/" in err
    assert value not in err and mask(value, detector) in err, err


@pytest.mark.parametrize("argv, expect", [
    (["train", "people", "--seed", "1e3"], "argument --seed: '1e3' is not a whole number; see `unlearn train --help`"),
    (["train", "people", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["train"], "the following arguments are required: dataset; see `unlearn train --help`"),
    (["data", "add"], "the following arguments are required: name; see `unlearn data add --help`"),
    (["demo", "--scenario", "x"], "argument --scenario: invalid choice: 'x'"),
    # wrote data/shakespeare, data.dvc and the DVC cache, then failed naming `--steps`, under Prefect's
    # "--- Error logging to API ---"
    (["demo", "--train-steps", "-4"], "argument --train-steps: '-4' is not a whole number of at least 1; see "
                                      "`unlearn demo --help`"),
    (["demo", "--train-steps", "0"], "argument --train-steps: '0' is not a whole number of at least 1"),
])
def test_a_bad_option_value_is_one_line_saying_where_the_usage_is(trained, capsys, argv, expect):
    """argparse printed its usage (6–9 lines) above the problem (red team, session 21)."""
    os.chdir(trained)
    before = snapshot(trained)
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "usage" not in err, err
    assert expect in err, err
    assert snapshot(trained) == before
