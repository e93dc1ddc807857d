"""The request ledger as pure logic: states, deadlines, entries, their MAC chain and its signed head.

A request's history is a list of entries; its state is the state of its latest entry:

    received → processing → completed
                          → failed (reason)  → processing (a rerun) | denied
             → denied (basis)
    `extended` (reason) moves the deadline and keeps the state.

Each entry is MAC-chained with the project's key (compliance.md §5, format 2):
`hash = HMAC-SHA256(ledger_key, canonical_json(body))`, where `body` holds every field of the entry
but `hash`, including `prev_hash`, the MAC of the entry before it (`GENESIS` for the first), and
`ledger_key = HMAC-SHA256(signing key, "unlearnflow.ledger/2")`: derived, so that no certificate
MAC (made with the signing key itself) can pass as a ledger MAC or the reverse. The fields keep
the names `hash` / `prev_hash` of format 1 so that a format 1 database can be sealed in place.
Removing, reordering or altering any row breaks the chain at that row, and without the key nobody
can write a row (or recompute later ones) that verifies. What a chain cannot show by itself is
that its newest rows were cut off: a signed head, (seq, MAC) of the last entry signed with the
ledger key and kept outside the database (`tasks.ledger`), closes that gap (`check_head`).

Format 1 (before this change) chained plain SHA-256 hashes, which anyone can recompute: such a
ledger is recognised (its first entry's `hash` is the SHA-256 of its body) and reported as not
keyed; `seal_entries` re-chains it with MACs once its plain chain has been checked.

Deadlines (compliance.md, "Deadlines and records"):
- GDPR art. 12(3), the default: one calendar month after the day of receipt — the same day-of-month
  in the next month, or its last day when that day does not exist (31 Jan → 28/29 Feb); extendable
  "by two further months", i.e. up to three months after receipt, with reasons, before the first
  deadline passes.
- `days=N` (45 for CCPA): N calendar days after the day of receipt, extendable once by up to N more.
The day of receipt is read in the time zone the `received` timestamp was given in; a request is
overdue from the day after its deadline, in that same zone.

CCPA §7101 record-keeping maps onto the entries: date of request = `received`, nature of request
= `request` (kinds, record ids, features), manner = `channel`, date of response = the `at` of the
completing or denying entry, nature of response = its `response`, basis for denial = `basis`.

Privacy: an entry holds record ids, feature names, finding fingerprints and a salted hash of the
request — never a corrected label or any other value from the data (`request_nature`).
This module reads no files and knows no database: `tasks.ledger` stores the entries.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from unlearning.errors import UnlearnError

if TYPE_CHECKING:  # only the request's public methods are used: no import cost at run time
    from unlearning.compliance.requests import UnlearningRequest

FORMAT = "unlearnflow.ledger/2"
FORMAT_1 = "unlearnflow.ledger/1"
HEAD_FORMAT = "unlearnflow.ledger-head/2"
GENESIS = "0" * 64
STATUSES = ("received", "processing", "completed", "failed", "denied")
FINAL = ("completed", "denied")
# An audit (flows/audit.py) records its verdict on each request it covered; the request stays
# completed (its answer was given), the entry only adds the audit's verdict to its history.
AUDIT_EVENTS = ("audited", "audit_failed")
EVENTS = (*STATUSES, "extended", *AUDIT_EVENTS)
PENDING = ("received", "failed")  # what a processing run should pick up (failed: a rerun)
NEXT = {  # state → the states an entry may move it to
    "received": ("processing", "failed", "denied"),
    "processing": ("completed", "failed", "denied"),
    "failed": ("processing", "denied"),
    "completed": (),
    "denied": (),
}
EXTENDABLE = ("received", "processing", "failed")
# event → (required fields, optional fields). Closed lists keep free-form data out of the ledger.
EVENT_FIELDS = {
    "processing": ((), ("run_id", "batch")),
    "completed": ((), ("response", "certificate", "certificate_sha256", "model", "data", "guarantee",
                       "method", "run_id")),
    "failed": (("reason",), ("step", "run_id")),
    "denied": (("basis",), ("response",)),
    "extended": (("reason",), ("deadline",)),
    "audited": (("audit", "record", "record_sha256"), ("model", "run_id", "reason")),  # reason: an undecided audit
    "audit_failed": (("audit", "record", "record_sha256"), ("model", "run_id", "reason")),
}
TEXT_FIELDS = ("reason", "basis", "response")
MAX_TEXT = 500
_CHANNEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
DEFAULT_CHANNEL = "unspecified"
_RESPONSES = {"delete_records": "records erased", "revoke_features": "features no longer used",
              "fix_labels": "labels rectified", "redact": "detected secrets redacted",
              "forget_class": "class forgotten"}


# ---------------------------------------------------------------------------------------------
# Canonical JSON and the hash chain


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
    if found is None:
        return HeadCheck(False, f"entry {seq} is missing: the signed head ({where}) names entry {seq} but the ledger "
                         f"ends at entry {last}, so its newest entries were removed", seq, 0)
    if not hmac.compare_digest(found.hash, mac):
        return HeadCheck(False, f"entry {seq} has MAC {found.hash[:12]}…, not {mac[:12]}… as the signed head "
                         f"({where}) records: the ledger was replaced from there on", seq, 0)
    return HeadCheck(True, "", None, last - seq)


# ---------------------------------------------------------------------------------------------
# Time and deadlines


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_timestamp(value: str | date | datetime, what: str = "timestamp") -> datetime:
    """An aware datetime from an ISO 8601 date or timestamp; no time zone means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise UnlearnError(f"{what} '{value}' is not an ISO 8601 date or timestamp; "
                               "write e.g. 2026-01-31 or 2026-01-31T14:05:00+01:00") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def add_months(day: date, months: int) -> date:
    """The same day-of-month `months` later, or that month's last day (31 Jan + 1 → 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class DeadlinePolicy:
    """`months`: GDPR art. 12(3), 1 month + up to 2 more; `days`: N days + up to N more (CCPA: 45)."""

    unit: str  # "months" | "days"
    n: int
    extension: int  # how far (same unit) the deadline may be pushed beyond the first one

    @classmethod
    def gdpr(cls) -> DeadlinePolicy:
        return cls("months", 1, 2)

    @classmethod
    def days(cls, n: int) -> DeadlinePolicy:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 366:
            raise UnlearnError(f"deadline days must be a whole number from 1 to 366, not {n!r}")
        return cls("days", n, n)

    @classmethod
    def from_dict(cls, data: dict) -> DeadlinePolicy:
        return cls(data["unit"], int(data["n"]), int(data["extension"]))

    def to_dict(self) -> dict:
        return {"unit": self.unit, "n": self.n, "extension": self.extension}

    def _after(self, day: date, amount: int) -> date:
        return add_months(day, amount) if self.unit == "months" else day + timedelta(days=amount)

    def deadline(self, received: datetime) -> date:
        return self._after(received.date(), self.n)

    def latest(self, received: datetime) -> date:
        """The furthest an extension may push the deadline."""
        return self._after(received.date(), self.n + self.extension)

    def describe(self) -> str:
        if self.unit == "months":
            return (f"{self.n} calendar month{'s' * (self.n > 1)} after receipt (GDPR art. 12(3)), extendable by "
                    f"up to {self.extension} more months with reasons")
        return f"{self.n} days after receipt, extendable by up to {self.extension} more days with reasons"


def local_date(moment: datetime, like: datetime) -> date:
    """The calendar date of `moment` in the time zone of `like` (the receipt)."""
    return moment.astimezone(like.tzinfo).date()


# ---------------------------------------------------------------------------------------------
# What an entry may contain


def request_nature(request: UnlearningRequest) -> dict:
    """The nature of a request with ids only: which records, features, findings — not the
    corrected labels (the values are data, and stay in the data)."""
    return {
        "model": request.model,
        "method": request.method,
        "kinds": request.kinds(),
        "delete_records": sorted(request.delete_records),
        "revoke_features": sorted(request.revoke_features),
        "fix_labels": sorted(request.fix_labels),
        "redact": request.redact.model_dump() if request.redact is not None else None,
        "forget_class": getattr(request, "forget_class", None),  # a class name or index (image datasets)
    }


def request_fingerprint(request: UnlearningRequest, salt: bytes) -> str:
    """HMAC-SHA256(salt, content hash). Salted because the plain content hash covers the corrected
    labels: with the ids in the ledger, a small label set could be brute-forced from it."""
    if len(salt) < 16:
        raise ValueError("the ledger salt must be at least 16 bytes")
    message = b"unlearnflow.ledger.request\0" + request.content_hash().encode("ascii")
    return hmac.new(bytes(salt), message, hashlib.sha256).hexdigest()


def check_channel(channel: str | None) -> str:
    """How the request was made, as a short token (email, web-form, phone, mail, ci, ...): a
    free-text field would invite an address or a name into the ledger."""
    if channel is None:
        return DEFAULT_CHANNEL
    value = str(channel).strip().lower()
    if not _CHANNEL_RE.fullmatch(value):
        raise UnlearnError(f"channel '{channel}' is not a short token; name how the request was made, e.g. "
                           "email, web-form, phone, mail, in-person, ci (lower-case letters, digits, '.', '_', '-', "
                           "at most 40) — never the person's address")
    return value


def stated_text(text: Any, option: str) -> str:
    """A reason or basis a person gives (`requests extend --reason`, `requests deny --basis`): one
    line of at most MAX_TEXT characters, refused when longer rather than cut as `one_line` cuts an
    exception's message: it is what the person was told, and the ledger must hold all of it."""
    value = " ".join(str(text).split()) if text is not None else ""
    if not value:
        raise UnlearnError(f"{option} must not be empty")
    if len(value) > MAX_TEXT:
        raise UnlearnError(f"{option} is {len(value)} characters; the ledger records at most {MAX_TEXT}: shorten it")
    return value


