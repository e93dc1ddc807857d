"""The request ledger's key and its signed head: (seq, MAC) of the database's newest entry, signed
with the ledger's key and kept outside the database (`.unlearn/ledger.head`, or
UNLEARN_LEDGER_HEAD), so that someone who can write the database but lacks the key cannot cut its
newest entries off unnoticed. It moves forward after each append (`tasks.ledger`) and when
`ledger verify` finds it behind (`tasks.ledger_verify`)."""

from __future__ import annotations

import fcntl
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine

from tasks.ledger_db import _newest
from unlearning.compliance import mac_chain
from unlearning.compliance import signing
from unlearning.errors import UnlearnError

HEAD_FILE = Path(".unlearn") / "ledger.head"


def ledger_key(root: Path, create: bool = True) -> bytes:
    """The ledger's MAC key, derived from the project's signing key (created on first use when
    `create`; checking never creates one)."""
    try:
        return mac_chain.ledger_key(signing.signing_key(Path(root), create=create))
    except UnlearnError as exc:
        raise UnlearnError(f"the ledger's entries are MACed with the project's signing key — {exc}") from None


def head_file(root: Path) -> Path:
    """UNLEARN_LEDGER_HEAD when set — a place that outlives the checkout, e.g. on a CI runner whose
    workspace is cleaned, beside a shared ledger database — else `.unlearn/ledger.head`."""
    configured = os.environ.get("UNLEARN_LEDGER_HEAD", "").strip()
    return Path(configured).expanduser() if configured else Path(root) / HEAD_FILE


def _signed_head(root: Path, key: bytes) -> tuple[int, str] | None:
    """(seq, MAC) from the head file, None when there is none; ValueError when it is not valid."""
    try:
        raw = head_file(root).read_bytes()
    except FileNotFoundError:
        return None
    return mac_chain.read_head(json.loads(raw), key)


def _signed_head_or_none(root: Path, key: bytes) -> tuple[int, str] | None:
    try:
        return _signed_head(root, key)
    except ValueError:
        return None


def _write_head(root: Path, seq: int, mac: str, key: bytes) -> None:
    """The signed head, written atomically (a reader sees the old or the new one, never half)."""
    path = head_file(root)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(mac_chain.canonical_json(mac_chain.sign_head(key, seq, mac)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def _head_lock(root: Path) -> Iterator[None]:
    path = head_file(root).with_name(head_file(root).name + ".lock")  # beside the head it guards
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _advance_head(root: Path, engine: Engine, key: bytes) -> None:
    """Sign the database's newest entry as the head, re-read under the head lock, so that of two
    appenders the later write never moves the head back. A failed write (disk full, read-only)
    raises OSError and leaves the head behind, which the next append or `ledger verify` repairs."""
    with _head_lock(root):
        with engine.connect() as conn:
            newest = _newest(conn)
        if newest is None or not hmac.compare_digest(mac_chain.entry_mac(key, newest.body()), newest.hash):
            return
        current = _signed_head_or_none(root, key)
        if current is None or current[0] < newest.seq:
            _write_head(root, newest.seq, newest.hash, key)
