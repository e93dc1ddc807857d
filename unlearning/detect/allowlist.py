"""Values a scan should not report: known test numbers, company addresses, accepted findings.

An allowlist file is YAML or JSON with up to three keys (all optional):

```yaml
fingerprints:            # from an earlier scan's findings — only valid with the same salt
  - 3f1c0a9b2e7d4c5a6b8e9f01
values:                  # literal values, compared after normalisation (separators, case)
  - "4111 1111 1111 1111"  #   so "4111-1111-1111-1111" is allowed too; public test values only
  - noreply@example.com
patterns:                # regular expressions searched in the raw matched value
  - "@example\\.(com|org|net)$"
```

Prefer fingerprints for anything real: the file then holds no raw value either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearning.detect.masking import FINGERPRINT_HEX, normalise
from unlearning.documents import load_document, unknown_fields_named
from unlearning.errors import UnlearnError

KEYS = ("fingerprints", "values", "patterns")
# Numbers the card networks publish for testing; `Allowlist.test_cards()` ignores them.
TEST_CARDS = (
    "4111 1111 1111 1111", "4242 4242 4242 4242", "4012 8888 8888 1881", "5555 5555 5555 4444",
    "5105 1051 0510 5100", "3782 822463 10005", "3714 496353 98431", "6011 1111 1111 1117",
    "3056 9309 0259 04", "3530 1113 3330 0000",
)  # fmt: skip
_HEX = re.compile(rf"[0-9a-f]{{{FINGERPRINT_HEX}}}")


@dataclass(frozen=True)
class Allowlist:
    """What not to report. Built from lists of strings (checked, patterns compiled) or a file."""

    fingerprints: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()
    patterns: tuple[re.Pattern, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "fingerprints", frozenset(_checked_fingerprint(f) for f in self.fingerprints))
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        object.__setattr__(self, "patterns", tuple(_compiled(p, i) for i, p in enumerate(self.patterns, 1)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Allowlist:
        data = data or {}
        if not isinstance(data, Mapping):
            raise UnlearnError(f"an allowlist is a mapping with keys {', '.join(KEYS)}; got {type(data).__name__}")
        unknown = sorted((k for k in data if k not in KEYS), key=str)
        if unknown:
            raise UnlearnError(f"allowlist: unknown key(s) {unknown_fields_named(unknown)}; use {', '.join(KEYS)}")
        lists = {key: data.get(key) or [] for key in KEYS}
        for key, items in lists.items():
            if not isinstance(items, list):
                raise UnlearnError(f"allowlist: '{key}' must be a list")
        return cls(**lists)

    @classmethod
    def from_file(cls, path: str | Path) -> Allowlist:
        """Read a YAML (.yaml/.yml) or JSON (.json) allowlist file (unlearning.documents)."""
        path = Path(path)
        if not path.is_file():
            raise UnlearnError(f"allowlist file {path} does not exist")
        # read as written: YAML 1.1 would turn a listed number such as 4111111111111111 into an int
        return cls.from_mapping(load_document(path, "allowlist file"))

    @classmethod
    def test_cards(cls) -> Allowlist:
        return cls(values=TEST_CARDS)

    def merged(self, other: Allowlist) -> Allowlist:
        return Allowlist(self.fingerprints | other.fingerprints, self.values + other.values,
                         self.patterns + other.patterns)

    def allows(self, value: str, detector: str, fingerprint: str) -> bool:
        """Whether this finding is on the list (by fingerprint, normalised value or pattern)."""
        if fingerprint in self.fingerprints:
            return True
        normal = normalise(value, detector)
        if any(normalise(v, detector) == normal for v in self.values):
            return True
        return any(p.search(value) for p in self.patterns)


def _checked_fingerprint(value: str) -> str:
    text = str(value).strip().lower()
    if not _HEX.fullmatch(text):
        raise UnlearnError(f"allowlist: a fingerprint is {FINGERPRINT_HEX} hex characters, as a scan prints it")
    return text


def _compiled(pattern: str | re.Pattern, number: int) -> re.Pattern:
    if isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(str(pattern))
    except re.error as err:  # the pattern itself is not echoed: it may spell out a value
        raise UnlearnError(f"allowlist: pattern {number} is not a valid regular expression ({err.msg})") from None
