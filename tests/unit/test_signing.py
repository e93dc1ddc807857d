"""Signed certificates: the HMAC format, any byte change detected, the key file's permissions, and
the HTML report (self-contained, every text escaped)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from unlearning.compliance import escrow, signing
from unlearning.compliance.certificate import certificate
from unlearning.compliance.ledger import request_fingerprint
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError
from unlearning.tabular.methods import Result

KEY = b"k" * 40
# A 1×1 PNG, built by hand: signature, IHDR, IDAT, IEND.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def cert(guarantee="certified", checks=None, **overrides) -> dict:
    request = UnlearningRequest(id="REQ-7", model="adult", delete_records=["4711", "4712"],
                                fix_labels={"1033": ">50K"})
    result = Result(theta=None, method="certified" if guarantee == "certified" else "second_order",
                    guarantee=guarantee, residual=0.143, residual_bound=3.97 if guarantee == "certified" else None,
                    epsilon=0.397 if guarantee == "certified" else None, delta=1e-5,
                    stats={"budget_used": 3.97, "budget_left": 6.03, "budget": 10.0})
    checks = checks if checks is not None else [
        {"name": "agreement_with_retrain", "value": 1.0, "threshold": ">= 0.995", "passed": True},
        {"name": "accuracy_gap_pts", "value": 0.0, "threshold": "<= 0.1", "passed": True}]
    body = certificate(
        request, result, model={"name": "adult", "version": "3", "parent_version": "2", "run_id": "r3",
                                "parent_run_id": "r2"},
        data={"before": "aaa.dir", "after": "bbb.dir"}, metrics={"test_accuracy": 0.8388, "agreement": 1.0},
        checks=checks, timings={"update_s": 0.288, "retrain_s": 4.28}, code_version="c29ff50",
        config={"method": result.method, "options": {}},
        request_hash=request_fingerprint(request, b"s" * 32),
        superseded=[{"artifact": "dvc data version aaa.dir", "action": "purged from cache and remote",
                     "objects": 3, "verified": True}])
    return {**body, **overrides}


def signed_file(tmp_path: Path, document: dict | None = None) -> Path:
    """Filed as `comply` files a certificate: under its request's id."""
    document = document or cert()
    return signing.write_signed(tmp_path / f"{document['request']['id']}.json", signing.sign(document, KEY))


# --- format ----------------------------------------------------------------------------------------

def test_signature_is_the_documented_hmac():
    document = cert()
    signed = signing.sign(document, KEY)
    unsigned = {**json.loads(json.dumps(document)),
                "signature": {"algorithm": "HMAC-SHA256", "key_id": signed["signature"]["key_id"]}}
    message = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert signed["signature"]["value"] == hmac.new(KEY, message, hashlib.sha256).hexdigest()
    assert signed["signature"]["key_id"] == hashlib.sha256(b"unlearnflow.signing.key-id\0" + KEY).hexdigest()[:16]
    assert signing.verify(signed, KEY)[0]


def test_signed_file_round_trips_paths_dates_and_non_finite_numbers(tmp_path):
    document = cert(extra={"path": Path("a/b"), "when": datetime(2026, 1, 2, tzinfo=timezone.utc),
                           "ratio": float("inf"), "missing": float("nan")})
    path = signed_file(tmp_path, document)
    ok, message = signing.verify(path, KEY)
    assert ok, message
    assert "REQ-7" in message


def test_resigning_replaces_the_signature():
    once = signing.sign(cert(), KEY)
    twice = signing.sign(once, b"j" * 40)
    assert signing.verify(twice, b"j" * 40)[0] and not signing.verify(twice, KEY)[0]


# --- any change is detected ----------------------------------------------------------------------

