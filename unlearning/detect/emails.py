"""E-mail addresses: an RFC 5322 "dot-atom" subset that real addresses use, with a sane TLD.

Local part: letters, digits and `. _ % + -`, not starting or ending with a dot, no double dots.
Domain: labels of letters, digits and inner hyphens; the top-level domain is 2–24 letters and not
a file extension, so `logo@2x.png`, `pkg@1.2.3` and `user@localhost` are not addresses; nor is
the userinfo of a URL (`https://user:pw@host.com`: a password there is the secret detector's).
Confidence 1.0 for well-known TLDs and any two-letter country code, 0.8 for other long TLDs.
"""

from __future__ import annotations

import re

from unlearning.detect.base import Match, search_windows, windows_around

_EMAIL = re.compile(
    r"(?<![\w.%+\-])"
    r"(?P<local>[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*)"
    r"@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,24}))"
    r"(?![\w\-])(?!\.[A-Za-z0-9])"
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
            tld = m.group("tld").lower()
            if tld in FILE_EXTENSIONS or len(m.group("local")) > 64:
                continue
            if _URL_USERINFO_BEFORE.search(text, max(0, m.start() - 80), m.start()):
                continue
            confidence = KNOWN if (len(tld) == 2 or tld in COMMON_TLDS) else UNKNOWN
            matches.append(Match(self.name, m.start(), m.end(), confidence))
        return matches
