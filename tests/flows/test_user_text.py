"""A user's own text corpus end to end (issue 12): a .txt file the test writes (not a built-in)
with a planted card number and password → `data add --file` → `scan` finds both → `train` (tiny)
→ `detect` measures their exposure and writes a `redact` request → the card removed by `forget`,
the password through the ledger and `comply` → verified, certificate signed → the superseded
corpus purged: neither secret is left in data/, the DVC cache or remote, or MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import yaml

from flows.cli import main
from flows.detect import detect_flow
from tests.flows.conftest import pin_project_salt
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import files_containing
from unlearning.text.shakespeare import luhn_check_digit

_SUBJECTS = ("The north depot", "Our lab", "The night shift", "A courier", "The harbour office",
             "The archive team", "Anna from billing", "The river survey")
_VERBS = ("logged", "shipped", "counted", "repaired", "measured", "returned", "sorted", "checked")
_OBJECTS = ("six crates of lamps", "the rope and the tarpaulin", "forty soil samples", "the broken pump",
            "a box of old ledgers", "the tide tables", "two spare wheels", "the seed trays")
_WHEN = ("on Monday", "before noon", "after the storm", "at dusk", "last week", "on the second shift")


def _pick(options: tuple[str, ...], n: int, purpose: str) -> str:
    digest = hashlib.sha256(f"{purpose}:{n}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def planted_card() -> str:
    payload = "453201" + "739184265"  # a Visa-shaped prefix, invented digits
    number = payload + luhn_check_digit(payload)
    return " ".join(number[i:i + 4] for i in range(0, 16, 4))


PASSWORD = "Quokka-Lantern-93!"

# The notes models are trained for a fixed number of steps, not `--seconds`: the steps a time budget
# buys follow the machine's load (2 s gave 286 to 838 steps on the shared 2-core machine), and what
# the model learns follows the steps. Measured on test_text_chain's second suppress update, the one
# that failed about 1 run in 8 with `--seconds 2`: its relearned_above_control_band_bits (needs
# <= 2) read -75 at 200 steps, -46 at 400, -6 at 700 and 9.9 at 800, where the request failed,
# until suppress took half the model's own training rate (5e-3 for tiny, was 3e-3): the test now
# passes at 800 and 1,200 steps too (docs/benchmarks.md, "suppress on better-trained models").
NOTES_STEPS = "400"


def notes_corpus(n_paragraphs: int = 320) -> tuple[str, dict[str, str]]:
    """A work log of short paragraphs (one or two lines each), two of which carry a secret.
    Returns the file's text and the secrets {kind: raw value}."""
    secrets = {"card": planted_card(), "password": PASSWORD}
    paragraphs = []
    for n in range(n_paragraphs):
        line = f"{_pick(_SUBJECTS, n, 's')} {_pick(_VERBS, n, 'v')} {_pick(_OBJECTS, n, 'o')} {_pick(_WHEN, n, 'w')}."
        if n % 3 == 0:
            line += f"\nNote {n}: {_pick(_OBJECTS, n, 'o2')} go back to {_pick(_SUBJECTS, n, 's2').lower()}."
        paragraphs.append(line)
    paragraphs[41] += f"\nMaud Oakes: my card is {secrets['card']}, keep it safe"
    paragraphs[207] += f"\nEdwin Quill: password: {secrets['password']}"
    return "\n\n".join(paragraphs) + "\n", secrets


def request_from(workspace: Path, detected: dict, request_id: str, fingerprint: str) -> Path:
    path = workspace / f"{request_id}.yaml"
    redact = {**detected["redact"], "findings": [fingerprint]}
    path.write_text(yaml.safe_dump({**detected, "id": request_id, "method": "retrain", "redact": redact}))
    return path


