"""The request ledger's database: its URL (UNLEARN_LEDGER_URL, else `<root>/ledger.db`), an engine
for it, its one append-only table and the readers of its rows. What is written there and how is
`tasks.ledger`.

A bad UNLEARN_LEDGER_URL (not a URL, no driver, a missing directory, a server that cannot be
reached within CONNECT_TIMEOUT_S) is an UnlearnError naming the setting.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import DDL, Column, Integer, MetaData, String, Table, Text, create_engine, event, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError

from unlearning.compliance import mac_chain
from unlearning.errors import UnlearnError

URL_ENV = "UNLEARN_LEDGER_URL"
LEDGER_FILE = "ledger.db"
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 5

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
TRIGGERS = {f"ledger_no_{verb.lower()}": f"CREATE TRIGGER ledger_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
            "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END" for verb in ("UPDATE", "DELETE")}
for _create in TRIGGERS.values():
    event.listen(entries_table, "after_create", DDL(_create).execute_if(dialect="sqlite"))


def ledger_url(root: Path) -> str:
    return os.environ.get(URL_ENV) or f"sqlite:///{Path(root).resolve() / LEDGER_FILE}"


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix):].split("?")[0]) if url.startswith(prefix) and len(url) > len(prefix) else None


def shown_url(url: str) -> str:
    """The URL as it may be printed: never its password, also not one given as a query parameter
    (libpq reads `?password=...`): every query value is hidden, its key kept."""
    try:
        parsed = make_url(url)
        query = "&".join(f"{key}=***" for key in sorted(parsed.query))  # rendered, *** would be %2A%2A%2A
        return parsed.set(query={}).render_as_string(hide_password=True) + (f"?{query}" if query else "")
    except (ArgumentError, ValueError):
        return re.sub(r"\?.*", "?***", re.sub(r":[^:@/]*@", ":***@", url))


def _url_problem(url: str, problem: str) -> UnlearnError:
    where = f"{URL_ENV}={shown_url(url)}" if os.environ.get(URL_ENV) else f"the ledger {shown_url(url)}"
    return UnlearnError(f"{where}: {problem}; fix {URL_ENV} (e.g. postgresql://USER:PASSWORD@HOST:5432/ledger) or "
                        "unset it to use ledger.db in the project")


def _make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _url_problem(url, "not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path is not None and not path.parent.is_dir():
            raise _url_problem(url, f"the directory {path.parent} of the SQLite ledger does not exist")
        return _sqlite_engine(url)
    connect_args = {"timeout": CONNECT_TIMEOUT_S} if parsed.get_driver_name() == "pg8000" else \
        {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (ImportError, NoSuchModuleError, ArgumentError) as exc:
        raise _url_problem(url, f"cannot be used ({_first_line(exc)}): install its driver (PostgreSQL: "
                           "pip install -e '.[scale]')") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _sqlite_engine(url: str) -> Engine:
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
    url = ledger_url(root)
    engine = _make_engine(url)
    path = _sqlite_file(url)
    try:
        if path is None or path.exists():  # never create a database file just to look at it
            try:
                with engine.connect():
                    pass
            except Exception as exc:  # noqa: BLE001 — any failure to connect: the drivers' own types vary
                hint = "" if path is not None else "; check the host, port, user, password and that the server runs"
                raise _url_problem(url, f"cannot be opened ({_first_line(exc)}){hint}") from None
        yield engine
    finally:
        engine.dispose()


def check_reachable(root: Path) -> None:
    """UnlearnError (one line, naming the setting) unless the ledger's database can be opened."""
    with _engine(Path(root)):
        pass


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
# Reading rows


def _entry(row) -> mac_chain.Entry:
    return mac_chain.Entry(seq=row.seq, request_id=row.request_id, event=row.event, status=row.status, at=row.at,
                           data=json.loads(row.data), prev_hash=row.prev_hash, hash=row.hash)



def _newest(conn: Connection) -> mac_chain.Entry | None:
    row = conn.execute(select(entries_table).order_by(entries_table.c.seq.desc()).limit(1)).first()
    return None if row is None else _entry(row)


def _at(conn: Connection, seq: int) -> mac_chain.Entry | None:
    row = conn.execute(select(entries_table).where(entries_table.c.seq == seq)).first()
    return None if row is None else _entry(row)


def _history(conn: Connection, request_id: str) -> list[mac_chain.Entry]:
    rows = conn.execute(select(entries_table).where(entries_table.c.request_id == request_id)
                        .order_by(entries_table.c.seq))
    return [_entry(r) for r in rows]


class UnreadableLedger(UnlearnError):
    """The ledger's database opens but does not read: to `verify`, a broken ledger (not a bad setting)."""


def _rows_in_order(root: Path) -> list:
    """The raw rows by seq (none when there is no ledger yet); reads only. UnreadableLedger (one line)
    for a SQLite file that opens but does not read (cut short, overwritten), which used to end
    `unlearn audit`, `comply` and even `ledger verify` in a driver traceback."""
    with _engine(root) as engine:
        try:
            if not _exists(engine, ledger_url(root)):
                return []
            with engine.connect() as conn:
                return list(conn.execute(select(entries_table).order_by(entries_table.c.seq)))
        except DatabaseError as exc:
            if _sqlite_file(ledger_url(root)) is None:  # a server's error (a dropped connection) says what it is
                raise
            raise UnreadableLedger(f"the ledger's database cannot be read ({_first_line(exc)}): it was cut short or "
                                   "altered; restore it from a backup (`unlearn ledger verify --expect-head` checks "
                                   "the copy against a head kept elsewhere)") from None


def read_entries(root: Path) -> list[mac_chain.Entry]:
    return [_entry(r) for r in _rows_in_order(root)]
