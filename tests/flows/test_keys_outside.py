"""Keys kept outside the project (red team, session 21, SEVERE 2): with `UNLEARN_SALT` and
`UNLEARN_SIGNING_KEY` set, a copy of the project (a backup, a leaked disk) holds neither the salt a
small-domain value's fingerprint is enumerated with nor the certified noise b in clear. A salt that
is not hex of 16 bytes or more, or that contradicts the project's salt file, is refused as bad
input; a project that keeps its salt in `.unlearn/salt` works as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from flows.cli import main
from tasks import state, tracking
from tests.flows.conftest import pin_project_salt, trained_people_project
from tests.flows.test_cli_bad_input import run_bad
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from tests.flows.test_user_text import notes_corpus
from unlearning.compliance.signing import KEY_ENV
from unlearning.detect.cards import luhn_valid
from unlearning.detect.masking import fingerprint
from unlearning.tabular import noise as noise_module
from unlearning.tabular.data import _in_train

SALT_ENV, SALT_FILE = "UNLEARN_SALT", Path(".unlearn") / "salt"  # as the docs name them
SALT = "5a" * 32
SIGNING_KEY = "c3" * 32


@pytest.fixture
def keys_outside(monkeypatch):
    monkeypatch.setenv(SALT_ENV, SALT)
    monkeypatch.setenv(KEY_ENV, SIGNING_KEY)


def salts_in(folder: Path) -> list[bytes]:
    """Every value a file of `folder` could hand an attacker as a salt: each small file's bytes,
    and their hex decoding (the form UNLEARN_SALT is written in)."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and 16 <= path.stat().st_size <= 4096:
            content = path.read_bytes()
            found.append(content)
            try:
                found.append(bytes.fromhex(content.decode("ascii").strip()))
            except ValueError:
                pass
    return found


def enumerate_card(fingerprint_: str, known: str, salts: list[bytes]) -> list[str]:
    """The attack that works on a project holding its salt: every card number of the masked form's
    shape (here with only 4 digits unknown, to stay short: 10⁶ take 1.7 s) hashed with each salt."""
    hits = []
    for salt in salts:
        for middle in range(10_000):
            candidate = known.replace("????", f"{middle:04d}")
            if luhn_valid(candidate) and fingerprint(candidate, "card", salt) == fingerprint_:
                hits.append(candidate)
    return hits


def test_a_copy_of_a_project_with_its_keys_outside_does_not_give_a_removed_card_back(
        workspace, tmp_path_factory, capsys, keys_outside, monkeypatch):
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    text, secrets = notes_corpus()
    source.write_text(text, encoding="utf-8")
    assert main(["data", "add", "notes", "--file", str(source)]) == 0
    assert run_json(capsys, ["train", "notes", "--preset", "tiny", "--steps", "40"])[0] == 0
    code, scanned = run_json(capsys, ["scan", "notes"])
    assert code == 1
    card = next(f for f in scanned["findings"] if f["detector"] == "card")
    request = workspace / "KEYS-1.yaml"
    request.write_text(yaml.safe_dump({"id": "KEYS-1", "model": "notes", "method": "retrain",
                                       "redact": {"findings": [card["fingerprint"]]}}))
    code, forgot = run_json(capsys, ["forget", str(request)])
    assert code == 0 and forgot["verified"], forgot
    assert not (workspace / SALT_FILE).exists() and not (workspace / ".unlearn" / "signing.key").exists()
    # the signed copy of the run's certificate is kept for good (docs/compliance.md): it names the
    # secret by fingerprint, never by value, in any form
    (kept,) = (workspace / ".unlearn" / state.RUN_CERTIFICATES).glob("*.json")
    assert card["fingerprint"] in kept.read_text()
    for raw in (secrets["card"], secrets["card"].replace(" ", ""), secrets["card"][-9:], secrets["password"]):
        assert raw not in kept.read_text(), raw

    copy = tmp_path_factory.mktemp("stolen") / "project"
    shutil.copytree(workspace, copy, symlinks=True)
    monkeypatch.delenv(SALT_ENV)
    monkeypatch.delenv(KEY_ENV)
    assert any(card["fingerprint"].encode() in p.read_bytes() for p in copy.rglob("*") if p.is_file())
    digits = secrets["card"].replace(" ", "")
    known = digits[:6] + "????" + digits[10:]  # the issuer's prefix guessed, the last four masked in clear
    assert enumerate_card(card["fingerprint"], known, [bytes.fromhex(SALT)]) == [digits]  # the attack works
    assert enumerate_card(card["fingerprint"], known, salts_in(copy)) == []


