"""Tables: validation of raw frames, deterministic storage, the train split, D → D'."""

import json

import numpy as np
import pandas as pd
import pytest

from unlearning.tabular.data import RECORDS_FILE, SCHEMA_FILE, correct_table, load_table, save_table
from unlearning.tabular.files import read_table_file, table_from_frame
from unlearning.errors import UnlearnError


def raw_frame(n=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "pid": [f"p{i:03d}" for i in range(n)],
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(3.5, 1.0, n).round(3),
            "sex": rng.choice(["F", "M"], n),
            "city": rng.choice(["Oslo", "Bergen", None], n),
            "label": rng.choice(["no", "yes"], n),
        }
    )


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# -- table_from_frame ---------------------------------------------------------------------------


def test_layout_of_a_valid_table():
    table = table_from_frame("toy", raw_frame(), target="label", id_column="pid", source="toy.csv")
    assert table.features == ("age", "income", "sex", "city")
    assert table.categorical == ("sex", "city")
    assert table.labels == ("no", "yes")
    assert list(table.frame.columns) == ["age", "income", "sex", "city", "label"]
    assert table.frame.index.name == "pid" and table.ids()[0] == "p000"
    assert table.frame["age"].dtype == np.float64
    assert "?" in set(table.frame["city"])  # missing category kept as "?"
    assert table.source == "toy.csv" and table.revoked == ()


def test_ids_default_to_file_order_and_labels_become_text():
    frame = raw_frame().drop(columns="pid").assign(label=lambda f: (f["label"] == "yes") * 1)
    table = table_from_frame("toy", frame, target="label")
    assert table.ids()[:3] == ["0", "1", "2"] and table.frame.index.name == "record_id"
    assert table.labels == ("0", "1")


