"""Users' own text files → records (unlearning.text.files): the paragraph rule, ids by position,
which inputs are text and which tables, and the trainability minimum."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from unlearning.errors import UnlearnError
from unlearning.text.charlm import PRESETS
from unlearning.text.data import MIN_SPLIT_CHARS, TextCorpus, check_trainable_corpus
from unlearning.text.files import is_text_input, normalised, paragraph_records, read_text_corpus

LINES = [f"Line {i}: the tide turned at {i % 12} o'clock and the boats came home." for i in range(200)]


def test_paragraphs_are_split_by_blank_lines_and_normalised():
    text = "First  para\tline one\r\n  line two  \r\n\r\n \t \n\n\nSecond para\n\u00a0\nThird\n\n\n"
    assert paragraph_records(text) == [
        ("p00001", "First para line one\nline two"),
        ("p00002", "Second para"),
        ("p00003", "Third"),
    ]


def test_normalised_drops_empty_lines_and_collapses_whitespace_inside_lines():
    assert normalised("  a \u00a0 b\r\n\r\n\tc  \rd") == "a b\nc\nd"


def test_paragraph_ids_are_positions_not_content():
    """The same file gives the same ids; a paragraph's id does not depend on its text."""
    one = paragraph_records("alpha\n\nbeta\n\ngamma")
    other = paragraph_records("alpha\n\nBETA changed\n\ngamma")
    assert [i for i, _ in one] == [i for i, _ in other] == ["p00001", "p00002", "p00003"]


@pytest.mark.parametrize("name, target, text_column, is_text", [
    ("a.txt", None, None, True),
    ("a.jsonl", None, None, True),
    ("a.jsonl", None, "body", True),
    ("a.csv", None, "body", True),
    ("a.parquet", None, "body", True),
    ("a.csv", "label", None, False),
    ("a.parquet", "label", None, False),
    ("a.npz", None, None, False),  # not text: left to the readers of other kinds
])
def test_which_inputs_are_text(name, target, text_column, is_text):
    assert is_text_input(name, target, text_column) is is_text


@pytest.mark.parametrize("name, target, text_column, expect", [
    ("a.csv", None, None, "--text-column COLUMN for a text corpus"),
    ("a.txt", "label", None, "drop --target"),
    ("a.jsonl", "label", None, "drop --target"),
    ("a.csv", "label", "body", "not both"),
])
def test_inputs_that_are_neither_text_nor_table_are_refused(name, target, text_column, expect):
    with pytest.raises(UnlearnError, match=expect.replace("-", r"\-")):
        is_text_input(name, target, text_column)


def test_parquet_rows_with_integer_ids(tmp_path):
    path = tmp_path / "notes.parquet"
    pd.DataFrame({"n": list(range(100, 300)), "body": LINES}).to_parquet(path)
    corpus = read_text_corpus("notes", path, text_column="body", id_column="n")
    assert corpus.records[0] == ("100", LINES[0]) and len(corpus.records) == 200
    assert corpus.source == "notes.parquet"


def test_jsonl_rows_take_the_text_field_by_default_and_number_rows_without_ids(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(json.dumps({"text": line, "extra": 1}) for line in LINES) + "\n\n")
    corpus = read_text_corpus("notes", path)
    assert corpus.records[:2] == (("r00001", LINES[0]), ("r00002", LINES[1]))


def test_a_jsonl_key_given_twice_is_refused_with_its_line(tmp_path):
    """json.loads keeps the last of two `text` fields: the first one's text was dropped unseen."""
    path = tmp_path / "notes.jsonl"
    rows = [json.dumps({"text": line}) for line in LINES]
    rows[6] = '{"text": "card 4532 0173 9184 2658", "text": "a harmless line"}'
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UnlearnError, match=r"line 7 of 'notes.jsonl' gives a key twice"):
        read_text_corpus("notes", path)


def test_a_key_given_twice_is_not_printed_it_may_be_a_personal_value(tmp_path):
    path = tmp_path / "notes.jsonl"
    rows = [json.dumps({"text": line}) for line in LINES]
    rows[2] = '{"text": "x", "meta": {"alice.smith@example.com": 1, "alice.smith@example.com": 2}}'
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UnlearnError) as excinfo:
        read_text_corpus("notes", path)
    assert "line 3" in str(excinfo.value) and "alice" not in str(excinfo.value)


def test_a_jsonl_line_nested_deeper_than_the_parser_recurses_is_one_line(tmp_path):
    """json.loads raised RecursionError (a traceback, exit 1) on a line of 10 KB: arrays in arrays."""
    depth = 10 * sys.getrecursionlimit()
    path = tmp_path / "notes.jsonl"
    rows = [json.dumps({"text": line}) for line in LINES]
    rows[4] = '{"text": "x", "meta": ' + "[" * depth + "]" * depth + "}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UnlearnError, match=rf"line 5 of 'notes.jsonl' nests {depth + 1} levels deep"):
        read_text_corpus("notes", path)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_ids_with_a_unicode_line_separator_are_stored_and_read_back(tmp_path, separator):
    """An id holding U+2028 (pasted from a web page), U+2029 or NEL was stored by `data add`, and the
    stored corpus was then unreadable for every command: its reader split records.jsonl at them."""
    from unlearning.text.data import load_corpus, save_corpus

    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"case{separator}{i}", "text": line})
                              for i, line in enumerate(LINES)) + "\n")
    corpus = read_text_corpus("notes", path, id_column="id")
    save_corpus(corpus, tmp_path / "data" / "notes")
    assert load_corpus(tmp_path / "data" / "notes") == corpus


def test_a_csv_column_named_twice_is_refused_not_renamed(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("body,body\n" + "".join(f'"{line}",x\n' for line in LINES))
    with pytest.raises(UnlearnError, match=r"'notes.csv' gives one column name more than once \(columns 1, 2\)"):
        read_text_corpus("notes", path, text_column="body")


def test_a_repeated_name_in_a_file_without_a_header_is_not_printed(tmp_path):
    """Without a header row the first record stands where the names are: shown by position only."""
    path = tmp_path / "notes.csv"
    path.write_text("alice@example.com,alice@example.com\n" + "".join(f'"{line}",x\n' for line in LINES))
    with pytest.raises(UnlearnError) as excinfo:
        read_text_corpus("notes", path, text_column="body")
    assert "alice" not in str(excinfo.value) and "columns 1, 2" in str(excinfo.value)


def test_a_csv_cell_reading_NA_is_text_not_a_missing_value(tmp_path):
    path = tmp_path / "notes.csv"
    pd.DataFrame({"body": ["NA", *LINES]}).to_csv(path, index=False)
    assert read_text_corpus("notes", path, text_column="body").records[0] == ("r00001", "NA")


def test_the_split_minimum_is_one_window_of_the_largest_preset():
    assert MIN_SPLIT_CHARS == max(p["seq_len"] for p in PRESETS.values()) + 1


def test_a_corpus_without_a_held_out_window_is_refused():
    records = tuple((f"p{n:05d}", line) for n, line in enumerate(LINES, start=1))
    check_trainable_corpus(TextCorpus("notes", records, "test"))  # 200 lines: both splits hold windows
    held_out = [r for r in records if not TextCorpus("x", (r,), "t").train_mask()[0]]
    only_training = tuple(r for r in records if r not in held_out)
    with pytest.raises(UnlearnError, match="its held-out records .* hold 0 characters, at least 101"):
        check_trainable_corpus(TextCorpus("notes", only_training, "test"))