def test_the_certified_noise_is_sealed_with_the_signing_key(workspace, people_csv, capsys, keys_outside, monkeypatch):
    drawn = []
    draw = noise_module.draw_noise
    monkeypatch.setattr(noise_module, "draw_noise", lambda *a, **k: drawn.append(draw(*a, **k)) or drawn[-1])
    add_and_train(people_csv, capsys, "--certified")
    production = tracking.require_production("people", workspace)
    assert torch.equal(state.load_noise(workspace, production.run_id), drawn[-1])
    # neither b nor the cache's ∇L_b(θ; D), which gives b exactly with θ (MLflow) and D (data/), in clear
    gradient = state.load_cache(workspace, production.run_id)["gradient"]
    clear = [path.relative_to(workspace) for path in (workspace / ".unlearn").rglob("*") if path.is_file()
             for value in (drawn[-1], gradient) if value.numpy().tobytes()[:16] in path.read_bytes()]
    assert clear == []

    monkeypatch.setenv(KEY_ENV, "d4" * 32)  # another project's key: a clear error, never another b
    victim = next(p for p in pd.read_csv(people_csv)["person"] if _in_train(p))
    code = main(["forget", str(request_file(workspace, id="OTHER-KEY", delete_records=[victim]))])
    err = capsys.readouterr().err
    assert code == 2 and "certified noise" in err and "does not open" in err, err
    monkeypatch.setenv(KEY_ENV, SIGNING_KEY)
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="SAME-KEY", delete_records=[victim]))])
    assert code == 0 and out["method"] == "certified", out


