"""Payment card numbers: 13–19 digits, Luhn checksum, issuer prefix and length, context words.

Candidates are maximal runs of digits joined by single spaces or dashes, bounded by non-word
characters (so digits inside hashes, UUIDs, decimals or longer numbers never start a candidate).
Dashes bind a run into one token (a dashed UUID-like or ISBN-like number is judged whole), spaces
only group: a card may be a space-separated part of a longer run ("Visa 4111 1111 1111 1111 123").
Dots are separators only in a card's own grouping, 4-4-4-4(-3), 4-6-5 or 4-6-4, judged whole
("4111.1111.1111.1111"); any other dotted number is a decimal, version or address, never a card.

Confidence: 0.70 for a valid number; +0.25 with a card word nearby ("card", "visa", "cc", "credit",
"payment"…); −0.30 when other digit groups sit right next to it in the run, and −0.30 near words
that name a different kind of number ("order", "invoice", "isbn", "tracking"…). Reported from 0.5:
a Luhn-valid issuer-shaped number stands on its own, one squeezed between other numbers needs a
card word. Luhn alone passes 1 in 10 random digit runs; the issuer table cuts that further.
`CardDetector(excused_by_words=False, excused_by_neighbours=False)` drops the penalty for words, and
the one for neighbours where the number is written as a card is printed, one group of digits or
4-4-4-4(-3), 4-6-5, 4-6-4 (`PRINTED_GROUPINGS`): an error message quotes what the user gave, so
"order 4111 1111 1111 1111" given as a feature name is a card number with a word in front, and
"4111111111111111 4012888888881881" two card numbers side by side, while "21053 43242 41349", a list
of record ids whose digits happen to make one, is not (unlearning.detect.scan.find_in_message). That
detector also ends a card number before one or two digits glued behind it ("/data/45391488034364671.csv"),
where written as printed: one group, or 4-4-4-4, 4-6-5, 4-6-4 with the last group longer (`GLUED_BEHIND`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from unlearning.detect.base import Match, keyword_pattern, near

MIN_DIGITS, MAX_DIGITS = 13, 19

# (issuer, prefix ranges as (low, high) over the same number of leading digits, allowed lengths)
ISSUERS: tuple[tuple[str, tuple[tuple[int, int], ...], tuple[int, ...]], ...] = (
    ("visa", ((4, 4),), (13, 16, 19)),
    ("mastercard", ((51, 55), (2221, 2720)), (16,)),
    ("amex", ((34, 34), (37, 37)), (15,)),
    ("discover", ((6011, 6011), (644, 649), (65, 65)), (16, 17, 18, 19)),
    ("diners", ((36, 36), (38, 38), (300, 305)), (14,)),
    ("jcb", ((3528, 3589),), (16, 17, 18, 19)),
    ("unionpay", ((62, 62),), (16, 17, 18, 19)),
    # Maestro: the common BIN prefixes only; 12-digit cards are below the 13-digit floor.
    ("maestro", ((5018, 5018), (5020, 5020), (5038, 5038), (5893, 5893), (6304, 6304),
                 (6759, 6759), (6761, 6763)), (13, 14, 15, 16, 17, 18, 19)),
)  # fmt: skip

CONTEXT = keyword_pattern(
    "cards?", "cc", "ccn", "cc#", "credit", "debit", "visa", "master ?card", "amex", "american express",
    "discover", "diners", "jcb", "union ?pay", "maestro", "payments?", "pay", "paid", "pan",
    "card ?holder", "billing", "checkout", "charged?", "expiry", "exp", "cvv", "cvc",
)
OTHER_NUMBER = keyword_pattern(
    "order", "invoice", "isbn", "tracking", "ref", "reference", "serial", "sku", "account",
    "acct", "iban", "imei", "ssn", "phone", "tel", "timestamp", "id",
)

# A comma is not a decimal guard: in CSV rows it separates fields ("1042,Ann,4111…,2027-03"); a dot is
# one only after a number standing alone (`_decimal_fraction`).
_RUN = re.compile(r"(?<![\w/])(?<!\d:)\d++(?:[ -]\d++)*+(?![\w])(?!\.\d)")
# Dotted: exactly the printed groupings (16/19 digits in fours, Amex 4-6-5, Diners 4-6-4).
_DOTTED = re.compile(r"(?<![\w/.])\d{4}(?:(?:\.\d{4}){3}(?:\.\d{3})?|\.\d{6}\.\d{4,5})(?![\w])(?!\.\d)")
PRINTED_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})
# Those a digit glued behind leaves recognisable: 4-4-4-4-3 with one reads as five groups of 4, as a list does.
GLUED_GROUPINGS = PRINTED_GROUPINGS - {(4, 4, 4, 4, 3)}
_DOT_HINT = re.compile(r"\.\d{4}")  # a literal first character lets `re` skip ahead: 30× faster on prose

BASE, CONTEXT_BONUS, CROWDED_PENALTY, OTHER_PENALTY, REPORT_FROM = 0.70, 0.25, 0.30, 0.30, 0.5
# Where no neighbour excuses a card number (a message), digits glued behind one end it after at most this many:
# a card number among an id's or a timestamp's digits, counted in docs/benchmarks.md (bench.error_masking).
GLUED_BEHIND = 2


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 checksum (ISO/IEC 7812-1) over a string of digits."""
    kept = sum(map(int, digits[-1::-2]))
    doubled = sum(_LUHN_DOUBLED[int(d)] for d in digits[-2::-2])
    return (kept + doubled) % 10 == 0