def test_every_single_byte_change_is_detected(tmp_path):
    path = signed_file(tmp_path)
    original = path.read_bytes()
    assert signing.verify(path, KEY)[0] and signing.verify_bytes(original, KEY)[0]
    for i in range(len(original)):
        for altered in (original[:i] + bytes([original[i] ^ 0x01]) + original[i + 1:],  # flip a bit
                        original[:i] + original[i + 1:]):  # drop the byte
            ok, message = signing.verify_bytes(altered, KEY)  # what verify(path) runs on the file's bytes
            assert not ok, (i, message)
    for altered in (original + b" ", original + b"\n", original.replace(b'"REQ-7"', b'"REQ-8"', 1)):
        path.write_bytes(altered)
        assert not signing.verify(path, KEY)[0]


def test_reformatting_the_file_is_an_alteration_too(tmp_path):
    path = signed_file(tmp_path)
    document = json.loads(path.read_text())
    path.write_text(json.dumps(document))  # same content, other bytes
    ok, message = signing.verify(path, KEY)
    assert not ok and "bytes were changed" in message
    assert signing.verify(document, KEY)[0]  # the content itself is authentic


def test_the_signature_block_is_covered(tmp_path):
    signed = signing.sign(cert(), KEY)
    for change in ({"note": "added"}, {"algorithm": "HMAC-SHA512"}, {"key_id": "0" * 16}, {"value": "0" * 64}):
        forged = {**signed, "signature": {**signed["signature"], **change}}
        assert not signing.verify(forged, KEY)[0], change
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    assert signing.verify(unsigned, KEY) == (False, "not a signed certificate (no signature object)")


def test_another_key_is_named_and_rejected():
    ok, message = signing.verify(signing.sign(cert(), KEY), b"z" * 40)
    assert not ok and "another key" in message


def test_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(UnlearnError):
        signing.verify(tmp_path / "nope.json", KEY)


def test_a_certificate_filed_under_another_request_does_not_verify(tmp_path):
    path = signed_file(tmp_path)
    assert signing.verify(path, KEY)[0]
    other = path.with_name("REQ-8.json")
    other.write_bytes(path.read_bytes())  # request REQ-7's valid certificate, saved as REQ-8's
    ok, message = signing.verify(other, KEY)
    assert not ok and "request 'REQ-7', filed as request 'REQ-8'" in message
    ok, message = signing.verify_bytes(path.read_bytes(), KEY, request_id="REQ-8")
    assert not ok and "not this request's certificate" in message
    unnamed = signing.write_signed(tmp_path / "REQ-9.json", signing.sign({"x": 1}, KEY))  # certifies no request
    assert not signing.verify(unnamed, KEY)[0]


# --- the key ----------------------------------------------------------------------------------------

@pytest.fixture
def no_env_key(monkeypatch):
    monkeypatch.delenv(signing.KEY_ENV, raising=False)


def test_key_file_is_created_private_even_under_a_permissive_umask(tmp_path, no_env_key):
    old = os.umask(0)
    try:
        key = signing.signing_key(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / ".unlearn" / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", key) and path.read_text() == key.decode() + "\n"
    assert signing.signing_key(tmp_path) == key  # read back, not replaced
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]  # no temporary file left


def test_concurrent_first_uses_agree_on_one_key(tmp_path, no_env_key):
    keys, barrier = [], threading.Barrier(6)

    def first_use():
        barrier.wait()
        keys.append(signing.signing_key(tmp_path))

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 6 and len(set(keys)) == 1
    assert [p.name for p in (tmp_path / ".unlearn").iterdir()] == ["signing.key"]


def test_a_key_file_others_can_read_is_refused(tmp_path, no_env_key):
    signing.signing_key(tmp_path)
    path = tmp_path / ".unlearn" / "signing.key"
    path.chmod(0o644)
    with pytest.raises(UnlearnError, match="chmod 600"):
        signing.signing_key(tmp_path)


def test_environment_key_wins_and_must_be_long_enough(tmp_path, monkeypatch):
    monkeypatch.setenv(signing.KEY_ENV, "x" * 32)
    assert signing.signing_key(tmp_path) == b"x" * 32
    assert not (tmp_path / ".unlearn").exists()
    monkeypatch.setenv(signing.KEY_ENV, "short")
    with pytest.raises(UnlearnError, match="too short"):
        signing.signing_key(tmp_path)