def test_numeric_text_columns_become_numbers_and_text_ids_keep_zeros(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("id,age,colour,y\n007,31,red,a\n008,,blue,b\n009,45.5,red, a \n")
    table = table_from_frame("people", read_table_file(path), target="y", id_column="id")
    assert table.ids() == ["007", "008", "009"]
    assert table.categorical == ("colour",)
    assert np.isnan(table.frame.loc["008", "age"]) and table.frame.loc["009", "age"] == 45.5
    assert table.labels == ("a", "b")  # " a " stripped


@pytest.mark.parametrize(
    "change, kwargs, expected",
    [
        (lambda f: f, {"target": "nope"}, "target column 'nope' not found"),
        (lambda f: f, {"target": "label", "id_column": "nope"}, "id column 'nope' not found"),
        (lambda f: f.assign(pid=["p1"] * 3 + list(f["pid"][3:])), {"target": "label", "id_column": "pid"}, "1 duplicated ids (first: 'p1')"),
        (lambda f: f.assign(pid=[None] + list(f["pid"][1:])), {"target": "label", "id_column": "pid"}, "1 empty values"),
        (lambda f: f.assign(label="yes"), {"target": "label", "id_column": "pid"}, "fewer than 2 classes"),
        (lambda f: f.assign(label=[None] + list(f["label"][1:])), {"target": "label", "id_column": "pid"}, "1 empty values"),
        (lambda f: f.assign(note=[f"n{i}" for i in range(len(f))]), {"target": "label", "id_column": "pid", "max_categories": 10}, "column 'note' has 40 distinct text values and cannot be encoded"),
        (lambda f: f.rename(columns={"pid": "record_id"}), {"target": "label"}, "--id record_id"),
        (lambda f: f.assign(age=np.inf), {"target": "label", "id_column": "pid"}, "infinite"),
        (lambda f: f[["pid", "label"]], {"target": "label", "id_column": "pid"}, "no feature columns"),
        (lambda f: f, {"target": "label", "id_column": "label"}, "both the target and the id"),
        # ids are kept whole in certificates and the ledger: a person's e-mail address must not be one
        (lambda f: f.assign(pid=[f"p{i}" for i in range(39)] + ["jo.bloggs@example.com"]),
         {"target": "label", "id_column": "pid"}, "id column 'pid' holds personal data (email in data row 40)"),
        # ... also when duplicated: the duplicates' message quotes an id
        (lambda f: f.assign(pid=["jo.bloggs@example.com"] * 2 + [f"p{i}" for i in range(38)]),
         {"target": "label", "id_column": "pid"}, "holds personal data (email in data row 1)"),
    ],
)
def test_bad_frames_are_refused_in_one_line(change, kwargs, expected):
    with pytest.raises(UnlearnError) as excinfo:
        table_from_frame("toy", change(raw_frame()), **kwargs)
    assert expected in one_line_error(excinfo)


@pytest.mark.parametrize("name", ["", "Toy", "-toy", "toy set", "../toy", "toy/x"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnlearnError) as excinfo:
        table_from_frame(name, raw_frame(), target="label", id_column="pid")
    assert "lower-case" in one_line_error(excinfo)


def test_too_many_categories_suggests_dropping():
    frame = raw_frame().assign(note=[f"secret-{i}" for i in range(40)])
    with pytest.raises(UnlearnError) as excinfo:
        table_from_frame("toy", frame, target="label", id_column="pid", max_categories=39)
    message = one_line_error(excinfo)
    assert "drop it" in message and "secret-" not in message  # no raw values in messages


# -- read_table_file ----------------------------------------------------------------------------


def test_read_errors(tmp_path):
    (tmp_path / "data.txt").write_text("a,b\n")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "ragged.csv").write_text('a,b\n1,2\n"3,4\n')
    cases = {
        tmp_path / "missing.csv": "not found",
        tmp_path / "data.txt": "unknown file type '.txt'",
        tmp_path / "broken.parquet": "cannot read 'broken.parquet'",
        tmp_path / "ragged.csv": "cannot read 'ragged.csv'",
    }
    for path, expected in cases.items():
        with pytest.raises(UnlearnError) as excinfo:
            read_table_file(path)
        assert expected in one_line_error(excinfo)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_file_over_the_limit_is_refused_unread(tmp_path, suffix, monkeypatch):
    """A table file was read whole whatever its size (a text or image file has a limit); one byte
    over MAX_FILE_BYTES is now refused naming the file and the limit, before pandas reads it."""
    from unlearning.tabular import files

    path = tmp_path / f"big{suffix}"
    with path.open("wb") as handle:  # sparse: the size without the disk
        handle.write(b"a,label\n")
        handle.truncate(files.MAX_FILE_BYTES + 1)
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("read past the limit"))
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("read past the limit"))
    with pytest.raises(UnlearnError) as excinfo:
        read_table_file(path)
    assert one_line_error(excinfo) == (f"'big{suffix}' is {files.MAX_FILE_BYTES + 1:,} bytes, more than the "
                                       f"{files.MAX_FILE_BYTES:,} ({files.MAX_FILE_BYTES // 2**20} MiB) a table file "
                                       f"may have; split it or add a part of it")


@pytest.mark.parametrize("header", ["age,age,label", "age,sex,AGE,sex,label", '"age",age,label'])
def test_a_column_named_twice_is_refused_not_renamed(tmp_path, header):
    """pandas reads a repeated CSV header as `age` and `age.1`: a request revoking `age` would then
    leave the second copy of the column in the model."""
    names = header.split(",")
    (tmp_path / "twice.csv").write_text(header + "\n" + "\n".join(",".join(["1"] * len(names)) for _ in range(3)))
    with pytest.raises(UnlearnError) as excinfo:
        read_table_file(tmp_path / "twice.csv")
    message = one_line_error(excinfo)
    assert "'twice.csv'" in message and "more than once" in message


def test_a_column_named_na_is_a_name_not_a_repeat_of_an_empty_one(tmp_path):
    (tmp_path / "na.csv").write_text("id,NA,,label\n" + "\n".join(f"{i},1,2,{i % 2}" for i in range(6)))
    frame = read_table_file(tmp_path / "na.csv")
    assert "NA" in frame.columns


