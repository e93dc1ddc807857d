"""Privacy-leak detectors: find card numbers, secrets, e-mails, phone numbers and IBANs in text.

    findings = scan_text(text, salt=b"...secret salt...")          # sorted by start
    [f.to_dict() for f in findings]   # detector, location, masked, fingerprint — never the value

Layers, each a small module:

- `base`      `Match` (raw positions, stays inside), `Finding` (masked + salted fingerprint, leaves),
              the `Detector` protocol, `line_column`, overlap resolution.
- one module per detector — `cards`, `secrets`, `emails`, `phones`, `iban` — each documenting
  its rules and confidence; `DETECTORS` in `scan` is the registry, `scan_text` the entry point
  (overlap rule: iban > card > secret > email > phone, then confidence, then length).
- `masking`   `mask` and `fingerprint` (the masking rules for each detector are in its docstring).
- `allowlist` `Allowlist` from a YAML/JSON file: fingerprints, literal values, regexes.
- `formats`   `format_template`, `random_same_format`, `candidate_space_bits` — the same-format
              candidate space for exposure (science.md §3) and for same-format redaction filler.
- `quality`   precision/recall against a labelled corpus (`python -m unlearning.detect.quality`).

Adding a back-end (Presidio, detect-secrets, …): write a class with a `name`, an optional integer
`priority`, and `find(text) -> list[Match]` that imports the optional package inside `find` (or
its constructor) and converts the back-end's results to `Match(name, start, end, score)`; then
`register_detector(MyDetector())`. `scan_text(..., detectors=[...])` selects it by name, and
masking/fingerprinting fall back to the fixed-width secret rule for unknown detector names, so
nothing raw can leak through a new detector. The built-in detectors need nothing beyond the
standard library: no extra install, no network, no model.
"""

from unlearning.detect.allowlist import TEST_CARDS, Allowlist
from unlearning.detect.base import Detector, Finding, Match, line_column, resolve_overlaps
from unlearning.detect.cards import is_card_number, issuer, luhn_valid
from unlearning.detect.formats import candidate_space_bits, format_template, random_same_format
from unlearning.detect.iban import iban_check_digits, iban_valid
from unlearning.detect.masking import fingerprint, mask, normalise
from unlearning.detect.scan import DETECTORS, find_matches, register_detector, scan_text

__all__ = [
    "DETECTORS", "TEST_CARDS", "Allowlist", "Detector", "Finding", "Match", "candidate_space_bits",
    "find_matches", "fingerprint", "format_template", "iban_check_digits", "iban_valid",
    "is_card_number", "issuer", "line_column", "luhn_valid", "mask", "normalise", "random_same_format",
    "register_detector", "resolve_overlaps", "scan_text",
]  # fmt: skip