_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # 2·d with its digits summed


def issuer(digits: str) -> str | None:
    """The issuer whose prefix range and length table admit this number, if any."""
    for name, lengths in _issuers_by_prefix(digits[:4]):
        if len(digits) in lengths:
            return name
    return None


@functools.cache
def _issuers_by_prefix(prefix4: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Issuers whose ranges admit these leading 4 digits (cached: the scan asks this very often)."""
    return tuple((name, lengths) for name, ranges, lengths in ISSUERS
                 if any(_in_range(prefix4, low, high) for low, high in ranges))


def _in_range(digits: str, low: int, high: int) -> bool:
    width = len(str(low))
    return len(digits) >= width and low <= int(digits[:width]) <= high


def is_card_number(digits: str) -> bool:
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and issuer(digits) is not None and luhn_valid(digits)


@dataclass(frozen=True)
class _Chunk:
    """A space-separated part of a run (may contain dashes)."""

    start: int
    end: int
    digits: str


def _chunks(text: str, start: int, end: int, dashes_split: bool = False) -> list[_Chunk]:
    """The run's groups of digits, split at spaces; at dashes too where `dashes_split` (an error
    message: "4111111111111111-4012888888881881" is two card numbers joined, which a dashed run
    judged whole would print raw; a card written 4111-1111-1111-1111 is one printed grouping)."""
    out, pos = [], start
    for part in re.split(r"([ -])" if dashes_split else r"( )", text[start:end])[::2]:
        out.append(_Chunk(pos, pos + len(part), part.replace("-", "")))
        pos += len(part) + 1
    return out


def _without_glued_tail(text: str, chunks: list[_Chunk]) -> list[_Chunk]:
    """Drop a last group glued to `/` or `:` and a digit: it starts a date or time ("… 1111 12/25"), not
    the run. A colon that ends a sentence's clause ends the run ("4111 1111 1111 1111: declined")."""
    if len(chunks) > 1 and _DATE_OR_TIME_GLUE.match(text, chunks[-1].end):
        return chunks[:-1]
    return chunks


_DATE_OR_TIME_GLUE = re.compile(r"[/:]\d")


def _decimal_fraction(text: str, start: int) -> bool:
    """Whether the run at `start` is a decimal's fraction: right after a dot and a number that stands
    alone ("pi 3.4111111111111111", "ε=0.4111111111111111": a float's repr has 16–17 digits there, 1.4 %
    of random ones card-shaped). After a number glued to a letter, '_' or a dot the run is a
    version's or a name's part ("v1.4111111111111111", "x_1.4111…", "1.2.4111…"), which no float
    prints: a card number there is one. Walks back over the number before the dot only, once per run."""
    if start < 2 or text[start - 1] != "." or not text[start - 2].isdigit():
        return False
    before = start - 2
    while before >= 0 and text[before].isdigit():
        before -= 1
    return before < 0 or not (text[before] in "._" or text[before].isalpha())


def _card_windows(chunks: list[_Chunk], glued_behind: int = 0) -> list[tuple[int, int, list[_Chunk]]]:
    """Left to right, (i, j, the chunks i..j) of the longest chunk range that is a valid card number; with
    `glued_behind`, where none starts at a chunk, one with up to that many digits glued behind it
    (`_glued_behind`), the window's last chunk cut before them."""
    windows, i = [], 0
    longest = max(len(c.digits) for c in chunks)  # glued to a group of 4 or less, no card number is
    while i < len(chunks):
        j = _longest_valid_end(chunks, i)
        if j is not None:
            windows.append((i, j, chunks[i:j + 1]))
            i = j + 1
            continue
        window = _glued_behind(chunks, i, glued_behind) if glued_behind and longest > 4 else None
        if window:
            windows.append((i, i + len(window) - 1, window))
            i += len(window)
            continue
        i += 1
    return windows


