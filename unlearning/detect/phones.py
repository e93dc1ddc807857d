"""Phone numbers: international (`+CC …`, `00CC …`) and common national formats with separators.

A candidate is a maximal run of digit groups joined by a space, `-`, `.` or `/` (optionally
spaced), with parenthesised area codes allowed ("(415) 555-2671", "+44 (0)20 7946 0958"). It must
have at least 9 digits and a phone-like structure:

- international: `+` or `00` and a country code, 9–15 digits in all (E.164), last group ≥ 2 digits
  unless it is a dashed extension ("+49 (0)89 123456-0");
- national, 9–12 digits, every group ≥ 2 digits (bar a leading NANP `1`), and one of: a
  parenthesised area code; a leading trunk `0` ("020 7946 0958", "06-12345678"); the NANP shape
  1?-NXX-NXX-dddd; or three or more groups of 2–4 digits grouped as a number is dialled, a prefix
  of 2–3 digits then 3-4, 4-4, 2-2-2 or 3-2-2 ("612 34 56 78", "138 1234 5678"; any grouping with
  a phone word nearby: "1024 512 2048" is a list of sizes);
- a bare run of 9–12 digits only with a phone word nearby ("tel", "call", "mobile"…) and a
  trunk `0` or the NANP shape.

Rejected even when they fit: dates (a 4-digit year next to month and day), several years in a
row, national numbers of six or more 1–2 digit groups (a list: "04 11 23 35 42 49"), dotted quads
(IPv4), dotted numbers that are neither NANP nor trunk-0 ("01.42.68.53.00"), ISBNs (valid
ISBN-13 with 978/979, single-digit groups, or "ISBN" nearby), thousands groupings
("12 500 000 000"), US SSN shape 3-2-4 — the last two unless a phone word is near — and any number
named as something else just before ("order", "invoice", "ref", "#"…) unless a phone word is near.
`PhoneDetector(excused_by_words=False)` drops that last rule and the "ISBN" word: an error message's
quoted value is the user's own, and a word inside it ("order +44 20 7946 0958" given as a feature
name) is part of the value, not a description of it (unlearning.detect.scan.find_in_message).
`PhoneDetector(excused_by_neighbours=False)` also finds a phone number that starts or ends a run too
long to be one, written as nothing but a phone number is — a country code, an area code in
parentheses, the North American shape with dashes or dots ("+44 20 7946 0958 4012888888881881": a
message lists what the user gave side by side).
"""

from __future__ import annotations

import re

from unlearning.detect.base import Match, keyword_pattern, near

MIN_DIGITS, MAX_DIGITS, MAX_NATIONAL = 9, 15, 12

_CANDIDATE = re.compile(
    # a `+` or `(` continues no number before it; a `+` after a `+` is a typo's or a prefix's ("++41 …")
    r"(?:(?<![\w.+/\-])(?<!\d:)|(?<![\w+])(?=[+(])|(?<=\+)(?=\+))"
    r"(?:\+[ ]?)?"
    r"(?:\(\d{1,5}\)|\d++)"
    r"(?:(?:[ ]?[.\-/][ ]?|[ ]|(?<=\))|(?=\())(?:\(\d{1,5}\)|\d++))*+"
    r"(?!\w|[.\-/]\d)"
)
_GROUP = re.compile(r"\(?(\d+)\)?")

CONTEXT = keyword_pattern(
    "phone", "phones", "tel", "telephone", "mobile", "mob", "cell", "cellphone", "call", "calls",
    "called", "fax", "whatsapp", "sms", "text me", "ring", "dial", "contact", "reach me", "hotline",
    "helpline", "landline", "ph",
)
OTHER_NUMBER = re.compile(
    keyword_pattern(
        "order", "invoice", "ref", "reference", "tracking", "account", "acct", "iban", "sku",
        "serial", "isbn", "ssn", "id", r"no\.", "nr", "customer", "transaction", "txn", "zip",
        "postcode", "box", "batch", "case", "ticket", "build",
    ).pattern
    + r"|#",
    re.IGNORECASE,
)
ISBN_WORD = keyword_pattern("isbn", "isbn-10", "isbn-13")

INTERNATIONAL, NATIONAL, CONTEXT_BONUS = 0.9, 0.75, 0.1


