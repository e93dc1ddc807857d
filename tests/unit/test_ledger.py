"""The request ledger's pure logic: the MAC chain and its signed head, deadlines against an independent calendar
enumeration, the state machine, and what an entry may (not) contain."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from unlearning.compliance import deadlines, mac_chain
from unlearning.compliance import ledger as lg
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError

SALT = b"s" * 32
SIGNING_KEY = b"k" * 40
KEY = mac_chain.ledger_key(SIGNING_KEY)
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UnlearnError) as excinfo:
        call(*args, **kwargs)
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def request(**extra) -> UnlearningRequest:
    fields = {"id": "REQ-1", "model": "adult", "delete_records": ["12", "7"], "fix_labels": {"33": ">50K"}}
    return UnlearningRequest(**{**fields, **extra})


def received_entry(head=None, req=None, received=T0, channel="email", policy=None, now=None):
    req = req or request()
    data = lg.received_data(req, SALT, received, channel, policy or deadlines.DeadlinePolicy.gdpr(), now or received)
    return mac_chain.chain_entry(head, req.id, "received", "received", deadlines.utc_iso(now or received), data,
                                 key=KEY)


def chain(n: int) -> list[mac_chain.Entry]:
    entries = [received_entry()]
    for i in range(2, n + 1):
        entries.append(received_entry(entries[-1], request(id=f"REQ-{i}")))
    return entries


# --- canonical JSON and the chain ---------------------------------------------------------------

def test_canonical_json_is_sorted_compact_ascii():
    assert (mac_chain.canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]})
            == '{"a":[1,{"c":"\\u00e9","d":null}],"b":1}')
    with pytest.raises(ValueError):
        mac_chain.canonical_json({"x": float("nan")})  # not JSON: the ledger never holds it


def test_entry_mac_is_the_documented_hmac_with_a_derived_key():
    entry = mac_chain.chain_entry(None, "R", "received", "received", "2026-01-01T00:00:00+00:00", {"k": "v"}, key=KEY)
    by_hand = ('{"at":"2026-01-01T00:00:00+00:00","data":{"k":"v"},"event":"received","prev_hash":"' + "0" * 64
               + '","request_id":"R","seq":1,"status":"received"}')
    derived = hmac.new(SIGNING_KEY, b"unlearnflow.ledger/2", hashlib.sha256).digest()
    assert entry.hash == hmac.new(derived, by_hand.encode(), hashlib.sha256).hexdigest()
    assert entry.hash != hmac.new(SIGNING_KEY, by_hand.encode(), hashlib.sha256).hexdigest()  # not a certificate MAC
    assert entry.hash != hashlib.sha256(by_hand.encode()).hexdigest()
    nxt = mac_chain.chain_entry(entry, "R", "processing", "processing", "2026-01-02T00:00:00+00:00", {}, key=KEY)
    assert (nxt.seq, nxt.prev_hash) == (2, entry.hash)


def test_intact_chain_verifies_with_its_key_only():
    report = mac_chain.verify_entries(chain(6), KEY)
    assert report.ok and report.first_bad is None and report.entries == 6
    assert mac_chain.verify_entries([], KEY).ok
    other = mac_chain.verify_entries(chain(6), mac_chain.ledger_key(b"j" * 40))
    assert (other.ok, other.first_bad) == (False, 1) and "MAC" in other.message


@pytest.mark.parametrize("where", [1, 3, 6])
def test_an_altered_entry_is_named(where):
    entries = chain(6)
    bad = entries[where - 1]
    entries[where - 1] = replace(bad, data={**bad.data, "channel": "phone"})
    report = mac_chain.verify_entries(entries, KEY)
    assert (report.ok, report.first_bad) == (False, where)
    assert f"entry {where}" in report.message and "altered" in report.message


@pytest.mark.parametrize("where", [1, 3, 5])
def test_a_removed_entry_is_named(where):
    entries = chain(6)
    del entries[where - 1]
    report = mac_chain.verify_entries(entries, KEY)
    assert (report.ok, report.first_bad) == (False, where)
    assert f"entry {where} is missing" in report.message


def test_reordered_entries_are_named():
    entries = chain(6)
    entries[1], entries[2] = replace(entries[2], seq=2), replace(entries[1], seq=3)  # rows 2 and 3 swap places
    report = mac_chain.verify_entries(entries, KEY)
    assert (report.ok, report.first_bad) == (False, 2)


def rechained_without_the_key(entries: list[mac_chain.Entry], start: int,
                              attacker_key: bytes | None) -> list[mac_chain.Entry]:
    """What someone without the key can do from entry `start` on: recompute every later entry's
    hash and link, with a plain SHA-256 (format 1) or a MAC under a key of their own."""
    out = entries[:start - 1]
    for entry in entries[start - 1:]:
        body = {**entry.body(), "prev_hash": out[-1].hash if out else mac_chain.GENESIS}
        digest = mac_chain.entry_hash(body) if attacker_key is None else mac_chain.entry_mac(attacker_key, body)
        out.append(mac_chain.Entry(**body, hash=digest))
    return out


@pytest.mark.parametrize("attacker_key", [None, mac_chain.ledger_key(b"a" * 40)], ids=["plain sha256", "own key"])
def test_a_rewrite_rechained_without_the_key_is_named_where_it_starts(attacker_key):
    entries = chain(5)
    entries[2] = replace(entries[2], data={**entries[2].data, "channel": "phone"})
    report = mac_chain.verify_entries(rechained_without_the_key(entries, 3, attacker_key), KEY)
    assert (report.ok, report.first_bad) == (False, 3)
    assert "entry 3" in report.message and ("plain SHA-256" if attacker_key is None else "MAC") in report.message


def test_cut_off_newest_entries_need_a_recorded_head():
    entries = chain(5)
    head = (entries[-1].seq, entries[-1].hash)
    assert mac_chain.verify_entries(entries[:-2], KEY).ok  # the chain alone cannot tell
    report = mac_chain.verify_entries(entries[:-2], KEY, expect_head=head)
    assert (report.ok, report.first_bad) == (False, 5)
    assert mac_chain.verify_entries(entries, KEY, expect_head=head).ok
    report = mac_chain.verify_entries(entries, KEY, expect_head=(5, "f" * 64))
    assert (report.ok, report.first_bad) == (False, 5)


# --- the signed head --------------------------------------------------------------------------------

def test_the_signed_head_reads_back_only_unaltered_and_under_its_key():
    document = mac_chain.sign_head(KEY, 4, "ab" * 32)
    assert mac_chain.read_head(document, KEY) == (4, "ab" * 32)
    for altered in ({**document, "seq": 5}, {**document, "mac": "cd" * 32}, {**document, "signature": "0" * 64},
                    {k: v for k, v in document.items() if k != "signature"}, {**document, "format": lg.FORMAT_1}):
        with pytest.raises(ValueError):
            mac_chain.read_head(altered, KEY)
    with pytest.raises(ValueError, match="another key"):
        mac_chain.read_head(document, mac_chain.ledger_key(b"j" * 40))


def test_the_head_finds_cut_off_and_replaced_entries_and_accepts_later_authentic_ones():
    entries = chain(5)
    where = ".unlearn/ledger.head"
    assert mac_chain.check_head(entries, (5, entries[4].hash), where) == mac_chain.HeadCheck(True, "", None, 0)
    cut = mac_chain.check_head(entries[:3], (5, entries[4].hash), where)
    assert (cut.ok, cut.first_bad) == (False, 5) and "ends at entry 3" in cut.message
    replaced = mac_chain.check_head(rechained_without_the_key(entries, 2, None), (5, entries[4].hash), where)
    assert (replaced.ok, replaced.first_bad) == (False, 5) and "replaced" in replaced.message
    behind = mac_chain.check_head(entries, (4, entries[3].hash), where)
    assert (behind.ok, behind.behind) == (True, 1)  # an append stopped between its commit and its head write
    assert mac_chain.check_head(entries, (0, mac_chain.GENESIS), where).behind == 5
    missing = mac_chain.check_head(entries, None, where)
    assert not missing.ok and "ledger seal" in missing.message
    assert mac_chain.check_head([], None, where).ok


def test_a_format_1_chain_is_recognised_and_sealed_with_the_same_content():
    plain = rechained_without_the_key(chain(4), 1, None)
    assert mac_chain.is_format_1(plain) and not mac_chain.is_format_1(chain(4))
    assert mac_chain.verify_entries(plain, KEY, digest=mac_chain.entry_hash).ok
    assert not mac_chain.verify_entries(plain, KEY).ok
    sealed = mac_chain.seal_entries(plain, KEY)
    assert mac_chain.verify_entries(sealed, KEY).ok and sealed == chain(4)
    assert [e.data for e in sealed] == [e.data for e in plain]


# --- deadlines ------------------------------------------------------------------------------------

def days_between(first: date, last: date):
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def month_later_by_enumeration(day: date, months: int) -> date:
    """Walk day by day to the first day `months` months on, list that month's days and take the
    same day-of-month, or the month's last day when it has no such day."""
    target = (day.year * 12 + day.month - 1 + months)
    cursor = day
    while cursor.year * 12 + cursor.month - 1 != target:
        cursor += timedelta(days=1)
    month_days = []
    while cursor.year * 12 + cursor.month - 1 == target:
        month_days.append(cursor)
        cursor += timedelta(days=1)
    same = [d for d in month_days if d.day == day.day]
    return same[0] if same else month_days[-1]


