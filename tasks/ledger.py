"""Storage of the request ledger through SQLAlchemy: one append-only table of MAC-chained entries,
and its signed head.

Where: `<root>/ledger.db` (SQLite, git-ignored) by default, any SQLAlchemy URL (PostgreSQL) in
`UNLEARN_LEDGER_URL`. The logic is `unlearning.compliance`'s — states in `ledger`, deadlines in
`deadlines`, the chain in `mac_chain`; this module only reads rows, appends rows and never updates or
deletes one: a request's state is its latest entry. On SQLite, triggers refuse UPDATE and DELETE as well.

Concurrency: an append reads the head, checks the request's history and inserts `seq = head + 1`
in one transaction. On SQLite the transaction starts with BEGIN IMMEDIATE, so appenders queue
on the write lock (busy timeout 60 s) rather than read the same head. On any backend `seq` is the
primary key: two writers that read the same head cannot both insert, the loser's transaction
rolls back and it retries from the new head — so the check (e.g. "still received") and the
append are atomic and no request is claimed twice.

Keys and the signed head: every entry is MACed with a key derived from the project's signing key
(`unlearning.compliance.signing.signing_key`: UNLEARN_SIGNING_KEY or `.unlearn/signing.key`, see
`unlearning.compliance.mac_chain`). After every append, (seq, MAC) of the database's newest entry, signed with
that key, is written to `<root>/.unlearn/ledger.head` — outside the database, so that someone who
can write the database but lacks the key cannot cut its newest entries off unnoticed. The head is
written after the commit, under a file lock, from the database's newest entry re-read at that
moment (two appenders: the file only moves forward). A process stopped between its commit and its
head write leaves the head behind the database; entries beyond the signed head are accepted when
their MACs verify (only a key holder can have written them), and the next append or `ledger
verify` moves the head forward. Before appending, the database must still hold the signed head's
entry, else nothing is appended. The first append of a ledger writes a signed empty head (seq 0)
before its insert, so that even a first append stopped after its commit recovers. With PostgreSQL
the head file lives with the project checkout (`.unlearn/`), which every worker shares already;
`ledger verify --expect-head` checks against a head kept anywhere else.

The database itself — its URL, engine and table, the readers of its rows, and the one-line errors
of a bad UNLEARN_LEDGER_URL — is `tasks.ledger_db`; the key and the signed head (and moving it
forward) are `tasks.ledger_head`; verifying and sealing the ledger, and checking a certificate
against it, are `tasks.ledger_verify`.

The submitted request itself (with its corrected labels, which the ledger does not hold) is kept
as private state in `.unlearn/requests/ledger/<id>.json` for the run that processes it.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from tasks.ledger_db import (SQLITE_BUSY_TIMEOUT_S, _at, _engine, _ensure_schema, _exists, _history, _newest,
                             check_reachable, entries_table, ledger_url, read_entries)
from tasks.ledger_head import _advance_head, _signed_head, _write_head, head_file, ledger_key
from tasks.ledger_verify import intact_entries
from unlearning.compliance import deadlines, mac_chain
from unlearning.compliance import ledger as lg
from unlearning.compliance.requests import UnlearningRequest, load_request
from unlearning.compliance.signing import project_salt
from unlearning.errors import UnlearnError

REQUESTS_DIR = Path(".unlearn") / "requests" / "ledger"
APPEND_ATTEMPTS = 20

# ---------------------------------------------------------------------------------------------
# Appending


def _head(conn: Connection) -> mac_chain.Entry | None:
    return _newest(conn)


def _append(root: Path, build: Callable[[Connection, mac_chain.Entry | None], mac_chain.Entry | None],
            key: bytes) -> mac_chain.Entry | None:
    """Insert what `build(conn, head)` returns, in one write transaction; retry when another writer
    took the same seq. `build` raises UnlearnError to refuse (nothing is written) or returns None
    for a no-op. Refused too, before `build`, when the newest entry or the signed head is not
    authentic. After the commit the signed head moves to the new entry."""
    with _engine(root) as engine:
        writer = engine.execution_options(ledger_write=True)
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with writer.begin() as conn:
                    _ensure_schema(conn)
                    head = _head(conn)
                    _check_before_append(root, conn, head, key)
                    entry = build(conn, head)
                    if entry is not None:
                        conn.execute(insert(entries_table).values(
                            seq=entry.seq, request_id=entry.request_id, event=entry.event, status=entry.status,
                            at=entry.at, data=mac_chain.canonical_json(entry.data), prev_hash=entry.prev_hash,
                            hash=entry.hash))
                break
            except IntegrityError:  # another writer took this seq: back off, then re-read the head
                pass
            except ProgrammingError as exc:
                if "already exists" not in str(exc).lower():  # only the race of two first writers
                    raise
            except OperationalError as exc:
                if "locked" not in str(exc).lower():
                    raise
                raise UnlearnError(f"the ledger is locked by another process (waited {SQLITE_BUSY_TIMEOUT_S} s); "
                                   "try again") from None
            time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))
        else:
            raise UnlearnError(f"the ledger stayed busy for {APPEND_ATTEMPTS} attempts; try again")
        if entry is not None:
            try:
                _advance_head(root, engine, key)
            except (OSError, OperationalError):
                pass  # the entry is committed: its head catches up later (module doc)
        return entry


def _check_before_append(root: Path, conn: Connection, head: mac_chain.Entry | None, key: bytes) -> None:
    """UnlearnError unless the newest entry is authentic and the database still holds the signed
    head's entry; on a ledger's first append, the signed empty head is written (see the module doc)."""
    if head is not None and not hmac.compare_digest(mac_chain.entry_mac(key, head.body()), head.hash):
        if mac_chain.is_format_1([_at(conn, 1) or head]):
            raise UnlearnError("the ledger is in format 1 (unkeyed SHA-256 chain): run `unlearn ledger verify`, then "
                               "`unlearn ledger seal` to key it, before adding to it")
        raise UnlearnError(f"the ledger's last entry ({head.seq}) does not match its MAC; "
                           "run `unlearn ledger verify` before adding to it")
    try:
        signed = _signed_head(root, key)
    except ValueError as exc:
        raise UnlearnError(f"the signed ledger head {head_file(root)} is not valid ({exc}); "
                           "run `unlearn ledger verify` before adding to the ledger") from None
    if signed is None and head is None:
        _write_head(root, 0, mac_chain.GENESIS, key)
        return
    found = _at(conn, signed[0]) if signed is not None and signed[0] > 0 else None
    check = mac_chain.check_head([e for e in (found, head) if e is not None], signed, str(head_file(root)))
    if not check.ok:
        raise UnlearnError(f"{check.message}; nothing was added — run `unlearn ledger verify`")


def _record(history: list[mac_chain.Entry], request_id: str) -> lg.RequestRecord:
    if not history:
        raise UnlearnError(f"no request '{request_id}' in the ledger; `unlearn requests list` shows the recorded ids")
    return lg.fold(history)[request_id]


# ---------------------------------------------------------------------------------------------
# Public API


def submit(root: Path, request: UnlearningRequest, received: str | datetime | None = None,
           channel: str | None = None, deadline_days: int | None = None,
           now: datetime | None = None) -> mac_chain.Entry:
    """Record a validated request as `received`; see `record_request`."""
    return record_request(root, request, received, channel, deadline_days, now)[0]


def record_request(root: Path, request: UnlearningRequest, received: str | datetime | None = None,
                   channel: str | None = None, deadline_days: int | None = None,
                   now: datetime | None = None) -> tuple[mac_chain.Entry, bool]:
    """(the request's `received` entry, whether it was created now).

    Deadline: one calendar month after receipt, or `deadline_days` days. Re-submitting an id with
    the same content is a no-op that returns the earlier entry (its receipt time and deadline
    stand); the same id with different content is refused."""
    root = Path(root)
    now = now or deadlines.utc_now()
    received_at = (deadlines.parse_timestamp(received, "received time") if received is not None
                   else now.replace(microsecond=0))
    policy = deadlines.DeadlinePolicy.gdpr() if deadline_days is None else deadlines.DeadlinePolicy.days(deadline_days)
    lg.check_channel(channel)
    lg.check_receipt(received_at, now)
    check_reachable(root)  # every check before the salt and key files may be created
    data = lg.received_data(request, project_salt(root), received_at, channel, policy, now)
    key = ledger_key(root)
    created = False

    def build(conn: Connection, head: mac_chain.Entry | None) -> mac_chain.Entry | None:
        nonlocal created
        history = _history(conn, request.id)
        if history:
            first = history[0]
            if first.data["request_hash"] != data["request_hash"]:
                raise UnlearnError(f"request id '{request.id}' is already in the ledger for a different request "
                                   f"(received {first.data['received']}): give the new request a new id")
            return None
        _save_request(root, request)  # before the commit: a recorded request always has its file
        created = True
        return mac_chain.chain_entry(head, request.id, "received", "received", deadlines.utc_iso(now), data, key=key)

    entry = _append(root, build, key)
    if entry is None:
        with _engine(root) as engine, engine.connect() as conn:
            entry = _history(conn, request.id)[0]
    return entry, created


def transition(root: Path, request_id: str, status: str, now: datetime | None = None, **fields) -> mac_chain.Entry:
    """Append the next entry of a request: processing, completed, failed (reason=...), denied
    (basis=...) or extended (reason=..., deadline=YYYY-MM-DD or the latest allowed).

    Checked against the request's latest state inside the write transaction, so of two runs that
    try to move a `received` request to `processing`, exactly one succeeds (the other gets an
    UnlearnError)."""
    now = now or deadlines.utc_now()
    show(root, request_id)  # an unknown id is refused before a ledger file would be created
    key = ledger_key(root)

    def build(conn: Connection, head: mac_chain.Entry | None) -> mac_chain.Entry:
        record = _record(_history(conn, request_id), request_id)
        new_status, data = lg.event_data(record, status, fields, now)
        return mac_chain.chain_entry(head, request_id, status, new_status, deadlines.utc_iso(now), data, key=key)

    return _append(Path(root), build, key)


def extend(root: Path, request_id: str, reason: str, until: str | None = None,
           now: datetime | None = None) -> mac_chain.Entry:
    """Move a request's deadline (to `until`, or the latest the rule allows), with the reason told to the person."""
    return transition(root, request_id, "extended", now=now, reason=reason, deadline=until)


def records(root: Path) -> dict[str, lg.RequestRecord]:
    return lg.fold(read_entries(root))


def list_requests(root: Path, status: str | None = None, overdue: bool = False,
                  now: datetime | None = None) -> list[lg.RequestRecord]:
    """Requests in order of submission, optionally only one state and/or only the overdue ones."""
    if status is not None and status not in lg.STATUSES:
        raise UnlearnError(f"unknown status '{status}'; use one of {', '.join(lg.STATUSES)}")
    now = now or deadlines.utc_now()
    return [r for r in records(root).values()
            if (status is None or r.status == status) and (not overdue or r.overdue(now))]


def show(root: Path, request_id: str) -> lg.RequestRecord:
    with _engine(root) as engine:
        if not _exists(engine, ledger_url(root)):
            return _record([], request_id)
        with engine.connect() as conn:
            return _record(_history(conn, request_id), request_id)


def pending(root: Path) -> list[lg.RequestRecord]:
    """Requests a processing run should take: received, or failed earlier (a rerun), oldest first.
    Only from a ledger that verifies (UnlearnError otherwise): a scheduled run acts on it too. The
    entries verified are those folded (one read: nothing appended in between is taken unverified)."""
    return [r for r in lg.fold(intact_entries(root)).values() if r.status in lg.PENDING]

# ---------------------------------------------------------------------------------------------
# Private files: the submitted requests


def request_file(root: Path, request_id: str) -> Path:
    return Path(root) / REQUESTS_DIR / f"{request_id}.json"


def _save_request(root: Path, request: UnlearningRequest) -> None:
    """The full request, mode 0600, written atomically (a reader never sees half a file)."""
    write_private_json(request_file(root, request.id), request.model_dump(), indent=2, sort_keys=True)


def write_private_json(path: Path, data, **dump_options) -> None:
    """`data` as JSON at `path`, mode 0600, whole or absent: written to `.NAME.PID.tmp` beside it
    and renamed into place, so that a reader (or the next run after a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, **dump_options)
    os.replace(tmp, path)


def load_submitted(root: Path, request_id: str) -> UnlearningRequest:
    """The request as submitted, checked against the ledger's salted hash of it."""
    record = show(root, request_id)
    path = request_file(root, request_id)
    request = load_request(path, new=False)  # stored: accepted when it was submitted
    if lg.request_fingerprint(request, project_salt(root)) != record.request_hash:
        raise UnlearnError(f"the stored file of request '{request_id}' ({path}) no longer matches the ledger; "
                           "restore it or submit the request under a new id")
    return request