class PhoneDetector:
    name = "phone"
    priority = 10

    def __init__(self, excused_by_words: bool = True, excused_by_neighbours: bool = True):
        self.excused_by_words = excused_by_words
        self.excused_by_neighbours = excused_by_neighbours

    def find(self, text: str) -> list[Match]:
        matches = []
        for m in _CANDIDATE.finditer(text):
            confidence = phone_confidence(text, m.start(), m.end(), self.excused_by_words)
            if confidence:
                matches.append(Match(self.name, m.start(), m.end(), confidence))
            elif not self.excused_by_neighbours and m.end() - m.start() >= _SHORTEST_TWO:
                matches += self._at_the_ends(text, m.start(), m.end())
        return matches

    def _at_the_ends(self, text: str, start: int, end: int) -> list[Match]:
        """The phone numbers that start or end a run of digit groups too long to be one: its longest
        first groups that make one, and its longest last groups after them ("+44 20 7946 0958
        4012888888881881" is a phone number and a card number, read as one run of 27 digits). Only
        ones written as nothing but a phone number is (`_dialled`): any first or last three groups of a
        list of numbers or of a date stamp ("2015-11-27_03-40-59/2015/11") make some national one."""
        found = []
        for at in _group_ends(text, start, end)[::-1]:  # the longest first
            confidence = self._dialled_confidence(text, start, at)
            if confidence:
                found.append(Match(self.name, start, at, confidence))
                break
        after = found[0].end if found else start
        for at in _group_starts(text, start, end):
            confidence = at > after and self._dialled_confidence(text, at, end)
            if confidence:
                found.append(Match(self.name, at, end, confidence))
                break
        return found

    def _dialled_confidence(self, text: str, start: int, end: int) -> float:
        raw = text[start:end]
        return phone_confidence(text, start, end, self.excused_by_words) if _dialled(raw) else 0.0


# A phone number and another group: 9 digits, a separator and a digit at least (most runs are shorter).
_SHORTEST_TWO = MIN_DIGITS + 2
# A phone number's first or last groups within a longer run span at most this many characters
# (15 digits, 6 separators of up to 3 characters, parentheses, "+ "): a 1 MiB run is read at its ends only.
_ENDS_SPAN = 48


def _dialled(raw: str) -> bool:
    """Written as only a phone number is: with a country code ("+44 …", "0044 …"), an area code in
    parentheses ("(415) 555-2671"), or in the North American shape joined by dashes or dots
    ("415-555-2671"; "784 256 1024" beside other numbers is as likely three of a list)."""
    groups = _GROUP.findall(raw)
    country_code = raw.startswith("+") or (groups[0].startswith("00") and 3 <= len(groups[0]) <= 5)
    return country_code or "(" in raw or (_nanp(groups) and " " not in raw)


def _group_ends(text: str, start: int, end: int) -> list[int]:
    """Where the groups of the run text[start:end] end, within its first `_ENDS_SPAN` characters,
    before its end."""
    return [g.end() for g in _GROUP.finditer(text, start, min(end, start + _ENDS_SPAN)) if g.end() < end
            and not text[g.end()].isdigit()]


def _group_starts(text: str, start: int, end: int) -> list[int]:
    """Where the groups of the run text[start:end] start, within its last `_ENDS_SPAN` characters,
    after its start."""
    return [g.start() for g in _GROUP.finditer(text, max(start, end - _ENDS_SPAN), end) if g.start() > start
            and not text[g.start() - 1].isdigit() and text[g.start() - 1] != "("]


def phone_confidence(text: str, start: int, end: int, excused_by_words: bool = True) -> float:
    """The confidence that text[start:end] is a phone number, 0.0 when it is not one. Without
    `excused_by_words`, no word before it ("order", "ref", "ISBN") says it is another kind of number."""
    raw = text[start:end]
    groups = _GROUP.findall(raw)
    digits = "".join(groups)
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS or len(groups) > 7:
        return 0.0
    # A phone word nearby only ever helps: what its shape rules out even with one is ruled out before the
    # words are looked for, the slowest step (a message of 1 MiB holds 60,000 near-miss numbers).
    if not _shape_score(raw, groups, digits, context=True):
        return 0.0
    if _looks_like_other_number(text, start, raw, groups, digits, excused_by_words):
        return 0.0
    context = near(text, start, end, CONTEXT, before=32, after=16)
    if excused_by_words and _named_otherwise(text, start, end, context):
        return 0.0
    return _shape_score(raw, groups, digits, context)


def _shape_score(raw: str, groups: list[str], digits: str, context: bool) -> float:
    """The confidence its shape gives a number of 9–15 digits, with or without a phone word nearby."""
    if raw.startswith("+") or (groups[0].startswith("00") and 3 <= len(groups[0]) <= 5):  # international
        return _bonus(INTERNATIONAL, context) if _international_ok(raw, groups, digits) else 0.0
    if len(groups) == 1:
        return NATIONAL if context and _bare_ok(digits) else 0.0
    return _bonus(NATIONAL, context) if _national_ok(raw, groups, context) else 0.0


def _bonus(score: float, context: bool) -> float:
    return min(1.0, score + (CONTEXT_BONUS if context else 0.0))


def _named_otherwise(text: str, start: int, end: int, context: bool) -> bool:
    """'Order #415-555-2671': a nearer word says what this number is, and it is not a phone."""
    return not context and bool(OTHER_NUMBER.search(text, max(0, start - 20), start))


def _international_ok(raw: str, groups: list[str], digits: str) -> bool:
    if groups[0].startswith("00"):
        digits = digits[2:]
    if len(digits) < MIN_DIGITS:
        return False
    if len(groups) == 1:
        return len(digits) >= 10  # compact E.164: "+14155552671"
    switchboard = raw.endswith("-" + groups[-1])  # German "+49 (0)89 123456-0": the exchange's "-0"
    return (len(groups[-1]) >= 2 or switchboard) and len(groups[0]) <= 5