def test_one_calendar_month_matches_an_enumeration_for_every_day_of_three_years():
    policy = deadlines.DeadlinePolicy.gdpr()
    for day in days_between(date(2023, 1, 1), date(2025, 12, 31)):  # 2024 is a leap year
        received = datetime(day.year, day.month, day.day, 15, 30, tzinfo=timezone.utc)
        assert policy.deadline(received) == month_later_by_enumeration(day, 1), day
        assert policy.latest(received) == month_later_by_enumeration(day, 3), day


@pytest.mark.parametrize("received, deadline", [
    (date(2024, 1, 31), date(2024, 2, 29)), (date(2025, 1, 31), date(2025, 2, 28)),
    (date(2025, 1, 29), date(2025, 2, 28)), (date(2025, 3, 31), date(2025, 4, 30)),
    (date(2025, 12, 31), date(2026, 1, 31)), (date(2025, 2, 28), date(2025, 3, 28)),
])
def test_month_end_examples(received, deadline):
    assert deadlines.DeadlinePolicy.gdpr().deadline(deadlines.parse_timestamp(received)) == deadline


def test_days_policy_counts_calendar_days():
    policy = deadlines.DeadlinePolicy.days(45)
    received = deadlines.parse_timestamp("2025-12-20T08:00:00+00:00")
    walked = list(days_between(date(2025, 12, 20), date(2026, 4, 30)))
    assert policy.deadline(received) == walked[45] == date(2026, 2, 3)
    assert policy.latest(received) == walked[90]
    for bad in (0, -3, 400, 2.5, True):
        one_line_error(deadlines.DeadlinePolicy.days, bad)


