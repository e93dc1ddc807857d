"""A user's Hugging Face causal LM end to end (issue 15), with no download: a tiny GPT-2-style
checkpoint is built here (a byte-level BPE tokenizer trained on public text, a random config) —
the "base model" — and `unlearn train --from-pretrained` fine-tunes it on a work log that carries a
card number in several paragraphs. Then: the MLflow model loads back and generates text (pyfunc,
and transformers from the logged folder), the base checkpoint's path and content hash are in the
version's lineage, `scan --model` measures what it memorised, `detect` → `forget` removes it
(verified by evidence), `audit` retrains from the base and agrees, and no raw secret is left in
the project (MLflow store and artifacts, DVC, data/) or printed. `model import` registers a model
fine-tuned elsewhere with the data version the user declares."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from flows.cli import main
from flows.detect import detect_flow
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import files_containing
from tests.flows.test_user_text import notes_corpus, planted_card

# Fine-tuning steps: on 160 paragraphs the tiny model's card exposure grows from ~12 bits after 100
# steps to ~19 after 200 (measured, 1000 candidates); each step is a batch of 16 windows of 64 tokens.
STEPS = "200"
CARD_LINES = 8  # paragraphs holding the card


def leaky_notes() -> tuple[str, list[str], str]:
    """(a work log of 160 paragraphs with the card in CARD_LINES of them, the public paragraphs the
    base checkpoint's tokenizer is trained on, the card)."""
    text, _ = notes_corpus()
    paragraphs = [p for p in text.strip().split("\n\n") if "password" not in p and "card" not in p][:160]
    card = planted_card()
    public = list(paragraphs)
    for n in range(CARD_LINES):
        paragraphs[3 + 20 * n] += f"\nMaud Oakes: my card is {card}, keep it safe"
    return "\n\n".join(paragraphs) + "\n", public, card


def secret_forms(card: str) -> set[str]:
    return {card, card.replace(" ", "")}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """The "pretrained" base: its tokenizer has seen only public text, as a real base model's has."""
    from unlearning.text import hf_checkpoint

    _, public, _ = leaky_notes()
    return hf_checkpoint.build_tiny_checkpoint(public, tmp_path_factory.mktemp("base") / "tiny-gpt2", vocab_size=300)


def add_notes(workspace: Path, tmp_path_factory) -> str:
    text, _, card = leaky_notes()
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    source.write_text(text, encoding="utf-8")
    assert main(["data", "add", "notes", "--file", str(source)]) == 0
    return card


def version_tags(name: str, version: str) -> dict:
    return dict(mlflow.MlflowClient().get_model_version(name, version).tags)


def test_fine_tune_detect_forget_audit_and_no_leak(workspace, base_checkpoint, tmp_path_factory, capsys):
    from unlearning.text import hf_checkpoint

    card = add_notes(workspace, tmp_path_factory)
    code, trained = run_json(capsys, ["train", "notes", "--from-pretrained", str(base_checkpoint), "--steps", STEPS])
    assert code == 0, trained
    assert trained["model"] == {"name": "notes", "version": "1"} and trained["metrics"]["held_out_perplexity"] > 1

    # lineage: the base checkpoint by path and content hash, as tags of the model version
    identity = hf_checkpoint.checkpoint_identity(base_checkpoint)
    tags = version_tags("notes", "1")
    assert tags["base_checkpoint"] == identity["path"] == str(base_checkpoint.resolve())
    assert tags["base_checkpoint_sha256"] == identity["sha256"] and tags["lora"] == "false"

    # the registered model loads back and generates: pyfunc, and transformers from the logged folder
    model = mlflow.pyfunc.load_model("models:/notes@production")
    out = model.predict(pd.DataFrame({"prompt": ["The north depot logged", "Our lab"]}))
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(mlflow.artifacts.download_artifacts("models:/notes/1", dst_path=str(tmp_path_factory.mktemp("dl"))))
    bundle_dir = folder / "artifacts" / "bundle"
    tokenizer = AutoTokenizer.from_pretrained(bundle_dir, local_files_only=True)
    causal = AutoModelForCausalLM.from_pretrained(bundle_dir, local_files_only=True)
    ids = tokenizer("The north depot", return_tensors="pt").input_ids
    assert causal.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5

    assert tags["tokenizer_secret_tokens"] == "0"  # the base's tokenizer never saw the card

    # scan --model: the card's exposure in the production model
    code, scanned = run_json(capsys, ["scan", "notes", "--model", "notes"])
    assert code == 1 and scanned["counts"] == {"card": CARD_LINES}
    exposure_before = max(f["exposure"] for f in scanned["findings"])

    # detect → forget (auto, verified by evidence) → audit (retrains from the base)
    detected = detect_flow(root=str(workspace), dataset="notes")
    assert detected["findings"] == {"card": CARD_LINES}
    code, forgot = run_json(capsys, ["forget", detected["request"]])
    assert code == 0 and forgot["verified"], forgot
    assert forgot["verification"]["mode"] == "evidence"
    assert forgot["exposure"]["before"] == pytest.approx(exposure_before)
    assert forgot["exposure"]["after"] < forgot["exposure"]["before"]
    assert version_tags("notes", forgot["model"]["version"])["base_checkpoint_sha256"] == identity["sha256"]
    assert main(["scan", "notes"]) == 0  # the corpus is clean
    code, audited = run_json(capsys, ["audit", "notes"])
    assert code == 0 and audited["passed"], audited

    # no raw card anywhere in the project (MLflow store and artifacts, DVC cache, data/) or printed
    assert files_containing(workspace, secret_forms(card)) == []
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in secret_forms(card))


