"""The request ledger's MAC chain and its signed head, as pure logic (unlearning.compliance.ledger
holds the states, deadlines and what an entry may contain; `tasks.ledger` stores the entries).

Each entry is MAC-chained with the project's key (compliance.md §5, format 2):
`hash = HMAC-SHA256(ledger_key, canonical_json(body))`, where `body` holds every field of the entry
but `hash`, including `prev_hash`, the MAC of the entry before it (`GENESIS` for the first), and
`ledger_key = HMAC-SHA256(signing key, "unlearnflow.ledger/2")`: derived, so that no certificate
MAC (made with the signing key itself) can pass as a ledger MAC or the reverse. Removing,
reordering or altering any row breaks the chain at that row, and without the key nobody can write a
row (or recompute later ones) that verifies. A signed head, (seq, MAC) of the last entry signed with
the ledger key and kept outside the database, shows that no newest rows were cut off (`check_head`).
Format 1 chained plain SHA-256 hashes: recognised (`is_format_1`) and re-chained by `seal_entries`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FORMAT = "unlearnflow.ledger/2"
HEAD_FORMAT = "unlearnflow.ledger-head/2"
GENESIS = "0" * 64


def canonical_json(obj: Any, *, allow_nan: bool = False) -> str:
    """The one serialisation that is hashed or signed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=allow_nan)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One row of the ledger. `data` holds the event's fields (see EVENT_FIELDS and `received_data`)."""

    seq: int
    request_id: str
    event: str
    status: str  # the request's state after this entry
    at: str  # when the entry was recorded, UTC ISO 8601
    data: dict
    prev_hash: str  # the previous entry's MAC (format 1: its SHA-256)
    hash: str  # this entry's MAC (format 1: its SHA-256)

    def body(self) -> dict:
        return {"seq": self.seq, "request_id": self.request_id, "event": self.event, "status": self.status,
                "at": self.at, "data": self.data, "prev_hash": self.prev_hash}

    def to_dict(self) -> dict:
        return {**self.body(), "hash": self.hash}


def ledger_key(signing_key: bytes) -> bytes:
    """The key of the ledger's MACs, derived from the project's signing key (domain separation)."""
    return hmac.new(bytes(signing_key), FORMAT.encode("ascii"), hashlib.sha256).digest()


def entry_mac(key: bytes, body: dict) -> str:
    """An entry's MAC under the ledger key (`ledger_key`)."""
    return hmac.new(key, canonical_json(body).encode("ascii"), hashlib.sha256).hexdigest()


def entry_hash(body: dict) -> str:
    """Format 1's unkeyed hash: kept only to recognise, check and seal old ledgers."""
    return sha256_hex(canonical_json(body))


def chain_entry(head: Entry | None, request_id: str, event: str, status: str, at: str, data: dict, *,
                key: bytes) -> Entry:
    """The entry that follows `head` (None: the first entry of the ledger), MACed with `key`."""
    seq, prev = (1, GENESIS) if head is None else (head.seq + 1, head.hash)
    body = {"seq": seq, "request_id": request_id, "event": event, "status": status, "at": at, "data": data,
            "prev_hash": prev}
    return Entry(**body, hash=entry_mac(key, body))


def is_format_1(entries: list[Entry]) -> bool:
    """Whether the ledger was written in format 1: its first entry carries a plain SHA-256."""
    first = min(entries, key=lambda e: e.seq, default=None)
    return first is not None and first.seq == 1 and entry_hash(first.body()) == first.hash


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    first_bad: int | None  # seq of the first bad (or missing) entry
    message: str
    entries: int
    head: tuple[int, str] | None  # (seq, MAC) of the last entry


def verify_entries(entries: list[Entry], key: bytes, expect_head: tuple[int, str] | None = None,
                   digest: Callable[[dict], str] | None = None) -> ChainReport:
    """Walk the entries in `seq` order and name the first one that breaks the chain.

    Checks, per entry: its seq follows the previous one (a gap = a removed row), its stored MAC
    is the MAC of its body under `key` (else the row was altered, moved — seq is covered — or
    written without the key), and its prev_hash is the previous entry's MAC (else a row before it
    was replaced). `digest` replaces the MAC (format 1's plain hash: `entry_hash`).
    Cut-off newest entries are found against a head recorded elsewhere: `expect_head` (seq, MAC),
    e.g. from a certificate or an earlier `ledger verify`, or the signed head (`check_head`).
    """
    keyed = digest is None
    digest = digest or (lambda body: entry_mac(key, body))
    ordered = sorted(entries, key=lambda e: e.seq)
    prev: Entry | None = None
    for entry in ordered:
        expected_seq = 1 if prev is None else prev.seq + 1
        if entry.seq != expected_seq:
            return _bad(expected_seq, f"entry {expected_seq} is missing (entry {entry.seq} follows "
                        f"{'the start' if prev is None else f'entry {prev.seq}'}): a row was removed", ordered)
        if not hmac.compare_digest(digest(entry.body()), entry.hash):
            return _bad(entry.seq, _mismatch(entry, keyed), ordered)
        if entry.prev_hash != (GENESIS if prev is None else prev.hash):
            return _bad(entry.seq, f"entry {entry.seq} (request {entry.request_id!r}, {entry.event}) does not "
                        f"link to entry {expected_seq - 1}: an earlier row was replaced", ordered)
        prev = entry
    head = None if prev is None else (prev.seq, prev.hash)
    if expect_head is not None:
        seq, expected = expect_head
        found = next((e for e in ordered if e.seq == seq), None)
        if found is None:
            return _bad(seq, f"entry {seq} is missing: the ledger ends at entry {head[0] if head else 0}, "
                        "so its newest entries were removed", ordered)
        if found.hash != expected:
            return _bad(seq, f"entry {seq} has MAC {found.hash[:12]}…, not the expected {expected[:12]}…: "
                        "the ledger was rewritten from there on", ordered)
    n = len(ordered)
    message = (f"ledger intact: {n} entries, head entry {head[0]} {head[1]}" if head else "ledger empty: 0 entries")
    return ChainReport(True, None, message, n, head)


