"""Storage of the request ledger through SQLAlchemy: one append-only table of hash-chained entries.

Where: `<root>/ledger.db` (SQLite, git-ignored) by default, any SQLAlchemy URL (PostgreSQL) in
`UNLEARN_LEDGER_URL`. The logic — states, deadlines, the chain — is `unlearning.ledger`; this
module only reads rows, appends rows and never updates or deletes one: a request's state is its
latest entry. On SQLite, triggers refuse UPDATE and DELETE as well.

Concurrency: an append reads the head, checks the request's history and inserts `seq = head + 1`
in one transaction. On SQLite the transaction starts with BEGIN IMMEDIATE, so appenders queue
on the write lock (busy timeout 60 s) rather than read the same head. On any backend `seq` is the
primary key: two writers that read the same head cannot both insert, the loser's transaction
rolls back and it retries from the new head — so the check (e.g. "still received") and the
append are atomic and no request is claimed twice.

The submitted request itself (with its corrected labels, which the ledger does not hold) is kept
as private state in `.unlearn/requests/ledger/<id>.json` for the run that processes it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import (DDL, Column, Integer, MetaData, String, Table, Text, create_engine, event, insert,
                        inspect, select)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from unlearning import ledger as lg
from unlearning.errors import UnlearnError
from unlearning.requests import UnlearningRequest, load_request

URL_ENV = "UNLEARN_LEDGER_URL"
LEDGER_FILE = "ledger.db"
REQUESTS_DIR = Path(".unlearn") / "requests" / "ledger"
APPEND_ATTEMPTS = 20
SQLITE_BUSY_TIMEOUT_S = 60

metadata = MetaData()
entries_table = Table(
    "ledger_entries", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # unique: the append lock on any backend
    Column("request_id", Text, nullable=False, index=True),
    Column("event", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("at", String(40), nullable=False),
    Column("data", Text, nullable=False),  # canonical JSON of Entry.data
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)
for _verb in ("UPDATE", "DELETE"):
    event.listen(entries_table, "after_create", DDL(
        f"CREATE TRIGGER ledger_no_{_verb.lower()} BEFORE {_verb} ON ledger_entries "
        "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END").execute_if(dialect="sqlite"))


# ---------------------------------------------------------------------------------------------
# Connection


def ledger_url(root: Path) -> str:
    return os.environ.get(URL_ENV) or f"sqlite:///{Path(root).resolve() / LEDGER_FILE}"


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix):].split("?")[0]) if url.startswith(prefix) and len(url) > len(prefix) else None


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    # pysqlite opens transactions lazily and only before writes, so a read-then-insert would not
    # hold the lock it needs: take over BEGIN (SQLAlchemy's documented recipe) and make writers
    # take the write lock up front.
    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")

    return engine


@contextmanager
def _engine(root: Path) -> Iterator[Engine]:
    engine = _make_engine(ledger_url(root))
    try:
        yield engine
    finally:
        engine.dispose()


def _ensure_schema(conn: Connection) -> None:
    """Create the table (and, on SQLite, its triggers) unless it exists. Called inside the write
    transaction: on SQLite the check and the CREATE run under the write lock, so two first
    writers cannot both create it; elsewhere the loser's CREATE fails and its append retries."""
    metadata.create_all(conn)


def _exists(engine: Engine, url: str) -> bool:
    """Whether the ledger table exists — without creating a database file to find out."""
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        return False
    with engine.connect() as conn:
        return inspect(conn).has_table(entries_table.name)


# ---------------------------------------------------------------------------------------------
# Rows


def _entry(row) -> lg.Entry:
    return lg.Entry(seq=row.seq, request_id=row.request_id, event=row.event, status=row.status, at=row.at,
                    data=json.loads(row.data), prev_hash=row.prev_hash, hash=row.hash)


def _head(conn: Connection) -> lg.Entry | None:
    row = conn.execute(select(entries_table).order_by(entries_table.c.seq.desc()).limit(1)).first()
    return None if row is None else _entry(row)