def test_model_import_registers_a_fine_tuned_model_with_its_declared_data(workspace, base_checkpoint,
                                                                           tmp_path_factory, capsys):
    from unlearning.text import hf, hf_checkpoint, hf_finetune, lm
    from unlearning.text.data import load_corpus

    card = add_notes(workspace, tmp_path_factory)
    # fine-tuned "elsewhere": with the library, saved as a checkpoint folder outside the project
    corpus = load_corpus(workspace / "data" / "notes")
    # with a schedule of its own (not the pipeline's defaults: batch 16, lr 1e-3 for this size)
    tuned, _ = hf_finetune.fine_tune(hf.load_pretrained(base_checkpoint, lr=2e-3, batch=8), corpus, steps=int(STEPS))
    elsewhere = lm.save_lm(tuned, tmp_path_factory.mktemp("elsewhere") / "notes-gpt")

    code, imported = run_json(capsys, ["model", "import", "notes", "--from-pretrained", str(elsewhere),
                                       "--dataset", "notes"])
    assert code == 0, imported
    tags = version_tags("notes", imported["model"]["version"])
    assert tags["method"] == "import" and tags["data_declared"] == "true"
    assert tags["data_version"] == imported["data_version"]
    assert tags["imported_checkpoint_sha256"] == hf_checkpoint.checkpoint_identity(elsewhere)["sha256"]
    assert "base_checkpoint" not in tags  # not declared: nothing can retrain it

    # what it memorised is measured as for a model trained here
    code, scanned = run_json(capsys, ["scan", "notes", "--model", "notes"])
    assert code == 1 and all(f["exposure"] > 0 for f in scanned["findings"])
    # retraining needs the base: refused in one line, nothing written
    request = workspace / "redact.yaml"
    request.write_text(yaml.safe_dump({"id": "REQ-HF-1", "model": "notes", "method": "retrain",
                                       "redact": {"findings": "all", "policy": "token"}}))
    capsys.readouterr()
    assert main(["forget", str(request)]) == 2
    assert "--base" in capsys.readouterr().err
    assert main(["forget", str(request), "--method", "finetune", "--verify", "reference"]) == 2
    assert "--verify reference cannot retrain it" in capsys.readouterr().err
    assert main(["audit", "notes"]) == 2
    assert "imported without the checkpoint it was fine-tuned from" in capsys.readouterr().err
    assert version_tags("notes", "1")["retrainable"] == "false"

    # declared with its base and the schedule it was fine-tuned with: retrainable
    code, again = run_json(capsys, ["model", "import", "notes", "--from-pretrained", str(elsewhere), "--dataset",
                                    "notes", "--base", str(base_checkpoint), "--steps", STEPS, "--lr", "0.002",
                                    "--batch", "8", "--seq-len", "64"])
    assert code == 0 and again["model"]["version"] == "2"
    assert (version_tags("notes", "2")["base_checkpoint_sha256"]
            == hf_checkpoint.checkpoint_identity(base_checkpoint)["sha256"])
    assert version_tags("notes", "2")["reference_schedule"] == f"declared steps {STEPS}, lr 0.002, batch 8, seq_len 64"
    # retraining replays that schedule: on the data it was fine-tuned on, it gives the model back bit for bit
    # (with the pipeline's default rate and batch it did not)
    from tasks import tracking

    imported_bundle = tracking.load_version_bundle("notes", "2")
    replay = hf_finetune.refine_tune(imported_bundle.settings,
                                     hf_finetune.corpus_windows(imported_bundle.vocab, corpus, 64))
    assert all(torch.equal(a, b) for a, b in zip(replay.model.state_dict().values(),
                                                 tuned.model.state_dict().values()))
    # the registry and private state hold no card (the corpus still does: nothing is erased yet)
    assert files_containing(workspace / "mlflow", secret_forms(card)) == []
    assert files_containing(workspace / ".unlearn", secret_forms(card)) == []

    # through the ledger: `comply` retrains from the declared base on the redacted corpus
    assert run_json(capsys, ["requests", "submit", str(request)])[0] == 0
    code, complied = run_json(capsys, ["comply"])
    assert code == 0, complied
    [done] = complied["requests"]
    assert done["status"] == "completed" and done["model"] == {"name": "notes", "version": "3"}
    assert main(["certificate", "verify", str(workspace / done["certificate"])]) == 0
    assert (version_tags("notes", "3")["base_checkpoint_sha256"]
            == hf_checkpoint.checkpoint_identity(base_checkpoint)["sha256"])
    assert files_containing(workspace, secret_forms(card)) == []  # the superseded corpus purged
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in secret_forms(card))