def test_the_day_of_receipt_is_read_in_the_time_zone_it_was_given_in():
    received = deadlines.parse_timestamp("2026-01-31T23:30:00-05:00")  # already 1 February in UTC
    policy = deadlines.DeadlinePolicy.gdpr()
    assert policy.deadline(received) == date(2026, 2, 28)
    record = lg.fold([received_entry(received=received, now=received)])["REQ-1"]
    assert not record.overdue(datetime(2026, 3, 1, 4, 59, tzinfo=timezone.utc))  # 28 Feb 23:59 in New York
    assert record.overdue(datetime(2026, 3, 1, 5, 0, tzinfo=timezone.utc))


def test_timestamps_parse_or_fail_on_one_line():
    assert deadlines.parse_timestamp("2026-02-03") == datetime(2026, 2, 3, tzinfo=timezone.utc)
    assert deadlines.parse_timestamp("2026-02-03T10:00:00Z").utcoffset() == timedelta(0)
    assert "ISO 8601" in one_line_error(deadlines.parse_timestamp, "3 Feb 2026", "received time")
    assert "future" in one_line_error(lg.received_data, request(), SALT, T0 + timedelta(hours=1), None,
                                      deadlines.DeadlinePolicy.gdpr(), T0)
    # a mistyped year: refused before the append-only ledger keeps it; an old request still goes in
    assert "ten years ago" in one_line_error(lg.received_data, request(), SALT, datetime(1, 1, 1, tzinfo=timezone.utc),
                                             None, deadlines.DeadlinePolicy.gdpr(), T0)
    assert lg.received_data(request(), SALT, T0 - timedelta(days=3 * 365), None, deadlines.DeadlinePolicy.gdpr(), T0)


