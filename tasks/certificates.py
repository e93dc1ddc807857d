"""Erasure certificates on disk: each request's certificate (`unlearning.compliance.certificate`) signed with
the project's key (HMAC-SHA256, `unlearning.compliance.signing`), filed as `.unlearn/certificates/<request
id>.json` with an HTML report beside it, and verified: its signature, its file name (the request
its signed body names) and the ledger's `completed` entry, which records its SHA-256
(tasks.outcomes), so that neither can be swapped for another. An audit record (tasks.audit_record) is verified
the same way: its signature, its file named after the audit, and the ledger's `audited`/`audit_failed`
entries of the requests it covers, which record its SHA-256. Needs neither Prefect nor MLflow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from tasks import ledger_db, ledger_verify
from unlearning.compliance import mac_chain
from unlearning.compliance import ledger as lg
from unlearning.compliance import signing
from unlearning.errors import UnlearnError

CERTIFICATES = ".unlearn/certificates"
AUDIT_FORMAT = "unlearnflow.audit/1"  # an audit record (tasks.audit_record), verified here as certificates are
AUDIT_DIR = Path(".unlearn") / "audits"  # the records, and the marker `<id>.open` of an audit not finished yet


def write_certificate(root: Path, cert: dict, plots: dict | None = None) -> Path:
    """Sign the certificate, write it (JSON) and its HTML report under .unlearn/certificates/."""
    signed = signing.sign(cert, signing.signing_key(root))
    path = root / CERTIFICATES / f"{cert['request']['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    signing.write_signed(path, signed)
    path.with_suffix(".html").write_text(signing.certificate_html(signed, plots), encoding="utf-8")
    return path


def verify_certificate(root: Path, path: Path) -> tuple[bool, str]:
    """(valid, why): the certificate's signature under the project's key, its file named after the
    request its signed body names, and the ledger's `completed` entry recording its SHA-256."""
    if not path.is_file():
        if path.exists():  # a folder, a pipe or a device: not "not found", which sends the user looking elsewhere
            raise UnlearnError(f"certificate file '{path}' is not a regular file (a folder, a device or a pipe); "
                               f"give the path of the signed .json file itself")
        raise UnlearnError(f"certificate file '{path}' not found; check the path")
    key = signing.signing_key(root, create=False)
    ok, message = signing.verify(path, key)
    if not ok:
        return False, message
    document = json.loads(path.read_text())
    if is_audit_record(document):  # an audit record: the ledger's audit entries record its SHA-256
        if (unfinished := audit_unfinished(root, document)) is not None:
            return False, f"{path.name}: {unfinished}"
        recorded, problem = audit_recorded(root, document, path.read_bytes(), key)
    else:
        recorded, problem = ledger_verify.certificate_recorded(root, path.stem, path.read_bytes(), key)
    return (True, f"{message}; {problem}") if recorded else (False, f"{path.name}: {problem}")


def is_audit_record(document: Any) -> bool:
    return isinstance(document, dict) and document.get("format") == AUDIT_FORMAT


def audit_unfinished(root: Path, document: dict) -> str | None:
    """Why a record is not yet the audit's word, or None: its audit's marker is still open (killed
    before its last write). Its promotion may yet be rolled back, and the next `unlearn audit` then
    withdraws it; a record covering only requests outside the ledger has no ledger verdict that would
    otherwise say so, and verified as valid while it named a promotion that never happened."""
    audit = document["audit"]["id"]
    if (Path(root) / AUDIT_DIR / f"{audit}.open").exists():
        return (f"audit {audit} was interrupted and is not finished: the next `unlearn audit` completes it or, "
                "if its promotion was rolled back, withdraws this record")
    return None


def audit_recorded(root: Path, document: dict, raw: bytes, key: bytes) -> tuple[bool, str]:
    """(ok, what was found): every ledger request the record names has an authentic audit entry
    from this audit recording the record's SHA-256."""
    audit = document["audit"]["id"]
    digest = hashlib.sha256(raw).hexdigest()
    mac_key = mac_chain.ledger_key(key)
    entries = {e.request_id: e for e in ledger_db.read_entries(root)
               if e.event in lg.AUDIT_EVENTS and e.data.get("audit") == audit}
    for request in document.get("requests", []):
        entry = entries.get(request["id"])
        if entry is None:
            return False, f"the ledger records no verdict of {audit} for request {request['id']!r}"
        if not hmac.compare_digest(mac_chain.entry_mac(mac_key, entry.body()), entry.hash):
            return False, f"the ledger's entry {entry.seq} does not match its MAC: run `unlearn ledger verify`"
        if entry.data.get("record_sha256") != digest:
            return False, (f"the ledger's entry {entry.seq} records audit record sha256 "
                           f"{str(entry.data.get('record_sha256'))[:12]}…, not this file's {digest[:12]}…")
    n = len(document.get("requests", []))
    return True, f"recorded for {n} request(s) by the ledger" if n else "no ledger request to check it against"


def signed_with(root: Path, key: bytes) -> bool:
    """Whether a request certificate of this project names `key` (by its id) as its signer."""
    wanted = signing.key_id(key)
    for path in sorted((root / CERTIFICATES).glob("*.json")):
        try:
            if json.loads(path.read_text())["signature"]["key_id"] == wanted:
                return True
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return False
