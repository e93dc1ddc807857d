"""Text corpora: records of text with ids, their train/held-out split, redaction and storage.

A `TextCorpus` is the training data D of science.md §1 for a character-level language model. Its
records are keyed by id (`f"{play_slug}:{n:05d}"` for the built-in, n = the record's index within
its play, so an id never depends on how much of the corpus was taken). Training text is the records
joined with "\\n" (`concatenated`), so a span inside a record maps to a corpus offset by adding the
record's start.

The built-in `shakespeare` corpus, with its simulated leak, is built in unlearning.text.shakespeare;
users' own text files become a TextCorpus in `unlearning.text.files` (records = paragraphs or rows,
ids by position or an id column); the split, training text, redaction and storage below apply to
both.

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
import json
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
            (in_train_split(record_id) for record_id, _ in self.records),
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


def in_train_split(record_id: str) -> bool:
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


UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


class HashStream:
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


def _same_format(value: str, stream: HashStream) -> str:
    """digit -> random digit, lower -> random lower, upper -> random upper, anything else kept."""
    out = []
    for char in value:
        if char in DIGITS:
            char = stream.choice(DIGITS)
        elif char in LOWER:
            char = stream.choice(LOWER)
        elif char in UPPER:
            char = stream.choice(UPPER)
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
                filler = _same_format(text[start:end], HashStream(seed, f"redact/{record_id}/{start}"))
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
        # "\n" ends a record (_records_bytes), and nothing else: json.dumps leaves U+2028, U+2029 and
        # U+0085 in an id raw, and str.splitlines cut the record there (the dataset was unreadable)
        lines = [line for line in (directory / RECORDS_FILE).read_text(encoding="utf-8").split("\n") if line]
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

