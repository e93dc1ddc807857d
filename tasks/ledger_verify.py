"""Checking the request ledger as a whole, the key holder's side: `ledger verify` (every entry's MAC
and link, then the database's end against the signed head; a head left behind is moved forward),
`ledger seal` (the key holder's statement that the ledger as it stands is the ledger: a format 1
ledger keyed, the head re-signed), its newest (seq, MAC) to keep elsewhere, and whether a
certificate is the one the ledger recorded. Appending entries is `tasks.ledger`; the rows are read
through `tasks.ledger_db`, the head kept by `tasks.ledger_head`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from tasks.ledger_db import (TRIGGERS, UnreadableLedger, _engine, _entry, _exists, _first_line, _rows_in_order,
                             entries_table, ledger_url, read_entries)
from tasks.ledger_head import (_advance_head, _head_lock, _signed_head, _signed_head_or_none, _write_head, head_file,
                               ledger_key)
from unlearning.compliance import ledger as lg
from unlearning.compliance import mac_chain
from unlearning.errors import UnlearnError


def verify_chain(root: Path, expect_head: tuple[int, str] | None = None) -> tuple[bool, int | None, str]:
    """(ok, seq of the first bad entry or None, message): every entry's MAC and link, then the
    database's end against the signed head (and `expect_head`, a head kept elsewhere). Reads the
    raw rows: an entry whose stored JSON is not in canonical form counts as altered too. Needs the
    key (UnlearnError, one line, without it) unless there is no ledger at all. A head left behind
    by an append that stopped after its commit is moved forward (said in the message)."""
    root = Path(root)
    try:
        rows = _rows_in_order(root)
    except UnreadableLedger as exc:  # the ledger is broken, which is what verifying it reports
        return False, None, str(exc)
    return verify_rows(root, rows, expect_head)


def verify_rows(root: Path, rows: list, expect_head: tuple[int, str] | None = None) -> tuple[bool, int | None, str]:
    """verify_chain of rows already read (`_rows_in_order`): a reader that verifies the ledger and
    then reads it reads it once (intact_entries)."""
    if not rows and not head_file(root).exists():  # no ledger: nothing to authenticate, no key needed
        report = mac_chain.verify_entries([], b"", expect_head)
        return report.ok, report.first_bad, report.message
    key = ledger_key(root, create=False)
    for row in rows:
        if _canonical(row.data) != row.data:
            return False, row.seq, f"entry {row.seq} (request {row.request_id!r}) holds data that is not its " \
                                   "canonical JSON: the row was altered"
    entries = [_entry(r) for r in rows]
    if mac_chain.is_format_1(entries):
        report = mac_chain.verify_entries(entries, key, expect_head, digest=mac_chain.entry_hash)
        if not report.ok:
            return False, report.first_bad, f"{report.message} (format 1 ledger: unkeyed SHA-256 chain)"
        return False, 1, (f"format 1 ledger ({lg.FORMAT_1}, {len(entries)} entries): its plain SHA-256 chain is "
                          "consistent but not keyed, so anyone who can write the database could have rewritten it; "
                          "if it is as you expect, key it with `unlearn ledger seal`")
    report = mac_chain.verify_entries(entries, key, expect_head)
    if not report.ok:
        return False, report.first_bad, report.message
    try:
        signed = _signed_head(root, key)
    except ValueError as exc:
        return False, None, f"the signed head {head_file(root)} is not valid ({exc}); `unlearn ledger seal` re-signs it"
    check = mac_chain.check_head(entries, signed, str(head_file(root)))
    if not check.ok:
        return False, check.first_bad, check.message
    if not check.behind:
        return True, None, report.message
    return True, None, f"{report.message}; {_recover_head(root, key, check.behind)}"


def check_intact(root: Path) -> None:
    """UnlearnError (one line) unless the ledger can be opened and verifies: a processing run must
    not act on a forged or cut-off ledger (a forged `denied` would silently skip a request)."""
    intact_entries(root)


def intact_entries(root: Path) -> list[mac_chain.Entry]:
    """The ledger's entries, read once and verified as check_intact verifies them (UnlearnError, one
    line, unless they verify): the erased-data gates read the completed requests from them
    (tasks.erased), which used to mean three reads — one to verify, one for the requests, one for
    their runs."""
    try:
        rows = _rows_in_order(root)
    except UnreadableLedger as exc:
        ok, message = False, str(exc)
    else:
        ok, _, message = verify_rows(Path(root), rows)
    if not ok:
        raise UnlearnError(f"the ledger does not verify — {message}; nothing was processed (see `unlearn ledger "
                           "verify`)")
    return [_entry(r) for r in rows]


def _canonical(text: str) -> str | None:
    try:
        return mac_chain.canonical_json(json.loads(text))
    except ValueError:
        return None


def _recover_head(root: Path, key: bytes, behind: int) -> str:
    what = (f"the signed head was {behind} entr{'y' if behind == 1 else 'ies'} behind (an append stopped between "
            "its commit and its head write)")
    try:
        with _engine(root) as engine:
            _advance_head(root, engine, key)
    except OSError as exc:
        return f"{what}; it could not be moved forward here ({_first_line(exc)})"
    return f"{what}: moved forward"


def head(root: Path) -> tuple[int, str] | None:
    """(seq, MAC) of the newest entry: record it elsewhere to detect a truncated ledger later."""
    entries = read_entries(root)
    return (entries[-1].seq, entries[-1].hash) if entries else None


def seal(root: Path, expect_head: tuple[int, str] | None = None) -> tuple[bool, str]:
    """(ok, message). The key holder's statement that the ledger as it stands is the ledger: a
    format 1 ledger whose plain chain is intact is re-chained with MACs (in one transaction; on
    SQLite the append-only triggers are lifted for it and put back), and the head is signed from
    the database's newest entry — also for a format 2 ledger whose MACs verify (a lost or stale
    head file, a ledger moved to another database). A broken chain is never sealed."""
    root = Path(root)
    with _engine(root) as engine:
        if not _exists(engine, ledger_url(root)):
            return _seal_empty(root)
        with engine.execution_options(ledger_write=True).begin() as conn:
            rows = list(conn.execute(select(entries_table).order_by(entries_table.c.seq)))
            bad = next((r for r in rows if _canonical(r.data) != r.data), None)
            if bad is not None:
                return False, f"not sealed: entry {bad.seq} holds data that is not its canonical JSON (altered)"
            entries = [_entry(r) for r in rows]
            old_format = mac_chain.is_format_1(entries)
            # a keyed ledger's key exists somewhere: a new one would only make it read as forged
            key = ledger_key(root, create=old_format)
            if old_format and (signed := _signed_head_or_none(root, key)) is not None and signed[0] > 0:
                return False, (f"not sealed: the signed head names entry {signed[0]} of a keyed ledger, so this "
                               "plain SHA-256 chain was written without the key (a rewrite); restore the ledger "
                               "from a backup")
            report = mac_chain.verify_entries(entries, key, expect_head,
                                              digest=mac_chain.entry_hash if old_format else None)
            if not report.ok:
                return False, f"not sealed: {report.message}"
            if old_format:
                entries = mac_chain.seal_entries(entries, key)
                _rewrite_macs(conn, entries)
        if not entries:
            return _seal_empty(root)
        before = _signed_head_or_none(root, key)
        with _head_lock(root):
            _write_head(root, entries[-1].seq, entries[-1].hash, key)
    done = f"{len(entries)} format 1 entries keyed with the project's key; " if old_format else ""
    moved = "" if before is None or before[0] == entries[-1].seq else f" (it named entry {before[0]})"
    return True, f"sealed: {done}signed head entry {entries[-1].seq} {entries[-1].hash}{moved}"


def _seal_empty(root: Path) -> tuple[bool, str]:
    """An empty ledger: a head file left from another database (UNLEARN_LEDGER_URL now names a new
    one) is reset to the empty head, which the key holder vouches for."""
    if not head_file(root).exists():
        return True, "ledger empty: nothing to seal"
    key = ledger_key(root, create=False)  # the head file was signed with a key that exists
    before = _signed_head_or_none(root, key)
    with _head_lock(root):
        _write_head(root, 0, mac_chain.GENESIS, key)
    named = f" (it named entry {before[0]})" if before else ""
    return True, f"sealed: the ledger is empty; signed head reset to entry 0{named}"


def _rewrite_macs(conn: Connection, sealed: list[mac_chain.Entry]) -> None:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        for name in TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    for entry in sealed:
        conn.execute(update(entries_table).where(entries_table.c.seq == entry.seq)
                     .values(prev_hash=entry.prev_hash, hash=entry.hash))
    if sqlite:
        for create in TRIGGERS.values():
            conn.exec_driver_sql(create)


def certificate_recorded(root: Path, request_id: str, certificate: bytes, signing_key: bytes) -> tuple[bool, str]:
    """(ok, what was found): whether the ledger's authentic `completed` entry of `request_id`
    records this certificate's SHA-256. A project without a ledger has nothing to check against."""
    rows = _rows_in_order(Path(root))
    if not rows:
        return True, "no ledger to check it against"
    digest = hashlib.sha256(certificate).hexdigest()
    entry = next((_entry(r) for r in rows if r.request_id == request_id and r.event == "completed"), None)
    if entry is None:
        return False, (f"the ledger records no completed entry for request {request_id!r}: no certificate was "
                       "issued for it")
    if not hmac.compare_digest(mac_chain.entry_mac(mac_chain.ledger_key(signing_key), entry.body()), entry.hash):
        return False, f"the ledger's completed entry {entry.seq} does not match its MAC: run `unlearn ledger verify`"
    recorded = entry.data.get("certificate_sha256")
    if recorded != digest:
        return False, (f"the ledger's completed entry {entry.seq} of request {request_id!r} records certificate "
                       f"sha256 {str(recorded)[:12]}…, not this file's {digest[:12]}…: not the certificate issued")
    return True, f"recorded by ledger entry {entry.seq}"
