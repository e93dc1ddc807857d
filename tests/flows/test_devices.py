"""`--device` and `--precision` through the CLI: a device this machine lacks (no CUDA, no MPS here)
or a precision it cannot use is one line, exit 2, nothing written — for train, forget, comply, audit
and the demos; the resolved device ("cpu", never "auto") is what MLflow records for a language
model's training and for its forget run."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
import yaml

from flows.cli import main
from tests.flows.conftest import project_root
from tests.flows.test_cli_bad_input import run_bad, trained  # noqa: F401 — the people project fixture
from tests.flows.test_user_text import NOTES_STEPS, notes_corpus

CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """A project with a small text corpus (a planted card and password) and a tiny LM trained with
    `--device auto` (this machine: the CPU)."""
    root = tmp_path_factory.mktemp("notes")
    with project_root(root, chdir=True):
        text, _ = notes_corpus(240)
        (root / "notes.txt").write_text(text)
        assert main(["data", "add", "notes", "--file", str(root / "notes.txt")]) == 0
        assert main(["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS, "--device", "auto"]) == 0
        yield root


def device_cases(request_path: str) -> list:
    cases = [
        (["train", "people", "--device", "gpu"], "is not a device"),
        (["train", "people", "--precision", "fp8"], "is not a precision"),
        (["train", "people", "--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["train", "people", "--precision", "bf16"], "float64"),  # a table model: certified maths in float64
        (["demo", "--scenario", "tabular", "--precision", "bf16"], "float64"),
    ]
    if not CUDA:
        cases += [(["train", "people", "--device", "cuda"], "CUDA is not available"),
                  (["train", "people", "--device", "cuda:1"], "CUDA is not available"),
                  (["forget", request_path, "--device", "cuda", "--local"], "CUDA is not available"),
                  (["comply", "--device", "cuda", "--local"], "CUDA is not available"),
                  (["audit", "--device", "cuda:0", "--local"], "CUDA is not available"),
                  (["demo", "--scenario", "text", "--device", "cuda"], "CUDA is not available")]
    if not MPS:
        cases += [(["train", "people", "--device", "mps"], "MPS"),
                  (["forget", request_path, "--device", "mps", "--local"], "MPS")]
    return cases


def test_an_unusable_device_or_precision_is_one_line_and_writes_nothing(trained, capsys):  # noqa: F811
    request = trained / "device-request.yaml"
    request.write_text("id: DEV-1\nmodel: people\ndelete_records: [P1001]\n")
    for argv, expect in device_cases(str(request)):
        run_bad(trained, capsys, argv, expect)


def test_an_unusable_device_on_a_text_model_writes_nothing(notes, capsys):
    request = notes / "redact.yaml"
    request.write_text(yaml.safe_dump({"id": "DEV-T0", "model": "notes", "redact": {"findings": "all"}}))
    argv = ["forget", str(request), "--device", "cuda", "--local"] if not CUDA else \
        ["forget", str(request), "--device", "nonsense", "--local"]
    run_bad(notes, capsys, argv, "CUDA is not available" if not CUDA else "is not a device")
    run_bad(notes, capsys, ["train", "notes", "--preset", "tiny", "--device", "tpu"], "is not a device")


def params_of(step: str | None, flow: str) -> list[dict]:
    where = f"tags.flow = '{flow}'" + (f" and tags.step = '{step}'" if step else "")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string=where)
    return [r.data.params for r in runs]


def test_the_resolved_device_is_recorded_for_training_and_forgetting(notes, capsys):
    expected = "cuda:0" if CUDA else "cpu"
    [train] = [p for p in params_of(None, "train") if p.get("kind") == "text"]
    assert train["device"] == expected and train["precision"] == "fp32"
    request = notes / "redact-card.yaml"
    request.write_text(yaml.safe_dump({"id": "DEV-T1", "model": "notes", "method": "finetune",
                                       "redact": {"findings": "all", "detectors": ["card"]}}))
    capsys.readouterr()
    code = main(["forget", str(request), "--device", "cpu", "--local", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and out["request_id"] == "DEV-T1", out  # verified or not, the run ran on the CPU
    forgets = [p for p in params_of(None, "forget") if p.get("request_id") == "DEV-T1"]
    assert [p["device"] for p in forgets] == ["cpu"]
