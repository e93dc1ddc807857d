"""Tabular datasets: one `Table` per dataset, stored as `records.csv` + `schema.json` in a folder.

A table is the training data D of science.md §1. Its rows are keyed by record id (a string), so an
unlearning request can name them; `correct_table` turns D into D' = (D \\ Z) ∪ Z̃.

The stored bytes are deterministic (fixed column order, stable number formatting, "\\n" line ends,
sorted JSON keys): the same table always gives the same DVC hash, on every machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from unlearning.documents import refuse_repeated_columns
from unlearning.errors import UnlearnError
from unlearning.storage import check_name, staging_dir, swap_in

RECORDS_FILE = "records.csv"
SCHEMA_FILE = "schema.json"
DEFAULT_ID_NAME = "record_id"
MISSING_CATEGORY = "?"
TRAIN_SHARE = 0.8
SCHEMA_VERSION = 1
# A table model's parameters: (numeric columns + one-hot columns + bias) × (classes, or 1 when
# binary). The Hessian every update and its cache need is p × p dense (science.md §1: "small
# p ≲ 5k"): at 5,000 it is 200 MB and factors in seconds; a 10,000-column table ran > 400 s.
MAX_PARAMETERS = 5000
MAX_CATEGORIES = 100  # distinct values of one text column; more is usually an id or free text
# A table file is read whole into memory, its cells as text: like a text or an image file
# (unlearning.text.files, unlearning.images.files), one over 64 MiB is refused before it is read.
MAX_FILE_BYTES = 64 * 2**20
MIN_TRAIN_ROWS = 10  # below this a fit and its held-out accuracy mean nothing

# Salting the split hash keeps it unrelated to any other use of sha256 over the same ids.
_SPLIT_SALT = b"unlearnflow/train-split/v1:"


@dataclass(frozen=True)
class Table:
    """A validated dataset.

    frame: index = record ids (str, named after the source id column or "record_id");
    columns = features + [target]; numeric features float64, categorical features and target str.
    """

    name: str
    frame: pd.DataFrame
    target: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    labels: tuple[str, ...]
    revoked: tuple[str, ...] = ()
    source: str = ""
    # the data version (DVC) these rows are, where known: what a model version's encoded cache is
    # keyed by (tasks.state), so that a cache of other data is never read
    version: str | None = None

    def train_mask(self) -> np.ndarray:
        """(n,) bool, True = training row.

        Decided per record from sha256(id) alone, so deleting rows never moves another record
        between train and test (the retrained reference sees the same split as the original).
        """
        return np.fromiter(
            (_in_train(record_id) for record_id in self.frame.index),
            dtype=bool,
            count=len(self.frame),
        )

    def ids(self) -> list[str]:
        return [str(record_id) for record_id in self.frame.index]

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f not in self.categorical)


def _in_train(record_id: str) -> bool:
    digest = hashlib.sha256(_SPLIT_SALT + record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < int(TRAIN_SHARE * 2**64)


# ---------------------------------------------------------------------------------------------
# Reading user files


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a .csv or .parquet file as given (at most MAX_FILE_BYTES, checked before reading). CSV
    cells are read as text (so ids like "007" keep their leading zeros); `table_from_frame` decides
    which columns are numeric."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UnlearnError(
            f"cannot read '{path.name}': unknown file type '{suffix or '(none)'}'; "
            "give a .csv or .parquet file"
        )
    if not path.is_file():
        if path.exists():  # a folder or a pipe (whose read would block): not "not found"
            raise UnlearnError(f"data file '{path}' is not a regular file (a folder, a device or a pipe); give "
                               f"the file itself with --file")
        raise UnlearnError(f"data file '{path}' not found; check the path given with --file")
    if (size := path.stat().st_size) > MAX_FILE_BYTES:
        raise UnlearnError(f"'{path.name}' is {size:,} bytes, more than the {MAX_FILE_BYTES:,} "
                           f"({MAX_FILE_BYTES // 2**20} MiB) a table file may have; split it or add a part of it")
    try:
        if suffix == ".csv":
            # as written: a column named NA or null is a name, not a missing one (pandas' default reads it as NaN)
            header = pd.read_csv(path, dtype=str, header=None, nrows=1, keep_default_na=False).iloc[0].tolist()
            frame = pd.read_csv(path, dtype=str)
        else:
            return pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnlearnError(f"cannot read '{path.name}' as {suffix[1:]}: {reason}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        # Other readers' messages may quote file contents: name only the kind of failure.
        raise UnlearnError(
            f"cannot read '{path.name}' as {suffix[1:]} ({type(exc).__name__}); "
            "check that it is a valid, UTF-8 encoded file"
        ) from None
    refuse_repeated_columns(header, path.name)  # after the try: an UnlearnError is a ValueError too
    return frame


# ---------------------------------------------------------------------------------------------
# Validation and normalisation


def _as_text(values: pd.Series) -> pd.Series:
    """Values as stripped strings (NA stays NA); integral floats print as ints ("1" not "1.0")."""
    if pd.api.types.is_bool_dtype(values):
        return values.map(lambda v: v if pd.isna(v) else str(bool(v))).astype("str")
    if pd.api.types.is_numeric_dtype(values):
        return values.map(lambda v: v if pd.isna(v) else format_number(v)).astype("str")
    try:
        return values.astype("str").str.strip()
    except UnicodeDecodeError:  # a Parquet binary column (hashes, file contents): a traceback, exit 1
        raise UnlearnError(f"column '{values.name}' holds bytes that are not UTF-8 text (a binary column); "
                           f"give text or numbers, or drop the column") from None


def format_number(value: float) -> str:
    """Shortest exact text for a number; integral values without a decimal point."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _numeric_or_none(values: pd.Series, column: str) -> pd.Series | None:
    """The column as float64 if every non-missing value is a number, else None."""
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    else:
        text = _as_text(values)  # non-numeric, non-bool: stripped strings, or the binary column's one line
        text = text.mask(text == "")
        try:  # raising stops at the first non-number: fast for text columns
            numbers = pd.to_numeric(text).astype("float64")
        except (ValueError, TypeError):
            return None
    if np.isinf(numbers.to_numpy()).any():
        raise UnlearnError(
            f"column '{column}' has infinite values; replace them with finite numbers or leave "
            "the cells empty"
        )
    return numbers