def _history(conn: Connection, request_id: str) -> list[lg.Entry]:
    rows = conn.execute(select(entries_table).where(entries_table.c.request_id == request_id)
                        .order_by(entries_table.c.seq))
    return [_entry(r) for r in rows]


def _rows_in_order(root: Path) -> list:
    """The raw rows by seq (none when there is no ledger yet); reads only."""
    with _engine(root) as engine:
        if not _exists(engine, ledger_url(root)):
            return []
        with engine.connect() as conn:
            return list(conn.execute(select(entries_table).order_by(entries_table.c.seq)))


def read_entries(root: Path) -> list[lg.Entry]:
    return [_entry(r) for r in _rows_in_order(root)]


def _append(root: Path, build: Callable[[Connection, lg.Entry | None], lg.Entry | None]) -> lg.Entry | None:
    """Insert what `build(conn, head)` returns, in one write transaction; retry when another writer
    took the same seq. `build` raises UnlearnError to refuse (nothing is written) or returns None
    for a no-op."""
    with _engine(root) as engine:
        writer = engine.execution_options(ledger_write=True)
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with writer.begin() as conn:
                    _ensure_schema(conn)
                    head = _head(conn)
                    if head is not None and lg.entry_hash(head.body()) != head.hash:
                        raise UnlearnError(f"the ledger's last entry ({head.seq}) does not match its hash; "
                                           "run `unlearn ledger verify` before adding to it")
                    entry = build(conn, head)
                    if entry is not None:
                        conn.execute(insert(entries_table).values(
                            seq=entry.seq, request_id=entry.request_id, event=entry.event, status=entry.status,
                            at=entry.at, data=lg.canonical_json(entry.data), prev_hash=entry.prev_hash,
                            hash=entry.hash))
                return entry
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
    raise UnlearnError(f"the ledger stayed busy for {APPEND_ATTEMPTS} attempts; try again")


def _record(history: list[lg.Entry], request_id: str) -> lg.RequestRecord:
    if not history:
        raise UnlearnError(f"no request '{request_id}' in the ledger; `unlearn requests list` shows the recorded ids")
    return lg.fold(history)[request_id]


# ---------------------------------------------------------------------------------------------
# Public API


def submit(root: Path, request: UnlearningRequest, received: str | datetime | None = None,
           channel: str | None = None, deadline_days: int | None = None,
           now: datetime | None = None) -> lg.Entry:
    """Record a validated request as `received`; see `record_request`."""
    return record_request(root, request, received, channel, deadline_days, now)[0]


def record_request(root: Path, request: UnlearningRequest, received: str | datetime | None = None,
                   channel: str | None = None, deadline_days: int | None = None,
                   now: datetime | None = None) -> tuple[lg.Entry, bool]:
    """(the request's `received` entry, whether it was created now).

    Deadline: one calendar month after receipt, or `deadline_days` days. Re-submitting an id with
    the same content is a no-op that returns the earlier entry (its receipt time and deadline
    stand); the same id with different content is refused."""
    root = Path(root)
    now = now or lg.utc_now()
    received_at = lg.parse_timestamp(received, "received time") if received is not None else now.replace(microsecond=0)
    policy = lg.DeadlinePolicy.gdpr() if deadline_days is None else lg.DeadlinePolicy.days(deadline_days)
    lg.check_channel(channel)
    lg.check_receipt(received_at, now)  # every check before the salt file may be created
    data = lg.received_data(request, _salt(root), received_at, channel, policy, now)
    created = False

    def build(conn: Connection, head: lg.Entry | None) -> lg.Entry | None:
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
        return lg.chain_entry(head, request.id, "received", "received", lg.utc_iso(now), data)

    entry = _append(root, build)
    if entry is None:
        with _engine(root) as engine, engine.connect() as conn:
            entry = _history(conn, request.id)[0]
    return entry, created


