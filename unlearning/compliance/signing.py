"""Signed erasure certificates (HMAC-SHA256) and their human-readable HTML report.

Format. The signature sits inside the certificate, so one file travels to an auditor:

    "signature": {"algorithm": "HMAC-SHA256", "key_id": "<16 hex>", "value": "<64 hex>"}

`value` = HMAC-SHA256(key, canonical_json(certificate with "signature" minus "value")), where
canonical_json sorts keys, drops whitespace and escapes non-ASCII (`unlearning.compliance.ledger`; NaN and
Infinity are kept as Python writes them). The MAC covers every field, the algorithm and key id
included; `key_id` = sha256("unlearnflow.signing.key-id\\0" + key)[:16] names the key without revealing it.
A signed certificate is written as `dumps_signed` (sorted keys, indent 2, ASCII, final newline);
`verify(path)` also requires the file to be exactly that rendering of its content, so any byte
change fails verification, formatting included.
Binding: the MAC covers `request.id`, and `verify(path)` requires the file to be named after
that request (`<id>.json`, as `comply` files it), so a genuine certificate saved under another
request's name does not verify; the CLI also checks it against the ledger's `completed` entry.
The ledger's own MACs use a key derived from this one (`unlearning.compliance.mac_chain.ledger_key`).

Key: `UNLEARN_SIGNING_KEY` (at least 32 characters), else the key file `.unlearn/signing.key`
(64 hex characters), created on first use with mode 0600 from the first byte and refused when
group or others can read it. First use only: in a project that holds what a key made (a ledger, a
certificate, signed or sealed state: MADE_WITH_KEY) a missing file means the key moved out of the
project or was lost, and a process without the variable is refused instead of drawing a new one.
The key is the UTF-8 text of either, so copying the file's content into the variable gives the
same key. Set, the variable is the key and the file is not made; it is refused while the file holds
another key (what the project signed and sealed was made with that one).

Salt: the project's fingerprint salt (scan fingerprints, request hashes, erased rows' hashes) is
`UNLEARN_SALT` (hex, at least 16 bytes), else the file `.unlearn/salt` (32 random bytes, 0600),
created on first use (likewise only in a project that holds nothing a salt made: MADE_WITH_SALT).
Set, the variable is the salt and the file is neither read for it nor made; it is refused while the
file holds another salt (what the project recorded was made with that one).
Kept outside the project, neither key travels with a copy of it (docs/compliance.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from unlearning.checks import is_decided
from unlearning.compliance.mac_chain import canonical_json
from unlearning.errors import UnlearnError

ALGORITHM = "HMAC-SHA256"
KEY_ENV = "UNLEARN_SIGNING_KEY"
KEY_FILE = Path(".unlearn") / "signing.key"
MIN_KEY_CHARS = 32
SALT_ENV = "UNLEARN_SALT"
SALT_FILE = Path(".unlearn") / "salt"
MIN_SALT_BYTES = 16
_PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# The key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"unlearnflow.signing.key-id\0" + key).hexdigest()[:16]


def signing_key(root: Path, create: bool = True) -> bytes:
    """The key from UNLEARN_SIGNING_KEY, else from <root>/.unlearn/signing.key (created when
    `create`; verifying never creates a key)."""
    path = Path(root) / KEY_FILE
    given = key_in_env(path)
    if given is not None:
        return given
    if not path.exists():
        if not create:
            raise UnlearnError(f"no signing key: set {KEY_ENV} or provide the key file {path}")
        _refuse_a_new(root, KEY)
        _create_key_file(path)
    return read_key_file(path)


# What a project records with its signing key, and with its salt (paths under its root; a folder once
# it holds a file). Once one is there, a key (salt) file that is missing was moved out of the project
# (docs/compliance.md) or lost, not never made: a process run without the variable drew a new one,
# signed, sealed and fingerprinted with it, and the next command given the project's own was refused.
MADE_WITH_KEY = ("ledger.db", ".unlearn/ledger.head", ".unlearn/certificates", ".unlearn/run_certificates",
                 ".unlearn/audits", ".unlearn/guarantee", ".unlearn/exact", ".unlearn/escrow", ".unlearn/noise",
                 ".unlearn/cache")
MADE_WITH_SALT = ("ledger.db", ".unlearn/ledger.head", ".unlearn/certificates", ".unlearn/run_certificates",
                  ".unlearn/audits", ".unlearn/exposures")
# kept in clear before 2026-12-07, with no key: a file there counts once it is sealed (it starts with
# SEALED_PREFIX, escrow.MAGIC: defined here because that module loads torch)
SEALED_ONLY = (".unlearn/noise", ".unlearn/cache")
SEALED_PREFIX = b"unlearnflow.escrow/1\n"


def made_with(root: Path, records: tuple[str, ...]) -> str | None:
    """The first of `records` (MADE_WITH_KEY, MADE_WITH_SALT) the project at `root` holds, or None."""
    for name in records:
        if any(name not in SEALED_ONLY or _sealed(p) for p in _files_at(Path(root) / name)):
            return name
    return None


def _files_at(path: Path):
    """`path` itself if it is a file, the files under it if it is a folder, else nothing."""
    if path.is_file():
        return [path]
    return (p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


def _sealed(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SEALED_PREFIX)) == SEALED_PREFIX
    except OSError:
        return False


@dataclass(frozen=True)
class ProjectSecret:
    """One of the project's two secrets, for the refusal to draw a new one in place of one moved out
    or lost: its name in full and short, its variable and file, what it makes (`records`), and what a
    new one would do to those (`lost`)."""

    what: str
    short: str
    env: str
    file: Path
    records: tuple[str, ...]
    lost: str

    def given(self, root: Path) -> bool:
        return bool(os.environ.get(self.env, "").strip()) or (Path(root) / self.file).exists()


KEY = ProjectSecret("signing key", "key", KEY_ENV, KEY_FILE, MADE_WITH_KEY, "would verify and open none of it")
SALT = ProjectSecret("salt", "salt", SALT_ENV, SALT_FILE, MADE_WITH_SALT,
                     "would match none of its fingerprints and request hashes")


def _refuse_a_new(root: Path, secret: ProjectSecret) -> None:
    """UnlearnError where the project holds what `secret` made while neither its variable nor its
    file gives it: a new one would be drawn in place of one moved out or lost."""
    path, short = Path(root) / secret.file, secret.short
    if (record := made_with(root, secret.records)) is not None:
        raise UnlearnError(f"no {secret.what}: neither {secret.env} is set nor {path} exists, and this project holds "
                           f"what its {short} made ({record}; moved out of the project? docs/compliance.md): set "
                           f"{secret.env} to the project's {short} or restore {path}; a new {short} {secret.lost}")


def check_not_moved_out(root: Path) -> None:
    """UnlearnError (one line, naming the variable to set) when the signing key or the salt is in
    neither its variable nor its file while the project holds what it made: a command that changes
    the project is refused before it writes anything, not where it first needs the secret."""
    for secret in (KEY, SALT):
        if not secret.given(root):
            _refuse_a_new(root, secret)


def read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UnlearnError(f"signing key file {path} can be read by others (mode {mode:04o}); run: chmod 600 {path}")
    return _checked(path.read_text(encoding="utf-8").strip(), str(path))


def _checked(value: str, origin: str) -> bytes:
    if len(value) < MIN_KEY_CHARS:
        raise UnlearnError(f"the signing key in {origin} is too short ({len(value)} characters): use at least "
                           f"{MIN_KEY_CHARS} random characters, e.g. python -c 'import secrets; "
                           "print(secrets.token_hex(32))'")
    return value.encode("utf-8")


def _create_key_file(path: Path) -> None:
    create_private_once(path, (secrets.token_hex(32) + "\n").encode("utf-8"))


def create_private_once(path: Path, content: bytes) -> None:
    """Write `content` to a private temporary file (0600 from creation: os.open's mode, never a
    chmod afterwards), then link it into place: link never replaces a file another process put
    there first (the loser uses the winner's), and nobody ever sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its file
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The salt


def project_salt(root: Path) -> bytes:
    """The project's fingerprint salt: UNLEARN_SALT when set, else <root>/.unlearn/salt, created on
    first use (create_private_once: no reader ever sees it empty or half-written, and two processes
    creating it at once agree on the winner's)."""
    path = Path(root) / SALT_FILE
    given = salt_in_env(path)
    if given is not None:
        return given
    if not path.exists():
        _refuse_a_new(root, SALT)
        create_private_once(path, secrets.token_bytes(32))
    salt = path.read_bytes()
    if len(salt) < MIN_SALT_BYTES:
        raise UnlearnError(f"the project salt {path} is empty or truncated; restore it from a backup "
                           "(ledger request hashes and scan fingerprints depend on it)")
    return salt


def salt_in_env(path: Path) -> bytes | None:
    """UNLEARN_SALT as bytes (None when unset), refused when it is not hex of at least 16 bytes or
    when the salt file at `path` holds another salt."""
    value = os.environ.get(SALT_ENV, "").strip()
    if not value:
        return None
    how = f"e.g. {SALT_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))')"
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
        raise UnlearnError(f"the salt in {SALT_ENV} is not hexadecimal (an even number of the digits 0-9 and a-f): "
                           f"{how}")
    if len(value) < 2 * MIN_SALT_BYTES:
        raise UnlearnError(f"the salt in {SALT_ENV} is too short ({len(value)} hex digits): use at least "
                           f"{2 * MIN_SALT_BYTES}, {how}")
    salt = bytes.fromhex(value)
    _refuse_another_in_file(path, path.read_bytes, salt,
                            f"{SALT_ENV} is not the salt in {path}, which this project's fingerprints and request "
                            f"hashes were made with: export {SALT_ENV}=$(xxd -p -c 64 {path}) and delete the file")
    return salt


def key_in_env(path: Path) -> bytes | None:
    """UNLEARN_SIGNING_KEY as bytes (None when unset), refused when shorter than 32 characters or when
    the key file at `path` holds another key."""
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        return None
    key = _checked(value, KEY_ENV)
    _refuse_another_in_file(path, lambda: path.read_text(encoding="utf-8").strip().encode("utf-8"), key,
                            f"{KEY_ENV} is not the key in {path}, which this project's certificates, ledger and "
                            f"sealed files were made with: export {KEY_ENV}=$(cat {path}) and delete the file "
                            f"(a file made by a command run without {KEY_ENV} since the key moved out: delete it)")
    return key


def _refuse_another_in_file(path: Path, held: Callable[[], bytes], given: bytes, refusal: str) -> None:
    """A secret set in the environment while the project's file still holds another is refused:
    what the project recorded was made with one of them, and using the other would silently match,
    verify or open none of it."""
    if path.exists() and not hmac.compare_digest(held(), given):
        raise UnlearnError(refusal)


def also_in_files(root: Path) -> list[tuple[str, Path]]:
    """(variable, file) for each secret set in the environment that the project's file still holds
    too (one the file contradicts is refused): the file gives it to whoever copies the project."""
    both = [(SALT_ENV, Path(root) / SALT_FILE, salt_in_env), (KEY_ENV, Path(root) / KEY_FILE, key_in_env)]
    return [(name, path) for name, path, in_env in both if in_env(path) is not None and path.exists()]


# ---------------------------------------------------------------------------------------------
# Signing and verifying


def _plain(value: Any) -> Any:
    """The certificate as plain JSON values, exactly as it will read back from its file."""
    return json.loads(json.dumps(value, default=_jsonable, allow_nan=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"a certificate cannot hold {type(value).__name__}")


def _mac(document: dict, key: bytes) -> str:
    unsigned = {**document, "signature": {k: v for k, v in document["signature"].items() if k != "value"}}
    return hmac.new(key, canonical_json(unsigned, allow_nan=True).encode("ascii"), hashlib.sha256).hexdigest()


def sign(cert: dict, key: bytes) -> dict:
    """A copy of `cert` with its signature (any earlier signature is replaced)."""
    document = {k: v for k, v in _plain(cert).items() if k != "signature"}
    document["signature"] = {"algorithm": ALGORITHM, "key_id": key_id(key)}
    document["signature"]["value"] = _mac(document, key)
    return document


def dumps_signed(signed: dict) -> str:
    """The one file form of a signed certificate."""
    return json.dumps(signed, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=True) + "\n"


def write_signed(path: Path, signed: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps_signed(signed), encoding="ascii")
    os.replace(tmp, path)
    return path


# An audit record of a request that removed thousands of secrets is a few MiB; a certificate, KiB.
MAX_CERTIFICATE_BYTES = 64 * 2**20


def verify(signed_or_path: dict | str | Path, key: bytes) -> tuple[bool, str]:
    """(ok, message). A path is read as bytes and must also be byte-for-byte the file form, and be
    named after the request its signed body certifies (`<request id>.json`, as `comply` files it):
    a genuine certificate copied under another request's name does not verify."""
    if isinstance(signed_or_path, dict):
        return _verify_document(signed_or_path, key)
    path = Path(signed_or_path)
    if not path.is_file():
        raise UnlearnError(f"certificate file '{path}' not found; check the path")
    if path.stat().st_size > MAX_CERTIFICATE_BYTES:
        return False, (f"{path.name} is larger than {MAX_CERTIFICATE_BYTES // 2**20} MiB, more than any certificate "
                       "or audit record this project writes: not a signed certificate")
    return verify_bytes(path.read_bytes(), key, path.name, request_id=path.stem)


def verify_bytes(raw: bytes, key: bytes, name: str = "certificate", request_id: str | None = None) -> tuple[bool, str]:
    """(ok, message) for a certificate file's content: the signature, the exact file form and,
    given `request_id`, that the signed body certifies that request."""
    try:
        text = raw.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return False, f"{name} is not valid JSON any more ({type(exc).__name__}): it was altered"
    ok, message = _verify_document(document, key)
    if ok and text != dumps_signed(document):
        return False, (f"{name}: the signed content is intact but the file's bytes were changed "
                       "(formatting or duplicate keys): not the file that was signed")
    if ok and request_id is not None and certified_request(document) != request_id:
        return False, (f"{name}: a valid certificate of request {certified_request(document)!r}, filed as request "
                       f"{request_id!r}: not this request's certificate")
    return ok, f"{name}: {message}"


def certified_request(document: dict) -> str | None:
    """The request id the (signed) body certifies; for an audit record (flows/audit.py), the audit's id."""
    request = document.get("request", document.get("audit"))
    return request.get("id") if isinstance(request, dict) else None


def _verify_document(document: Any, key: bytes) -> tuple[bool, str]:
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict):
        return False, "not a signed certificate (no signature object)"
    sig = document["signature"]
    if sig.get("algorithm") != ALGORITHM:
        return False, f"unknown signature algorithm {sig.get('algorithm')!r} (expected {ALGORITHM})"
    if sig.get("key_id") != key_id(key):
        return False, f"signed with another key (key id {sig.get('key_id')!r}; this key's id is {key_id(key)})"
    value = sig.get("value")
    if not isinstance(value, str) or not hmac.compare_digest(value, _mac(document, key)):
        return False, "signature does not match: the certificate was altered after signing"
    request = certified_request(document)
    named = "audit" if isinstance(document.get("audit"), dict) and "request" not in document else "request"
    return True, f"signature valid ({ALGORITHM}, key id {sig['key_id']})" + (f", {named} {request}" if request else "")


# ---------------------------------------------------------------------------------------------
# The HTML report

GUARANTEES = {
    "exact": "Exact: the model was retrained from scratch on the corrected data, so it never saw the removed data.",
    "certified": ("Certified (ε, δ) removal: the updated model is (ε, δ)-indistinguishable from one retrained "
                  "without the removed data, by the recorded gradient residual bound and the training noise."),
    "empirical": ("Empirical: an approximate update, checked by the verification tests below only. Weights alone "
                  "cannot prove deletion: this is not a proof that the data was removed."),
}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}.pass{color:#0a6b24;font-weight:bold}
.fail{color:#b00020;font-weight:bold}.undecided{color:#8a6d00;font-weight:bold}pre{background:#f7f7f7;padding:.5rem;overflow:auto}
code{font-size:.9em}figure{margin:1rem 0}img{max-width:100%}
"""


VERIFY_MODES = {
    "certificate": "the (ε, δ) certificate is the proof: the exact gradient residual on the corrected data is "
                   "within its bound and the budget; no model was retrained",
    "evidence": "tests that train no model: for a convex model, the exact gradient residual bounds the distance "
                "to the model retrained on the corrected data and how far any prediction can move",
    "reference": "compared with a model retrained on the corrected data",
}


def _text(value: Any) -> str:
    """One value as escaped text: numbers to 4 significant digits, nested values as JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}" if math.isfinite(value) else str(value))
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return html.escape(", ".join(str(v) for v in value)) if value else "—"
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(value, sort_keys=True, default=str))}</code>"
    return html.escape(str(value))


