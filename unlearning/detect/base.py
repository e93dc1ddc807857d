"""The types every detector shares: a raw `Match`, the safe `Finding`, the `Detector` protocol."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from unlearning.errors import UnlearnError


@dataclass(frozen=True)
class Match:
    """Where a detector saw a sensitive value. Positions only: the value stays in the scanned text.

    Still treat a Match as raw — with the text at hand it *is* the value — so never log one next to
    its text; turn it into a `Finding` first.
    """

    detector: str
    start: int  # character offset, inclusive
    end: int  # character offset, exclusive
    confidence: float = 1.0


@dataclass(frozen=True)
class Finding:
    """What leaves the library: positions, a masked form and a salted fingerprint — no raw value.

    `confidence` (an addition to the issue's field list) is the detector's own score in (0, 1],
    kept so callers can apply stricter per-detector thresholds than the detectors' built-in ones.
    """

    detector: str
    start: int
    end: int
    masked: str
    fingerprint: str
    confidence: float = 1.0

    def location(self) -> dict:
        return {"start": self.start, "end": self.end}

    def to_dict(self) -> dict:
        return {"detector": self.detector, "location": self.location(), "masked": self.masked,
                "fingerprint": self.fingerprint, "confidence": round(self.confidence, 3)}


@runtime_checkable
class Detector(Protocol):
    """Anything with a `name` and a `find(text) -> list[Match]` is a detector.

    A detector only reports what passes its own gates (checksums, context, thresholds); an optional
    integer `priority` attribute decides who wins when spans of two detectors overlap (see scan.py).
    """

    name: str

    def find(self, text: str) -> list[Match]: ...


def line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset; `len(text)` is the position after the end."""
    if not 0 <= offset <= len(text):
        raise UnlearnError(f"offset {offset} is outside the text (0..{len(text)})")
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def near(text: str, start: int, end: int, words: re.Pattern, before: int = 48, after: int = 24) -> bool:
    """Whether `words` (a `keyword_pattern`) occurs in the few characters around [start, end): context
    raises confidence. Where they hold no letter at all, as between the numbers of a long list, the
    words are not looked for: a case-insensitive pattern with a lookbehind is tried at every position."""
    lo, hi = max(0, start - before), end + after
    if not (_LETTER.search(text, lo, start) or _LETTER.search(text, end, hi)):
        return False
    return bool(words.search(text, lo, start) or words.search(text, end, hi))


_LETTER = re.compile(r"[^\W\d_]")  # any letter: a case-insensitive ASCII word also matches `ſ` or `K` (Kelvin)


def keyword_pattern(*words: str) -> re.Pattern:
    """Case-insensitive words bounded by non-letters or a camelCase hump, so `credit_card`,
    `cardNumber` and `CARD` all hit, while `discard` and `cardigan` do not."""
    return re.compile(r"(?<![A-Za-z])(?:" + "|".join(words) + r")(?-i:(?![a-z]))", re.IGNORECASE)


def windows_around(hits: Iterable[re.Match], before: int, after: int) -> list[tuple[int, int]]:
    """Merged, disjoint [lo, hi) stretches around cheap-to-find hints (hits in start order).

    A full pattern run on these windows only finds what it would find on the whole text, as long
    as every match lies within `before`/`after` characters of a hint — and much faster, since
    lookbehinds and case-insensitive patterns make `re` crawl position by position.
    """
    windows: list[tuple[int, int]] = []
    for hit in hits:
        lo, hi = max(0, hit.start() - before), hit.end() + after
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(hi, windows[-1][1]))
        else:
            windows.append((lo, hi))
    return windows


def search_windows(pattern: re.Pattern, text: str, windows: list[tuple[int, int]]) -> Iterator[re.Match]:
    for lo, hi in windows:
        yield from pattern.finditer(text, lo, hi)


def resolve_overlaps(matches: list[Match], priority: dict[str, int] | None = None) -> list[Match]:
    """Drop every match that overlaps a better one; the rest sorted by start.

    Better = from a higher-priority detector, then more confident, then longer, then earlier
    (greedy in that order): a card number beats the phone number its digits also resemble.
    """
    priority = priority or {}
    ranked = sorted(matches, key=lambda m: (-priority.get(m.detector, 0), -m.confidence, m.start - m.end, m.start))
    kept: list[Match] = []  # disjoint, sorted by start
    starts: list[int] = []
    for m in ranked:
        i = bisect.bisect_left(starts, m.start)
        if (i == 0 or kept[i - 1].end <= m.start) and (i == len(kept) or m.end <= kept[i].start):
            kept.insert(i, m)
            starts.insert(i, m.start)
    return kept
