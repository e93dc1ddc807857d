"""Erasure certificates on disk: each request's certificate (`unlearning.compliance.certificate`) signed with
the project's key (HMAC-SHA256, `unlearning.compliance.signing`), filed as `.unlearn/certificates/<request
id>.json` with an HTML report beside it, and verified: its signature, its file name (the request
its signed body names) and the ledger's `completed` entry, which records its SHA-256
(tasks.outcomes), so that neither can be swapped for another. Needs neither Prefect nor MLflow.
"""

from __future__ import annotations

from pathlib import Path

from tasks import ledger
from unlearning.compliance import signing
from unlearning.errors import UnlearnError

CERTIFICATES = ".unlearn/certificates"


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
        raise UnlearnError(f"certificate file '{path}' not found; check the path")
    key = signing.signing_key(root, create=False)
    ok, message = signing.verify(path, key)
    if not ok:
        return False, message
    recorded, problem = ledger.certificate_recorded(root, path.stem, path.read_bytes(), key)
    return (True, f"{message}; {problem}") if recorded else (False, f"{path.name}: {problem}")
