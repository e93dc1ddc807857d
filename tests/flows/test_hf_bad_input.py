"""Bad input for Hugging Face causal LMs (issue 15): `train --from-pretrained` and `model import`
given a directory that is not a checkpoint, a checkpoint without its tokenizer, `--lora` without
peft installed, or options that do not fit together: one line on stderr naming the problem and the
fix, exit 2, nothing written (no data/ change, no MLflow run or model version, no file)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import trained_people_project
from tests.flows.test_cli_bad_input import run_bad
from tests.flows.test_user_text import notes_corpus


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    """A project with a table model `people` (production) and the text dataset `notes`."""
    from flows.cli import main

    with trained_people_project(tmp_path_factory, "hf-bad") as root:
        notes = root / "notes.txt"
        notes.write_text(notes_corpus()[0], encoding="utf-8")
        assert main(["data", "add", "notes", "--file", str(notes)]) == 0
        notes.unlink()
        yield root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (tiny, randomly initialised) checkpoint directory, outside the project."""
    from unlearning.text import hf_checkpoint

    text, _ = notes_corpus()
    return hf_checkpoint.build_tiny_checkpoint(text.split("\n\n"), tmp_path_factory.mktemp("ckpt") / "tiny-gpt2",
                                               vocab_size=300)


@pytest.fixture
def without_tokenizer(checkpoint, tmp_path) -> Path:
    """The checkpoint's weights and config with every tokenizer file left out."""
    copy = tmp_path / "no-tokenizer"
    shutil.copytree(checkpoint, copy)
    for path in copy.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            path.unlink()
    return copy


def test_train_refuses_a_missing_directory(project, capsys, tmp_path):
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(tmp_path / "absent")], "absent")


def test_train_refuses_a_file(project, capsys, tmp_path):
    file = tmp_path / "model.bin"
    file.write_bytes(b"\0" * 64)
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(file)], "not a directory")


def test_train_refuses_a_directory_that_is_not_a_checkpoint(project, capsys, tmp_path):
    (tmp_path / "README.md").write_text("my model\n")
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(tmp_path)], "config.json")


def test_train_refuses_a_checkpoint_without_its_tokenizer(project, capsys, without_tokenizer):
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(without_tokenizer)], "tokenizer")


@pytest.mark.parametrize("command", ["train", "import"])
def test_a_checkpoint_whose_weights_were_cut_short_is_refused(project, capsys, checkpoint, tmp_path, command):
    """A copy that stopped halfway: refused before any run is recorded (the loader's own error was a
    traceback after the train run had been written)."""
    cut = tmp_path / "truncated"
    shutil.copytree(checkpoint, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = (["train", "notes", "--from-pretrained", str(cut), "--steps", "2"] if command == "train"
            else ["model", "import", "cut", "--from-pretrained", str(cut), "--dataset", "notes"])
    run_bad(project, capsys, args, "truncated")


@pytest.mark.parametrize("command", ["train", "import"])
def test_a_checkpoint_that_carries_its_own_code_is_refused(project, capsys, checkpoint, tmp_path, command):
    """Its Python files are the checkpoint's author's, not the user's: never imported (transformers
    asked on a terminal and wrote its question to stdout)."""
    from tests.unit.test_hf import with_custom_code

    custom = with_custom_code(checkpoint, tmp_path / "custom", tmp_path / "ran")
    args = (["train", "notes", "--from-pretrained", str(custom), "--steps", "2"] if command == "train"
            else ["model", "import", "custom", "--from-pretrained", str(custom), "--dataset", "notes"])
    run_bad(project, capsys, args, "never runs a checkpoint's code")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("command", ["train", "import"])
def test_a_checkpoint_that_does_not_load_is_refused_before_any_run(project, capsys, checkpoint, tmp_path, command):
    """Its files look whole, but config.json declares a layer the weights do not hold: the loader
    refuses it, and it is now loaded before the train or import run starts (the old code recorded
    FAILED `train notes`/`fit` or `import` runs in MLflow: run_bad's snapshot differed)."""
    import json

    declared = shutil.copytree(checkpoint, tmp_path / "one-layer-more")
    config = json.loads((declared / "config.json").read_text())
    (declared / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    args = (["train", "notes", "--from-pretrained", str(declared), "--steps", "2"] if command == "train"
            else ["model", "import", "layers", "--from-pretrained", str(declared), "--dataset", "notes"])
    run_bad(project, capsys, args, "has no weights for")


def test_train_refuses_lora_without_peft(project, capsys, checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError, as when not installed
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(checkpoint), "--lora"], "pip install")


def test_train_refuses_lora_without_a_checkpoint(project, capsys):
    run_bad(project, capsys, ["train", "notes", "--lora"], "--from-pretrained")


def test_train_refuses_a_time_budget_for_a_fine_tune(project, capsys, checkpoint):
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(checkpoint), "--seconds", "5"], "--steps")


def test_train_refuses_zero_steps(project, capsys, checkpoint):
    run_bad(project, capsys, ["train", "notes", "--from-pretrained", str(checkpoint), "--steps", "0"], "--steps")


def test_train_refuses_a_checkpoint_for_a_table(project, capsys, checkpoint):
    run_bad(project, capsys, ["train", "people", "--from-pretrained", str(checkpoint)], "is a table")


def test_import_refuses_a_directory_that_is_not_a_checkpoint(project, capsys, tmp_path):
    run_bad(project, capsys, ["model", "import", "notes-gpt", "--from-pretrained", str(tmp_path), "--dataset", "notes"],
            "config.json")


