"""Users' own text files as a `TextCorpus` (`unlearn data add NAME --file PATH`).

Which files are text: a `.txt` or `.jsonl` file, or any supported file given with a text column
(`--text-column`); a `.csv`/`.parquet` file with `--target` is a table (`unlearning.tabular.files`).

Records:
- `.txt`: one record per paragraph. Paragraphs are separated by one or more blank lines (lines of
  whitespace only); id `p00001` for the first paragraph of the file, `p00002` for the second, ...
- `.jsonl` (one JSON object per line; blank lines skipped), `.csv` (UTF-8, header row) and
  `.parquet`: one record per row, its text in the text column (`--text-column`, default `text`
  for `.jsonl`), its id in the `--id` column, else `r00001` for the first data row, `r00002` ...

Assigned ids are positions in the file, never derived from the content, so re-adding the same file
gives the same ids (and the same train/held-out split, which hashes the id); a file edited by inserting or
removing records renumbers what follows: give an `--id` column for ids that survive edits.

Every record's text is normalised alike: line ends become "\\n", each line's runs of whitespace
become one space and its ends are stripped, empty lines are dropped. A record whose text is then
empty is refused (a `.txt` file has none by construction).

Limits, checked before any heavy work: files up to MAX_FILE_BYTES (64 MiB, checked before reading)
and corpora up to MAX_CHARS (16 million) characters (a character LSTM trains on CPU, and every window of the corpus
is held in memory); a corpus must hold at least one training window of the largest model preset in
its training records and one in its held-out records (`check_trainable_corpus`).
"""

from __future__ import annotations

import io
import json
import numbers
import re
from pathlib import Path

import pandas as pd

from unlearning.documents import RepeatedKey, json_depth, refuse_repeated_columns, unique_json_keys
from unlearning.errors import UnlearnError
from unlearning.text.data import TextCorpus, check_trainable_corpus

TEXT_SUFFIXES = (".txt", ".jsonl")  # always text
COLUMN_SUFFIXES = (".jsonl", ".csv", ".parquet")  # records in rows: a text column, optional ids
DEFAULT_TEXT_COLUMN = "text"  # of a .jsonl file
MAX_FILE_BYTES = 64 * 2**20
MAX_CHARS = 16_000_000
_BLANK_LINES = re.compile(r"\n\s*\n")  # whitespace as str.split sees it, as in `normalised`


def is_text_input(path: Path, target: str | None, text_column: str | None) -> bool:
    """Whether `data add --file path` asks for a text corpus (True) or not (False: a table, or a
    file type other readers decide on); refuses option combinations that fit neither text nor a
    table, naming what to give instead."""
    suffix = Path(path).suffix.lower()
    if target is not None and text_column is not None:
        raise UnlearnError(
            "give --target (a table: the label column) or --text-column (a text corpus), not both"
        )
    if suffix in TEXT_SUFFIXES:
        if target is not None:
            raise UnlearnError(
                f"a {suffix} file is read as a text corpus, which has no target: drop --target"
                + (" (name the text column with --text-column)" if suffix == ".jsonl" else "")
            )
        return True
    if text_column is not None:
        return True
    if target is None and suffix in COLUMN_SUFFIXES:
        raise UnlearnError(
            "--target is required with --file: name the label column of a table, or give "
            "--text-column COLUMN for a text corpus (a .txt or .jsonl file is text by itself)"
        )
    return False


def read_text_corpus(
    name: str, path: Path, text_column: str | None = None, id_column: str | None = None
) -> TextCorpus:
    """The corpus in a user's .txt/.jsonl/.csv/.parquet file (records and ids: see the module
    doc), checked to be trainable. Raises UnlearnError naming the problem; writes nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + COLUMN_SUFFIXES:
        raise UnlearnError(
            f"cannot read '{path.name}' as text: unknown file type '{suffix or '(none)'}'; "
            "give a .txt, .jsonl, .csv or .parquet file"
        )
    if suffix == ".txt" and (text_column is not None or id_column is not None):
        raise UnlearnError(
            "a .txt file is one text split into paragraphs: drop --text-column/--id "
            "(paragraph ids are assigned: p00001, p00002, ...)"
        )
    _check_size(path)
    if suffix == ".txt":
        records = paragraph_records(_decoded(path))
    else:
        column = text_column or (DEFAULT_TEXT_COLUMN if suffix == ".jsonl" else None)
        records = row_records(_rows(path, suffix), path.name, column, id_column)
    if not records:
        raise UnlearnError(f"'{path.name}' contains no text; give a file with at least one record")
    corpus = TextCorpus(name=name, records=tuple(records), source=path.name)
    if corpus.n_chars > MAX_CHARS:
        raise UnlearnError(
            f"'{path.name}' holds {corpus.n_chars:,} characters of text, more than the "
            f"{MAX_CHARS:,} a corpus may have; split it or add a part of it"
        )
    check_trainable_corpus(corpus)
    return corpus


def _check_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UnlearnError(f"data file '{path}' not found; check the path given with --file") from None
    except OSError as exc:
        raise UnlearnError(f"cannot read '{path.name}' ({exc.strerror}); check the path") from None
    if not path.is_file():
        raise UnlearnError(f"'{path}' is not a file; give a file with --file")
    if size > MAX_FILE_BYTES:
        raise UnlearnError(
            f"'{path.name}' is {size:,} bytes, more than the {MAX_FILE_BYTES:,} a text file may have; "
            "split it or add a part of it"
        )


def _decoded(path: Path) -> str:
    """The file as text: UTF-8 (a leading byte-order mark dropped). A NUL byte means a binary file;
    neither error quotes the file's bytes, which may be personal data."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise UnlearnError(f"cannot read '{path.name}' ({exc.strerror}); check the path") from None
    if b"\x00" in blob:  # absent from real text, present in nearly every binary format and UTF-16
        raise UnlearnError(
            f"'{path.name}' looks like a binary file (it contains NUL bytes); give a UTF-8 text file"
        )
    try:
        return blob.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = blob.count(b"\n", 0, exc.start) + 1
        raise UnlearnError(
            f"'{path.name}' is not valid UTF-8 (first bad byte at offset {exc.start}, line {line}); "
            "save it as UTF-8"
        ) from None