def _check_columns(frame: pd.DataFrame, target: str, id_column: str | None) -> None:
    columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise UnlearnError(
            f"column names appear more than once: {', '.join(duplicated)}; rename them"
        )
    if target not in columns:
        raise UnlearnError(
            f"target column '{target}' not found; columns are: {', '.join(columns)}"
        )
    if id_column is not None and id_column not in columns:
        raise UnlearnError(
            f"id column '{id_column}' not found; columns are: {', '.join(columns)}"
        )
    if id_column is not None and id_column == target:
        raise UnlearnError(f"column '{target}' cannot be both the target and the id column")
    if id_column is None and DEFAULT_ID_NAME in columns:
        raise UnlearnError(
            f"the file has a column '{DEFAULT_ID_NAME}'; pass it as the id column "
            f"(--id {DEFAULT_ID_NAME}) or rename it"
        )
    if len(columns) - 1 - (id_column is not None) < 1:
        raise UnlearnError("the file has no feature columns besides the target and the id column")


def _record_ids(frame: pd.DataFrame, id_column: str | None) -> pd.Index:
    if id_column is None:
        # File order, so that ids stay stable as long as the file does.
        return pd.Index([str(i) for i in range(len(frame))], dtype="str", name=DEFAULT_ID_NAME)
    ids = _as_text(frame[id_column])
    empty = ids.isna() | (ids == "")
    if empty.any():
        raise UnlearnError(
            f"id column '{id_column}' has {int(empty.sum())} empty values (first in data row "
            f"{int(np.argmax(empty.to_numpy())) + 1}); give every record an id"
        )
    from unlearning.detect.scan import refuse_personal_id_column  # here: reading a table needs no detector otherwise

    refuse_personal_id_column(ids, id_column)  # before the duplicates' message, which quotes an id
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        raise UnlearnError(
            f"id column '{id_column}' has {duplicated.nunique()} duplicated ids "
            f"(first: '{duplicated.iloc[0]}'); ids must be unique"
        )
    return pd.Index(ids.to_numpy(), dtype="str", name=id_column)


def _labels(values: pd.Series, target: str) -> pd.Series:
    labels = _as_text(values)
    missing = labels.isna() | (labels == "")
    if missing.any():
        raise UnlearnError(
            f"target column '{target}' has {int(missing.sum())} empty values; "
            "fill them in or drop those rows"
        )
    if labels.nunique() < 2:
        raise UnlearnError(
            f"target column '{target}' has fewer than 2 classes; a classifier needs at least 2"
        )
    return labels


def _categorical(values: pd.Series, column: str, max_categories: int) -> pd.Series:
    text = _as_text(values)
    text = text.mask(text.isna() | (text == ""), MISSING_CATEGORY)
    n_distinct = text.nunique()
    if n_distinct > max_categories:
        id_like = "every value is distinct, so it looks like an id: " if n_distinct == len(text) else ""
        raise UnlearnError(
            f"column '{column}' has {n_distinct} distinct text values and cannot be encoded "
            f"(at most {max_categories} per column); {id_like}pass it as the id column with "
            f"--id {column}, or drop it from the file"
        )
    return text


