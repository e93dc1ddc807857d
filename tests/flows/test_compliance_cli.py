"""`unlearn requests | ledger | certificate`, called as the CLI calls them: exit codes, one-line
errors that change nothing, and the --json shapes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from flows import compliance_cli as cli
from tests.flows.conftest import project_root
from unlearning.compliance import signing

REQUEST = """id: REQ-1
model: people
delete_records: [P1011, P1012]
fix_labels: {P1033: "yes"}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness) -> Path:
    """A project with the `people` table and its production model: `requests submit` checks a
    request against them before the ledger records it."""
    from flows.cli import main
    from tests.flows.conftest import project_root, synthetic_people

    project = tmp_path_factory.mktemp("project")
    synthetic_people().to_csv(project / "people.csv", index=False)
    with project_root(project):
        assert main(["data", "add", "people", "--file", str(project / "people.csv"), "--target", "label",
                     "--id", "person"]) == 0
        assert main(["train", "people"]) == 0
    return project


@pytest.fixture
def root(tmp_path, monkeypatch, project) -> Path:
    """A workspace of its own (its ledger, its .unlearn/) holding the project's data and using its
    MLflow store (read only by these commands)."""
    monkeypatch.delenv("UNLEARN_LEDGER_URL", raising=False)
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.setenv("UNLEARN_TRACKING_URI", f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    shutil.copytree(project / "data", tmp_path / "data")
    shutil.copy(project / "data.dvc", tmp_path / "data.dvc")
    (tmp_path / "req.yaml").write_text(REQUEST)
    return tmp_path


def run(root: Path, capsys, *argv: str) -> tuple[int, str, str]:
    """Parse like `unlearn` does and call the registered function."""
    args = cli.build_parser().parse_args(list(argv))
    capsys.readouterr()
    code = cli.COMMANDS[args.command](args, root)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(root: Path, capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(root, capsys, *argv, "--json")
    return code, json.loads(out)  # exactly one JSON object on stdout


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_bad_input(root: Path, capsys, argv: list[str], expect: str) -> None:
    before = snapshot(root)
    code, out, err = run(root, capsys, *argv)
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expect.lower() in err.lower(), err
    assert snapshot(root) == before


# --- requests submit / list / show ----------------------------------------------------------------

def test_submit_records_the_request_with_its_deadline(root, capsys):
    code, out, err = run(root, capsys, "requests", "submit", str(root / "req.yaml"), "--received", "2026-01-31",
                         "--channel", "email")
    assert code == 0 and err == ""
    assert out == ("request REQ-1 received 2026-01-31T00:00:00+00:00 via email — deadline 2026-02-28 (1 calendar "
                   "month after receipt (GDPR art. 12(3)), extendable by up to 2 more months with reasons); "
                   "ledger entry 1\n")


def test_submit_json_and_resubmission(root, capsys):
    code, first = run_json(root, capsys, "requests", "submit", str(root / "req.yaml"), "--deadline-days", "45",
                           "--received", "2026-01-01T10:00:00+01:00")
    assert code == 0 and first["created"] is True
    assert {"id", "status", "received", "channel", "deadline", "deadline_rule", "request", "request_hash", "overdue",
            "days_left", "extensions", "response", "last_entry", "created"} <= set(first)
    assert (first["deadline"], first["channel"], first["request"]["fix_labels"]) == ("2026-02-15", "unspecified",
                                                                                      ["P1033"])
    ledger_before = (root / "ledger.db").read_bytes()
    code, again = run_json(root, capsys, "requests", "submit", str(root / "req.yaml"))
    assert code == 0 and again["created"] is False and again["deadline"] == "2026-02-15"
    assert (root / "ledger.db").read_bytes() == ledger_before
    code, out, _ = run(root, capsys, "requests", "submit", str(root / "req.yaml"))
    assert "already recorded" in out and "nothing changed" in out


def test_list_and_overdue(root, capsys):
    run(root, capsys, "requests", "submit", str(root / "req.yaml"), "--received", "2024-01-31")
    (root / "new.yaml").write_text(REQUEST.replace("REQ-1", "REQ-2"))
    run(root, capsys, "requests", "submit", str(root / "new.yaml"))
    code, listing = run_json(root, capsys, "requests", "list")
    assert code == 0 and listing["count"] == 2 and [r["id"] for r in listing["requests"]] == ["REQ-1", "REQ-2"]
    assert set(listing) == {"requests", "count", "now", "status", "overdue_only", "ledger"}
    assert listing["ledger"]["verified"] is True
    code, overdue = run_json(root, capsys, "requests", "list", "--overdue")
    assert code == 1 and [r["id"] for r in overdue["requests"]] == ["REQ-1"]  # a problem was found
    assert overdue["requests"][0]["deadline"] == "2024-02-29"
    code, out, _ = run(root, capsys, "requests", "list", "--status", "received")
    assert code == 0 and "OVERDUE" in out and "REQ-2" in out
    code, none = run_json(root, capsys, "requests", "list", "--status", "completed")
    assert code == 0 and none["requests"] == []


def test_show_lists_the_entries(root, capsys):
    run(root, capsys, "requests", "submit", str(root / "req.yaml"), "--channel", "web-form")
    code, out, _ = run(root, capsys, "requests", "extend", "REQ-1", "--reason", "complex: person told")
    assert code == 0 and "extended" in out
    code, shown = run_json(root, capsys, "requests", "show", "REQ-1")
    assert code == 0 and [e["event"] for e in shown["entries"]] == ["received", "extended"]
    assert {"seq", "hash", "prev_hash", "at", "data", "status", "request_id", "event"} == set(shown["entries"][0])
    assert shown["extensions"][0]["reason"] == "complex: person told"
    code, out, _ = run(root, capsys, "requests", "show", "REQ-1")
    assert code == 0 and "via web-form" in out and "complex: person told" in out


def test_deny_records_the_basis(root, capsys):
    run(root, capsys, "requests", "submit", str(root / "req.yaml"))
    code, denied = run_json(root, capsys, "requests", "deny", "REQ-1", "--basis", "art. 17(3)(b) legal obligation")
    assert code == 0 and denied["status"] == "denied"
    assert denied["response"]["basis"] == "art. 17(3)(b) legal obligation"


def test_a_reason_or_basis_longer_than_the_ledger_holds_is_refused_not_cut(root, capsys):
    """What the person was told is recorded whole or not at all: over MAX_TEXT characters it was
    cut to its first 499 and '…' without a word; now one line, exit 2, nothing written."""
    from unlearning.compliance.ledger import MAX_TEXT

    run(root, capsys, "requests", "submit", str(root / "req.yaml"))
    told = "complex request, as the person was told: " + "x" * MAX_TEXT
    assert_bad_input(root, capsys, ["requests", "extend", "REQ-1", "--reason", told],
                     f"--reason is {len(told)} characters; the ledger records at most {MAX_TEXT}")
    assert_bad_input(root, capsys, ["requests", "deny", "REQ-1", "--basis", told], "--basis is")
    whole = told[:MAX_TEXT]
    code, extended = run_json(root, capsys, "requests", "extend", "REQ-1", "--reason", whole)
    assert code == 0 and extended["extensions"][0]["reason"] == whole


# --- bad input: one line, exit 2, nothing written ----------------------------------------------------

@pytest.mark.parametrize("argv, expect", [
    (["requests", "submit", "missing.yaml"], "not found"),
    (["requests", "submit", "{bad}"], "not valid yaml"),
    (["requests", "submit", "{unknown}"], "unknown fields: colour"),
    (["requests", "submit", "{empty}"], "asks for nothing"),
    (["requests", "submit", "{req}", "--received", "yesterday"], "iso 8601"),
    (["requests", "submit", "{req}", "--received", "2999-01-01"], "future"),
    (["requests", "submit", "{req}", "--received", "0001-01-01"], "ten years ago"),
    (["requests", "submit", "{req}", "--channel", "jane@example.com"], "token"),
    (["requests", "submit", "{req}", "--deadline-days", "forty"], "whole number"),
    (["requests", "submit", "{req}", "--deadline-days", "4_5"], "whole number"),  # int(): 45, not as written
    (["requests", "submit", "{req}", "--deadline-days", "٣"], "whole number"),  # int(): 3
    (["requests", "submit", "{req}", "--deadline-days", "0"], "from 1 to 366"),
    (["requests", "show", "REQ-9"], "no request 'REQ-9'"),
    (["requests", "list", "--status", "done"], "unknown status"),
    (["requests", "extend", "REQ-9", "--reason", "r"], "no request"),
    (["requests", "deny", "REQ-9", "--basis", "b"], "no request"),
    (["ledger", "verify", "--expect-head", "7"], "seq:hash"),
    (["ledger", "verify", "--expect-head", "²:" + "0" * 64], "seq:hash"),  # isdigit(), yet int() raises
    (["ledger", "verify", "--expect-head", "٣:" + "0" * 64], "seq:hash"),  # int(): 3, not as written
    (["ledger", "verify", "--expect-head", "1_0:" + "0" * 64], "seq:hash"),  # int(): 10
    (["certificate", "verify", "nope.json"], "not found"),
    (["certificate", "verify", "folder.json"], "not a regular file"),  # was "not found; check the path"
])
def test_bad_input_on_an_empty_workspace(root, capsys, argv, expect):
    files = {"bad": "id: [unclosed\n", "unknown": REQUEST + "colour: red\n", "empty": "id: R\nmodel: m\n"}
    for name, text in files.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "folder.json").mkdir(exist_ok=True)
    argv = [str(root / f"{a[1:-1]}.yaml") if a.startswith("{") else
            (str(root / a) if a.endswith((".yaml", ".json")) else a) for a in argv]
    assert_bad_input(root, capsys, argv, expect)
    assert not (root / "ledger.db").exists() and not (root / ".unlearn").exists()


def test_bad_input_leaves_an_existing_ledger_unchanged(root, capsys):
    run(root, capsys, "requests", "submit", str(root / "req.yaml"), "--received", "2024-01-31")
    (root / "other.yaml").write_text(REQUEST.replace('"yes"', '"no"'))
    assert_bad_input(root, capsys, ["requests", "submit", str(root / "other.yaml")], "already in the ledger")
    assert_bad_input(root, capsys, ["requests", "extend", "REQ-1", "--reason", "late"], "has passed")
    assert_bad_input(root, capsys, ["requests", "deny", "REQ-1", "--basis", "  "], "basis")
    run(root, capsys, "requests", "deny", "REQ-1", "--basis", "b")
    assert_bad_input(root, capsys, ["requests", "deny", "REQ-1", "--basis", "b"], "cannot become denied")
    (root / "cert.json").write_text("{}")
    (root / ".unlearn" / "signing.key").rename(root / "kept-elsewhere.key")
    assert_bad_input(root, capsys, ["certificate", "verify", str(root / "cert.json")], "no signing key")
    assert_bad_input(root, capsys, ["ledger", "verify"], f"set {signing.KEY_ENV}")


# --- ledger verify -------------------------------------------------------------------------------------

def submitted(root: Path, capsys, n: int) -> None:
    for i in range(n):
        (root / f"r{i}.yaml").write_text(REQUEST.replace("REQ-1", f"REQ-{i}"))
        run(root, capsys, "requests", "submit", str(root / f"r{i}.yaml"))


def test_ledger_verify_names_the_first_bad_entry(root, capsys):
    code, report = run_json(root, capsys, "ledger", "verify")
    assert code == 0 and report == {"ok": True, "first_bad": None, "message": "ledger empty: 0 entries", "head": None}
    submitted(root, capsys, 3)
    code, report = run_json(root, capsys, "ledger", "verify")
    assert code == 0 and report["ok"] and report["head"]["seq"] == 3
    head = f"{report['head']['seq']}:{report['head']['hash']}"
    assert run(root, capsys, "ledger", "verify", "--expect-head", head)[0] == 0
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("UPDATE ledger_entries SET request_id = 'REQ-X' WHERE seq = 2")
    code, out, err = run(root, capsys, "ledger", "verify")
    assert code == 1 and out.startswith("LEDGER BROKEN: entry 2 ") and err == ""
    code, report = run_json(root, capsys, "ledger", "verify")
    assert code == 1 and (report["ok"], report["first_bad"]) == (False, 2)


def test_ledger_verify_finds_a_forged_append_and_cut_off_entries_without_expect_head(root, capsys):
    submitted(root, capsys, 3)
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("DROP TRIGGER ledger_no_delete")
        head = db.execute("SELECT seq, hash FROM ledger_entries ORDER BY seq DESC LIMIT 1").fetchone()
        body = {"seq": 4, "request_id": "REQ-0", "event": "denied", "status": "denied",
                "at": "2026-01-11T00:00:00+00:00", "data": {"basis": "forged"}, "prev_hash": head[1]}
        db.execute("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (4, "REQ-0", "denied", "denied", body["at"], '{"basis":"forged"}', head[1],
                    hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()))
    code, out, _ = run(root, capsys, "ledger", "verify", "--expect-head", f"4:{'0' * 64}")
    assert code == 1 and out.startswith("LEDGER BROKEN: entry 4 (request 'REQ-0', denied)")
    assert_comply_refuses(root, capsys, "entry 4 (request 'REQ-0', denied)")
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE seq >= 3")  # the forgery and a genuine entry
    code, report = run_json(root, capsys, "ledger", "verify")
    assert code == 1 and report["first_bad"] == 3 and "newest entries were removed" in report["message"]


