"""Bad text files for `data add --file` (issue 12): one line on stderr naming the problem and what
to give instead, exit 2, nothing written (no data/ change, no DVC version, no MLflow run); and a
stored corpus too small to train is refused by `train` before any run is recorded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.flows.test_cli_bad_input import run_bad, trained  # noqa: F401 — fixture
from tests.flows.test_user_text import notes_corpus
from unlearning.text import files as text_files


def paragraphs(n: int = 120) -> list[str]:
    return notes_corpus()[0].strip().split("\n\n")[:n]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def rows_with(**changes) -> list[dict]:
    """120 rows {doc, body}; changes maps a row index to the fields it gets instead."""
    rows = [{"doc": f"D{i}", "body": p} for i, p in enumerate(paragraphs())]
    for index, fields in changes.items():
        rows[int(index.removeprefix("row"))].update(fields)
    return rows


CASES = {
    "empty .txt": ("notes.txt", " \n\n\t\n", [], "contains no text"),
    "a .jsonl file of blank lines": ("notes.jsonl", "\n\n", [], "contains no text"),
    "a .csv file of a header only": ("notes.csv", "doc,body\n", ["--text-column", "body"], "contains no text"),
    "binary file": ("notes.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), [], "binary file"),
    "invalid UTF-8": ("notes.txt", "\n\n".join(paragraphs()).encode() + b"\n\ncaf\xe9 au lait\n", [],
                      "not valid UTF-8"),
    "UTF-16": ("notes.txt", "\n\n".join(paragraphs()).encode("utf-16"), [], "binary file"),
    "too small to hold out": ("notes.txt", "\n\n".join(paragraphs(3)), [], "too small to train and evaluate"),
    "missing text column": ("notes.csv", csv(rows_with()), ["--text-column", "text"],
                            "text column 'text' not found"),
    ".jsonl without its default text column": ("notes.jsonl", jsonl(rows_with()), [], "column 'text' not found"),
    "missing id column": ("notes.jsonl", jsonl(rows_with()), ["--text-column", "body", "--id", "pid"],
                          "id column 'pid' not found"),
    "duplicate ids": ("notes.jsonl", jsonl(rows_with(row7={"doc": "D3"})), ["--text-column", "body", "--id", "doc"],
                      "duplicated id(s) (first: 'D3')"),
    "an e-mail address as the id": ("notes.jsonl", jsonl(rows_with(row9={"doc": "jo.bloggs@example.com"})),
                                    ["--text-column", "body", "--id", "doc"],
                                    "id column 'doc' holds personal data (email in data row 10)"),
    "an empty id": ("notes.jsonl", jsonl(rows_with(row9={"doc": " "})), ["--text-column", "body", "--id", "doc"],
                    "empty or non-text id in data row 10"),
    "empty text rows": ("notes.csv", csv(rows_with(row4={"body": "  "}, row8={"body": ""})), ["--text-column", "body"],
                        "text column 'body' is empty in 2 row(s) (first: data row 5)"),
    "a JSON line missing the text": ("notes.jsonl", jsonl(rows_with(row2={"body": None})), ["--text-column", "body"],
                                     "empty in 1 row(s) (first: data row 3)"),
    "numbers, not text": ("notes.jsonl", jsonl(rows_with(row0={"body": 17})), ["--text-column", "body"],
                          "holds int values, not text"),
    "a line that is not a JSON object": ("notes.jsonl", jsonl(rows_with()) + "[1, 2]\n", ["--text-column", "body"],
                                         "line 121 of 'notes.jsonl' is not a JSON object"),
    "a file that is not Parquet": ("notes.parquet", b"PAR1 but not really", ["--text-column", "body"],
                                   "cannot read 'notes.parquet' as parquet"),
    "a Parquet column of numbers": ("notes.parquet", parquet(pd.DataFrame({"body": range(300)})),
                                    ["--text-column", "body"], "holds int values, not text (first in data row 1)"),
    "a .csv with neither option": ("notes.csv", csv(rows_with()), [], "--text-column COLUMN for a text corpus"),
    "both --target and --text-column": ("notes.csv", csv(rows_with()), ["--target", "doc", "--text-column", "body"],
                                        "not both"),
    ".txt with --target": ("notes.txt", "\n\n".join(paragraphs()), ["--target", "label"], "drop --target"),
    ".txt with --text-column": ("notes.txt", "\n\n".join(paragraphs()), ["--text-column", "body"],
                                "drop --text-column/--id"),
    "an unknown file type": ("notes.docx", "\n\n".join(paragraphs()), ["--text-column", "body"],
                             "unknown file type '.docx'"),
    "the same column for text and ids": ("notes.csv", csv(rows_with()), ["--text-column", "body", "--id", "body"],
                                         "both the text and the id column"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_data_add_refuses_a_bad_text_file(trained, capsys, tmp_path, case):
    name, content, options, expect = CASES[case]
    path = write(tmp_path, name, content)
    run_bad(trained, capsys, ["data", "add", "notes", "--file", str(path), *options], expect)


def test_data_add_refuses_a_text_file_over_the_size_caps(trained, capsys, tmp_path, monkeypatch):
    """The caps are 64 MiB and 16 million characters; lowered here so the test writes little."""
    path = write(tmp_path, "notes.txt", "\n\n".join(paragraphs()))
    monkeypatch.setattr(text_files, "MAX_FILE_BYTES", path.stat().st_size - 1)
    run_bad(trained, capsys, ["data", "add", "notes", "--file", str(path)], "a text file may have")
    monkeypatch.setattr(text_files, "MAX_FILE_BYTES", path.stat().st_size)
    monkeypatch.setattr(text_files, "MAX_CHARS", 5_000)
    run_bad(trained, capsys, ["data", "add", "notes", "--file", str(path)], "more than the 5,000 a corpus may have")


def test_text_column_without_a_file(trained, capsys):
    run_bad(trained, capsys, ["data", "add", "shakespeare", "--text-column", "body"], "give it with --file")


def test_missing_text_file(trained, capsys, tmp_path):
    run_bad(trained, capsys, ["data", "add", "notes", "--file", str(tmp_path / "absent.txt")], "absent.txt")


def test_train_refuses_a_stored_corpus_too_small_to_train(trained, capsys):
    """A corpus that is too small when it reaches `train` (stored by hand or by an older version)
    is refused before any run is recorded: its held-out perplexity could not be measured."""
    from tasks.dvc import add_data
    from unlearning.text.data import TextCorpus, save_corpus

    records = tuple((f"p{n:05d}", text) for n, text in enumerate(paragraphs(3), start=1))
    save_corpus(TextCorpus("tinytext", records, "test"), trained / "data" / "tinytext")
    add_data(trained)
    run_bad(trained, capsys, ["train", "tinytext", "--preset", "tiny", "--seconds", "1"],
            "too small to train and evaluate")