def one_line(text: Any, what: str) -> str:
    """A reason or basis as one line of at most MAX_TEXT characters (exception messages can be long)."""
    value = " ".join(str(text).split()) if text is not None else ""
    if not value:
        raise UnlearnError(f"a {what} is required and must not be empty")
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def check_receipt(received: datetime, now: datetime) -> None:
    if received > now:
        raise UnlearnError(f"received time {received.isoformat()} is in the future (now {utc_iso(now)}); "
                           "give the time the request arrived")


def received_data(request: UnlearningRequest, salt: bytes, received: datetime, channel: str | None,
                  policy: DeadlinePolicy, now: datetime) -> dict:
    """The `data` of a request's first entry; UnlearnError if the receipt is in the future."""
    check_receipt(received, now)
    return {
        "format": FORMAT,
        "request": request_nature(request),
        "request_hash": request_fingerprint(request, salt),
        "received": received.isoformat(),
        "channel": check_channel(channel),
        "policy": policy.to_dict(),
        "deadline": policy.deadline(received).isoformat(),
    }


# ---------------------------------------------------------------------------------------------
# A request's state, folded from its entries


@dataclass
class RequestRecord:
    id: str
    status: str
    received: datetime
    channel: str
    policy: DeadlinePolicy
    deadline: date  # the current one, after any extension
    request: dict  # request_nature
    request_hash: str
    extensions: list[dict] = field(default_factory=list)
    response: dict | None = None  # completed / denied: date and nature of the response (§7101), + its fields
    failure: dict | None = None  # the latest failure, while the request is failed
    audits: list[dict] = field(default_factory=list)  # the audits that covered it: id, verdict, record
    entries: list[Entry] = field(default_factory=list)

    def overdue(self, now: datetime) -> bool:
        """Still unanswered after the deadline day (in the time zone of the receipt)."""
        return self.status not in FINAL and local_date(now, self.received) > self.deadline

    def answered_late(self) -> bool | None:
        if self.response is None:
            return None
        return local_date(parse_timestamp(self.response["date"]), self.received) > self.deadline

    def days_left(self, now: datetime) -> int:
        return (self.deadline - local_date(now, self.received)).days

    def to_dict(self, now: datetime, with_entries: bool = False) -> dict:
        head = self.entries[-1]
        out = {
            "id": self.id, "status": self.status, "model": self.request["model"], "kinds": self.request["kinds"],
            "request": self.request, "request_hash": self.request_hash, "received": self.received.isoformat(),
            "channel": self.channel, "deadline": self.deadline.isoformat(), "deadline_rule": self.policy.describe(),
            "policy": self.policy.to_dict(), "extensions": self.extensions, "response": self.response,
            "failure": self.failure, "audits": self.audits, "overdue": self.overdue(now), "days_left": self.days_left(now),
            "answered_late": self.answered_late(), "last_entry": {"seq": head.seq, "hash": head.hash, "at": head.at},
        }
        if with_entries:
            out["entries"] = [e.to_dict() for e in self.entries]
        return out