def test_list_and_show_say_when_the_ledger_does_not_verify(root, capsys):
    """A row rewritten in the database (a request's receipt moved back years: overdue) is shown as
    stored, but never as if the ledger vouched for it: a warning line and exit 1."""
    submitted(root, capsys, 2)
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("UPDATE ledger_entries SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 2")
    code, out, err = run(root, capsys, "requests", "list")
    assert code == 1 and "REQ-1" in out
    assert err.count("\n") == 1 and err.startswith("warning: the ledger does not verify — entry 2 ")
    code, listing = run_json(root, capsys, "requests", "list")
    assert code == 1 and listing["ledger"]["verified"] is False and "entry 2" in listing["ledger"]["message"]
    code, shown = run_json(root, capsys, "requests", "show", "REQ-1")
    assert code == 1 and shown["ledger"]["verified"] is False


def test_list_without_the_signing_key_says_it_is_unverified(root, capsys):
    submitted(root, capsys, 1)
    (root / ".unlearn" / "signing.key").rename(root / "elsewhere.key")
    code, out, err = run(root, capsys, "requests", "list")
    assert code == 0 and "REQ-0" in out
    assert err.startswith("note: not verified:") and "no signing key" in err and err.count("\n") == 1


def test_ledger_seal_signs_the_head_again_after_the_head_file_was_lost(root, capsys):
    submitted(root, capsys, 2)
    (root / ".unlearn" / "ledger.head").unlink()
    assert run(root, capsys, "ledger", "verify")[0] == 1
    code, sealed = run_json(root, capsys, "ledger", "seal")
    assert code == 0 and sealed["ok"] and sealed["head"]["seq"] == 2 and set(sealed) == {"ok", "message", "head"}
    assert run(root, capsys, "ledger", "verify")[0] == 0


