"""The secrets redactions removed from a text corpus, by salted fingerprint: what tasks.erased keeps
out of it for good. A secret is known by its fingerprint (never its value) and found again by scanning
the corpus with the detectors and the project's salt that found it (tasks.scan).

Where a removal is recorded:
- a completed ledger request: its `completed` entry's `redacted` (tasks.outcomes.redacted_by,
  `findings: all` resolved when it was processed); one completed by older code: the fingerprints it
  named, or for `findings: all` those its certificate lists, read only while the file is the one the
  ledger recorded the SHA-256 of;
- a request made with `unlearn forget` outside the ledger (the demo's): the registry, each promoted
  version's `request_id` tag and its lineage run's result (no ledger entry vouches for it). A version
  purged, as superseded or by `unlearn model retire`, keeps its registry entry, tags and lineage
  run — the purge deletes its model files —, so a retired model's redactions are kept out too;
- a covered request's sealed escrow (the audit's own copy; `model retire` deletes a model's escrows)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def fingerprints_in(root: Path, corpus) -> set[str]:
    """The salted fingerprints of the secrets the detectors find in a text corpus: the same scan, with
    every detector and the project's salt, that a redaction's findings were selected from
    (tasks.kinds.text.plan_findings), so a secret it removed has the same fingerprint here."""
    from tasks import scan

    return {f["fingerprint"] for f in scan.scan_corpus(corpus, scan.project_salt(root))}


def secrets_removed(root: Path, record) -> set[str]:
    """The fingerprints a completed ledger redaction removed (none for another request)."""
    response, spec = record.response or {}, record.request.get("redact")
    if spec is None:
        return set()
    if response.get("redacted") is not None:
        return set(response["redacted"])
    if isinstance(spec.get("findings"), list):
        return set(spec["findings"])
    return certified_secrets(root, response)


def certified_secrets(root: Path, response: dict) -> set[str]:
    """The fingerprints of the secrets a certificate says its request removed (its own, not the
    earlier secrets of a chain it kept down), or none when the file is gone or not the recorded one."""
    path = Path(root) / str(response.get("certificate") or "")
    if not response.get("certificate") or not path.is_file():
        return set()
    body = path.read_bytes()
    if hashlib.sha256(body).hexdigest() != response.get("certificate_sha256"):
        return set()
    rows = ((json.loads(body).get("fidelity") or {}).get("secrets")) or []
    return {r["fingerprint"] for r in rows if "fingerprint" in r and "earlier_requests" not in r}


def redacted_outside_ledger(forgets: list) -> dict[str, tuple[str, set[str]]]:
    """Request id → (the dataset, the fingerprints it redacted), of the requests made with `unlearn
    forget` outside the ledger (`forgets`: tasks.erased.forgets_outside_ledger, the verified, not
    rolled back versions they promoted): the result each lineage run logged."""
    from tasks import tracking

    found: dict[str, tuple[str, set[str]]] = {}
    for forget in forgets:
        if fingerprints := result_secrets(tracking.load_result(forget.run) or {}):
            found.setdefault(forget.request, (forget.dataset, set()))[1].update(fingerprints)
    return found


def result_secrets(result: dict) -> set[str]:
    """The fingerprints a forget run's logged result says it redacted (none for a table's)."""
    if result.get("redacted_findings") is not None:
        return {f["fingerprint"] for f in result["redacted_findings"]}
    return {r["fingerprint"] for r in result.get("secrets") or () if "fingerprint" in r and "earlier_requests" not in r}


def escrowed_secrets(plan) -> dict[str, set[str]]:
    """Covered request id → the fingerprints of the secrets its sealed escrow holds (each secret's own
    requests of the batch): a request made with `unlearn forget` outside the ledger, and a ledger
    request completed by older code that recorded none."""
    found: dict[str, set[str]] = {}
    for escrowed in plan.escrows:
        for secret in escrowed.get("secrets") or ():
            for request in secret.get("requests", escrowed["requests"]):
                found.setdefault(request, set()).add(secret["fingerprint"])
    return found