def normalised(text: str) -> str:
    """A record's text as stored: "\\n" line ends, whitespace runs inside a line one space, lines
    stripped, empty lines dropped (the module doc's rule)."""
    lines = (" ".join(line.split()) for line in _unix_line_ends(text).split("\n"))
    return "\n".join(line for line in lines if line)


def _unix_line_ends(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def paragraph_records(text: str) -> list[tuple[str, str]]:
    """A .txt file's records: its paragraphs (separated by blank lines), normalised, numbered
    p00001, p00002, ... in file order."""
    paragraphs = (normalised(block) for block in _BLANK_LINES.split(_unix_line_ends(text)))
    return [(f"p{n:05d}", paragraph) for n, paragraph in enumerate(filter(None, paragraphs), start=1)]


def _rows(path: Path, suffix: str) -> pd.DataFrame:
    """The file's rows as a frame of the values as given (strings for CSV; None where a JSON line
    lacks a field)."""
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UnlearnError(
                f"cannot read '{path.name}' as parquet ({type(exc).__name__}); check that it is a "
                "valid Parquet file"
            ) from None
    text = _decoded(path)
    if suffix == ".csv":
        try:
            # na_filter off: a paragraph reading "NA" or "null" is text, not a missing value
            header = pd.read_csv(io.StringIO(text), dtype=str, na_filter=False, header=None, nrows=1)
            refuse_repeated_columns(header.iloc[0].tolist(), path.name)
            return pd.read_csv(io.StringIO(text), dtype=str, na_filter=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnlearnError(f"cannot read '{path.name}' as csv: {reason}") from None
    return pd.DataFrame(_json_lines(text, path.name))


def _json_lines(text: str, file_name: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=unique_json_keys)
        except RepeatedKey:  # the key itself is not printed: a key may be a personal value (an e-mail, a name)
            raise UnlearnError(f"line {number} of '{file_name}' gives a key twice in one object (JSON would keep "
                               f"only the last value); keep one") from None
        except RecursionError:  # a line of arrays inside arrays: a traceback, not the user's one line
            raise UnlearnError(f"line {number} of '{file_name}' nests {json_depth(line)} levels deep, too deep to "
                               f"read; flatten it") from None
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise UnlearnError(
                f"line {number} of '{file_name}' is not a JSON object; give one object per line, "
                'e.g. {"id": "a1", "text": "..."}'
            )
        rows.append(row)
    return rows


def row_records(
    frame: pd.DataFrame, file_name: str, text_column: str | None, id_column: str | None
) -> list[tuple[str, str]]:
    """Records from rows: (id, normalised text of the text column); none for a file of no rows."""
    if len(frame) == 0:
        return []
    columns = [str(c) for c in frame.columns]
    if text_column is None:
        raise UnlearnError(
            f"name the column of '{file_name}' that holds the text with --text-column; "
            f"columns are: {', '.join(columns) or '(none)'}"
        )
    for option, column in (("text", text_column), ("id", id_column)):
        if column is not None and column not in columns:
            raise UnlearnError(
                f"{option} column '{column}' not found in '{file_name}'; columns are: "
                f"{', '.join(columns)}"
            )
    if id_column is not None and id_column == text_column:
        raise UnlearnError(f"column '{text_column}' cannot be both the text and the id column")
    texts = [_text_value(value, text_column, row) for row, value in enumerate(frame[text_column], 1)]
    empty = [row for row, text in enumerate(texts, start=1) if not text]
    if empty:
        raise UnlearnError(
            f"text column '{text_column}' is empty in {len(empty)} row(s) (first: data row {empty[0]}); "
            "remove those rows or give them text"
        )
    ids = (
        [f"r{row:05d}" for row in range(1, len(texts) + 1)]
        if id_column is None
        else _ids(list(frame[id_column]), id_column)
    )
    return list(zip(ids, texts))


def _text_value(value: object, column: str, row: int) -> str:
    if value is None or (isinstance(value, float) and value != value):  # missing: None or NaN
        return ""
    if not isinstance(value, str):
        raise UnlearnError(
            f"text column '{column}' holds {type(value).__name__} values, not text (first in data "
            f"row {row}); give the column that holds the text"
        )
    return normalised(value)


def _ids(values: list, column: str) -> list[str]:
    """Ids from a column: strings (stripped) or whole numbers, none empty, all distinct."""
    ids = []
    for row, value in enumerate(values, start=1):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = str(int(value))
        if not isinstance(value, str) or not value.strip():
            raise UnlearnError(
                f"id column '{column}' has an empty or non-text id in data row {row}; give every "
                "record a text or whole-number id"
            )
        ids.append(value.strip())
    from unlearning.detect.scan import refuse_personal_id_column

    refuse_personal_id_column(ids, column)  # before the duplicates' message, which quotes an id
    seen: set[str] = set()
    duplicated = [i for i in ids if i in seen or seen.add(i)]
    if duplicated:
        raise UnlearnError(
            f"id column '{column}' has {len(set(duplicated))} duplicated id(s) (first: "
            f"'{duplicated[0]}'); ids must be unique"
        )
    return ids