def test_an_environment_key_the_key_file_contradicts_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    held = signing.signing_key(tmp_path)
    monkeypatch.setenv(signing.KEY_ENV, "x" * 32)
    for create in (True, False):
        with pytest.raises(UnlearnError, match="UNLEARN_SIGNING_KEY is not the key in") as refused:
            signing.signing_key(tmp_path, create=create)
        assert "x" * 32 not in str(refused.value) and held.decode() not in str(refused.value)
    monkeypatch.setenv(signing.KEY_ENV, held.decode())  # the file's content: the same key
    assert signing.signing_key(tmp_path) == held


def test_verifying_never_creates_a_key(tmp_path, no_env_key):
    with pytest.raises(UnlearnError, match="no signing key"):
        signing.signing_key(tmp_path, create=False)
    assert not (tmp_path / ".unlearn").exists()


# --- the salt ---------------------------------------------------------------------------------------

def test_environment_salt_wins_and_no_salt_file_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv(signing.SALT_ENV, "0F" * 16)
    assert signing.project_salt(tmp_path) == b"\x0f" * 16
    assert not (tmp_path / ".unlearn").exists()


@pytest.mark.parametrize("value, problem", [("ab" * 15, "too short (30 hex digits)"), ("ab" * 16 + "a", "not hexadecimal"),
                                            ("g" * 64, "not hexadecimal"), ("ab cd" * 8, "not hexadecimal")],
                         ids=["short", "odd", "not-hex", "spaces"])
def test_an_environment_salt_must_be_hex_of_16_bytes(tmp_path, monkeypatch, value, problem):
    monkeypatch.setenv(signing.SALT_ENV, value)
    with pytest.raises(UnlearnError, match=re.escape(problem)) as excinfo:
        signing.project_salt(tmp_path)
    assert "\n" not in str(excinfo.value) and "token_hex" in str(excinfo.value)


def test_an_environment_salt_is_refused_beside_a_salt_file_holding_another(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.SALT_ENV, raising=False)
    kept = signing.project_salt(tmp_path)  # a project made before: its salt in its file
    assert (tmp_path / signing.SALT_FILE).read_bytes() == kept and len(kept) == 32
    monkeypatch.setenv(signing.SALT_ENV, kept.hex())
    assert signing.project_salt(tmp_path) == kept
    monkeypatch.setenv(signing.SALT_ENV, "ab" * 32)
    with pytest.raises(UnlearnError, match="export UNLEARN_SALT=.*xxd.* and delete the file") as excinfo:
        signing.project_salt(tmp_path)
    assert "ab" * 32 not in str(excinfo.value) and kept.hex() not in str(excinfo.value)



# Each kind of record a project keeps with its key or salt, as a file the pipeline would leave there.
KEYED_RECORDS = ["ledger.db", ".unlearn/ledger.head", ".unlearn/certificates/REQ-1.json",
                 ".unlearn/run_certificates/run1.json", ".unlearn/cache/run1.pt", ".unlearn/escrow/people/run1.bin"]
SALTED_RECORDS = ["ledger.db", ".unlearn/certificates/REQ-1.json", ".unlearn/exposures/run1.json"]


@pytest.mark.parametrize("record", KEYED_RECORDS)
def test_no_key_is_drawn_for_a_project_that_holds_what_its_key_made(tmp_path, no_env_key, record):
    """Its key moved out (docs/compliance.md) and a process run without UNLEARN_SIGNING_KEY: the old
    code drew a new key file, signed with it, and the next command given the project's key was
    refused beside that file."""
    (tmp_path / record).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / record).write_bytes(escrow.MAGIC if record.endswith((".pt", ".bin")) else b"{}")
    before = sorted(tmp_path.rglob("*"))
    for check in (signing.signing_key, signing.check_not_moved_out):
        with pytest.raises(UnlearnError, match=f"set {signing.KEY_ENV} to the project's key") as refused:
            check(tmp_path)
        named = next(r for r in signing.MADE_WITH_KEY if record == r or record.startswith(r + "/"))
        assert "\n" not in str(refused.value) and f"({named};" in str(refused.value)
    assert sorted(tmp_path.rglob("*")) == before  # no key file made