def _rows(pairs: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_text(v)}</td></tr>" for k, v in pairs)
    return f"<table>{body}</table>"


def _ids(label: str, ids: list) -> tuple[str, Any]:
    return (f"{label} ({len(ids)})", ids)


def _procedural(cert: dict) -> str:
    req, model, data = cert.get("request") or {}, cert.get("model") or {}, cert.get("data") or {}
    times = {"issued": cert.get("issued_at"), **(cert.get("timestamps") or {})}
    pairs = [
        ("request id", req.get("id")), ("request hash (salted)", req.get("request_hash")),
        ("kinds", req.get("kinds")), _ids("records deleted", req.get("delete_records") or []),
        ("features revoked", req.get("revoke_features")), _ids("records relabelled", req.get("fix_labels") or []),
        ("redaction", req.get("redact")), ("class forgotten", req.get("forget_class")),
        *[(f"time {k}", v) for k, v in times.items()],
        ("data version before", data.get("before")), ("data version after", data.get("after")),
        ("model", model.get("name")), ("model version before", model.get("parent_version")),
        ("model version after", model.get("version")), ("model run before", model.get("parent_run_id")),
        ("model run after", model.get("run_id")), ("code version (package version+git commit)", cert.get("code_version")),
        ("method", cert.get("method")), ("timings", cert.get("timings")),
    ]
    if cert.get("ledger") is not None:
        pairs.append(("ledger", cert["ledger"]))
    config = html.escape(json.dumps(cert.get("config"), indent=2, sort_keys=True, default=str))
    return (f"<h2>1. Procedural evidence</h2>{_rows(pairs)}<h3>Configuration</h3><pre>{config}</pre>")