def _mismatch(entry: Entry, keyed: bool) -> str:
    what = f"entry {entry.seq} (request {entry.request_id!r}, {entry.event})"
    if not keyed:
        return f"{what} does not match its hash: the row was altered or moved"
    if entry_hash(entry.body()) == entry.hash:
        return f"{what} carries a plain SHA-256 instead of a MAC: it was written without the project's key"
    return f"{what} does not match its MAC: the row was altered, moved or written without the project's key"


def _bad(seq: int, message: str, ordered: list[Entry]) -> ChainReport:
    head = (ordered[-1].seq, ordered[-1].hash) if ordered else None
    return ChainReport(False, seq, message, len(ordered), head)


def seal_entries(entries: list[Entry], key: bytes) -> list[Entry]:
    """The same entries (seq, request, event, time, data) re-chained with MACs under `key`: the
    key holder's statement that this content is the ledger. Check the old chain first."""
    sealed: list[Entry] = []
    for entry in sorted(entries, key=lambda e: e.seq):
        sealed.append(chain_entry(sealed[-1] if sealed else None, entry.request_id, entry.event, entry.status,
                                  entry.at, entry.data, key=key))
    return sealed


# ---------------------------------------------------------------------------------------------
# The signed head: (seq, MAC) of the newest entry, kept apart from the database


def sign_head(key: bytes, seq: int, mac: str) -> dict:
    """The head document. Its signature covers the format name, so it cannot pass as an entry MAC
    (an entry's body has no `format` key) nor an entry MAC as a head signature."""
    body = {"format": HEAD_FORMAT, "seq": int(seq), "mac": mac}
    return {**body, "signature": hmac.new(key, canonical_json(body).encode("ascii"), hashlib.sha256).hexdigest()}


def read_head(document: Any, key: bytes) -> tuple[int, str]:
    """(seq, MAC) of a signed head; ValueError when it is not one signed by `key`."""
    if not isinstance(document, dict) or document.get("format") != HEAD_FORMAT:
        raise ValueError("not a signed ledger head")
    seq, mac = document.get("seq"), document.get("mac")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(mac, str):
        raise ValueError("not a signed ledger head")
    expected = sign_head(key, seq, mac)["signature"]
    if not isinstance(document.get("signature"), str) or not hmac.compare_digest(document["signature"], expected):
        raise ValueError("its signature does not match: it was altered or signed with another key")
    return seq, mac


# How far the database may run ahead of its signed head: appends stopped between their commit and
# their head write, or still running beside this one. Bounded so that a head file put back from
# long ago (the empty head a ledger starts from is the same for every ledger under one key) cannot
# vouch for whatever is left after a cut; a cut back to a recent head copy is caught only by a head
# kept elsewhere (`--expect-head`).
MAX_UNSIGNED = 8


@dataclass(frozen=True)
class HeadCheck:
    ok: bool
    message: str
    first_bad: int | None  # seq of the entry the signed head names, when the ledger no longer holds it
    behind: int  # entries the database holds beyond the signed head (an append whose head was not written yet)


def check_head(entries: list[Entry], signed: tuple[int, str] | None, where: str) -> HeadCheck:
    """The (verified) chain against its signed head (None: the head file is absent; `where` names it).

    The database must still hold the signed head's entry, with that MAC: otherwise entries were
    cut off, or the chain was replaced. Entries beyond the signed head are accepted: their MACs
    verified, so only a key holder wrote them — an append whose process stopped (or is still
    running) between its commit and its head write; the caller moves the head forward."""
    ordered = sorted(entries, key=lambda e: e.seq)
    last = ordered[-1].seq if ordered else 0  # seqs run 1..last without a gap (verified by the caller)
    if signed is None:
        if not ordered:
            return HeadCheck(True, "", None, 0)
        return HeadCheck(False, f"no signed head ({where}) for a ledger of {last} entries: it was deleted, or "
                         "this is not the project checkout that writes the ledger; if you hold the key and the ledger "
                         "is as you expect, `unlearn ledger seal` signs its current head", 1, 0)
    seq, mac = signed
    if last - seq > MAX_UNSIGNED:
        return HeadCheck(False, f"the signed head ({where}) names entry {seq} but the ledger holds {last} entries: more "
                         f"than {MAX_UNSIGNED} appends never moved it (or an old head file was put back); if you "
                         "hold the key and the ledger is as you expect, `unlearn ledger seal` signs its current "
                         "head", seq, 0)
    if seq == 0:
        return HeadCheck(True, "", None, last)
    found = next((e for e in ordered if e.seq == seq), None)
    if found is None and not ordered:
        return HeadCheck(False, f"the ledger is missing: the signed head ({where}) names entry {seq} but the ledger "
                         "holds no entries (its database was moved, deleted or emptied, or the ledger's URL names "
                         "another place); restore it from a backup", seq, 0)
    if found is None:
        return HeadCheck(False, f"entry {seq} is missing: the signed head ({where}) names entry {seq} but the ledger "
                         f"ends at entry {last}, so its newest entries were removed", seq, 0)
    if not hmac.compare_digest(found.hash, mac):
        return HeadCheck(False, f"entry {seq} has MAC {found.hash[:12]}…, not {mac[:12]}… as the signed head "
                         f"({where}) records: the ledger was replaced from there on", seq, 0)
    return HeadCheck(True, "", None, last - seq)