def _check_width(n_feature_columns: int) -> None:
    """Before any per-column work: every feature column is at least one parameter."""
    if n_feature_columns + 1 > MAX_PARAMETERS:
        raise UnlearnError(
            f"the file has {n_feature_columns} feature columns; a table model takes at most "
            f"{MAX_PARAMETERS - 1}: drop columns (or aggregate them) before adding it"
        )


def _check_parameters(columns: dict[str, pd.Series], categorical: list[str], n_labels: int) -> None:
    """(numeric + one-hot columns + bias) × classes ≤ MAX_PARAMETERS, naming the widest columns."""
    widths = {f: (columns[f].nunique() if f in categorical else 1) for f in columns}
    d = sum(widths.values()) + 1
    K = n_labels if n_labels > 2 else 1
    if d * K <= MAX_PARAMETERS:
        return
    widest = sorted((f for f in categorical), key=lambda f: -widths[f])[:3]
    named = ", ".join(f"'{f}' ({widths[f]} values)" for f in widest)
    raise UnlearnError(
        f"the table encodes to {d} columns × {K} class weights = {d * K} parameters (at most "
        f"{MAX_PARAMETERS})" + (f"; widest text columns: {named} — drop them or pass an id-like one "
                                f"with --id" if widest else "; drop columns")
    )


def check_trainable(table: Table) -> None:
    """A model can be trained and evaluated on `table`: at least MIN_TRAIN_ROWS training rows, a
    non-empty held-out split and every label among the training rows (otherwise the fit is
    degenerate and the held-out accuracy NaN)."""
    train = table.train_mask()
    n_train, n_test = int(train.sum()), int((~train).sum())
    if n_train < MIN_TRAIN_ROWS or n_test == 0:
        raise UnlearnError(
            f"dataset '{table.name}' is too small to train and evaluate a model: {len(train)} rows give "
            f"{n_train} training and {n_test} held-out rows (each record goes to training with "
            f"probability {TRAIN_SHARE}); give at least {MIN_TRAIN_ROWS} training rows and 1 held-out row "
            f"(about {round(MIN_TRAIN_ROWS / TRAIN_SHARE) + 5} records)"
        )
    seen = set(table.frame[table.target][train].astype(str))
    absent = [label for label in table.labels if label not in seen]
    if absent:
        raise UnlearnError(
            f"dataset '{table.name}': label {absent[0]!r} occurs only among the held-out rows "
            f"({len(absent)} such label(s)); add records of it, or drop those rows"
        )