def _guarantee(cert: dict) -> str:
    kind = cert.get("guarantee")
    explanation = GUARANTEES.get(kind, "Unknown guarantee class: treat as no guarantee.")
    pairs = [("class", kind)]
    if kind == "certified":
        pairs += [("ε", cert.get("epsilon")), ("δ", cert.get("delta")), ("gradient residual", cert.get("residual")),
                  ("residual bound", cert.get("residual_bound")), ("budget used", cert.get("budget_used")),
                  ("budget left", cert.get("budget_left")), ("budget", cert.get("budget"))]
    elif cert.get("residual") is not None:
        pairs.append(("gradient residual", cert.get("residual")))
    return f"<h2>2. Guarantee class</h2><p>{html.escape(explanation)}</p>{_rows(pairs)}"


def _checks_table(checks: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{_text(c.get('name'))}</td><td>{_text(c.get('value'))}</td><td>{_text(c.get('threshold'))}</td>"
        f"<td class=\"{_check_class(c)}\">{_check_result(c)}</td></tr>"
        for c in checks)
    return (f"<table><tr><th>check</th><th>value</th><th>threshold</th><th>result</th></tr>{rows}</table>"
            if checks else "<p>No verification checks were recorded.</p>")


def _verification(cert: dict) -> str:
    checks = cert.get("checks") or []
    verdict = cert.get("verified", bool(checks) and all(c.get("passed") for c in checks))
    table = _checks_table(checks)
    metrics = cert.get("fidelity") or {}
    how = cert.get("verification") or {}
    mode = (f"<p>Verified by <b>{_text(how.get('mode'))}</b> ({html.escape(VERIFY_MODES.get(how.get('mode'), ''))}); "
            f"models retrained to verify it: {_text(how.get('retrains'))}.</p>" if how else "")
    if how.get("decided") is False:  # no check with power judged the forget set: not evidence of removal
        mode += f"<p>Removal <b>undecided</b>: no check with power judged the forget set ({_text(how.get('reason'))}).</p>"
    if cert.get("interrupted"):  # rebuilt after its run stopped past the promotion: why no check is listed
        mode += f"<p>{_text(cert['interrupted'])}.</p>"
    return (f"<h2>3. Verification</h2><p>Overall: <span class=\"{'pass' if verdict else 'fail'}\">"
            f"{'VERIFIED' if verdict else 'NOT VERIFIED'}</span></p>{mode}{table}"
            + (f"<h3>Measurements</h3>{_rows(sorted(metrics.items()))}" if metrics else ""))