def test_a_users_text_file_is_scanned_trained_forgotten_verified_and_purged(workspace, tmp_path_factory, capsys):
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"  # outside the project, as a user's file
    text, secrets = notes_corpus()
    source.write_text(text, encoding="utf-8")
    pin_project_salt(workspace)

    code, added = run_json(capsys, ["data", "add", "notes", "--file", str(source)])
    assert code == 0 and added["kind"] == "text" and added["records"] == 320
    stored = [json.loads(line) for line in (workspace / "data" / "notes" / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in stored[:3]] == ["p00001", "p00002", "p00003"]
    raw = set(secrets.values()) | {secrets["card"].replace(" ", "")}
    held = files_containing(workspace, raw)  # the corpus as given, in data/ and the DVC cache and remote
    assert any(h.startswith("data/") for h in held) and any(h.startswith(".dvc/cache") for h in held)

    code, scanned = run_json(capsys, ["scan", "notes"])
    assert code == 1 and scanned["counts"] == {"card": 1, "secret": 1}
    by_record = {f["location"]["record"]: f for f in scanned["findings"]}
    assert set(by_record) == {"p00042", "p00208"}  # paragraphs 42 and 208 of the file

    code, trained = run_json(capsys, ["train", "notes", "--preset", "tiny", "--steps", NOTES_STEPS])
    assert code == 0 and trained["metrics"]["held_out_perplexity"] > 1

    detected = detect_flow(root=str(workspace), dataset="notes")  # exposure in the model → a request
    assert detected["findings"] == {"card": 1, "secret": 1}
    assert {r["fingerprint"] for r in detected["secrets"]} == {f["fingerprint"] for f in scanned["findings"]}
    assert all(r["exposure"] > 0 for r in detected["secrets"])
    detected_request = yaml.safe_load(Path(detected["request"]).read_text())
    card = next(f["fingerprint"] for f in scanned["findings"] if f["detector"] == "card")
    password = next(f["fingerprint"] for f in scanned["findings"] if f["detector"] == "secret")

    # the card through `forget`, the password through the ledger and `comply`; detect's request,
    # narrowed to one finding each, with retraining: exact and fast on a tiny model
    forget_request = request_from(workspace, detected_request, "REQ-NOTES-1", card)
    code, forgot = run_json(capsys, ["forget", str(forget_request)])
    assert code == 0 and forgot["verified"] and forgot["guarantee"] == "exact", forgot
    assert files_containing(workspace, {secrets["card"], secrets["card"].replace(" ", "")}) == []
    assert files_containing(workspace, {secrets["password"]}) != []  # not asked for yet

    comply_request = request_from(workspace, detected_request, "REQ-NOTES-2", password)
    assert run_json(capsys, ["requests", "submit", str(comply_request)])[0] == 0
    code, complied = run_json(capsys, ["comply"])
    assert code == 0, complied
    [done] = complied["requests"]
    assert done["status"] == "completed" and done["model"] == {"name": "notes", "version": "3"}
    certificate = json.loads((workspace / done["certificate"]).read_text())
    assert certificate["verified"] and certificate["guarantee"] == "exact"
    assert main(["certificate", "verify", str(workspace / done["certificate"])]) == 0

    # the corpus is clean, and its superseded version (the last copy of the secrets) is gone from
    # data/, the DVC cache and remote, and the MLflow store
    assert main(["scan", "notes"]) == 0
    assert files_containing(workspace, raw) == []
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in raw)


def test_column_files_keep_their_ids_and_re_adding_the_same_file_changes_nothing(workspace, capsys):
    text, _ = notes_corpus()
    paragraphs = text.strip().split("\n\n")
    rows = [{"doc": f"D-{i:03d}", "body": p} for i, p in enumerate(paragraphs)]
    jsonl = workspace / "notes.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    code, first = run_json(capsys, ["data", "add", "notes", "--file", str(jsonl), "--text-column", "body",
                                    "--id", "doc"])
    assert code == 0 and first["records"] == 320
    stored = (workspace / "data" / "notes" / "records.jsonl").read_text()
    assert json.loads(stored.splitlines()[7]) == {"id": "D-007", "text": paragraphs[7]}
    code, again = run_json(capsys, ["data", "add", "notes", "--file", str(jsonl), "--text-column", "body",
                                    "--id", "doc"])
    assert code == 0 and again["data_version"] == first["data_version"]

    csv = workspace / "notes.csv"  # no id column: ids are the data rows' numbers
    pd.DataFrame(rows).to_csv(csv, index=False)
    code, from_csv = run_json(capsys, ["data", "add", "fromcsv", "--file", str(csv), "--text-column", "body"])
    assert code == 0 and from_csv["records"] == 320
    ids = [json.loads(line)["id"] for line in (workspace / "data" / "fromcsv" / "records.jsonl").read_text().splitlines()]
    assert ids[:2] == ["r00001", "r00002"] and ids[-1] == "r00320"
    code, csv_again = run_json(capsys, ["data", "add", "fromcsv", "--file", str(csv), "--text-column", "body"])
    assert code == 0 and csv_again["data_version"] == from_csv["data_version"]  # assigned ids are stable too
