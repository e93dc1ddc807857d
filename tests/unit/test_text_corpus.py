"""Text corpus: parsing the plays, the simulated leak, deterministic storage, offsets, redaction.

The leak's ground truth is checked against independent definitions (a Luhn check and format
patterns written here), never against the builder's own helpers.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import numpy as np
import pytest

from unlearning.text.data import (
    INJECTED_FILE,
    RECORDS_FILE,
    SCHEMA_FILE,
    Occurrence,
    TextCorpus,
    concatenated,
    load_corpus,
    redact,
    save_corpus,
)
from unlearning.text.shakespeare import build_shakespeare, play_records
from unlearning.errors import UnlearnError

SMALL = 20_000
SECRETS_PER_PERSON = 5


@pytest.fixture(scope="module")
def corpus() -> TextCorpus:
    return build_shakespeare(max_chars=SMALL, seed=3)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def span_text(corpus: TextCorpus, occurrence: Occurrence) -> str:
    return corpus.text_of(occurrence.record)[occurrence.start : occurrence.end]


def raw_values(corpus: TextCorpus) -> set[str]:
    return {span_text(corpus, o) for o in corpus.injected}


def saved_files(directory) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# -- independent definitions of the shapes ---------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def card_shape_ok(value: str) -> bool:
    separators = set(re.sub(r"\d", "", value))
    if not separators <= {" ", "-"} or len(separators) > 1:
        return False
    digits = re.sub(r"\D", "", value)
    issuer = (
        (len(digits) == 16 and digits[0] == "4")
        or (len(digits) == 16 and (51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720))
        or (len(digits) == 15 and digits[:2] in ("34", "37"))
        or (len(digits) == 16 and (digits[:4] == "6011" or digits[:2] == "65"))
    )
    return issuer and luhn_valid(digits)


SHAPES = {
    "card": card_shape_ok,
    "secret": lambda v: bool(
        re.fullmatch(r"AKIA[A-Z0-9]{16}", v)
        or re.fullmatch(r"ghp_[A-Za-z0-9]{36}", v)
        or (
            re.fullmatch(r"\S{8,}", v)
            and re.search(r"\d", v)
            and re.search(r"[a-z]", v)
            and re.search(r"[A-Z]", v)
        )
    ),
    "email": lambda v: bool(re.fullmatch(r"[a-z0-9.]+@example\.(com|org|net)", v)),
    "phone": lambda v: bool(
        re.fullmatch(r"\+1 \d{3} 555 01\d\d", v) or re.fullmatch(r"\+44 20 7946 0\d{3}", v)
    ),
}


# -- parsing the plays -----------------------------------------------------------------------


def test_play_markdown_becomes_speeches():
    markdown = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A wood. TITANIA and\n\nOBERON asleep.\n\n"
        "_Enter PUCK, with a\nflower_\n\n"
        "**PUCK**  \nOver hill,   over dale,  \n_\\[Aside]_  \nThorough bush\\--thorough brier!\n\n"
        "_Exit_\n\n"
        "Flower of this purple dye,\n\n\n"
        "**FAIRY**  \n__\\[Awaking]_  \nWhat—angel wakes me?\nDUKE OF\n\n**ATHENS**  \nPeace.\n"
    )
    assert play_records(markdown) == [
        "PUCK: Over hill, over dale,\nThorough bush--thorough brier!\nFlower of this purple dye,",
        "FAIRY: What--angel wakes me?",
        "DUKE OF ATHENS: Peace.",
    ]


def test_records_are_clean_text_with_stable_ids(corpus):
    ids = corpus.ids()
    assert len(ids) == len(set(ids)) and ids[0] == "a-midsummer-night-s-dream:00000"
    assert all(re.fullmatch(r"[a-z0-9-]+:\d{5}", i) for i in ids)
    assert corpus.records[0][1].startswith("THESEUS: Now, fair Hippolyta, our nuptial hour")
    clean = build_shakespeare(max_chars=SMALL, seed=3, n_people=0)
    assert clean.injected == () and clean.ids() == ids
    text, _ = concatenated(clean)
    assert not set(text) & set("*_#[]\\\u2014"), "markup left in the text"
    # a bigger budget only appends: the same ids keep the same clean text
    bigger = build_shakespeare(max_chars=2 * SMALL, seed=3, n_people=0)
    assert bigger.records[: len(clean.records)] == clean.records
    assert len(clean.records) + sum(len(t) for _, t in clean.records) - 1 <= SMALL


# -- the simulated leak ----------------------------------------------------------------------


def test_every_secret_is_pasted_repeats_times_into_training_records(corpus):
    per_secret = Counter(o.secret_id for o in corpus.injected)
    assert len(per_secret) == 4 * SECRETS_PER_PERSON
    assert set(per_secret.values()) == {8}
    assert Counter(o.kind for o in corpus.injected) == {
        "card": 32, "secret": 64, "email": 32, "phone": 32,
    }  # fmt: skip
    train = dict(zip(corpus.ids(), corpus.train_mask()))
    assert all(train[o.record] for o in corpus.injected)
    other = build_shakespeare(max_chars=SMALL, seed=3, repeats=3, n_people=2)
    assert set(Counter(o.secret_id for o in other.injected).values()) == {3}
    assert len(other.injected) == 2 * SECRETS_PER_PERSON * 3


def test_every_span_has_the_shape_of_its_kind(corpus):
    for occurrence in corpus.injected:
        value = span_text(corpus, occurrence)
        assert SHAPES[occurrence.kind](value), (occurrence, value)
        text = corpus.text_of(occurrence.record)
        # a whole token: nothing glued to either side
        assert occurrence.start == 0 or text[occurrence.start - 1] in " =:"
        assert occurrence.end == len(text) or text[occurrence.end] in " ,\n"


def test_one_secret_has_one_value_and_cards_are_written_several_ways(corpus):
    values: dict[str, set[str]] = {}
    for occurrence in corpus.injected:
        value = span_text(corpus, occurrence)
        if occurrence.kind == "card":
            value = re.sub(r"\D", "", value)
        values.setdefault(occurrence.secret_id, set()).add(value)
    assert all(len(v) == 1 for v in values.values())
    cards = [span_text(corpus, o) for o in corpus.injected if o.kind == "card"]
    assert {" " in c for c in cards} == {True, False} and any("-" in c for c in cards)


def test_train_mask_is_about_ninety_percent_and_per_record(corpus):
    mask = corpus.train_mask()
    assert mask.dtype == bool and mask.shape == (len(corpus.records),)
    assert 0.85 < mask.mean() < 0.95
    sub = TextCorpus("sub", corpus.records[::2], corpus.source)
    assert np.array_equal(sub.train_mask(), mask[::2])


# -- storage ---------------------------------------------------------------------------------


def test_two_builds_save_identical_bytes(tmp_path):
    for name in ("a", "b"):
        save_corpus(build_shakespeare(max_chars=SMALL, seed=5), tmp_path / name / "shakespeare")
    first = saved_files(tmp_path / "a" / "shakespeare")
    assert sorted(first) == sorted([RECORDS_FILE, SCHEMA_FILE, INJECTED_FILE])
    assert first == saved_files(tmp_path / "b" / "shakespeare")
    save_corpus(build_shakespeare(max_chars=SMALL, seed=6), tmp_path / "c" / "shakespeare")
    assert saved_files(tmp_path / "c" / "shakespeare")[RECORDS_FILE] != first[RECORDS_FILE]


def test_save_load_round_trip(tmp_path, corpus):
    save_corpus(corpus, tmp_path / "shakespeare")
    assert load_corpus(tmp_path / "shakespeare") == corpus
    lines = (tmp_path / "shakespeare" / RECORDS_FILE).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(corpus.records) + 1
    assert json.loads(lines[0]) == {"id": corpus.records[0][0], "text": corpus.records[0][1]}
    schema = json.loads((tmp_path / "shakespeare" / SCHEMA_FILE).read_text())
    assert schema["kind"] == "text" and schema["n_records"] == len(corpus.records)
    assert schema["n_chars"] == sum(len(t) for _, t in corpus.records)

    redacted = redact(corpus, list(corpus.injected[:8]))
    save_corpus(redacted, tmp_path / "shakespeare")  # replaces the folder as a whole
    assert load_corpus(tmp_path / "shakespeare") == redacted
    assert [p.name for p in tmp_path.iterdir()] == ["shakespeare"]


def test_no_saved_file_but_the_records_holds_a_value_and_redaction_removes_them(tmp_path, corpus):
    values = raw_values(corpus)
    assert len(values) >= 4 * SECRETS_PER_PERSON
    save_corpus(corpus, tmp_path / "before")
    files = {n: b.decode("utf-8") for n, b in saved_files(tmp_path / "before").items()}
    assert all(v in files[RECORDS_FILE] for v in values)  # the search does find them
    for name in (SCHEMA_FILE, INJECTED_FILE):
        assert not [v for v in values if v in files[name]], name
        assert not [v for v in values if re.sub(r"\D", "", v) in files[name] and v[0].isdigit()]

    save_corpus(redact(corpus, list(corpus.injected)), tmp_path / "after")
    after = {n: b.decode("utf-8") for n, b in saved_files(tmp_path / "after").items()}
    assert not [v for v in values if any(v in text for text in after.values())]
    assert json.loads(after[INJECTED_FILE]) == {"occurrences": []}


def test_load_errors_are_one_line(tmp_path, corpus):
    with pytest.raises(UnlearnError) as excinfo:
        load_corpus(tmp_path / "missing")
    assert "unlearn data add missing" in one_line_error(excinfo)
    save_corpus(corpus, tmp_path / "shakespeare")
    path = tmp_path / "shakespeare" / RECORDS_FILE
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(UnlearnError) as excinfo:
        load_corpus(tmp_path / "shakespeare")
    assert "unreadable" in one_line_error(excinfo)


# -- offsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("use_mask", [False, True])
def test_record_spans_map_through_concatenation(corpus, use_mask):
    mask = corpus.train_mask() if use_mask else None
    text, offsets = concatenated(corpus, mask)
    kept = [r for r, keep in zip(corpus.records, corpus.train_mask() if use_mask else
                                 [True] * len(corpus.records)) if keep]
    assert text == "\n".join(t for _, t in kept)
    assert [i for i, _ in offsets] == [i for i, _ in kept]
    start = dict(offsets)
    for record_id, record_text in kept:
        assert text[start[record_id] : start[record_id] + len(record_text)] == record_text
    for occurrence in corpus.injected:
        at = start[occurrence.record]
        assert text[at + occurrence.start : at + occurrence.end] == span_text(corpus, occurrence)


def test_concatenated_rejects_a_mask_of_the_wrong_length(corpus):
    with pytest.raises(UnlearnError) as excinfo:
        concatenated(corpus, np.ones(3, dtype=bool))
    assert "one entry per record" in one_line_error(excinfo)


# -- redaction -------------------------------------------------------------------------------


def changed_positions(before: TextCorpus, after: TextCorpus) -> set[tuple[str, int]]:
    out = set()
    for (i, a), (j, b) in zip(before.records, after.records, strict=True):
        assert i == j and len(a) == len(b)
        out |= {(i, k) for k in range(len(a)) if a[k] != b[k]}
    return out


def test_token_redaction_overwrites_exactly_the_spans(corpus):
    secret = corpus.injected[0].secret_id
    spans = [o for o in corpus.injected if o.secret_id == secret]
    after = redact(corpus, spans)
    covered = {(o.record, k) for o in spans for k in range(o.start, o.end)}
    assert changed_positions(corpus, after) <= covered  # nothing outside a span changed
    for o in spans:
        filler = span_text(after, o)
        assert len(filler) == o.end - o.start
        assert filler == ("<REDACTED>" + "*" * 40)[: len(filler)]
    assert after.redacted == (secret,)
    assert after.injected == tuple(o for o in corpus.injected if o.secret_id != secret)
    for o in after.injected:  # the other secrets are untouched, at the same offsets
        assert span_text(after, o) == span_text(corpus, o)
    assert after.ids() == corpus.ids()


def test_same_format_redaction_keeps_the_shape_and_is_seeded(corpus):
    spans = list(corpus.injected)
    after = redact(corpus, spans, policy="same_format", seed=1)
    covered = {(o.record, k) for o in spans for k in range(o.start, o.end)}
    assert changed_positions(corpus, after) <= covered
    classes = (str.isdigit, str.islower, str.isupper)
    for o in spans:
        old, new = span_text(corpus, o), span_text(after, o)
        assert new != old and len(new) == len(old)
        for a, b in zip(old, new):
            if not any(c(a) for c in classes):
                assert a == b  # separators, "@", "." ... kept
            else:
                assert [c(a) for c in classes] == [c(b) for c in classes]
    assert after == redact(corpus, spans, policy="same_format", seed=1)
    assert after != redact(corpus, spans, policy="same_format", seed=2)
    assert after.injected == () and len(after.redacted) == 4 * SECRETS_PER_PERSON


def test_overlapping_spans_and_bad_requests(corpus):
    o = corpus.injected[0]
    wider = Occurrence(o.record, o.start, o.end + 1, o.kind, o.secret_id)
    after = redact(corpus, [o, wider])
    assert span_text(after, wider) == "<REDACTED>*****************"[: wider.end - wider.start]
    with pytest.raises(UnlearnError) as excinfo:
        redact(corpus, [o], policy="blur")
    assert "token, same_format" in one_line_error(excinfo)
    with pytest.raises(UnlearnError) as excinfo:
        redact(corpus, [Occurrence("hamlet:99999", 0, 3, "card", "S01")])
    assert "hamlet:99999" in one_line_error(excinfo)
    with pytest.raises(UnlearnError) as excinfo:
        redact(corpus, [Occurrence(o.record, o.start, 10**6, "card", "S01")])
    assert "outside record" in one_line_error(excinfo)


def test_text_of_and_bad_build_arguments(corpus):
    first, second = corpus.ids()[:2]
    assert corpus.text_of([first, second]) == corpus.records[0][1] + "\n" + corpus.records[1][1]
    with pytest.raises(UnlearnError):
        corpus.text_of("nope:00000")
    for kwargs in ({"max_chars": 10}, {"repeats": 0}, {"n_people": 99}, {"seed": 1.5}):
        with pytest.raises(UnlearnError) as excinfo:
            build_shakespeare(**kwargs)
        one_line_error(excinfo)


def test_default_build_is_fast():
    started = time.perf_counter()
    full = build_shakespeare()
    assert time.perf_counter() - started < 5.0
    assert 300_000 <= sum(len(t) for _, t in full.records) < 320_000
    assert len(full.injected) == 4 * SECRETS_PER_PERSON * 8