def test_noise_and_a_cache_kept_in_clear_by_an_earlier_version_still_open(workspace, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    b, cache = torch.randn(7, dtype=torch.float64), {"gradient": torch.randn(7, dtype=torch.float64), "X_norm": 2.0}
    for folder, content in (("noise", b), ("cache", cache)):  # how they were kept until 2026-12-07
        (workspace / ".unlearn" / folder).mkdir(parents=True)
        torch.save(content, workspace / ".unlearn" / folder / "run1.pt")
    assert torch.equal(state.load_noise(workspace, "run1"), b)
    # a cache kept before it had a fingerprint opens, but nothing vouches for it: computed anew
    assert state.load_cache(workspace, "run1") == {}
    state.save_noise(workspace, "run2", b)
    state.save_cache(workspace, "run2", cache)
    for folder in ("noise", "cache"):
        assert not (workspace / ".unlearn" / folder / "run2.pt").read_bytes().startswith(b"PK")  # not a torch file
    assert torch.equal(state.load_noise(workspace, "run2"), b)
    assert torch.equal(state.load_cache(workspace, "run2")["gradient"], cache["gradient"])


@pytest.fixture(scope="module")
def salted(tmp_path_factory, prefect_harness):
    """A trained `people` project whose salt is in its file, as every project's was until 2026-12-07."""
    with trained_people_project(tmp_path_factory, "salted") as root:
        pin_project_salt(root)
        yield root


@pytest.mark.parametrize("value, expect", [
    ("ab" * 32, f"{SALT_ENV} is not the salt in"),
    ("ab" * 8, "too short (16 hex digits)"),
    ("xyz" * 12, "not hexadecimal"),
], ids=["conflicting", "short", "not-hex"])
def test_a_bad_or_conflicting_salt_is_refused_and_nothing_written(salted, capsys, monkeypatch, value, expect):
    monkeypatch.setenv(SALT_ENV, value)
    request = request_file(salted, id="BAD-SALT", delete_records=["P1003"])
    message = run_bad(salted, capsys, ["forget", str(request)], expect)
    assert value not in message
    run_bad(salted, capsys, ["requests", "submit", str(request)], expect)


def scan_fingerprints(root: Path, capsys) -> tuple[list[str], str]:
    capsys.readouterr()
    assert main(["scan", "notes", "--json"]) == 1
    out, err = capsys.readouterr()
    return [f["fingerprint"] for f in json.loads(out)["findings"]], err


# The migration the docs give (README, docs/compliance.md), with xxd and without it.
BY_XXD = "export UNLEARN_SALT=$(xxd -p -c 64 .unlearn/salt) && rm .unlearn/salt"
BY_PYTHON = ("export UNLEARN_SALT=$(python3 -c 'import pathlib; "
             "print(pathlib.Path(\".unlearn/salt\").read_bytes().hex())') && rm .unlearn/salt")


def exported_salt(root: Path, command: str) -> str:
    return subprocess.run(["bash", "-c", f'{command} && printf %s "$UNLEARN_SALT"'], cwd=root, capture_output=True,
                          text=True, check=True).stdout


def test_a_project_keeping_its_salt_in_its_file_keeps_its_fingerprints_and_migrates_by_the_documented_command(
        workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    source = tmp_path / "notes.txt"
    source.write_text(notes_corpus()[0], encoding="utf-8")
    pin_project_salt(workspace)
    assert main(["data", "add", "notes", "--file", str(source)]) == 0
    before, _ = scan_fingerprints(workspace, capsys)
    assert len(before) == 2

    monkeypatch.setenv(SALT_ENV, (workspace / SALT_FILE).read_bytes().hex())
    same, warned = scan_fingerprints(workspace, capsys)  # the file still there: used, with one warning
    assert same == before and warned.count(f"warning: {SALT_ENV} is set") == 1, warned
    kept = (workspace / SALT_FILE).read_bytes()
    exported = exported_salt(workspace, BY_XXD if shutil.which("xxd") else BY_PYTHON)
    assert exported == kept.hex() and not (workspace / SALT_FILE).exists()
    (workspace / SALT_FILE).write_bytes(kept)
    assert exported_salt(workspace, BY_PYTHON.replace("python3", sys.executable)) == exported
    monkeypatch.setenv(SALT_ENV, exported)
    moved, err = scan_fingerprints(workspace, capsys)
    assert moved == before and "warning" not in err and not (workspace / SALT_FILE).exists()


KEY_FILE = Path(".unlearn") / "signing.key"
BY_CAT = "export UNLEARN_SIGNING_KEY=$(cat .unlearn/signing.key) && rm .unlearn/signing.key"  # as the docs give it


def test_a_signing_key_the_key_file_contradicts_is_refused_and_nothing_written(salted, capsys, monkeypatch):
    """UNLEARN_SIGNING_KEY was used whatever `.unlearn/signing.key` held: another project's key (or
    a key file a command made without the variable) signed, MACed and sealed under a key nothing
    earlier was made with."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    held = (salted / KEY_FILE).read_text().strip()
    monkeypatch.setenv(KEY_ENV, "d4" * 32)
    request = request_file(salted, id="OTHER-KEY", delete_records=["P1003"])
    for argv in (["forget", str(request)], ["requests", "submit", str(request)], ["ledger", "verify"]):
        message = run_bad(salted, capsys, argv, f"{KEY_ENV} is not the key in")
        assert "d4" * 32 not in message and held not in message, message


def test_the_signing_key_moves_out_by_the_documented_command(salted, capsys, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.chdir(salted)
    monkeypatch.setenv(KEY_ENV, (salted / KEY_FILE).read_text().strip())
    capsys.readouterr()
    assert main(["ledger", "verify"]) == 0
    warned = capsys.readouterr().err  # the file still there: used, with one warning
    assert warned.count(f"warning: {KEY_ENV} is set") == 1 and "rm " in warned, warned
    kept = (salted / KEY_FILE).read_bytes()
    try:
        moved = subprocess.run(["bash", "-c", f'{BY_CAT} && printf %s "$UNLEARN_SIGNING_KEY"'], cwd=salted,
                               capture_output=True, text=True, check=True).stdout
        assert moved == kept.decode().strip() and not (salted / KEY_FILE).exists()
        monkeypatch.setenv(KEY_ENV, moved)
        assert main(["ledger", "verify"]) == 0
        assert "warning" not in capsys.readouterr().err and not (salted / KEY_FILE).exists()
    finally:  # the module's project keeps its key in its file for the tests after this one
        if not (salted / KEY_FILE).exists():
            signing_file = salted / KEY_FILE
            signing_file.write_bytes(kept)
            signing_file.chmod(0o600)


def scanned_outside(capsys, path: Path) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["scan", str(path), "--json"]) == 1
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_a_file_scanned_outside_a_project_takes_unlearn_salt_else_says_its_salt_is_one_off(
        workspace, tmp_path_factory, capsys, monkeypatch):
    """Outside a project a file's fingerprints used a one-off salt even with UNLEARN_SALT set: they
    differed from run to run and matched none of the project's. The variable is taken when set; else
    the output says the salt is one-off."""
    notes = tmp_path_factory.mktemp("files") / "notes.txt"
    notes.write_text("call 4111 1111 1111 1111 back\n")
    monkeypatch.delenv(SALT_ENV, raising=False)
    (first, err), (second, _) = scanned_outside(capsys, notes), scanned_outside(capsys, notes)
    assert first["salt"] == second["salt"] == "one-off" and "one-off salt" in err, (first, err)
    assert first["findings"][0]["fingerprint"] != second["findings"][0]["fingerprint"]

    monkeypatch.setenv(SALT_ENV, SALT)
    (first, err), (second, _) = scanned_outside(capsys, notes), scanned_outside(capsys, notes)
    expected = fingerprint("4111111111111111", "card", bytes.fromhex(SALT))
    # the old code: a one-off salt, another fingerprint on every run
    assert first["findings"][0]["fingerprint"] == second["findings"][0]["fingerprint"] == expected
    assert first["salt"] == SALT_ENV and "one-off" not in err and SALT not in err + json.dumps(first)
    assert [p.name for p in workspace.iterdir() if p.name != ".unlearn"] == []  # the folder made no project
    assert not (workspace / SALT_FILE).exists()


def test_a_command_run_without_a_variable_after_the_keys_moved_out_is_refused_and_draws_no_new_one(
        workspace, people_csv, capsys, monkeypatch):
    """The keys moved out as the docs say, then one process (a cron job, a CI job) run without
    UNLEARN_SIGNING_KEY or UNLEARN_SALT: the old code found no file and drew a new key (salt), signed,
    sealed and fingerprinted with it, and the next command given the project's own was refused."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    add_and_train(people_csv, capsys)
    request = request_file(workspace, id="MOVED-1", delete_records=["P1003"])
    assert main(["requests", "submit", str(request)]) == 0  # the ledger: made with both
    key, salt = (workspace / KEY_FILE).read_text().strip(), (workspace / SALT_FILE).read_bytes().hex()
    (workspace / KEY_FILE).unlink()
    (workspace / SALT_FILE).unlink()
    other = request_file(workspace, id="MOVED-2", delete_records=["P1004"])
    for missing, kept, value in ((KEY_ENV, SALT_ENV, salt), (SALT_ENV, KEY_ENV, key)):
        monkeypatch.delenv(missing, raising=False)
        monkeypatch.setenv(kept, value)
        for argv in (["forget", str(request)], ["train", "people"], ["requests", "submit", str(other)]):
            message = run_bad(workspace, capsys, argv, f"set {missing} to the project's")
            assert key not in message and salt not in message, message
        assert not (workspace / KEY_FILE).exists() and not (workspace / SALT_FILE).exists()
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.setenv(SALT_ENV, salt)
    capsys.readouterr()
    assert main(["ledger", "verify"]) == 0 and main(["requests", "submit", str(other)]) == 0
    assert "warning" not in capsys.readouterr().err
