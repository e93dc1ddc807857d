"""The ledger on real SQLite files: append-only storage, tampering found by raw SQL edits (also
by someone who recomputes hashes but lacks the key), the signed head, a process killed between its
commit and its head write, two processes appending at once, resubmission, deadlines, format 1
ledgers sealed, and no personal value in the file."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import secrets
import sqlite3
import time
import traceback
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks import ledger, ledger_db, ledger_head, ledger_verify
from unlearning.compliance import mac_chain
from unlearning.compliance.requests import KINDS, UnlearningRequest
from unlearning.errors import UnlearnError

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def local_ledger(monkeypatch):
    monkeypatch.delenv(ledger_db.URL_ENV, raising=False)
    monkeypatch.delenv("UNLEARN_SIGNING_KEY", raising=False)  # each test's key file: .unlearn/signing.key


def req(rid="REQ-1", **extra) -> UnlearningRequest:
    return UnlearningRequest(**{"id": rid, "model": "adult", "delete_records": ["4711", "4712"], **extra})


def rows(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "ledger.db") as db:
        return db.execute("SELECT seq, request_id, event, status FROM ledger_entries ORDER BY seq").fetchall()


def tamper(root: Path, *statements: str) -> None:
    """Raw SQL, as someone with the file would run it (the append-only triggers dropped first)."""
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("DROP TRIGGER ledger_no_delete")
        for statement in statements:
            db.execute(statement)


def filled(root: Path, n: int = 4) -> None:
    """n requests, the first one processed to completion: 2 + n entries."""
    for i in range(1, n + 1):
        ledger.submit(root, req(f"REQ-{i}"), received=T0, channel="email", now=T0)
    ledger.transition(root, "REQ-1", "processing", now=T0 + timedelta(hours=1))
    ledger.transition(root, "REQ-1", "completed", now=T0 + timedelta(hours=2), certificate="c.json")


# --- storing and reading -----------------------------------------------------------------------

def test_submit_show_list_pending(tmp_path):
    entry = ledger.submit(tmp_path, req(), received="2026-01-10T09:00:00+00:00", channel="Web-Form", now=T0)
    assert (entry.seq, entry.event, entry.prev_hash) == (1, "received", mac_chain.GENESIS)
    assert (tmp_path / "ledger.db").is_file()
    record = ledger.show(tmp_path, "REQ-1")
    assert (record.status, record.channel, record.deadline) == ("received", "web-form", date(2026, 2, 10))
    ledger.submit(tmp_path, req("REQ-2"), now=T0)
    ledger.submit(tmp_path, req("REQ-3"), now=T0)
    ledger.transition(tmp_path, "REQ-2", "processing", now=T0)
    ledger.transition(tmp_path, "REQ-3", "processing", now=T0)
    ledger.transition(tmp_path, "REQ-3", "failed", now=T0, reason="registry unreachable")
    assert [r.id for r in ledger.pending(tmp_path)] == ["REQ-1", "REQ-3"]
    assert [r.id for r in ledger.list_requests(tmp_path, status="processing")] == ["REQ-2"]
    assert ledger_verify.verify_chain(tmp_path)[0]


def test_overdue_listing(tmp_path):
    ledger.submit(tmp_path, req("OLD"), received="2025-11-30", now=T0)  # deadline 2025-12-30
    ledger.submit(tmp_path, req("NEW"), received="2026-01-09", now=T0)
    ledger.submit(tmp_path, req("DONE"), received="2025-11-01", now=T0)
    ledger.transition(tmp_path, "DONE", "denied", now=T0, basis="manifestly unfounded (art. 12(5))")
    assert [r.id for r in ledger.list_requests(tmp_path, overdue=True, now=T0)] == ["OLD"]
    assert ledger.list_requests(tmp_path, overdue=True, now=datetime(2025, 12, 30, 23, tzinfo=timezone.utc)) == []
    assert ledger.show(tmp_path, "DONE").answered_late() is True


def test_month_end_deadlines_are_stored_as_an_enumeration_gives_them(tmp_path):
    def next_month_same_day_or_last(day: date) -> date:
        candidates = [day + timedelta(days=k) for k in range(1, 32)]
        following = [d for d in candidates if (d.year, d.month) == ((day.year, day.month + 1) if day.month < 12
                                                                    else (day.year + 1, 1))]
        same = [d for d in following if d.day == day.day]
        return same[0] if same else following[-1]

    days = [date(2024, 1, d) for d in (28, 29, 30, 31)] + [date(2025, 1, d) for d in (28, 29, 30, 31)] + \
        [date(2025, 3, 31), date(2025, 5, 31), date(2025, 8, 31), date(2025, 12, 31), date(2024, 2, 29)]
    for i, day in enumerate(days):
        ledger.submit(tmp_path, req(f"R{i}"), received=day.isoformat(), now=T0)
    for i, day in enumerate(days):
        assert ledger.show(tmp_path, f"R{i}").deadline == next_month_same_day_or_last(day), day
    ledger.submit(tmp_path, req("CCPA"), received="2026-01-01", deadline_days=45, now=T0)
    assert ledger.show(tmp_path, "CCPA").deadline == date(2026, 2, 15)


def test_other_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv(ledger_db.URL_ENV, f"sqlite:///{tmp_path / 'elsewhere.db'}")
    ledger.submit(tmp_path, req(), now=T0)
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "ledger.db").exists()
    assert ledger.show(tmp_path, "REQ-1").status == "received"


# --- resubmission and bad input ----------------------------------------------------------------------

def test_resubmitting_the_same_content_is_a_no_op(tmp_path):
    first, created = ledger.record_request(tmp_path, req(fix_labels={"9": "yes"}), received="2026-01-02",
                                           channel="email", now=T0)
    reordered = req(delete_records=["4712", "4711"], fix_labels={"9": "yes"})
    again, created_again = ledger.record_request(tmp_path, reordered, received="2026-01-09", channel="phone",
                                                 now=T0 + timedelta(days=1))
    assert created and not created_again and again == first
    assert len(rows(tmp_path)) == 1
    assert ledger.show(tmp_path, "REQ-1").channel == "email"  # the earlier record stands


def test_the_same_id_for_other_content_is_refused_and_changes_nothing(tmp_path):
    ledger.submit(tmp_path, req(fix_labels={"9": "yes"}), now=T0)
    stored = ledger.request_file(tmp_path, "REQ-1").read_bytes()
    before = (tmp_path / "ledger.db").read_bytes()
    with pytest.raises(UnlearnError, match="new id") as excinfo:
        ledger.submit(tmp_path, req(fix_labels={"9": "no"}), now=T0)
    assert "\n" not in str(excinfo.value)
    assert (tmp_path / "ledger.db").read_bytes() == before
    assert ledger.request_file(tmp_path, "REQ-1").read_bytes() == stored


def test_bad_input_creates_no_file(tmp_path):
    with pytest.raises(UnlearnError, match="future"):
        ledger.submit(tmp_path, req(), received=T0 + timedelta(days=1), now=T0)
    with pytest.raises(UnlearnError, match="token"):
        ledger.submit(tmp_path, req(), channel="jane@example.com", now=T0)
    with pytest.raises(UnlearnError, match="no request"):
        ledger.transition(tmp_path, "REQ-1", "processing")
    with pytest.raises(UnlearnError, match="no request"):
        ledger.show(tmp_path, "REQ-1")
    assert ledger.list_requests(tmp_path) == [] and ledger_verify.verify_chain(tmp_path)[0]
    assert list(tmp_path.iterdir()) == []


def test_the_submitted_request_is_kept_privately_and_checked(tmp_path):
    request = req(fix_labels={"9": "yes"})
    ledger.submit(tmp_path, request, now=T0)
    path = ledger.request_file(tmp_path, "REQ-1")
    assert path.stat().st_mode & 0o077 == 0
    assert ledger.load_submitted(tmp_path, "REQ-1") == request
    path.write_text(json.dumps({**request.model_dump(), "fix_labels": {"9": "no"}}))
    with pytest.raises(UnlearnError, match="no longer matches"):
        ledger.load_submitted(tmp_path, "REQ-1")


def test_no_personal_value_reaches_the_ledger_file(tmp_path):
    labels = {"P1001": "label-value-zeta", "P1002": "label-value-omega"}
    request = req(delete_records=["P2001", "P2002"], fix_labels=labels, revoke_features=["sex"])
    ledger.submit(tmp_path, request, channel="email", now=T0)
    ledger.transition(tmp_path, "REQ-1", "processing", now=T0)
    raw = (tmp_path / "ledger.db").read_bytes()
    for value in labels.values():
        assert value.encode() not in raw
    assert request.content_hash().encode() not in raw  # only the salted hash: labels can't be brute-forced
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        data = [json.loads(d) for (d,) in db.execute("SELECT data FROM ledger_entries ORDER BY seq")]
    assert data[0]["request"]["fix_labels"] == ["P1001", "P1002"]  # ids, which the record-keeping needs
    # Every text value the entries hold is an id, a name from the request's schema, a hash or a time.
    known = {"REQ-1", "adult", "auto", "email", mac_chain.FORMAT, "months", "sex", "P1001", "P1002", "P2001", "P2002",
             *KINDS}
    for text in strings_in(data):
        assert text in known or re.fullmatch(r"[0-9a-f]{64}|\d{4}-\d\d-\d\d(T[\d:.]+[+-]\d\d:\d\d)?", text), text


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]  # the keys are the code's field names
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


# --- append-only and tampering ----------------------------------------------------------------------

def test_update_and_delete_are_refused_by_the_database(tmp_path):
    filled(tmp_path)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE ledger_entries SET status = 'denied' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM ledger_entries WHERE seq = 2")


@pytest.mark.parametrize("statement, first_bad, words", [
    ("UPDATE ledger_entries SET status = 'denied' WHERE seq = 5", 5, "altered"),
    ("UPDATE ledger_entries SET data = replace(data, '4711', '4713') WHERE seq = 2", 2, "altered"),
    ("UPDATE ledger_entries SET at = '2026-01-01T00:00:00+00:00' WHERE seq = 6", 6, "altered"),
    ("UPDATE ledger_entries SET data = replace(data, ':', ': ') WHERE seq = 3", 3, "canonical"),
    ("DELETE FROM ledger_entries WHERE seq = 3", 3, "missing"),
    ("DELETE FROM ledger_entries WHERE seq = 1", 1, "missing"),
])
def test_raw_sql_tampering_is_named(tmp_path, statement, first_bad, words):
    filled(tmp_path)
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)
    tamper(tmp_path, statement)
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    assert (ok, bad) == (False, first_bad), message
    assert words in message and f"entry {first_bad}" in message


def test_reordered_rows_are_named(tmp_path):
    filled(tmp_path)
    tamper(tmp_path, "UPDATE ledger_entries SET seq = 100 WHERE seq = 3",
           "UPDATE ledger_entries SET seq = 3 WHERE seq = 4", "UPDATE ledger_entries SET seq = 4 WHERE seq = 100")
    assert ledger_verify.verify_chain(tmp_path)[:2] == (False, 3)


def all_rows(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "ledger.db") as db:
        return db.execute("SELECT seq, request_id, event, status, at, data, prev_hash, hash FROM ledger_entries "
                          "ORDER BY seq").fetchall()


def body(seq, request_id, event, status, at, data, prev_hash) -> dict:
    return {"seq": seq, "request_id": request_id, "event": event, "status": status, "at": at,
            "data": json.loads(data), "prev_hash": prev_hash}


def insert_forged(root: Path, request_id: str, event: str, status: str, data: dict, digest) -> int:
    """Append a row after the head, linked to it, with `digest(body)` as its hash."""
    head = all_rows(root)[-1]
    row = (head[0] + 1, request_id, event, status, "2026-01-11T00:00:00+00:00", mac_chain.canonical_json(data), head[7])
    with sqlite3.connect(root / "ledger.db") as db:
        db.execute("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, digest(body(*row))))
    return row[0]


@pytest.mark.parametrize("digest", [mac_chain.entry_hash, lambda _body: secrets.token_hex(32)],
                         ids=["recomputed plain sha256", "random MAC"])
def test_a_forged_denial_appended_without_the_key_is_named(tmp_path, digest):
    filled(tmp_path)
    tamper(tmp_path)  # the triggers go first, as an attacker with the file would do
    seq = insert_forged(tmp_path, "REQ-2", "denied", "denied", {"basis": "forged"}, digest)
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    assert (ok, bad) == (False, seq) and f"entry {seq} (request 'REQ-2', denied)" in message
    ok, bad, _ = ledger_verify.verify_chain(tmp_path, expect_head=(seq, all_rows(tmp_path)[-1][7]))  # even so
    assert (ok, bad) == (False, seq)
    before = all_rows(tmp_path)
    with pytest.raises(UnlearnError, match="does not match its MAC"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)
    with pytest.raises(UnlearnError, match="nothing was processed"):  # REQ-2 is not silently skipped
        ledger.pending(tmp_path)
    assert all_rows(tmp_path) == before


@pytest.mark.parametrize("removed", [1, 3, 6])
def test_cut_off_newest_entries_are_found_by_the_signed_head(tmp_path, removed):
    filled(tmp_path)  # 6 entries
    assert ledger_verify.verify_chain(tmp_path) == (True, None, f"ledger intact: 6 entries, head entry 6 "
                                                         f"{all_rows(tmp_path)[-1][7]}")
    tamper(tmp_path, f"DELETE FROM ledger_entries WHERE seq > {6 - removed}")
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    gone = "the ledger is missing" if removed == 6 else "newest entries were removed"  # none left: said so
    assert (ok, bad) == (False, 6) and gone in message, message
    with pytest.raises(UnlearnError, match="nothing was added"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)
    assert len(all_rows(tmp_path)) == 6 - removed


def test_a_rewritten_and_rechained_ledger_is_named_where_the_rewrite_starts(tmp_path):
    filled(tmp_path)
    original = all_rows(tmp_path)
    statements, prev = [], original[1][7]
    for seq, rid, event, status, at, data, _, _ in original[2:]:  # entry 3 on, as it could be recomputed
        data = data.replace("email", "phone") if seq == 3 else data
        digest = mac_chain.entry_hash(body(seq, rid, event, status, at, data, prev))
        statements.append(f"UPDATE ledger_entries SET data = '{data}', prev_hash = '{prev}', hash = '{digest}' "
                          f"WHERE seq = {seq}")
        prev = digest
    tamper(tmp_path, *statements)
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    assert (ok, bad) == (False, 3) and "entry 3" in message and "plain SHA-256" in message


def test_without_the_key_verify_says_how_to_provide_it(tmp_path):
    filled(tmp_path)
    (tmp_path / ".unlearn" / "signing.key").rename(tmp_path / "elsewhere.key")
    with pytest.raises(UnlearnError, match="UNLEARN_SIGNING_KEY") as excinfo:
        ledger_verify.verify_chain(tmp_path)
    assert "\n" not in str(excinfo.value)
    assert not (tmp_path / ".unlearn" / "signing.key").exists()  # checking never creates a key


def test_an_altered_head_file_is_refused(tmp_path):
    filled(tmp_path)
    path = ledger_head.head_file(tmp_path)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "seq": 3}))
    ok, _, message = ledger_verify.verify_chain(tmp_path)
    assert not ok and "not valid" in message
    with pytest.raises(UnlearnError, match="not valid"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)


def killed_after_commit(root: str, request_id: str) -> None:
    """An append whose process dies right after its commit, before it writes the signed head."""
    ledger._advance_head = lambda *_: os._exit(9)
    ledger.submit(Path(root), req(request_id), now=T0)


def run_killed_append(root: Path, request_id: str) -> None:
    proc = processes().Process(target=killed_after_commit, args=(str(root), request_id))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 9


@pytest.mark.parametrize("before", [0, 4], ids=["first append", "later append"])
def test_a_process_killed_between_commit_and_head_write_is_recovered(tmp_path, before):
    """Documented behaviour: the database holds the entry, the head lags one behind; entries
    beyond the signed head whose MACs verify are accepted and the head is moved forward."""
    for i in range(before):
        ledger.submit(tmp_path, req(f"REQ-{i}"), now=T0)
    run_killed_append(tmp_path, "KILLED")
    assert rows(tmp_path)[-1][1] == "KILLED"  # committed
    signed = json.loads(ledger_head.head_file(tmp_path).read_text())
    assert signed["seq"] == before
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    assert (ok, bad) == (True, None) and "1 entry behind" in message and "moved forward" in message
    assert json.loads(ledger_head.head_file(tmp_path).read_text())["seq"] == before + 1
    assert ledger_verify.verify_chain(tmp_path)[2].startswith("ledger intact")

    run_killed_append(tmp_path, "KILLED-AGAIN")  # and the next append recovers it as well
    ledger.submit(tmp_path, req("NEXT"), now=T0)
    assert json.loads(ledger_head.head_file(tmp_path).read_text())["seq"] == before + 3
    assert ledger_verify.verify_chain(tmp_path) == (True, None, f"ledger intact: {before + 3} entries, head entry "
                                                         f"{before + 3} {all_rows(tmp_path)[-1][7]}")


def as_format_1(root: Path) -> None:
    """Rewrite a ledger as the previous version wrote it: plain SHA-256 chain, no head file."""
    statements, prev = [], mac_chain.GENESIS
    for seq, rid, event, status, at, data, _, _ in all_rows(root):
        digest = mac_chain.entry_hash(body(seq, rid, event, status, at, data, prev))
        statements.append(f"UPDATE ledger_entries SET prev_hash = '{prev}', hash = '{digest}' WHERE seq = {seq}")
        prev = digest
    tamper(root, *statements, *ledger_db.TRIGGERS.values())
    ledger_head.head_file(root).unlink()


def test_a_format_1_ledger_is_reported_refused_for_appends_and_sealed(tmp_path):
    filled(tmp_path)
    as_format_1(tmp_path)
    content = [r[:6] for r in all_rows(tmp_path)]
    ok, bad, message = ledger_verify.verify_chain(tmp_path)
    assert (ok, bad) == (False, 1) and "format 1" in message and "ledger seal" in message
    with pytest.raises(UnlearnError, match="format 1"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)
    ok, message = ledger_verify.seal(tmp_path)
    assert ok and "6 format 1 entries keyed" in message
    assert [r[:6] for r in all_rows(tmp_path)] == content  # the same entries, now MACed
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)
    ledger.submit(tmp_path, req("REQ-9"), now=T0)
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)
    with sqlite3.connect(tmp_path / "ledger.db") as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM ledger_entries WHERE seq = 7")  # the triggers are back


def test_a_keyed_ledger_rewritten_as_format_1_is_never_sealed(tmp_path):
    """Without the key, someone who can write the database rewrites it as a plain SHA-256 chain
    (here: the newest entry cut off too). The signed head shows the ledger was keyed already, so
    sealing it would launder the rewrite: refused."""
    filled(tmp_path)
    signed = ledger_head.head_file(tmp_path).read_bytes()
    tamper(tmp_path, "DELETE FROM ledger_entries WHERE seq = 6", *ledger_db.TRIGGERS.values())
    as_format_1(tmp_path)
    ledger_head.head_file(tmp_path).write_bytes(signed)
    before = all_rows(tmp_path)
    ok, message = ledger_verify.seal(tmp_path)
    assert not ok and "not sealed" in message and "signed head" in message
    assert all_rows(tmp_path) == before and ledger_head.head_file(tmp_path).read_bytes() == signed
    assert not ledger_verify.verify_chain(tmp_path)[0]


def test_a_broken_chain_is_never_sealed(tmp_path):
    filled(tmp_path)
    as_format_1(tmp_path)
    tamper(tmp_path, "UPDATE ledger_entries SET status = 'denied' WHERE seq = 5")
    before = all_rows(tmp_path)
    ok, message = ledger_verify.seal(tmp_path)
    assert not ok and "not sealed" in message and "entry 5" in message
    assert all_rows(tmp_path) == before and not ledger_head.head_file(tmp_path).exists()


def test_seal_without_the_key_refuses_and_makes_no_key(tmp_path):
    """Sealing is the key holder's act: without the key (a runner lacking UNLEARN_SIGNING_KEY) it
    must not draw a new key, after which the intact ledger would read as forged."""
    from unlearning.compliance import signing

    filled(tmp_path)
    (tmp_path / signing.KEY_FILE).unlink()
    ledger_head.head_file(tmp_path).unlink()
    before = all_rows(tmp_path)
    with pytest.raises(UnlearnError, match="no signing key"):
        ledger_verify.seal(tmp_path)
    assert not (tmp_path / signing.KEY_FILE).exists() and not ledger_head.head_file(tmp_path).exists()
    assert all_rows(tmp_path) == before


def test_a_lost_head_file_fails_verification_until_the_key_holder_seals(tmp_path):
    filled(tmp_path)
    ledger_head.head_file(tmp_path).unlink()
    ok, _, message = ledger_verify.verify_chain(tmp_path)
    assert not ok and "no signed head" in message
    ok, message = ledger_verify.seal(tmp_path)
    assert ok and "signed head entry 6" in message
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)


def test_a_new_empty_database_is_refused_until_the_key_holder_seals(tmp_path, monkeypatch):
    filled(tmp_path)
    monkeypatch.setenv(ledger_db.URL_ENV, f"sqlite:///{tmp_path / 'new.db'}")  # the ledger moved, rows left behind
    assert ledger_verify.verify_chain(tmp_path)[:2] == (False, 6)
    with pytest.raises(UnlearnError, match="the ledger is missing.*restore it from a backup"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)
    ok, message = ledger_verify.seal(tmp_path)
    assert ok and "reset to entry 0 (it named entry 6)" in message
    ledger.submit(tmp_path, req("REQ-9"), now=T0)
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)


def test_the_head_file_is_private_and_names_the_newest_entry(tmp_path):
    filled(tmp_path)
    path = ledger_head.head_file(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    signed = mac_chain.read_head(json.loads(path.read_text()), ledger_head.ledger_key(tmp_path))
    assert signed == (6, all_rows(tmp_path)[-1][7])


def test_appending_to_an_altered_head_is_refused(tmp_path):
    filled(tmp_path)
    tamper(tmp_path, "UPDATE ledger_entries SET status = 'received' WHERE seq = 6")
    with pytest.raises(UnlearnError, match="ledger verify"):
        ledger.submit(tmp_path, req("REQ-9"), now=T0)


# --- concurrency --------------------------------------------------------------------------------------

FORK = multiprocessing.get_context("fork")


class ForkedChild(FORK.Process):
    """A forked child that leaves by os._exit once its work is done. It inherits the parent's
    thread-exit hooks: a Prefect service started earlier in the process (by a flow or CLI test)
    registers one that fails in a child without the service's thread (an AssertionError in its
    drain), which made the child exit 1 after its work had succeeded, with no traceback — these
    tests failed whenever tests/flows/test_cli_bad_input.py ran before them in the same process."""

    def run(self) -> None:
        try:
            super().run()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)


def processes() -> SimpleNamespace:
    """Forked OS processes, each opening its own SQLite connections (the parent holds none open
    between calls). Fork, not spawn: a spawned child would spend seconds re-importing the stack."""
    return SimpleNamespace(Process=ForkedChild, Barrier=FORK.Barrier)


def append_worker(root: str, name: str, n: int, barrier) -> None:
    barrier.wait()
    for i in range(n):
        ledger.submit(Path(root), req(f"{name}-{i}"), channel="ci")
        time.sleep(0.003)  # give the other process a chance to get in between


def claim_worker(root: str, ids: list[str], barrier, out: str) -> None:
    barrier.wait()
    won = []
    for rid in ids:
        try:
            ledger.transition(Path(root), rid, "processing", run_id=out)
            won.append(rid)
        except UnlearnError:
            pass
    Path(out).write_text(json.dumps(won))


def test_two_processes_appending_at_once_keep_one_valid_chain(tmp_path):
    n = 15
    ctx = processes()
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=append_worker, args=(str(tmp_path), name, n, barrier)) for name in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = rows(tmp_path)
    assert [e[0] for e in entries] == list(range(1, 2 * n + 1))  # no gap, no duplicate
    assert sorted(e[1] for e in entries) == sorted(f"{name}-{i}" for name in "AB" for i in range(n))
    switches = sum(a[1][0] != b[1][0] for a, b in zip(entries, entries[1:]))
    assert switches >= 1  # the two writers really interleaved
    assert ledger_verify.verify_chain(tmp_path)[0]


def test_two_processes_claiming_the_same_requests_claim_each_once(tmp_path):
    ids = [f"REQ-{i}" for i in range(10)]
    for rid in ids:
        ledger.submit(tmp_path, req(rid), now=T0)
    ctx = processes()
    barrier = ctx.Barrier(2)
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [ctx.Process(target=claim_worker, args=(str(tmp_path), order, barrier, str(out)))
             for order, out in ((ids, outs[0]), (ids[::-1], outs[1]))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    won = [json.loads(out.read_text()) for out in outs]
    assert sorted(won[0] + won[1]) == sorted(ids)  # every request claimed, none twice
    assert [r[1] for r in rows(tmp_path) if r[2] == "processing"].count("REQ-0") == 1
    assert ledger_verify.verify_chain(tmp_path)[0]


def test_a_writer_that_read_a_stale_head_retries(tmp_path, monkeypatch):
    """The path a PostgreSQL ledger takes (no BEGIN IMMEDIATE there): two writers read the same
    head, the unique seq lets one insert, the other rolls back and appends after it."""
    ledger.submit(tmp_path, req("REQ-1"), now=T0)
    stale = ledger_db.read_entries(tmp_path)[0]
    ledger.submit(tmp_path, req("REQ-2"), now=T0)  # the head moved on
    real_head, calls = ledger._head, []

    def head_once_stale(conn):
        calls.append(1)
        return stale if len(calls) == 1 else real_head(conn)

    monkeypatch.setattr(ledger, "_head", head_once_stale)
    entry = ledger.submit(tmp_path, req("REQ-3"), now=T0)
    assert len(calls) == 2 and entry.seq == 3
    assert ledger_verify.verify_chain(tmp_path)[0]


def salt_worker(root: str, barrier, out: str) -> None:
    from unlearning.compliance.signing import project_salt

    barrier.wait()
    Path(out).write_bytes(project_salt(Path(root)))


def test_processes_creating_the_project_salt_at_once_all_get_the_same_full_salt(tmp_path):
    ctx = processes()
    n = 6
    barrier = ctx.Barrier(n)
    outs = [tmp_path / f"salt-{i}.bin" for i in range(n)]
    procs = [ctx.Process(target=salt_worker, args=(str(tmp_path), barrier, str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    salts = {out.read_bytes() for out in outs}
    path = tmp_path / ".unlearn" / "salt"
    assert salts == {path.read_bytes()} and len(path.read_bytes()) == 32  # one winner, never a short read
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["salt"]  # no temporary file left behind


def test_a_truncated_salt_is_refused_rather_than_used(tmp_path):
    from unlearning.compliance.signing import project_salt

    (tmp_path / ".unlearn").mkdir()
    (tmp_path / ".unlearn" / "salt").write_bytes(b"short")
    with pytest.raises(UnlearnError, match="truncated"):
        project_salt(tmp_path)


# --- an old head file put back ---------------------------------------------------------------------

def test_the_empty_head_put_back_cannot_vouch_for_what_a_cut_left(tmp_path):
    """The empty head every ledger starts from (the same for every ledger under one key) is kept,
    the ledger grows, then the head is put back and the newest entries are cut off: only a cut
    short enough to pass as appends whose heads are still being written would go unseen."""
    ledger.submit(tmp_path, req("REQ-0"), received=T0, channel="email", now=T0)
    empty_head = mac_chain.sign_head(ledger_head.ledger_key(tmp_path), 0, mac_chain.GENESIS)
    filled(tmp_path, n=mac_chain.MAX_UNSIGNED + 4)
    newest = len(all_rows(tmp_path))
    assert ledger_verify.verify_chain(tmp_path)[:2] == (True, None)
    keep = mac_chain.MAX_UNSIGNED + 2
    tamper(tmp_path, f"DELETE FROM ledger_entries WHERE seq > {keep}")
    ledger_head.head_file(tmp_path).write_text(mac_chain.canonical_json(empty_head) + "\n")
    ok, first_bad, message = ledger_verify.verify_chain(tmp_path)
    assert not ok and f"holds {keep} entries" in message and "ledger seal" in message, message
    with pytest.raises(UnlearnError, match="ledger verify"):
        ledger.submit(tmp_path, req("REQ-X"), now=T0)
    assert keep < newest


def test_the_signed_head_can_live_outside_the_checkout(tmp_path, monkeypatch):
    """UNLEARN_LEDGER_HEAD: a CI runner whose workspace is cleaned keeps the head beside it."""
    project, elsewhere = tmp_path / "checkout", tmp_path / "runner-state" / "ledger.head"
    project.mkdir()
    monkeypatch.setenv("UNLEARN_LEDGER_HEAD", str(elsewhere))
    filled(project)
    assert elsewhere.is_file() and not (project / ".unlearn" / "ledger.head").exists()
    assert ledger_verify.verify_chain(project)[:2] == (True, None)
    tamper(project, "DELETE FROM ledger_entries WHERE seq = (SELECT MAX(seq) FROM ledger_entries)")
    assert ledger_verify.verify_chain(project)[0] is False  # the cut is still found from there