def start_record(entry: Entry) -> RequestRecord:
    d = entry.data
    return RequestRecord(id=entry.request_id, status="received", received=parse_timestamp(d["received"]),
                         channel=d["channel"], policy=DeadlinePolicy.from_dict(d["policy"]),
                         deadline=date.fromisoformat(d["deadline"]), request=d["request"],
                         request_hash=d["request_hash"], entries=[entry])


def apply_entry(record: RequestRecord, entry: Entry) -> None:
    """Move `record` by one later entry (checked: a forged entry would not fold)."""
    next_status(record, entry.event)
    if entry.event == "extended":
        record.deadline = date.fromisoformat(entry.data["deadline"])
        record.extensions.append({"date": entry.at, "reason": entry.data["reason"], "deadline": entry.data["deadline"]})
    elif entry.event in AUDIT_EVENTS:
        record.audits.append({"event": entry.event, "date": entry.at, **entry.data})
    else:
        record.status = entry.event
        if entry.event in FINAL:  # the earlier result a resubmission gets back: certificate, model, ...
            record.response = {"status": entry.event, "date": entry.at, **entry.data}
        record.failure = {"date": entry.at, "reason": entry.data["reason"]} if entry.event == "failed" else None
    record.entries.append(entry)


def fold(entries: list[Entry]) -> dict[str, RequestRecord]:
    """Every request's record from the ledger's entries, in order of receipt."""
    records: dict[str, RequestRecord] = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.event == "received":
            if entry.request_id in records:
                raise UnlearnError(f"ledger entry {entry.seq} receives request {entry.request_id!r} a second time; "
                                   "run `unlearn ledger verify`")
            records[entry.request_id] = start_record(entry)
        elif entry.request_id not in records:
            raise UnlearnError(f"ledger entry {entry.seq} moves request {entry.request_id!r}, which was never "
                               "received; run `unlearn ledger verify`")
        else:
            apply_entry(records[entry.request_id], entry)
    return records


