"""Masked forms and salted fingerprints: the only traces of a value that may leave the library.

Masking rules (each keeps at most what a receipt or a support agent would show):

- card   every digit starred except the last 4; separators kept: `**** **** **** 1234`.
- phone  every digit starred except the last 2; `+`, separators, parentheses kept: `+** *** *** **89`.
- iban   country code and last 4 characters kept, everything else starred, spaces kept:
         `DE** **** **** **** **30 00`.
- email  first character of the local part and of each domain label kept, the top-level
         domain kept, the rest starred one for one: `j***@e******.com`.
- secret (and any detector without a rule) fixed width, so the length is not revealed:
         `p******d` — first and last character — for values of 12 characters or more,
         `********` for shorter ones. Never more than 2 real characters.

Fingerprint: HMAC-SHA256(salt, normalised value), hex, first 24 characters (96 bits). Normalised:
separators (space, `-`, `.`, parentheses) removed for card/phone/iban, IBAN upper-cased, email
lower-cased, anything else unchanged — so `4111 1111 …` and `4111-1111-…` get one fingerprint.
The salt must stay secret: card and phone numbers have few enough possibilities to brute-force
a fingerprint whose salt is known.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from unlearning.errors import UnlearnError

FINGERPRINT_HEX = 24
_SEPARATORS = re.compile(r"[\s.()\-]")
_STAR = "*"
_SECRET_WIDTH = 8  # masked secrets are always this wide
_SECRET_SHOWS_ENDS_FROM = 12  # shorter secrets are starred entirely


def normalise(value: str, detector: str) -> str:
    """The form two spellings of one value share (the fingerprint is taken over this)."""
    if detector in ("card", "phone"):
        return _SEPARATORS.sub("", value)
    if detector == "iban":
        return _SEPARATORS.sub("", value).upper()
    if detector == "email":
        return value.lower()
    return value


def check_salt(salt: object) -> None:
    if not isinstance(salt, bytes | bytearray) or not salt:
        raise UnlearnError("the fingerprint salt must be non-empty bytes (keep it secret, e.g. 32 random bytes)")


def fingerprint(value: str, detector: str, salt: bytes) -> str:
    """HMAC-SHA256(salt, normalise(value)) as hex, first 24 characters."""
    check_salt(salt)
    digest = hmac.new(bytes(salt), normalise(value, detector).encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:FINGERPRINT_HEX]


def mask(value: str, detector: str) -> str:
    """The value with all but the allowed characters starred (rules in the module docstring)."""
    if detector == "card":
        return _keep_last_alnum(value, keep=4, star_letters=False)
    if detector == "phone":
        return _keep_last_alnum(value, keep=2, star_letters=False)
    if detector == "iban":
        return _mask_iban(value)
    if detector == "email" and value.count("@") == 1:
        return _mask_email(value)
    return _mask_secret(value)


def _keep_last_alnum(value: str, keep: int, star_letters: bool) -> str:
    """Star digits (and letters if asked) except the last `keep` of them; other characters stay."""
    hidden = [i for i, c in enumerate(value) if c.isdigit() or (star_letters and c.isalpha())]
    starred = set(hidden[: max(0, len(hidden) - keep)])
    return "".join(_STAR if i in starred else c for i, c in enumerate(value))


def _mask_iban(value: str) -> str:
    country, rest = value[:2], _keep_last_alnum(value[2:], keep=4, star_letters=True)
    return country + rest


def _mask_email(value: str) -> str:
    local, domain = value.split("@")
    labels = domain.split(".")
    starred = [_first_then_stars(label) for label in labels[:-1]] + labels[-1:]
    return _first_then_stars(local) + "@" + ".".join(starred)


def _first_then_stars(part: str) -> str:
    return part[:1] + _STAR * (len(part) - 1)


def _mask_secret(value: str) -> str:
    if len(value) >= _SECRET_SHOWS_ENDS_FROM:
        return value[0] + _STAR * (_SECRET_WIDTH - 2) + value[-1]
    return _STAR * _SECRET_WIDTH