def _glued_behind(chunks: list[_Chunk], i: int, most: int) -> list[_Chunk] | None:
    """The chunks from i on that make a card number with 1..`most` digits glued behind its last group
    ("/data/45391488034364671.csv", "4111 1111 1111 11112"), the last chunk cut before them; written
    as a card is printed, one group or a printed grouping, so that a list of numbers is no card's groups."""
    if not _issuers_by_prefix(chunks[i].digits[:4]):  # no card number starts so
        return None
    alone = len(chunks[i].digits)
    shapes = [(1, glued) for glued in range(1, most + 1) if MIN_DIGITS <= alone - glued <= MAX_DIGITS]
    if alone == 4:  # every printed grouping starts with a group of 4
        shapes += [(len(grouping), glued) for grouping in GLUED_GROUPINGS
                   if 0 < (glued := _glued_to_grouping(chunks, i, grouping)) <= most]
    for n, glued in shapes:
        window = chunks[i:i + n]
        if is_card_number("".join(c.digits for c in window)[:-glued]):
            last = window[-1]
            return window[:-1] + [_Chunk(last.start, last.end - glued, last.digits[:-glued])]
    return None


def _glued_to_grouping(chunks: list[_Chunk], i: int, grouping: tuple[int, ...]) -> int:
    """How many digits the last of the chunks from i on has beyond `grouping`, whose other groups they
    match; 0 where they do not."""
    window = chunks[i:i + len(grouping)]
    if len(window) < len(grouping) or any(len(c.digits) != n for c, n in zip(window[:-1], grouping)):
        return 0
    return max(0, len(window[-1].digits) - grouping[-1])


def _longest_valid_end(chunks: list[_Chunk], i: int) -> int | None:
    best, digits = None, ""
    for j in range(i, len(chunks)):
        digits += chunks[j].digits
        if len(digits) > MAX_DIGITS:
            break
        if is_card_number(digits):
            best = j
    return best


class CardDetector:
    name = "card"
    priority = 40

    def __init__(self, excused_by_words: bool = True, excused_by_neighbours: bool = True):
        self.excused_by_words = excused_by_words
        self.excused_by_neighbours = excused_by_neighbours

    def find(self, text: str) -> list[Match]:
        matches = []
        for run in _RUN.finditer(text):
            if _decimal_fraction(text, run.start()):
                continue
            chunks = _without_glued_tail(text, _chunks(text, run.start(), run.end(),
                                                       dashes_split=not self.excused_by_neighbours))
            for i, j, window in _card_windows(chunks, glued_behind=0 if self.excused_by_neighbours else GLUED_BEHIND):
                start, end = window[0].start, window[-1].end
                crowded = (i > 0 or j < len(chunks) - 1) and not self._printed_apart(window)
                confidence = self._confidence(text, start, end, crowded=crowded)
                if confidence >= REPORT_FROM:
                    matches.append(Match(self.name, start, end, confidence))
        for run in self._dotted(text):
            if is_card_number(run.group().replace(".", "")):
                confidence = self._confidence(text, run.start(), run.end(), crowded=False)
                if confidence >= REPORT_FROM:
                    matches.append(Match(self.name, run.start(), run.end(), confidence))
        return matches

    def _printed_apart(self, window: list[_Chunk]) -> bool:
        """Whether a window of a longer run is written as a card number of its own, one group or a card's
        printed grouping, and the detector lets no neighbour excuse such a one."""
        return not self.excused_by_neighbours and (len(window) == 1 or
                                                   tuple(len(c.digits) for c in window) in PRINTED_GROUPINGS)

    @staticmethod
    def _dotted(text: str) -> list[re.Match]:
        """Dotted candidates, each found from the dot after its first group."""
        found = (_DOTTED.match(text, hint.start() - 4) for hint in _DOT_HINT.finditer(text) if hint.start() >= 4)
        return [m for m in found if m]

    def _confidence(self, text: str, start: int, end: int, crowded: bool) -> float:
        score = BASE + (CONTEXT_BONUS if near(text, start, end, CONTEXT) else 0.0)
        score -= CROWDED_PENALTY if crowded else 0.0
        named_otherwise = self.excused_by_words and near(text, start, end, OTHER_NUMBER, before=24, after=0)
        score -= OTHER_PENALTY if named_otherwise else 0.0
        return min(1.0, score)