def test_import_refuses_a_checkpoint_without_its_tokenizer(project, capsys, without_tokenizer):
    run_bad(project, capsys, ["model", "import", "notes-gpt", "--from-pretrained", str(without_tokenizer),
                              "--dataset", "notes"], "tokenizer")


def test_import_refuses_a_base_that_is_not_a_checkpoint(project, capsys, checkpoint, tmp_path):
    run_bad(project, capsys, ["model", "import", "notes-gpt", "--from-pretrained", str(checkpoint), "--dataset",
                              "notes", "--base", str(tmp_path / "absent"), *SCHEDULE], "absent")


def test_import_refuses_an_unknown_dataset(project, capsys, checkpoint):
    run_bad(project, capsys, ["model", "import", "notes-gpt", "--from-pretrained", str(checkpoint),
                              "--dataset", "nosuch"], "nosuch")


def test_import_refuses_a_table_dataset(project, capsys, checkpoint):
    run_bad(project, capsys, ["model", "import", "people-gpt", "--from-pretrained", str(checkpoint),
                              "--dataset", "people"], "is a table")


def test_import_refuses_the_name_of_a_model_of_another_dataset(project, capsys, checkpoint):
    """A version of `people` (a table model) must not become a language model on `notes`."""
    run_bad(project, capsys, ["model", "import", "people", "--from-pretrained", str(checkpoint),
                              "--dataset", "notes"], "people")


# --- the schedule an import declares (its retraining replays it) ----------------------------------

IMPORT = ["model", "import", "notes-gpt", "--dataset", "notes"]
SCHEDULE = ["--steps", "200", "--lr", "0.001", "--batch", "16", "--seq-len", "64"]


def test_import_refuses_a_base_without_the_schedule_it_was_fine_tuned_with(project, capsys, checkpoint):
    """--base with --steps only was accepted, and its retraining was called exact while its rate,
    batch and window length were this pipeline's defaults: each missing option is named."""
    run_bad(project, capsys, [*IMPORT, "--from-pretrained", str(checkpoint), "--base", str(checkpoint),
                              "--steps", "200"], "add --lr RATE --batch N --seq-len N")


def test_import_refuses_a_schedule_without_its_base(project, capsys, checkpoint):
    run_bad(project, capsys, [*IMPORT, "--from-pretrained", str(checkpoint), "--steps", "200", "--lr", "0.001"],
            "--base DIR")


@pytest.mark.parametrize("base", ["same folder", "a copy"])
def test_import_refuses_a_base_that_is_the_model_itself(project, capsys, checkpoint, tmp_path, base):
    """A careless `--base` naming the fine-tuned checkpoint (or a copy): the declared fine-tune never
    happened, and its "exact reference" would be the base fine-tuned again. It was imported."""
    other = checkpoint if base == "same folder" else shutil.copytree(checkpoint, tmp_path / "copy")
    if base == "a copy":
        (other / ".DS_Store").write_bytes(b"\0")  # left out of the checkpoint's identity, as by checkpoint_identity
    run_bad(project, capsys, [*IMPORT, "--from-pretrained", str(checkpoint), "--base", str(other), *SCHEDULE],
            "holds the same files as the model")


@pytest.mark.parametrize("option,value,expect", [("--steps", "0", "--steps"), ("--batch", "0", "--batch"),
                                                 ("--seq-len", "0", "--seq-len"), ("--lr", "0", "--lr"),
                                                 ("--lr", "nan", "--lr"), ("--seq-len", "128", "128 positions")])
def test_import_refuses_a_schedule_it_cannot_replay(project, capsys, checkpoint, option, value, expect):
    schedule = list(SCHEDULE)
    schedule[schedule.index(option) + 1] = value
    run_bad(project, capsys, [*IMPORT, "--from-pretrained", str(checkpoint), "--base", str(checkpoint), *schedule],
            expect)


# --- a corpus long enough in characters, too short in tokens ----------------------------------------

LONG_WORDS = ("Pneumonoultramicroscopicsilicovolcanoconiosis floccinaucinihilipilification "
              "Antidisestablishmentarianism supercalifragilisticexpialidocious")


@pytest.fixture(scope="module")
def short_corpora(project, tmp_path_factory):
    """Datasets of the same paragraph repeated (each record's split is a hash of its id): 10 give the
    training records 1119 characters (the char LM's minimum is 101) and the held-out 279, but a
    tokenizer trained on that text makes each long word one token: 39 and 9 tokens, less than one
    65-token window; 16 give the training records 69 tokens and leave the held-out short. Returns the
    checkpoint whose tokenizer that is."""
    from flows.cli import main
    from unlearning.text import hf_checkpoint

    for name, n in (("short", 10), ("shortheld", 16)):
        source = project / f"{name}.txt"
        source.write_text("\n\n".join([LONG_WORDS] * n) + "\n", encoding="utf-8")
        assert main(["data", "add", name, "--file", str(source)]) == 0
        source.unlink()
    return hf_checkpoint.build_tiny_checkpoint([LONG_WORDS] * 10, tmp_path_factory.mktemp("words") / "tiny-gpt2")


@pytest.mark.parametrize("dataset,share", [("short", "training"), ("shortheld", "held-out")])
def test_train_refuses_a_corpus_shorter_than_one_token_window(project, capsys, short_corpora, dataset, share):
    """Refused inside the flow before (a FAILED run recorded); now before anything is written."""
    run_bad(project, capsys, ["train", dataset, "--from-pretrained", str(short_corpora), "--steps", "2"],
            f"its {share} records tokenize to")


def test_import_refuses_a_corpus_shorter_than_one_token_window(project, capsys, short_corpora):
    run_bad(project, capsys, ["model", "import", "short", "--from-pretrained", str(short_corpora),
                              "--dataset", "short"], "less than one window of 65")