def _check_class(c: dict) -> str:
    return "undecided" if not is_decided(c) else "pass" if c.get("passed") else "fail"


def _check_result(c: dict) -> str:
    """PASS, FAIL, or UNDECIDED with its reason: a check that could not have failed is no evidence."""
    if not is_decided(c):
        return f"UNDECIDED ({_text(c.get('reason'))})"
    return "PASS" if c.get("passed") else "FAIL"


def _superseded(cert: dict) -> str:
    items = cert.get("superseded") or []
    if not items:
        return "<h2>4. Superseded artifacts</h2><p>None recorded.</p>"
    rows = "".join(
        f"<tr><td>{_text(s.get('artifact'))}</td><td>{_text(s.get('action'))}</td>"
        f"<td>{_text({k: v for k, v in s.items() if k not in ('artifact', 'action')} or None)}</td></tr>"
        for s in items)
    return ("<h2>4. Superseded artifacts</h2><table><tr><th>artifact</th><th>what happened</th><th>details</th></tr>"
            f"{rows}</table>")


def _plots(plots: dict[str, bytes] | None) -> str:
    if not plots:
        return ""
    figures = []
    for name, png in plots.items():
        if not bytes(png).startswith(_PNG):
            raise ValueError(f"plot {name!r} is not a PNG image")
        uri = "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii")
        figures.append(f"<figure><img src=\"{uri}\" alt=\"{html.escape(name)}\"><figcaption>{html.escape(name)}"
                       "</figcaption></figure>")
    return "<h2>5. Plots</h2>" + "".join(figures)


