"""The detector registry and `scan_text`, which turns raw matches into safe findings.

Overlaps: when spans from different detectors overlap, one survives, chosen by detector priority
iban (50) > card (40) > secret (30) > email (20) > phone (10) > anything unregistered (0), then
confidence, then length. Checksummed, structured formats win over looser ones: a card number is
never also reported as a phone number, and an e-mail-looking `user:pw@host` inside a URL is the
secret detector's password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from unlearning.detect.allowlist import Allowlist
from unlearning.detect.base import Detector, Finding, Match, resolve_overlaps
from unlearning.detect.cards import CardDetector
from unlearning.detect.emails import EmailDetector
from unlearning.detect.iban import IbanDetector
from unlearning.detect.masking import check_salt, fingerprint, mask
from unlearning.detect.phones import PhoneDetector
from unlearning.detect.secrets import SecretDetector
from unlearning.errors import UnlearnError

DETECTORS: dict[str, Detector] = {
    d.name: d for d in (CardDetector(), SecretDetector(), EmailDetector(), PhoneDetector(), IbanDetector())
}


def register_detector(detector: Detector, replace: bool = False) -> None:
    """Add a detector (e.g. a wrapper around an optional back-end) to the registry."""
    if not isinstance(detector, Detector):
        raise UnlearnError("a detector needs a `name` and a `find(text) -> list[Match]` method")
    if detector.name in DETECTORS and not replace:
        raise UnlearnError(f"a detector named '{detector.name}' is already registered (pass replace=True)")
    DETECTORS[detector.name] = detector


def selected_detectors(names: Iterable[str] | None) -> list[Detector]:
    if names is None:
        return list(DETECTORS.values())
    names = list(names)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise UnlearnError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
    return [DETECTORS[n] for n in dict.fromkeys(names)]


def priorities() -> dict[str, int]:
    return {name: getattr(d, "priority", 0) for name, d in DETECTORS.items()}


def find_matches(text: str, detectors: Iterable[str] | None = None) -> list[Match]:
    """Every selected detector's matches with overlaps resolved, sorted by start. Raw positions."""
    matches = [m for d in selected_detectors(detectors) for m in d.find(text)]
    return resolve_overlaps(matches, priorities())


# A message's quoted values ('…', "…", `…`: what `!r` and the CLI's hints quote), each judged on its own.
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"|`([^`\n]+)`")
MESSAGE_DETECTORS = tuple(DETECTORS)  # the built-in ones: stdlib only, fast, never failing on a message


def find_in_message(text: str) -> list[Match]:
    """What the detectors find in an error message: in the whole text, and in each quoted value alone.

    Alone, because the message's own words are context that hides a value from the context-aware
    detectors: "id column '4111 1111 1111 1111'" or "order '+44 20 7946 0958'" name another kind of
    number, and the card and phone detectors let such numbers go. And every other occurrence of a
    value found: a message may repeat it where no detector sees it ("data/4111111111111111": a card
    number is not one after a '/'). Overlaps resolved, sorted by start.
    """
    matches = find_matches(text, MESSAGE_DETECTORS)
    for quoted in _QUOTED.finditer(text):
        group = next(i for i in (1, 2, 3) if quoted.group(i) is not None)
        offset = quoted.start(group)
        matches += [replace(m, start=m.start + offset, end=m.end + offset)
                    for m in find_matches(quoted.group(group), MESSAGE_DETECTORS)]
    return resolve_overlaps(matches + _repeats(text, matches), priorities())


def _repeats(text: str, matches: list[Match]) -> list[Match]:
    """Every occurrence in `text` of the values `matches` cover, as a match of the same detector."""
    out = []
    for value, m in {text[m.start:m.end]: m for m in matches}.items():
        at = text.find(value)
        while at >= 0:
            out.append(replace(m, start=at, end=at + len(value)))
            at = text.find(value, at + len(value))
    return out


def masked_message(text: str) -> str:
    """`text` with what `find_in_message` finds replaced by its masked form (unlearning.errors.masked)."""
    parts, end = [], 0
    for m in find_in_message(text):
        parts += [text[end:m.start], mask(text[m.start:m.end], m.detector)]
        end = m.end
    return "".join(parts) + text[end:]


def scan_text(text: str, salt: bytes, detectors: Iterable[str] | None = None,
              allowlist: Allowlist | None = None, *,
              min_confidence: float | Mapping[str, float] = 0.0) -> list[Finding]:
    """Findings in `text`, sorted by start.

    Allowlisted values and matches below `min_confidence` (one number, or one per detector name)
    are dropped after overlaps are resolved, so an allowlisted card does not resurface as the
    phone number it also resembles. E.g. `min_confidence={"card": 0.9}` reports only card
    numbers with a card word nearby.
    """
    check_salt(salt)
    findings = []
    for m in find_matches(text, detectors):
        if m.confidence < _threshold(min_confidence, m.detector):
            continue
        value = text[m.start:m.end]
        tag = fingerprint(value, m.detector, salt)
        if allowlist is not None and allowlist.allows(value, m.detector, tag):
            continue
        findings.append(Finding(m.detector, m.start, m.end, mask(value, m.detector), tag, m.confidence))
    return findings


def _threshold(min_confidence: float | Mapping[str, float], detector: str) -> float:
    if isinstance(min_confidence, Mapping):
        return float(min_confidence.get(detector, 0.0))
    return float(min_confidence)


# What record ids may not be: ids go whole into certificates, MLflow and the append-only ledger, which
# keep them for good (docs/compliance.md: "record ids and salted hashes, never personal values"). These
# detectors found nothing in 100,000 random ids (UUIDs, hex digests, 20-character tokens, customer
# numbers, 11–13-digit numbers); cards and phones flag about 1 % of long numeric ids and are left out.
PERSONAL_ID_DETECTORS = ("email", "iban", "secret")


def refuse_personal_ids(ids: Iterable[str], where: Callable[[int, str], str], fix: str,
                        kept: str = "record ids are kept whole in certificates and the append-only ledger") -> None:
    """UnlearnError (one line, no value printed) when a record id holds an e-mail address, an IBAN or
    a secret: `--id email` made the people's addresses the ids every erasure records for good; an image's
    path or an npz's ids likewise. `where(row, detector)` says which id (`row`: its 1-based position)
    holds what, `fix` what to give instead; `kept` why it may not (names that are not ids: class names)."""
    for row, value in enumerate(ids, start=1):
        found = find_matches(str(value), PERSONAL_ID_DETECTORS)
        if found:
            raise UnlearnError(f"{where(row, found[0].detector)}: {kept}; {fix}")


def refuse_personal_id_column(ids: Iterable[str], column: str) -> None:
    """refuse_personal_ids for a table's or text file's `--id` column."""
    refuse_personal_ids(ids, lambda row, detector: f"id column '{column}' holds personal data ({detector} in data "
                                                   f"row {row})",
                        "give a surrogate id column (e.g. a customer number), or leave out --id to have ids assigned")