def _national_ok(raw: str, groups: list[str], context: bool) -> bool:
    digits = "".join(groups)
    if len(digits) > MAX_NATIONAL:
        return False
    if any(len(g) < 2 for g in groups[1:]) or (len(groups[0]) < 2 and groups[0] != "1"):
        return False
    if _small_numbers(groups):
        return False
    parenthesised = raw.lstrip().startswith("(")
    trunk = groups[0].startswith("0") and 2 <= len(groups[0]) <= 5
    nanp = _nanp(groups)
    if _dotted_only(raw):
        return nanp or trunk
    if nanp or trunk or parenthesised:
        return True
    shaped = len(groups) >= 3 and all(2 <= len(g) <= 4 for g in groups)
    return shaped and (context or (_grouped_as_dialled(groups) and not (_thousands(groups) or _ssn(raw))))


def _bare_ok(digits: str) -> bool:
    if digits.startswith("0"):
        return len(digits) <= MAX_NATIONAL
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return len(digits) == 10 and _nanp([digits[:3], digits[3:6], digits[6:]])


def _nanp(groups: list[str]) -> bool:
    """North American numbering: [1] NXX NXX dddd with N in 2–9."""
    if len(groups) == 4 and groups[0] == "1":
        groups = groups[1:]
    if [len(g) for g in groups] != [3, 3, 4]:
        return False
    return groups[0][0] in "23456789" and groups[1][0] in "23456789"


def _dotted_only(raw: str) -> bool:
    separators = set(re.sub(r"[\d()+]", "", raw))
    return bool(separators) and separators <= {"."}


def _small_numbers(groups: list[str]) -> bool:
    """Six or more 1–2 digit groups ("04 11 23 35 42 49"): drawn numbers, scores, a list — national
    numbers written in pairs have at most five ("06 12 34 56 78")."""
    return len(groups) >= 6 and all(len(g) <= 2 for g in groups)


# How a national number with no trunk 0, area code in parentheses or `+` is grouped after its area or
# mobile prefix of 2–3 digits: 3-4 (North America, Italy, Greece, Malaysia), 4-4 (China, Mexico,
# Argentina), 2-2-2 and 3-2-2 (Spain, Poland, Turkey, Russia); 3-3-3 reads as thousands (`_thousands`).
_SUBSCRIBER_GROUPINGS = frozenset({(3, 4), (4, 4), (2, 2, 2), (3, 2, 2)})


def _grouped_as_dialled(groups: list[str]) -> bool:
    """Whether groups of 2–4 digits with no other sign of a phone number are grouped as one is written
    ("612 34 56 78", "138 1234 5678", "55 1234 5678"): numbers a message lists side by side are grouped
    as they come ("1024 512 2048", "32 784 2048 784")."""
    return 2 <= len(groups[0]) <= 3 and tuple(len(g) for g in groups[1:]) in _SUBSCRIBER_GROUPINGS


def _thousands(groups: list[str]) -> bool:
    return len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])


def _ssn(raw: str) -> bool:
    return bool(re.fullmatch(r"\d{3}-\d{2}-\d{4}", raw))


def _looks_like_other_number(text: str, start: int, raw: str, groups: list[str], digits: str,
                             excused_by_words: bool = True) -> bool:
    return (
        _has_date(groups)
        or sum(_is_year(g) for g in groups) >= 2
        or (len(groups) >= 3 and all(len(g) == 4 and 1000 <= int(g) <= 2099 for g in groups))  # 1558 1603 1625
        or _ipv4(raw, groups)
        or _isbn(text, start, raw, groups, digits, excused_by_words)
    )


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1800 <= int(group) <= 2099


def _has_date(groups: list[str]) -> bool:
    """Three consecutive groups that read as year-month-day or day-month-year (or month-day-year)."""
    for a, b, c in zip(groups, groups[1:], groups[2:]):
        small = len(b) <= 2 and 1 <= int(b) <= 31
        if _is_year(a) and small and len(c) <= 2 and 1 <= int(c) <= 31:
            return True
        if _is_year(c) and small and len(a) <= 2 and 1 <= int(a) <= 31:
            return True
    return False


def _ipv4(raw: str, groups: list[str]) -> bool:
    return _dotted_only(raw) and len(groups) == 4 and all(len(g) <= 3 for g in groups)


def _isbn(text: str, start: int, raw: str, groups: list[str], digits: str, excused_by_words: bool = True) -> bool:
    if excused_by_words and ISBN_WORD.search(text, max(0, start - 24), start):
        return True
    if len(digits) == 13 and digits[:3] in ("978", "979") and _isbn13_valid(digits):
        return True
    return len(digits) == 10 and len(groups) >= 3 and len(groups[-1]) == 1


def _isbn13_valid(digits: str) -> bool:
    return sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0