def assert_comply_refuses(root: Path, capsys, expect: str) -> None:
    """`unlearn comply` on a ledger that does not verify: one line, exit 2, before any flow runs."""
    from flows.cli import main

    saved = dict(os.environ)
    os.environ["UNLEARN_ROOT"] = str(root)
    try:
        before = snapshot(root)
        capsys.readouterr()
        code = main(["comply"])
        out, err = capsys.readouterr()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 2 and out == "" and err.count("\n") == 1 and expect in err, (out, err)
    assert "nothing was processed" in err and snapshot(root) == before


# --- a bad UNLEARN_LEDGER_URL ----------------------------------------------------------------------------

@pytest.fixture
def restored_environment():
    """`unlearn`'s main sets Prefect/MLflow defaults in os.environ: put it back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("url, expect", [
    ("notaurl", "not a database url"),
    ("postgresql://unlearn:s3cret-pw@127.0.0.1:1/ledger", "postgresql://unlearn:***@127.0.0.1:1/ledger"),
    # libpq takes the password as a query parameter too: it was echoed
    ("postgresql://127.0.0.1:1/ledger?sslmode=disable&password=s3cret-pw",
     "postgresql://127.0.0.1:1/ledger?password=***&sslmode=***"),
    ("sqlite:////nonexistent/dir/x.db", "directory /nonexistent/dir of the sqlite ledger does not exist"),
    ("sqlite:////", "cannot be opened"),
], ids=["not a url", "unreachable postgresql", "password in the query", "missing directory", "a directory"])
@pytest.mark.parametrize("argv", [["requests", "submit", "req.yaml"], ["requests", "list"], ["requests", "show", "R"],
                                  ["ledger", "verify"], ["ledger", "seal"], ["comply"]],
                         ids=lambda a: " ".join(a[:2]))
def test_a_bad_ledger_url_is_one_line_exit_2_for_every_command(root, capsys, monkeypatch, restored_environment,
                                                                url, expect, argv):
    from flows.cli import main

    monkeypatch.setenv("UNLEARN_ROOT", str(root))
    monkeypatch.setenv("UNLEARN_LEDGER_URL", url)
    monkeypatch.chdir(root)
    before = snapshot(root)
    capsys.readouterr()
    started = time.monotonic()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "UNLEARN_LEDGER_URL" in err and expect in err.lower() and "s3cret-pw" not in err, err
    assert time.monotonic() - started < 30  # bounded, not a hang
    assert {k: v for k, v in snapshot(root).items() if not k.startswith(".prefect")} == before


# --- certificate verify ------------------------------------------------------------------------------

def test_certificate_verify(root, capsys):
    key = signing.signing_key(root)
    path = signing.write_signed(root / "REQ-1.json", signing.sign({"request": {"id": "REQ-1"}, "x": 1}, key))
    code, out, _ = run(root, capsys, "certificate", "verify", str(path))
    assert code == 0 and "signature valid" in out and "no ledger" in out
    path.write_text(path.read_text().replace('"x": 1', '"x": 2'))
    code, report = run_json(root, capsys, "certificate", "verify", str(path))
    assert code == 1 and report["ok"] is False and "altered" in report["message"]
    assert set(report) == {"ok", "path", "message"}


def completed_with_certificate(root: Path, capsys, request_id: str, recorded_sha256: str | None = None) -> Path:
    """A request received, processed and completed with a signed certificate filed as comply files it."""
    from tasks.certificates import CERTIFICATES
    from tasks import ledger

    (root / f"{request_id}.yaml").write_text(REQUEST.replace("REQ-1", request_id))
    run(root, capsys, "requests", "submit", str(root / f"{request_id}.yaml"))
    signed = signing.sign({"request": {"id": request_id}, "verified": True}, signing.signing_key(root))
    path = signing.write_signed(root / CERTIFICATES / f"{request_id}.json", signed)
    ledger.transition(root, request_id, "processing")
    ledger.transition(root, request_id, "completed", certificate=str(path.relative_to(root)),
                      certificate_sha256=recorded_sha256 or hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_a_certificate_is_bound_to_its_request_and_to_the_ledger_entry(root, capsys):
    genuine = completed_with_certificate(root, capsys, "REQ-A")
    other = completed_with_certificate(root, capsys, "REQ-B")
    code, out, _ = run(root, capsys, "certificate", "verify", str(genuine))
    assert code == 0 and "recorded by ledger entry" in out, out
    # request A's valid certificate saved under request B's file name
    shutil.copy(genuine, other)
    code, out, _ = run(root, capsys, "certificate", "verify", str(other))
    assert code == 1 and out.startswith("INVALID: REQ-B.json: a valid certificate of request 'REQ-A'"), out
    # a certificate the ledger did not record: its completed entry names another sha256
    mismatched = completed_with_certificate(root, capsys, "REQ-C", recorded_sha256="0" * 64)
    code, out, _ = run(root, capsys, "certificate", "verify", str(mismatched))
    assert code == 1 and "not the certificate issued" in out, out
    # a signed certificate of a request the ledger never completed
    pending = signing.write_signed(genuine.with_name("REQ-1.json"),
                                   signing.sign({"request": {"id": "REQ-1"}}, signing.signing_key(root)))
    code, out, _ = run(root, capsys, "certificate", "verify", str(pending))
    assert code == 1 and "no completed entry" in out, out