@pytest.mark.parametrize("record", SALTED_RECORDS)
def test_no_salt_is_drawn_for_a_project_that_holds_what_its_salt_made(tmp_path, monkeypatch, record):
    monkeypatch.delenv(signing.SALT_ENV, raising=False)
    monkeypatch.setenv(signing.KEY_ENV, "x" * 32)
    (tmp_path / record).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / record).write_bytes(b"{}")
    before = sorted(tmp_path.rglob("*"))
    for check in (signing.project_salt, signing.check_not_moved_out):
        with pytest.raises(UnlearnError, match=f"set {signing.SALT_ENV} to the project's salt") as refused:
            check(tmp_path)
        assert "\n" not in str(refused.value)
    assert sorted(tmp_path.rglob("*")) == before  # no salt file made


def test_a_new_project_still_draws_its_key_and_salt_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.SALT_ENV, raising=False)
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    (tmp_path / ".unlearn" / "cache").mkdir(parents=True)  # an empty folder records nothing
    (tmp_path / ".unlearn" / "noise").mkdir()
    (tmp_path / ".unlearn" / "noise" / "run1.pt").write_bytes(b"PK\x03\x04")  # kept in clear before 2026-12-07
    (tmp_path / ".unlearn" / "evidence").mkdir()
    (tmp_path / ".unlearn" / "evidence" / "run1.json").write_text("{}")  # numbers only: made with neither
    signing.check_not_moved_out(tmp_path)
    key, salt = signing.signing_key(tmp_path), signing.project_salt(tmp_path)
    assert (tmp_path / signing.KEY_FILE).read_text().strip().encode() == key
    assert (tmp_path / signing.SALT_FILE).read_bytes() == salt
    # and once recorded, its own files (or the variables) are used as before
    (tmp_path / "ledger.db").write_bytes(b"")
    signing.check_not_moved_out(tmp_path)
    assert signing.signing_key(tmp_path) == key and signing.project_salt(tmp_path) == salt


# --- the HTML report -------------------------------------------------------------------------------

def test_report_has_every_section_and_embeds_the_plots():
    page = signing.certificate_html(signing.sign(cert(), KEY), {"exposure": PNG, "loss": PNG})
    for heading in ("1. Procedural evidence", "2. Guarantee class", "3. Verification", "4. Superseded artifacts",
                    "5. Plots"):
        assert heading in page
    for text in ("REQ-7", "aaa.dir", "bbb.dir", "c29ff50", "r2", "r3", "&gt;= 0.995", "PASS", "VERIFIED",
                 "purged from cache and remote", "0.397", "HMAC-SHA256"):
        assert text in page, text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(u) for u in uris] == [PNG, PNG]
    assert not re.search(r'(src|href)="(?!data:)', page) and "<link" not in page  # self-contained


def test_report_escapes_every_text():
    evil = "<script>alert(1)</script>"
    document = cert(checks=[{"name": evil, "value": 0.5, "threshold": evil, "passed": False}],
                    code_version=evil, config={"method": evil}, superseded=[{"artifact": evil, "action": evil}])
    page = signing.certificate_html(document, {evil: PNG})
    assert "<script" not in page and page.count("&lt;script&gt;") >= 6
    assert "FAIL" in page and "NOT VERIFIED" in page and "not signed" in page


def test_report_states_the_guarantee_without_overclaiming():
    assert "not a proof" in signing.certificate_html(cert("empirical"))
    exact = signing.certificate_html(cert("exact"))
    assert "retrained from scratch" in exact and "ε" not in exact.split("2. Guarantee class")[1].split("<h2>")[0]


