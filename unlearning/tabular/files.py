"""Users' own table files as a `Table` (`unlearn data add NAME --file PATH --target COLUMN`).

`read_table_file` reads a `.csv` (every cell as text) or `.parquet` file as given, at most
MAX_FILE_BYTES; `table_from_frame` validates the raw frame and normalises it into the `Table` of
unlearning.tabular.data: record ids from the id column (or row positions), numeric columns as
float64, text columns as categories (at most MAX_CATEGORIES values each), the target as text labels,
and the encoded model within MAX_PARAMETERS. Every problem is one `UnlearnError` that says what to
fix, raised before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from unlearning.documents import refuse_repeated_columns
from unlearning.errors import UnlearnError
from unlearning.storage import check_name
from unlearning.tabular.data import DEFAULT_ID_NAME, MISSING_CATEGORY, Table, format_number

# A table model's parameters: (numeric columns + one-hot columns + bias) × (classes, or 1 when
# binary). The Hessian every update and its cache need is p × p dense (science.md §1: "small
# p ≲ 5k"): at 5,000 it is 200 MB and factors in seconds; a 10,000-column table ran > 400 s.
MAX_PARAMETERS = 5000
MAX_CATEGORIES = 100  # distinct values of one text column; more is usually an id or free text
# A table file is read whole into memory, its cells as text: like a text or an image file
# (unlearning.text.files, unlearning.images.files), one over 64 MiB is refused before it is read.
MAX_FILE_BYTES = 64 * 2**20


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


def table_from_frame(
    name: str,
    frame: pd.DataFrame,
    target: str,
    id_column: str | None = None,
    source: str = "",
    max_categories: int = MAX_CATEGORIES,
) -> Table:
    """Validate a raw frame and turn it into a `Table` (its docstring gives the layout)."""
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
