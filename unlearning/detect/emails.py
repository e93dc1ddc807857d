"""E-mail addresses: an RFC 5322 "dot-atom" subset that real addresses use, with a sane TLD.

Local part: letters, digits and `. _ % + -`, not starting or ending with a dot, no double dots.
Domain: labels of letters, digits and inner hyphens; the top-level domain is 2 or more letters (a
real one has at most 24: more are a word glued behind, `alice@example.comfoo…`) and not a file
extension, so `logo@2x.png`, `pkg@1.2.3` and `user@localhost` are not addresses; nor is the
userinfo of a URL (`https://user:pw@host.com`: a password there is the secret detector's).
The address ends with the top-level domain's letters unless the domain goes on (`example.com-x.org`,
`example.com1.net`): an address glued to what follows (`alice@example.com_v2`, `….com-4012…`,
`….com2024`) is one, and so is one followed by a file extension (`alice@example.com.csv`), also with
a number between the two (`alice@example.com1.csv`, `….com-2.csv`).
Confidence 1.0 for well-known TLDs and any two-letter country code, 0.8 for other long TLDs.
"""

from __future__ import annotations

import re

from unlearning.detect.base import Match, search_windows, windows_around

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_%+\-])(?<![A-Za-z0-9_%+\-]\.)"  # a dot after punctuation is punctuation: "'.alice@…"
    r"(?P<local>[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*)"
    r"@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,}))"
    r"(?![A-Za-z])(?![A-Za-z0-9\-]*[A-Za-z0-9]\.[A-Za-z0-9])"  # no more of the domain: this label going on, another
)
FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp ico bmp tif tiff js mjs ts css scss html htm json yaml yml xml toml "
    "ini cfg txt csv tsv log py pyc rb php java kt go rs c h cpp hpp sh bat exe dll so dylib bin "
    "zip gz tgz tar bz2 xz 7z rar pdf doc docx xls xlsx ppt pptx mp3 mp4 mov avi wav lock".split()
)
COMMON_TLDS = frozenset(
    "com org net edu gov mil int info biz name pro aero coop museum mobi jobs travel app dev page "
    "email online site tech store shop xyz club cloud blog news live life world today company "
    "agency digital media studio systems solutions services network group team work science "
    "university academy health law bank insurance finance capital global international".split()
)
_AT = re.compile("@")  # every address has one: the full pattern only runs around them
KNOWN, UNKNOWN = 1.0, 0.8
# `scheme://user:password@host`: what precedes `@` is URL userinfo,
# not a mailbox.
_URL_USERINFO_BEFORE = re.compile(r"://(?:[^\s/@:]*:)?$")


class EmailDetector:
    name = "email"
    priority = 20

    def find(self, text: str) -> list[Match]:
        matches = []
        for m in search_windows(_EMAIL, text, windows_around(_AT.finditer(text), 64 + 1, 256)):
            start, end, tld = m.start(), *_without_file_extension(m)
            if tld is None or len(m.group("local")) > 64:
                continue
            if _URL_USERINFO_BEFORE.search(text, max(0, start - 80), start):
                continue
            confidence = KNOWN if (len(tld) == 2 or tld in COMMON_TLDS) else UNKNOWN
            matches.append(Match(self.name, start, end, confidence))
        return matches


def _without_file_extension(m: re.Match) -> tuple[int, str | None]:
    """(end, lower-cased top-level domain) of the address `m` found, without the file extensions its
    domain ends with (`alice@example.com.csv`, `….com.tar.gz`: a file named after an address) and a
    number glued between the two (`….com1.csv`, `….com-2.csv`, `….com1.2.csv`: no top-level domain
    holds a digit); no top-level domain when what is left is none (`logo@2x.png`)."""
    tld = m.group("tld").lower()
    if tld not in FILE_EXTENSIONS:
        return m.end(), tld
    labels = m.group("domain").split(".")
    while len(labels) > 2 and _file_name_part(labels[-1]):
        labels.pop()
    letters = _TLD_LETTERS.match(labels[-1])
    if len(labels) < 2 or letters is None or letters.group().lower() in FILE_EXTENSIONS:
        return m.end(), None
    return m.start("domain") + len(".".join(labels)) - len(labels[-1]) + letters.end(), letters.group().lower()


def _file_name_part(label: str) -> bool:
    """A label no top-level domain could be: a file extension, or one that starts with no two letters."""
    return label.lower() in FILE_EXTENSIONS or _TLD_LETTERS.match(label) is None


# A top-level domain: the letters a label starts with, ended by its end, a digit or a dash.
_TLD_LETTERS = re.compile(r"[A-Za-z]{2,}(?=[0-9\-]|$)")