def audit_record(**audit) -> dict:
    """A signed audit record's body as tasks.audit_record writes it (values made up)."""
    return {"format": "unlearnflow.audit/1",
            "audit": {"id": "AUDIT-notes-1", "model": "notes", "kind": "text", "at": "2026-12-06T01:00:00+00:00",
                      "passed": True, "decided": True, "undecided_reason": None, "rebased": False, "run_id": "r9",
                      "code_version": "0.1.0+abc", **audit},
            "production": {"version": "4", "run_id": "run-prod"}, "data_version": "ddd.dir",
            "requests": [{"id": "REQ-1", "certificate": ".unlearn/certificates/REQ-1.json",
                          "certificate_sha256": "f" * 64, "model_version": "4", "guarantee": "empirical",
                          "method": "suppress"}],
            "unrecorded_requests": [], "shortfall": [], "promoted": None,
            "checks": [{"name": "exposure_vs_retrain_bits", "value": 1.2, "threshold": "<= 2.0", "passed": True}],
            "metrics": {"exposure_after": 2.5, "secrets_measured": [{"masked": "**** 9855", "after": 2.5}]},
            "escrow": {"files": ["notes/run-1.bin"], "unreadable": [], "action": "deleted when this audit completed"},
            "teacher": {"deleted": True, "production_teaches": True}, "timings": {"retrain_s": 36.6}}


def test_an_audit_record_renders_as_an_audit_not_an_empty_certificate():
    """Until now the record rendered through certificate_html: "Erasure certificate — request None" and dashes."""
    page = signing.audit_record_html(signing.sign(audit_record(), KEY))
    assert "Audit record — AUDIT-notes-1" in page and "Erasure certificate" not in page and "request None" not in page
    for text in ("PASSED", "v4 (run-prod)", "REQ-1", "exposure_vs_retrain_bits", "notes/run-1.bin",
                 "production_teaches", "**** 9855", "nothing: production stays", "HMAC-SHA256", "36.6"):
        assert text in page, text
    failed = signing.audit_record_html(audit_record(passed=False, rebased=False) | {
        "promoted": {"version": "5", "guarantee": "exact", "why": "the audit failed"}})
    assert "FAILED" in failed and "v5 (guarantee exact): the audit failed" in failed
    undecided = signing.audit_record_html(audit_record(decided=False, undecided_reason="forget set too small"))
    assert "UNDECIDED (forget set too small)" in undecided


def test_an_audit_record_report_escapes_every_text():
    evil = "<script>alert(1)</script>"
    record = audit_record(model=evil, undecided_reason=evil, decided=False) | {"metrics": {evil: evil}}
    page = signing.audit_record_html(record)
    assert "<script" not in page and page.count("&lt;script&gt;") >= 4


def test_report_refuses_a_plot_that_is_not_a_png():
    with pytest.raises(ValueError, match="not a PNG"):
        signing.certificate_html(cert(), {"x": b"GIF89a"})


def test_a_file_larger_than_any_certificate_is_refused_unread(tmp_path, monkeypatch):
    """`unlearn certificate verify` read the whole file into memory, however large: a sparse 8 GiB
    file (no disk used) stands for a hostile or mistaken path."""
    path = tmp_path / "REQ-7.json"
    with path.open("wb") as handle:
        handle.truncate(8 * 2**30)
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    ok, message = signing.verify(path, KEY)
    assert not ok and "larger than" in message and read == []


def test_an_audit_record_is_named_an_audit_not_a_request(tmp_path):
    record = {"format": "unlearnflow.audit/1", "audit": {"id": "AUDIT-adult-20261205T120000000000"}, "requests": []}
    path = signing.write_signed(tmp_path / "AUDIT-adult-20261205T120000000000.json", signing.sign(record, KEY))
    ok, message = signing.verify(path, KEY)
    assert ok and message.endswith("audit AUDIT-adult-20261205T120000000000"), message