# ---------------------------------------------------------------------------------------------
# The next entry of a request


def next_status(record: RequestRecord, event: str) -> str:
    """The state after `event`; UnlearnError if the event cannot follow the current state."""
    if event not in EVENTS or event == "received":
        allowed = ", ".join(e for e in EVENTS if e != "received")
        raise UnlearnError(f"unknown transition '{event}'; use one of {allowed}")
    if event == "extended":
        if record.status not in EXTENDABLE:
            raise UnlearnError(f"request {record.id!r} is {record.status}: only an open request can be extended")
        return record.status
    if event in AUDIT_EVENTS:
        if record.status != "completed":
            raise UnlearnError(f"request {record.id!r} is {record.status}: only a completed request can be audited")
        return record.status
    if event not in NEXT[record.status]:
        allowed = ", ".join(NEXT[record.status]) or "nothing (it is final)"
        raise UnlearnError(f"request {record.id!r} is {record.status}: it cannot become {event} "
                           f"(allowed: {allowed})")
    return event


def event_data(record: RequestRecord, event: str, fields: dict, now: datetime) -> tuple[str, dict]:
    """(state after the event, the entry's data) for an event with caller-given fields, checked."""
    status = next_status(record, event)
    required, optional = EVENT_FIELDS[event]
    unknown = sorted(set(fields) - set(required) - set(optional))
    if unknown:
        raise UnlearnError(f"unknown field(s) for a {event} entry: {', '.join(unknown)}; "
                           f"allowed: {', '.join((*required, *optional))}")
    data = {k: v for k, v in fields.items() if v is not None}
    for name in required:
        data[name] = one_line(data.get(name), name)
    for name in TEXT_FIELDS:
        if name in data:
            data[name] = one_line(data[name], name)
    if event == "completed":
        data.setdefault("response", "fulfilled: " + ", ".join(_RESPONSES.get(k, k) for k in record.request["kinds"]))
    if event == "extended":
        data["deadline"] = extended_deadline(record, data.get("deadline"), now).isoformat()
    canonical_json(data)  # fail here, not half-way through a write, on a value JSON cannot hold
    return status, data


def extended_deadline(record: RequestRecord, until: str | date | None, now: datetime) -> date:
    """The new deadline of an extension: at most the policy's latest, after the current one, and
    recorded before the current one has passed (GDPR: the person must be told within the first month)."""
    latest = record.policy.latest(record.received)
    if local_date(now, record.received) > record.deadline:
        raise UnlearnError(f"request {record.id!r}: its deadline {record.deadline} has passed; an extension must "
                           "be recorded (and the person told) before the deadline")
    if until is None:
        new = latest
    else:
        try:
            new = until if isinstance(until, date) else date.fromisoformat(str(until))
        except ValueError:
            raise UnlearnError(f"extension deadline '{until}' is not an ISO date (YYYY-MM-DD)") from None
    if new <= record.deadline:
        raise UnlearnError(f"extension deadline {new} is not after the current deadline {record.deadline}")
    if new > latest:
        raise UnlearnError(f"extension deadline {new} is beyond {latest}, the latest the rule allows "
                           f"({record.policy.describe()})")
    return new