def test_parquet_and_csv_give_the_same_table(tmp_path):
    frame = raw_frame()
    frame.to_parquet(tmp_path / "toy.parquet")
    frame.to_csv(tmp_path / "toy.csv", index=False)
    a = table_from_frame("toy", read_table_file(tmp_path / "toy.parquet"), "label", "pid")
    b = table_from_frame("toy", read_table_file(tmp_path / "toy.csv"), "label", "pid")
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.categorical == b.categorical


# -- storage ------------------------------------------------------------------------------------


def test_save_load_round_trip_and_bytes_are_deterministic(tmp_path):
    table = table_from_frame("toy", raw_frame(), target="label", id_column="pid", source="toy.csv")
    save_table(table, tmp_path / "a" / "toy")
    loaded = load_table(tmp_path / "a" / "toy")
    pd.testing.assert_frame_equal(loaded.frame, table.frame)
    assert (loaded.name, loaded.features, loaded.categorical, loaded.labels, loaded.source) == (
        table.name, table.features, table.categorical, table.labels, table.source,
    )
    save_table(loaded, tmp_path / "b" / "toy")
    for file in (RECORDS_FILE, SCHEMA_FILE):
        first = (tmp_path / "a" / "toy" / file).read_bytes()
        assert first == (tmp_path / "b" / "toy" / file).read_bytes()
        assert b"\r" not in first
    schema = json.loads((tmp_path / "a" / "toy" / SCHEMA_FILE).read_text())
    assert list(schema) == sorted(schema) and schema["n_rows"] == 40
    assert schema["id_column"] == "pid" and schema["target"] == "label"


@pytest.mark.parametrize("column", ["pid", "sex", "label"])
def test_a_carriage_return_inside_a_value_is_read_back(tmp_path, column):
    """A lone "\r" in an id, a category or a label (an old Mac line end in a quoted cell, a Parquet
    string) was stored by `data add` unquoted and then read back as a row end: unreadable for good."""
    frame = raw_frame()
    frame[column] = frame[column] + "\rx"
    table = table_from_frame("toy", frame, target="label", id_column="pid")
    save_table(table, tmp_path / "toy")
    loaded = load_table(tmp_path / "toy")
    pd.testing.assert_frame_equal(loaded.frame, table.frame)
    assert loaded.labels == table.labels


@pytest.mark.parametrize("column", ["pid", "sex", "label"])
def test_a_binary_parquet_column_is_one_line(tmp_path, column):
    """Bytes that are not UTF-8 (a Parquet binary column: hashes, file contents) ended `data add` in a
    UnicodeDecodeError traceback, whether an id, a feature or the target."""
    frame = raw_frame()
    frame[column] = [bytes([0x80 + i % 64, i]) for i in range(len(frame))]
    frame.to_parquet(tmp_path / "toy.parquet")
    with pytest.raises(UnlearnError) as excinfo:
        table_from_frame("toy", read_table_file(tmp_path / "toy.parquet"), target="label", id_column="pid")
    assert f"column '{column}' holds bytes that are not UTF-8 text" in one_line_error(excinfo)


def test_numbers_are_written_exactly(tmp_path):
    values = [1.0, 0.1, 1e-300, -0.0, 2.5e20, np.nan]
    frame = pd.DataFrame({"x": values, "y": ["a", "b"] * 3})
    save_table(table_from_frame("num", frame, target="y"), tmp_path / "num")
    lines = (tmp_path / "num" / RECORDS_FILE).read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["1", "0.1", "1e-300", "0", "2.5e+20", ""]
    loaded = load_table(tmp_path / "num").frame["x"].to_numpy()
    np.testing.assert_array_equal(loaded, np.array(values))