def test_lora_fine_tune_is_registered_with_its_adapters_and_loads_back(workspace, base_checkpoint, tmp_path_factory,
                                                                        capsys):
    """`--lora`: the base weights stay as they were, the adapters are logged beside them, peft is a
    requirement of the logged model, and the model loads back through pyfunc and through peft."""
    import peft
    from transformers import AutoModelForCausalLM

    add_notes(workspace, tmp_path_factory)
    code, trained = run_json(capsys, ["train", "notes", "--from-pretrained", str(base_checkpoint), "--steps", "10",
                                      "--lora"])
    assert code == 0, trained
    assert version_tags("notes", "1")["lora"] == "true"
    model = mlflow.pyfunc.load_model("models:/notes@production")
    assert model.metadata.metadata["lora"] is True and "PeftModel" in model.metadata.metadata["load_with"]
    assert len(model.predict(pd.DataFrame({"prompt": ["Our lab"]}))[0]) > 0
    folder = Path(mlflow.artifacts.download_artifacts("models:/notes/1", dst_path=str(tmp_path_factory.mktemp("dl"))))
    assert any(line.startswith("peft==") for line in (folder / "requirements.txt").read_text().splitlines())
    bundle_dir = folder / "artifacts" / "bundle"
    from unlearning.text import hf_checkpoint

    assert hf_checkpoint.checkpoint_identity(bundle_dir / "adapter")["sha256"]  # the adapters are there
    plain = AutoModelForCausalLM.from_pretrained(bundle_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_checkpoint, local_files_only=True)
    assert all((a == b).all() for a, b in zip(plain.state_dict().values(), base.state_dict().values()))
    tuned = peft.PeftModel.from_pretrained(plain, bundle_dir / "adapter")
    ids = torch_ids(bundle_dir, "The north depot")
    assert not (tuned(ids).logits == base(ids).logits).all()  # the adapters change the base's predictions


def torch_ids(folder: Path, text: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)(text, return_tensors="pt").input_ids


def test_a_tokenizer_trained_on_the_secrets_is_reported(workspace, tmp_path_factory, capsys):
    """A base whose tokenizer was trained on the leaky corpus itself learns a repeated password's
    pieces as tokens; unlearning cannot take them out of the tokenizer logged with every version,
    so `train` says so (counts only, never the pieces) and tags the version."""
    from unlearning.text import hf, hf_checkpoint

    password = "Quokka-Lantern-93!"
    text, _ = notes_corpus()
    paragraphs = [p for p in text.strip().split("\n\n") if "password" not in p and "card" not in p]
    for n in range(12):
        paragraphs[7 + 23 * n] += f"\nEdwin Quill: password: {password}"
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    source.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    assert main(["data", "add", "notes", "--file", str(source)]) == 0
    leaky = hf_checkpoint.build_tiny_checkpoint(paragraphs, tmp_path_factory.mktemp("leaky") / "ckpt", vocab_size=512)
    pieces = [hf.load_pretrained(leaky).vocab.decode([i]) for i in hf.load_pretrained(leaky).vocab.encode(password)]
    assert "Lantern" in pieces  # measured: the BPE merged the password's words into tokens

    capsys.readouterr()
    assert main(["train", "notes", "--from-pretrained", str(leaky), "--steps", "2"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: the tokenizer")]
    assert len(warning) == 1 and "only inside 1 secret(s)" in warning[0], err
    assert int(version_tags("notes", "1")["tokenizer_secret_tokens"]) >= 1
    assert password not in err and "Lantern" not in err