# --- states ------------------------------------------------------------------------------------

def history(*events: tuple[str, dict], policy=None) -> lg.RequestRecord:
    """Apply events through event_data (the checked path) and fold the resulting entries."""
    entries = [received_entry(policy=policy)]
    now = T0
    for event, fields in events:
        now += timedelta(days=1)
        record = lg.fold(entries)["REQ-1"]
        status, data = lg.event_data(record, event, fields, now)
        entries.append(mac_chain.chain_entry(entries[-1], "REQ-1", event, status, deadlines.utc_iso(now), data,
                                             key=KEY))
    assert mac_chain.verify_entries(entries, KEY).ok
    return lg.fold(entries)["REQ-1"]


def test_the_happy_path_records_date_and_nature_of_the_response():
    r = history(("processing", {"run_id": "abc"}), ("completed", {"certificate": "c.json"}))
    assert r.status == "completed" and r.response["date"] == "2026-01-12T09:00:00+00:00"
    assert r.response["certificate"] == "c.json"  # what a resubmission of the id gets back
    assert r.response["response"] == "fulfilled: records erased, labels rectified"
    assert r.answered_late() is False and not r.overdue(T0 + timedelta(days=400))


@pytest.mark.skipif("forget_class" not in UnlearningRequest.model_fields, reason="requests without forget_class")
def test_a_class_forgetting_request_is_recorded_and_answered():
    entries = [received_entry(req=UnlearningRequest(id="REQ-1", model="fashion", forget_class="3"))]
    record = lg.fold(entries)["REQ-1"]
    assert record.request["forget_class"] == "3" and record.request["kinds"] == ["forget_class"]
    status, data = lg.event_data(record, "denied", {"basis": "b"}, T0)
    assert status == "denied"
    record.status = "processing"
    assert lg.event_data(record, "completed", {}, T0)[1]["response"] == "fulfilled: class forgotten"


def test_a_failure_keeps_its_reason_and_a_rerun_can_complete():
    r = history(("processing", {}), ("failed", {"reason": "verification\n   failed:  agreement 0.9"}))
    assert r.status == "failed" and r.failure["reason"] == "verification failed: agreement 0.9"
    r = history(("processing", {}), ("failed", {"reason": "x"}), ("processing", {}), ("completed", {}))
    assert r.status == "completed" and r.failure is None


def test_a_denial_needs_its_basis():
    assert "basis" in one_line_error(history, ("denied", {}))
    r = history(("denied", {"basis": "art. 17(3)(e): legal claims"}))
    assert r.response == {"status": "denied", "date": "2026-01-11T09:00:00+00:00",
                          "basis": "art. 17(3)(e): legal claims"}


@pytest.mark.parametrize("events, bad", [
    ((), ("completed", {})),
    ((("processing", {}),), ("processing", {})),
    ((("processing", {}), ("completed", {})), ("processing", {})),
    ((("denied", {"basis": "b"}),), ("processing", {})),
    ((("processing", {}), ("completed", {})), ("extended", {"reason": "r"})),
    ((), ("received", {})),
    ((), ("archived", {})),
])
def test_impossible_transitions_are_refused(events, bad):
    one_line_error(history, *events, bad)