def _signature(cert: dict) -> str:
    sig = cert.get("signature")
    if not isinstance(sig, dict):
        return "<p>This certificate is <strong>not signed</strong>.</p>"
    return (f"<p>Signed: {_text(sig.get('algorithm'))}, key id <code>{_text(sig.get('key_id'))}</code>. This page is a "
            "rendering; the signed record is the certificate's JSON file — check it with "
            "<code>unlearn certificate verify PATH</code>.</p>")


def _page(title: str, *sections: str) -> str:
    return "".join(["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
                    f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
                    f"<h1>{html.escape(title)}</h1>", *sections, "</body></html>\n"])


def audit_verdict(audit: dict) -> tuple[str, str]:
    """(the verdict's words, its CSS class) of an audit record's `audit` block."""
    if audit.get("decided") is False:
        return f"UNDECIDED ({audit.get('undecided_reason')})", "undecided"
    return ("PASSED", "pass") if audit.get("passed") else ("FAILED", "fail")


def audit_record_html(record: dict) -> str:
    """A self-contained HTML report of a signed audit record (tasks.audit_record; every text escaped):
    the verdict, what was promoted and why, the requests covered, the checks, what became of the
    escrow and of a text chain's teacher, the measurements."""
    audit, production = record.get("audit") or {}, record.get("production") or {}
    words, css = audit_verdict(audit)
    promoted = record.get("promoted") or {}
    about = [("model", audit.get("model")), ("kind", audit.get("kind")), ("audited at", audit.get("at")),
             ("production version (run)", f"v{production.get('version')} ({production.get('run_id')})"),
             ("data version", record.get("data_version")), ("code version", audit.get("code_version")),
             ("rebased", audit.get("rebased")),
             ("promoted", f"v{promoted['version']} (guarantee {promoted.get('guarantee')}): {promoted.get('why')}"
              if promoted else f"nothing: production stays ({record['not_promoted']})" if record.get("not_promoted")
              else "nothing: production stays"),
             ("retraining (s)", (record.get("timings") or {}).get("retrain_s"))]
    covered = [(r.get("id"), {k: v for k, v in r.items() if k != "id"}) for r in record.get("requests") or []]
    escrow = record.get("escrow") or {}
    kept = [("escrow files", escrow.get("files")), ("escrow files that did not open", escrow.get("unreadable")),
            ("escrow", escrow.get("action")), *([("chain teacher", record["teacher"])] if "teacher" in record else [])]
    metrics = record.get("metrics") or {}
    return _page(
        f"Audit record — {audit.get('id')}",
        f"<p>Format {_text(record.get('format'))}. Verdict: <span class=\"{css}\">{html.escape(words)}</span>.</p>",
        _signature(record), "<h2>1. The audit</h2>", _rows(about),
        "<h2>2. Requests covered</h2>", _rows(covered) if covered else "<p>None in the ledger.</p>",
        *([f"<p>Requests outside the ledger: {_text(record.get('unrecorded_requests'))}</p>"]
          if record.get("unrecorded_requests") else []),
        "<h2>3. Checks against the retrained model</h2>", _checks_table(record.get("checks") or []),
        *([f"<h3>Shortfall</h3>{_text(record.get('shortfall'))}"] if record.get("shortfall") else []),
        "<h2>4. Escrow and teacher</h2>", _rows(kept),
        *([f"<h2>5. Measurements</h2>{_rows(sorted(metrics.items()))}"] if metrics else []))


def certificate_html(cert: dict, plots: dict[str, bytes] | None = None) -> str:
    """A self-contained HTML report of a certificate (plots embedded as data URIs; every text escaped)."""
    req_id = (cert.get("request") or {}).get("id")
    return _page(f"Erasure certificate — request {req_id}",
                 f"<p>Format {_text(cert.get('format'))}, issued {_text(cert.get('issued_at'))}.</p>",
                 _signature(cert), _procedural(cert), _guarantee(cert), _verification(cert), _superseded(cert),
                 _plots(plots))