def table_from_frame(
    name: str,
    frame: pd.DataFrame,
    target: str,
    id_column: str | None = None,
    source: str = "",
    max_categories: int = MAX_CATEGORIES,
) -> Table:
    """Validate a raw frame and turn it into a `Table` (see module doc for the layout)."""
    check_name(name)
    frame = frame.rename(columns=str)
    _check_columns(frame, target, id_column)
    features = tuple(c for c in frame.columns if c not in (target, id_column))
    _check_width(len(features))
    index = _record_ids(frame, id_column)

    columns: dict[str, pd.Series] = {}
    categorical = []
    for feature in features:
        numbers = _numeric_or_none(frame[feature], feature)
        if numbers is None:
            columns[feature] = _categorical(frame[feature], feature, max_categories)
            categorical.append(feature)
        else:
            columns[feature] = numbers
    labels = _labels(frame[target], target)
    _check_parameters(columns, categorical, labels.nunique())
    columns[target] = labels

    out = pd.DataFrame({c: s.to_numpy() for c, s in columns.items()}, index=index)
    for feature in categorical:
        out[feature] = out[feature].astype("str")
    out[target] = out[target].astype("str")
    return Table(
        name=name,
        frame=out,
        target=target,
        features=features,
        categorical=tuple(categorical),
        labels=tuple(sorted(labels.unique())),
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# Storage


def _schema(table: Table) -> dict:
    id_name = table.frame.index.name
    return {
        "format": SCHEMA_VERSION,
        "name": table.name,
        "target": table.target,
        "id_column": None if id_name == DEFAULT_ID_NAME else id_name,
        "features": list(table.features),
        "categorical": list(table.categorical),
        "labels": list(table.labels),
        "revoked": list(table.revoked),
        "source": table.source,
        "n_rows": len(table.frame),
    }


def _records_text(table: Table) -> str:
    """records.csv as text; numbers formatted by `format_number` so bytes never depend on
    pandas' float printing."""
    out = pd.DataFrame(index=pd.Index(table.ids(), name=table.frame.index.name))
    for column in (*table.features, table.target):
        values = table.frame[column]
        if column in table.numeric:
            out[column] = _format_numbers(values.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            out[column] = values.astype("str")
    return out.to_csv(lineterminator="\n", na_rep="")


def _format_numbers(values: np.ndarray) -> np.ndarray:
    """`format_number` over an array, "" for NaN; vectorised for the common integral case."""
    out = np.full(len(values), "", dtype=object)
    finite = np.isfinite(values)
    integral = finite & (np.floor(values) == values) & (np.abs(values) < 2**53)
    out[integral] = values[integral].astype(np.int64).astype(str)
    rest = finite & ~integral
    out[rest] = [repr(float(v)) for v in values[rest]]
    return out


def save_table(table: Table, directory: Path) -> None:
    """Write directory/records.csv and directory/schema.json, replacing the folder as a whole.

    Both files are written into a hidden sibling folder first and swapped in with renames, so a
    crash never leaves a half-written file or a mix of old and new (at worst, between the two
    renames, the old table parked in a hidden `.NAME.old-*` folder, which the next command puts
    back: `remove_stale_staging`). The bytes are built before the folder exists, so a slow or
    failing encoding leaves nothing behind.
    """
    directory = Path(directory)
    records = _records_text(table).encode("utf-8")
    schema = (json.dumps(_schema(table), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(directory, "new")
    try:
        (staging / RECORDS_FILE).write_bytes(records)
        (staging / SCHEMA_FILE).write_bytes(schema)
        swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_table(directory: Path) -> Table:
    directory = Path(directory)
    name = directory.name
    if not (directory / SCHEMA_FILE).is_file() or not (directory / RECORDS_FILE).is_file():
        raise UnlearnError(
            f"dataset '{name}' not found in {directory.parent}; "
            f"run `unlearn data add {name}` first"
        )
    try:
        schema = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8"))
        # Only empty cells are missing: a category spelled "NA" must stay a category.
        # "\n" ends a row (_records_text), and nothing else: a lone "\r" inside a value is written
        # unquoted, and read_csv's default also ended a row there (the dataset was unreadable)
        raw = pd.read_csv(
            directory / RECORDS_FILE, dtype=str, keep_default_na=False, na_values=[""], lineterminator="\n"
        )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UnlearnError(
            f"dataset '{name}' is unreadable ({type(exc).__name__}); "
            f"run `unlearn data add {name}` again or `dvc checkout`"
        ) from None
    try:
        return _table_from_stored(name, schema, raw)
    except (KeyError, TypeError, ValueError):
        raise UnlearnError(
            f"dataset '{name}' does not match its schema.json; "
            f"run `unlearn data add {name}` again or `dvc checkout`"
        ) from None


def _table_from_stored(name: str, schema: dict, raw: pd.DataFrame) -> Table:
    id_name = schema.get("id_column") or DEFAULT_ID_NAME
    features = tuple(schema["features"])
    expected = [id_name, *features, schema["target"]]
    if list(raw.columns) != expected or len(raw) != schema["n_rows"]:
        raise UnlearnError(
            f"dataset '{name}' does not match its schema.json; "
            f"run `unlearn data add {name}` again or `dvc checkout`"
        )
    categorical = tuple(schema["categorical"])
    frame = raw.set_index(id_name)
    frame.index = frame.index.astype("str")
    for feature in features:
        if feature not in categorical:
            frame[feature] = pd.to_numeric(frame[feature]).astype("float64")
    return Table(
        name=schema.get("name", name),
        frame=frame,
        target=schema["target"],
        features=features,
        categorical=categorical,
        labels=tuple(schema["labels"]),
        revoked=tuple(schema.get("revoked", ())),
        source=schema.get("source", ""),
    )


# ---------------------------------------------------------------------------------------------
# D -> D'


def correct_table(
    table: Table,
    delete_records: Iterable[str],
    revoke_features: Iterable[str],
    fix_labels: dict[str, str],
) -> Table:
    """D' = (D \\ Z) ∪ Z̃ (science.md §1): delete rows, blank revoked columns, replace labels.

    Requests are validated beforehand (`unlearning.compliance.requests.validate_request`).
    """
    delete_records = [str(r) for r in delete_records]
    revoke_features = [str(f) for f in revoke_features]
    assert set(delete_records) <= set(table.frame.index), "unknown record ids"
    assert set(revoke_features) <= set(table.features), "unknown features"
    assert set(fix_labels) <= set(table.frame.index), "unknown record ids"

    frame = table.frame.drop(index=delete_records)
    for feature in revoke_features:
        frame[feature] = np.nan
        frame[feature] = frame[feature].astype(table.frame[feature].dtype)
    fixes = {str(k): str(v) for k, v in fix_labels.items() if str(k) in frame.index}
    if fixes:
        frame.loc[list(fixes), table.target] = list(fixes.values())
    new = tuple(f for f in dict.fromkeys(revoke_features) if f not in table.revoked)
    revoked = table.revoked + new
    return replace(table, frame=frame, revoked=revoked, version=None)