def transition(root: Path, request_id: str, status: str, now: datetime | None = None, **fields) -> lg.Entry:
    """Append the next entry of a request: processing, completed, failed (reason=...), denied
    (basis=...) or extended (reason=..., deadline=YYYY-MM-DD or the latest allowed).

    Checked against the request's latest state inside the write transaction, so of two runs that
    try to move a `received` request to `processing`, exactly one succeeds (the other gets an
    UnlearnError)."""
    now = now or lg.utc_now()
    show(root, request_id)  # an unknown id is refused before a ledger file would be created

    def build(conn: Connection, head: lg.Entry | None) -> lg.Entry:
        record = _record(_history(conn, request_id), request_id)
        new_status, data = lg.event_data(record, status, fields, now)
        return lg.chain_entry(head, request_id, status, new_status, lg.utc_iso(now), data)

    return _append(Path(root), build)


def extend(root: Path, request_id: str, reason: str, until: str | None = None,
           now: datetime | None = None) -> lg.Entry:
    """Move a request's deadline (to `until`, or the latest the rule allows), with the reason told to the person."""
    return transition(root, request_id, "extended", now=now, reason=reason, deadline=until)


def records(root: Path) -> dict[str, lg.RequestRecord]:
    return lg.fold(read_entries(root))


def list_requests(root: Path, status: str | None = None, overdue: bool = False,
                  now: datetime | None = None) -> list[lg.RequestRecord]:
    """Requests in order of submission, optionally only one state and/or only the overdue ones."""
    if status is not None and status not in lg.STATUSES:
        raise UnlearnError(f"unknown status '{status}'; use one of {', '.join(lg.STATUSES)}")
    now = now or lg.utc_now()
    return [r for r in records(root).values()
            if (status is None or r.status == status) and (not overdue or r.overdue(now))]


def show(root: Path, request_id: str) -> lg.RequestRecord:
    with _engine(root) as engine:
        if not _exists(engine, ledger_url(root)):
            return _record([], request_id)
        with engine.connect() as conn:
            return _record(_history(conn, request_id), request_id)


def pending(root: Path) -> list[lg.RequestRecord]:
    """Requests a processing run should take: received, or failed earlier (a rerun), oldest first."""
    return [r for r in records(root).values() if r.status in lg.PENDING]


def verify_chain(root: Path, expect_head: tuple[int, str] | None = None) -> tuple[bool, int | None, str]:
    """(ok, seq of the first bad entry or None, message). Reads the raw rows: an entry whose stored
    JSON is not in canonical form counts as altered too."""
    rows = _rows_in_order(Path(root))
    for row in rows:
        try:
            data = json.loads(row.data)
            canonical = lg.canonical_json(data)
        except ValueError:
            canonical = None
        if canonical != row.data:
            return False, row.seq, f"entry {row.seq} (request {row.request_id!r}) holds data that is not its " \
                                   "canonical JSON: the row was altered"
    report = lg.verify_entries([_entry(r) for r in rows], expect_head)
    return report.ok, report.first_bad, report.message


def head(root: Path) -> tuple[int, str] | None:
    """(seq, hash) of the newest entry: record it elsewhere to detect a truncated ledger later."""
    entries = read_entries(root)
    return (entries[-1].seq, entries[-1].hash) if entries else None


# ---------------------------------------------------------------------------------------------
# Private files: the salt and the submitted requests


def _salt(root: Path) -> bytes:
    """The project's one secret salt (also the scan fingerprints' and the certificates')."""
    from tasks.scan import project_salt

    return project_salt(root)


def request_file(root: Path, request_id: str) -> Path:
    return Path(root) / REQUESTS_DIR / f"{request_id}.json"


def _save_request(root: Path, request: UnlearningRequest) -> None:
    """The full request, mode 0600, written atomically (a reader never sees half a file)."""
    path = request_file(root, request.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(request.model_dump(), handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def load_submitted(root: Path, request_id: str) -> UnlearningRequest:
    """The request as submitted, checked against the ledger's salted hash of it."""
    record = show(root, request_id)
    path = request_file(root, request_id)
    request = load_request(path)
    if lg.request_fingerprint(request, _salt(root)) != record.request_hash:
        raise UnlearnError(f"the stored file of request '{request_id}' ({path}) no longer matches the ledger; "
                           "restore it or submit the request under a new id")
    return request
