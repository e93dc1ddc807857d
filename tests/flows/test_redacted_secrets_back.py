"""Secrets a completed redaction removed, brought back into a text corpus: the three gates of
tasks.erased for text (`data add --replace`, `train`, the audit's erased_records_absent).

The defect (main 240215c, real CLI, /tmp/redacted): after RED-1 (`redact: {findings: all}`) was
completed on `notes`, `unlearn data add notes --file notes.txt --replace` with the original file
exited 0 (both secrets back in data/notes), `unlearn train notes` exited 0 (production learned them
again), and `unlearn audit notes` PASSED and wrote `audited` for RED-1: a text request names no
record, so none of the three gates saw them. A removed secret is known by its salted fingerprint,
which each request's `completed` ledger entry now records (tasks.outcomes.redacted_by)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from flows.cli import main
from tasks import data as data_store
from tasks import dvc, ledger, tracking
from tests.flows.conftest import pin_project_salt
from tests.flows.test_audit import versions
from tests.flows.test_pipeline import run_json
from tests.flows.test_user_text import NOTES_STEPS, notes_corpus


@pytest.fixture
def notes(workspace, tmp_path_factory, capsys):
    """data/notes from a user's file (outside the project) holding a card number and a password,
    a tiny model trained on it; returns (the source file, {kind: raw value}, {detector: fingerprint})."""
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    text, secrets = notes_corpus()
    source.write_text(text, encoding="utf-8")
    pin_project_salt(workspace)
    assert main(["data", "add", "notes", "--file", str(source)]) == 0
    assert run_json(capsys, ["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS])[0] == 0
    code, scanned = run_json(capsys, ["scan", str(source)])  # the file itself, with the project's salt
    assert code == 1 and scanned["counts"] == {"card": 1, "secret": 1}
    return source, secrets, {f["detector"]: f["fingerprint"] for f in scanned["findings"]}


def redact(workspace, capsys, *requests: dict) -> dict:
    """Submit `redact` requests on `notes` (retraining: exact and fast on a tiny model) and comply."""
    import yaml

    for content in requests:
        path = workspace / f"{content['id']}.yaml"
        path.write_text(yaml.safe_dump({"model": "notes", "method": "retrain", **content}))
        assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and all(r["status"] == "completed" for r in out["requests"]), out
    return out


def restore_by_hand(workspace, source) -> None:
    """data/notes put back from the original file and `dvc add`ed, as a backup restored by hand
    would do (the path `unlearn data add --replace` no longer takes)."""
    corpus = data_store._build_table("notes", source, None, None)
    data_store.save_dataset(corpus, data_store.dataset_dir(workspace, "notes"))
    dvc.add_data(workspace)


def without_secrets(workspace, source, secrets: dict) -> object:
    """The source with the lines holding a secret dropped: what a user adds after the refusal."""
    cleaned = workspace / "cleaned.txt"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    cleaned.write_text("".join(line for line in lines if not any(s in line for s in secrets.values())),
                       encoding="utf-8")
    return cleaned


def raw_values(secrets: dict) -> set[str]:
    return {*secrets.values(), secrets["card"].replace(" ", "")}


def test_data_add_replace_refuses_a_text_source_holding_secrets_completed_redactions_removed(
        workspace, notes, capsys):
    source, secrets, fingerprint = notes
    # one batch: RED-1 names the card by fingerprint, RED-2 asks for every finding (resolved now)
    redact(workspace, capsys, {"id": "RED-1", "redact": {"findings": [fingerprint["card"]]}},
           {"id": "RED-2", "redact": {"findings": "all"}})
    before = {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
              if p.is_file()}

    capsys.readouterr()
    argv = ["data", "add", "notes", "--file", str(source), "--replace"]
    assert main(argv) == 2  # the old code: 0, both secrets back in data/notes
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and not captured.out, captured
    assert "2 secret(s)" in err and "RED-1, RED-2" in err and "nothing was written" in err, err
    # a count and request ids only: no value, masked form or fingerprint
    assert not any(v in err for v in [*raw_values(secrets), *fingerprint.values(), secrets["card"][-4:]]), err
    after = {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
             if p.is_file()}
    assert after == before  # nothing written
    # each completed entry records the fingerprints that request removed (RED-2's `all` resolved)
    assert ledger.show(workspace, "RED-1").response["redacted"] == [fingerprint["card"]]
    assert ledger.show(workspace, "RED-2").response["redacted"] == sorted(fingerprint.values())

    # the source without those lines is taken
    assert main(["data", "add", "notes", "--file", str(without_secrets(workspace, source, secrets)),
                 "--replace"]) == 0


def test_a_completed_redaction_recorded_by_older_code_is_read_from_its_certificate(workspace, notes, capsys):
    from tasks.redacted import secrets_removed

    _, _, fingerprint = notes
    redact(workspace, capsys, {"id": "RED-3", "redact": {"findings": "all"}})
    response = dict(ledger.show(workspace, "RED-3").response)
    nature = ledger.show(workspace, "RED-3").request
    assert response.pop("redacted") == sorted(fingerprint.values())
    # an entry without `redacted` (completed before it was recorded): `all` is read from the certificate
    # the entry names, while the file is the one whose SHA-256 it recorded
    older = SimpleNamespace(request=nature, response=response)
    assert secrets_removed(workspace, older) == set(fingerprint.values())
    certificate = workspace / response["certificate"]
    certificate.write_bytes(certificate.read_bytes() + b" ")
    assert secrets_removed(workspace, older) == set()  # not the recorded certificate: not read


def test_train_refuses_a_corpus_holding_secrets_a_completed_redaction_removed(workspace, notes, capsys):
    source, secrets, _ = notes
    redact(workspace, capsys, {"id": "RED-4", "redact": {"findings": "all"}})
    restore_by_hand(workspace, source)  # a backup put back by hand: `data add` never saw it
    production, registered = tracking.production_alias("notes"), set(versions("notes"))

    capsys.readouterr()
    assert main(["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS]) == 2  # the old code: 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and not captured.out, captured
    assert "2 secret(s) erased by completed request(s) RED-4 are back in data/notes" in err and "--replace" in err, err
    assert "submit the same erasure" not in err, err  # its own dataset's: only removing them helps
    assert not any(v in err for v in raw_values(secrets)), err
    assert tracking.production_alias("notes") == production and set(versions("notes")) == registered

    # the corpus cleaned again: training is taken, and the audit finds nothing back (no false alarm)
    assert main(["data", "add", "notes", "--file", str(without_secrets(workspace, source, secrets)),
                 "--replace"]) == 0
    assert run_json(capsys, ["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS])[0] == 0
    code, out = run_json(capsys, ["audit", "notes"])
    assert code == 0 and out["passed"] and out["covered_requests"] == ["RED-4"], out
    assert "erased_records_absent" not in {c["name"] for c in out["checks"]}


def test_secrets_a_completed_redaction_removed_back_in_the_corpus_fail_the_audit(workspace, notes, capsys):
    source, secrets, _ = notes
    redact(workspace, capsys, {"id": "RED-5", "redact": {"findings": "all"}})
    restore_by_hand(workspace, source)  # `train` refuses this data (tested above): audited as it is
    production, registered = tracking.production_alias("notes"), set(versions("notes"))

    code, out = run_json(capsys, ["audit", "notes"])
    assert code == 1 and not out["passed"], out  # the old code: 0, PASSED, RED-5 `audited`
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    assert not back["passed"] and back["value"] == 2 and "RED-5" in back["threshold"], back
    assert {"check": "erased_records_absent", "requests": ["RED-5"]} in out["shortfall"]
    # the retrained model was trained on the secrets too: nothing registered, production unchanged
    assert out["promoted"] is None and "back in data/notes" in out["not_promoted"], out
    assert tracking.production_alias("notes") == production and set(versions("notes")) == registered
    [entry] = ledger.show(workspace, "RED-5").audits
    assert entry["event"] == "audit_failed" and "back in the data" in entry["reason"], entry
    record = workspace / out["record"]
    assert main(["certificate", "verify", str(record)]) == 0  # verifies: it says FAILED
    written = record.read_text() + record.with_suffix(".html").read_text() + json.dumps(out) + entry["reason"]
    console = capsys.readouterr()
    assert not any(v in text for v in raw_values(secrets) for text in (written, console.out, console.err))


def test_a_redaction_made_with_unlearn_forget_outside_the_ledger_is_kept_out_too(workspace, notes, capsys):
    """The demo's path: `unlearn forget` on a redact request, no ledger (the project has none). The
    registry's promoted version names the request, and its run's result the fingerprints it removed."""
    import yaml

    source, secrets, fingerprint = notes
    path = workspace / "OUT-RED-1.yaml"
    path.write_text(yaml.safe_dump({"id": "OUT-RED-1", "model": "notes", "method": "retrain",
                                    "redact": {"findings": [fingerprint["secret"]]}}))
    assert run_json(capsys, ["forget", str(path)])[0] == 0
    assert not (workspace / "ledger.db").exists()

    capsys.readouterr()
    assert main(["data", "add", "notes", "--file", str(source), "--replace"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 secret(s)" in err and "OUT-RED-1" in err, err
    assert not any(v in err for v in [*raw_values(secrets), *fingerprint.values()]), err

    restore_by_hand(workspace, source)
    capsys.readouterr()
    assert main(["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "1 secret(s) erased by completed request(s) OUT-RED-1 are back in data/notes" in err and not any(v in err for v in raw_values(secrets))


def test_a_redaction_made_outside_the_ledger_is_kept_out_after_its_model_is_retired(workspace, notes, capsys):
    """`unlearn model retire` purges the version's model files, not its registry entry, tags and
    lineage run: the gates still read the fingerprints the forget run's result names (tasks.redacted
    said a retired model's were gone)."""
    import yaml

    source, secrets, fingerprint = notes
    path = workspace / "OUT-RED-2.yaml"
    path.write_text(yaml.safe_dump({"id": "OUT-RED-2", "model": "notes", "method": "retrain",
                                    "redact": {"findings": [fingerprint["secret"]]}}))
    assert run_json(capsys, ["forget", str(path)])[0] == 0
    assert main(["model", "retire", "notes"]) == 0

    capsys.readouterr()
    assert main(["data", "add", "notes", "--file", str(source), "--replace"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 secret(s)" in err and "OUT-RED-2" in err, err
    assert not any(v in err for v in [*raw_values(secrets), *fingerprint.values()]), err


def test_a_model_declared_trained_on_a_corpus_holding_redacted_secrets_is_not_imported_nor_fine_tuned(
        workspace, notes, tmp_path_factory, capsys):
    """`unlearn model import notes --from-pretrained DIR --dataset notes` was not gated: a Hugging Face
    model declared fine-tuned on a corpus holding the secrets a completed redaction removed went into
    production, exit 0 (brief gates3). `train --from-pretrained` goes through the train gate, as every
    kind does: shown here too."""
    from unlearning.text import hf_checkpoint

    source, secrets, _ = notes
    text, _ = notes_corpus()
    public = [p for p in text.split("\n\n") if not any(v in p for v in secrets.values())]
    checkpoint = hf_checkpoint.build_tiny_checkpoint(public, tmp_path_factory.mktemp("ckpt") / "tiny-gpt2",
                                                     vocab_size=300)
    redact(workspace, capsys, {"id": "RED-6", "redact": {"findings": "all"}})
    restore_by_hand(workspace, source)  # the corpus the model was fine-tuned on, elsewhere, put back
    production, registered = tracking.production_alias("notes"), set(versions("notes"))

    imported = ["model", "import", "notes", "--from-pretrained", str(checkpoint), "--dataset", "notes"]
    for argv, then in ((imported, "import a model trained without them"),  # the old code: 0
                       (["train", "notes", "--from-pretrained", str(checkpoint), "--steps", "2"], "train again")):
        capsys.readouterr()
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and not captured.out, captured
        assert "2 secret(s) erased by completed request(s) RED-6 are back in data/notes" in err, err
        assert "--replace" in err and err.endswith(then), err
        assert not any(v in err for v in raw_values(secrets)), err
    assert tracking.production_alias("notes") == production and set(versions("notes")) == registered

    # the corpus without them: the import is taken
    assert main(["data", "add", "notes", "--file", str(without_secrets(workspace, source, secrets)),
                 "--replace"]) == 0
    assert run_json(capsys, imported)[0] == 0