def test_unknown_fields_are_refused_and_long_reasons_cut():
    assert "allowed" in one_line_error(history, ("failed", {"reason": "r", "email": "a@b.c"}))
    r = history(("failed", {"reason": "x" * 2000}))
    assert len(r.failure["reason"]) == lg.MAX_TEXT


# --- extensions ------------------------------------------------------------------------------------

def test_an_extension_defaults_to_the_latest_the_rule_allows_and_needs_a_reason():
    r = history(("extended", {"reason": "complex request, person told on 2026-01-11"}))
    assert r.deadline == date(2026, 4, 10) and r.status == "received"
    assert r.extensions[0]["reason"].startswith("complex")
    one_line_error(history, ("extended", {"reason": "  "}))


def test_extension_limits():
    assert "beyond" in one_line_error(history, ("extended", {"reason": "r", "deadline": "2026-04-11"}))
    assert "not after" in one_line_error(history, ("extended", {"reason": "r", "deadline": "2026-02-10"}))
    r = history(("extended", {"reason": "r", "deadline": "2026-03-01"}), ("extended", {"reason": "r2"}))
    assert r.deadline == date(2026, 4, 10) and len(r.extensions) == 2
    ccpa = history(("extended", {"reason": "r"}), policy=deadlines.DeadlinePolicy.days(45))
    assert ccpa.deadline == date(2026, 1, 10) + timedelta(days=90)


def test_an_extension_must_come_before_the_deadline():
    record = lg.fold([received_entry()])["REQ-1"]
    assert lg.extended_deadline(record, None, datetime(2026, 2, 10, 23, 0, tzinfo=timezone.utc))
    assert "passed" in one_line_error(lg.extended_deadline, record, None, datetime(2026, 2, 11, tzinfo=timezone.utc))


# --- what the ledger holds ----------------------------------------------------------------------

def test_the_nature_of_a_request_has_ids_not_labels():
    nature = lg.request_nature(request(fix_labels={"33": "VERY-PRIVATE-LABEL"}))
    assert nature["fix_labels"] == ["33"] and nature["delete_records"] == ["12", "7"]
    assert "VERY-PRIVATE-LABEL" not in mac_chain.canonical_json(nature)


def test_the_request_hash_is_salted_and_ignores_record_order():
    a, b = request(), request(delete_records=["7", "12"])
    assert lg.request_fingerprint(a, SALT) == lg.request_fingerprint(b, SALT)
    assert lg.request_fingerprint(a, SALT) != lg.request_fingerprint(a, b"t" * 32)
    assert lg.request_fingerprint(a, SALT) != lg.request_fingerprint(request(fix_labels={"33": "<=50K"}), SALT)
    assert a.content_hash() not in lg.request_fingerprint(a, SALT)
    with pytest.raises(ValueError):
        lg.request_fingerprint(a, b"short")


@pytest.mark.parametrize("channel, ok", [("email", True), ("Web-Form", True), ("ci", True), (None, True),
                                         ("jane.doe@example.com", False), ("call from Jane", False), ("", False)])
def test_channel_is_a_short_token(channel, ok):
    if ok:
        assert lg.check_channel(channel) in ("email", "web-form", "ci", "unspecified")
    else:
        message = one_line_error(lg.check_channel, channel)
        assert "token" in message and (not channel or channel not in message)  # the address was echoed


@pytest.mark.parametrize("value", ["4556 7375 8689 9855", "jo.bloggs@example.com", "AKIAQ3EGRZ7T5XK2LW9M",
                                   "+44 20 7946 0958", "DE89 3704 0044 0532 0130 00"])
def test_a_stated_reason_holding_a_personal_value_is_refused_unprinted(value):
    """`requests extend --reason` / `deny --basis` wrote these into the append-only ledger, for good."""
    message = one_line_error(lg.stated_text, f"the person gave {value} by phone", "--reason")
    assert "--reason holds what looks like personal data" in message and value not in message
    for reason in ("complex request", "Art. 12(3): 3 related requests, reference 2026-0012", "legal hold, case 12345678"):
        assert lg.stated_text(reason, "--reason") == reason