def test_save_replaces_the_folder_and_leaves_no_temp_files(tmp_path):
    table = table_from_frame("toy", raw_frame(), target="label", id_column="pid")
    save_table(table, tmp_path / "toy")
    smaller = correct_table(table, ["p000"], [], {})
    save_table(smaller, tmp_path / "toy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [RECORDS_FILE, SCHEMA_FILE]
    assert len(load_table(tmp_path / "toy").frame) == 39


def test_loading_a_missing_dataset_says_how_to_add_it(tmp_path):
    with pytest.raises(UnlearnError) as excinfo:
        load_table(tmp_path / "adult")
    assert "unlearn data add adult" in one_line_error(excinfo)


def test_loading_a_tampered_dataset_is_refused(tmp_path):
    table = table_from_frame("toy", raw_frame(), target="label", id_column="pid")
    save_table(table, tmp_path / "toy")
    records = tmp_path / "toy" / RECORDS_FILE
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:-1]) + "\n")  # a row lost
    with pytest.raises(UnlearnError) as excinfo:
        load_table(tmp_path / "toy")
    assert "does not match its schema.json" in one_line_error(excinfo)
    first = lines[1].split(",")
    records.write_text("\n".join([lines[0], ",".join([first[0], "abc", *first[2:]]), *lines[2:]]) + "\n")
    with pytest.raises(UnlearnError) as excinfo:  # text in a numeric column
        load_table(tmp_path / "toy")
    assert "does not match its schema.json" in one_line_error(excinfo)


# -- train split --------------------------------------------------------------------------------


def test_train_mask_is_about_80_percent_and_stable_per_record():
    n = 4000
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": ["a", "b"] * (n // 2)})
    table = table_from_frame("split", frame, target="y")
    mask = table.train_mask()
    assert mask.dtype == bool and mask.shape == (n,)
    assert 0.77 < mask.mean() < 0.83
    smaller = correct_table(table, [str(i) for i in range(0, n, 3)], [], {})
    by_id = dict(zip(table.ids(), mask))
    assert [by_id[i] for i in smaller.ids()] == list(smaller.train_mask())
    shuffled = table_from_frame("split", frame.iloc[::-1].reset_index(drop=True), target="y")
    assert shuffled.train_mask().sum() != 0  # different ids → its own split, still ~80 %
    assert 0.77 < shuffled.train_mask().mean() < 0.83


# -- D → D' -------------------------------------------------------------------------------------


def test_correct_table_applies_the_three_kinds_and_is_pure(tmp_path):
    table = table_from_frame("toy", raw_frame(), target="label", id_column="pid")
    before = table.frame.copy()
    old_label = table.frame.loc["p005", "label"]
    new_label = "yes" if old_label == "no" else "no"
    fixed = correct_table(table, ["p001", "p002"], ["sex", "age"], {"p005": new_label})
    assert "p001" not in fixed.frame.index and len(fixed.frame) == 38
    assert fixed.frame["sex"].isna().all() and fixed.frame["age"].isna().all()
    assert fixed.revoked == ("sex", "age")
    assert fixed.frame.loc["p005", "label"] == new_label
    assert fixed.labels == table.labels
    pd.testing.assert_frame_equal(table.frame, before)  # the original is untouched
    # revoking again does not duplicate; revoked columns survive storage
    again = correct_table(fixed, [], ["sex"], {})
    assert again.revoked == ("sex", "age")
    save_table(fixed, tmp_path / "toy")
    loaded = load_table(tmp_path / "toy")
    pd.testing.assert_frame_equal(loaded.frame, fixed.frame)
    assert loaded.revoked == ("sex", "age")


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: __import__("os").mkfifo(p)])
def test_a_data_file_that_is_a_folder_or_a_pipe_is_named_so(tmp_path, make):
    """A folder or a FIFO given with --file exists: "not found; check the path" sent the user
    looking for a file that is there."""
    from unlearning.images.files import read_image_npz

    for name, read in (("people.csv", read_table_file), ("images.npz", lambda p: read_image_npz("x", p))):
        make(tmp_path / name)
        with pytest.raises(UnlearnError, match="is not a regular file \\(a folder, a device or a pipe\\)"):
            read(tmp_path / name)
