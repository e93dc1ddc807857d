"""IBANs (ISO 13616): country code, two check digits, a BBAN; mod-97 of the rearranged number is 1.

Written compact ("DE89370400440532013000") or in the print format, groups of 4 separated by
single spaces with a shorter last group ("DE89 3704 0044 0532 0130 00"). Upper case only, as
printed. Countries in `LENGTHS` must have their exact length; others are accepted at 15–34
characters with confidence 0.8. The mod-97 check lets 1 in 97 random strings through, the length
table most of the rest. A spaced match followed by further groups is trimmed to the country's length.
One glued to lower-case letters behind is one ("/x/GB82WEST12345698765432abc.csv"), and so is one of a
country in `LENGTHS` with digits glued behind ("/data/GB82WEST123456987654321.csv"): its length says where
it ends.
"""

from __future__ import annotations

import re

from unlearning.detect.base import Match

LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GI": 23, "GL": 18, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26,
    "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27,
    "ME": 22, "MT": 31, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip
MIN_LENGTH, MAX_LENGTH = 15, 34
KNOWN_COUNTRY, OTHER_COUNTRY = 1.0, 0.8

_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}"
    r"(?:(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?|[A-Z0-9]{11,30})"  # at most 34 characters
    # lower-case letters glued behind are no part of it ("…3000abc.csv"): printed IBANs are upper case; digits
    # glued behind may be none either ("…30001.csv", `_before_glued_digits`)
    r"(?=\d*+(?![A-Z0-9]))"
)

_START = re.compile(r"[A-Z]{2}\d{2}")  # a country code and check digits, the country's looked up after


def iban_starts(text: str) -> list[int]:
    """Where an IBAN of a country in `LENGTHS` may start, whatever precedes it: an error message unglues
    one glued to a word in front ("acctDE89370400440532013000", unlearning.detect.scan)."""
    return [m.start() for m in _START.finditer(text) if m.group()[:2] in LENGTHS]


def mod97(compact: str) -> int:
    """ISO 7064 MOD 97-10 over the IBAN with its first four characters moved to the end."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97


def iban_valid(compact: str) -> bool:
    expected = LENGTHS.get(compact[:2])
    length_ok = len(compact) == expected if expected else MIN_LENGTH <= len(compact) <= MAX_LENGTH
    return length_ok and compact.isalnum() and mod97(compact) == 1


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits that make `country + cd + bban` valid (98 − mod97 with cd = 00)."""
    return f"{98 - mod97(country + '00' + bban):02d}"


class IbanDetector:
    name = "iban"
    priority = 50

    def find(self, text: str) -> list[Match]:
        matches = []
        for m in _IBAN.finditer(text):
            end = self._valid_end(m.group(), m.start())
            if end is not None:
                confidence = KNOWN_COUNTRY if m.group()[:2] in LENGTHS else OTHER_COUNTRY
                matches.append(Match(self.name, m.start(), end, confidence))
        return matches

    @staticmethod
    def _valid_end(candidate: str, start: int) -> int | None:
        """End offset of the longest valid prefix that ends at a group boundary, or else of one of its
        country's length followed by nothing but digits, if any."""
        groups = candidate.split(" ")
        for n in range(len(groups), 0, -1):
            prefix = " ".join(groups[:n])
            if iban_valid(prefix.replace(" ", "")):
                return start + len(prefix)
        cut = _before_glued_digits(candidate)
        return None if cut is None else start + cut


def _before_glued_digits(candidate: str) -> int | None:
    """Where a valid IBAN of a country in `LENGTHS` ends inside a longer `candidate`, when only digits follow
    it there ("GB82WEST123456987654321", "DE89 3704 0044 0532 0130 001": a digit glued behind, which is
    what the IBAN is made of, so that the whole is no IBAN); None otherwise."""
    expected = LENGTHS.get(candidate[:2])
    characters = [k for k, c in enumerate(candidate) if c != " "]
    if expected is None or len(characters) <= expected:
        return None
    cut = characters[expected - 1] + 1
    valid = candidate[cut:].isdigit() and iban_valid(candidate[:cut].replace(" ", ""))
    return cut if valid else None
