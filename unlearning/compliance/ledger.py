"""The request ledger as pure logic: states, deadlines, entries, their MAC chain and its signed head.

A request's history is a list of entries; its state is the state of its latest entry:

    received → processing → completed
                          → failed (reason)  → processing (a rerun) | denied
             → denied (basis)
    `extended` (reason) moves the deadline and keeps the state.

Each entry is MAC-chained with the project's key, and the newest one's (seq, MAC) signed apart from the
database: unlearning.compliance.mac_chain (compliance.md §5).

Deadlines (GDPR art. 12(3) by default, `days=N` for CCPA): unlearning.compliance.deadlines.

CCPA §7101 record-keeping maps onto the entries: date of request = `received`, nature of request
= `request` (kinds, record ids, features), manner = `channel`, date of response = the `at` of the
completing or denying entry, nature of response = its `response`, basis for denial = `basis`.

Privacy: an entry holds record ids, feature names, finding fingerprints and a salted hash of the
request — never a corrected label or any other value from the data (`request_nature`).
This module reads no files and knows no database: `tasks.ledger` stores the entries.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from unlearning.compliance.mac_chain import FORMAT, Entry, canonical_json
from unlearning.compliance.deadlines import DeadlinePolicy, local_date, parse_timestamp, utc_iso
from unlearning.errors import UnlearnError

if TYPE_CHECKING:  # only the request's public methods are used: no import cost at run time
    from unlearning.compliance.requests import UnlearningRequest

FORMAT_1 = "unlearnflow.ledger/1"
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
    # redacted: the salted fingerprints of the secrets a text request removed (its `findings: all`
    # resolved when it was processed): what keeps them out of the corpus for good (tasks.erased);
    # erased_rows: salted hashes of the rows its delete_records removed (id and content), which keep
    # them out of every dataset of the project, a copy under another name too (tasks.erased_rows);
    # forget_class_name: the class a forget_class removed, by the name it resolved to (a request may
    # give an index, which moves when a class leaves the source): the name the gates look for. The
    # schema, as a request naming the class holds it already; not a value from the data
    "completed": ((), ("response", "certificate", "certificate_sha256", "model", "data", "guarantee",
                       "method", "run_id", "redacted", "erased_rows", "forget_class_name")),
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
        # not quoted: what is refused here is typically the person's address or name
        raise UnlearnError(f"channel ({len(str(channel))} characters) is not a short token; name how the request was made, e.g. "
                           "email, web-form, phone, mail, in-person, ci (lower-case letters, digits, '.', '_', '-', "
                           "at most 40) — never the person's address")
    return value


def stated_text(text: Any, option: str) -> str:
    """A reason or basis a person gives (`requests extend --reason`, `requests deny --basis`): one
    line of at most MAX_TEXT characters, refused when longer rather than cut as `one_line` cuts an
    exception's message: it is what the person was told, and the ledger must hold all of it."""
    value = collapsed(text)
    if not value:
        raise UnlearnError(f"{option} must not be empty")
    if len(value) > MAX_TEXT:
        raise UnlearnError(f"{option} is {len(value)} characters; the ledger records at most {MAX_TEXT}: shorten it")
    refuse_personal_values(value, option)
    return value


def refuse_personal_values(text: str, option: str) -> None:
    """Refuse a stated text in which the scan's detectors find a card number, a secret, an e-mail
    address, a phone number or an IBAN: the ledger is append-only and MAC-chained, so a value
    written there could never be erased. Named by kind and place, never printed."""
    from unlearning.detect.scan import find_matches

    found = find_matches(text)
    if found:
        kinds = ", ".join(dict.fromkeys(m.detector for m in found))
        places = ", ".join(f"{m.start + 1}-{m.end}" for m in found[:3])
        raise UnlearnError(f"{option} holds what looks like personal data or a secret ({kinds}; characters "
                           f"{places}); the ledger keeps it for good: state it without the value")


def collapsed(text: Any) -> str:
    """`text` on one line, runs of white space as one space ("" for None)."""
    return " ".join(str(text).split()) if text is not None else ""


def one_line(text: Any, what: str) -> str:
    """A reason or basis as one line of at most MAX_TEXT characters (exception messages can be long)."""
    value = collapsed(text)
    if not value:
        raise UnlearnError(f"a {what} is required and must not be empty")
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


# A receipt older than this is taken for a mistyped year (0001-01-01, 1926 for 2026): the ledger keeps
# it for good, and a request's deadline and overdue days are counted from it. Ten years leaves room
# to enter an old request kept elsewhere.
MAX_RECEIPT_AGE = timedelta(days=3653)


def check_receipt(received: datetime, now: datetime) -> None:
    if received > now:
        raise UnlearnError(f"received time {received.isoformat()} is in the future (now {utc_iso(now)}); "
                           "give the time the request arrived")
    if now - received > MAX_RECEIPT_AGE:
        raise UnlearnError(f"received time {received.isoformat()} is more than ten years ago (now {utc_iso(now)}); "
                           "check the year: the ledger keeps the receipt for good")


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
