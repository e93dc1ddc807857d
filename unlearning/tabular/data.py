"""Tabular datasets: one `Table` per dataset, stored as `records.csv` + `schema.json` in a folder.

A table is the training data D of science.md §1. Its rows are keyed by record id (a string), so an
unlearning request can name them; `correct_table` turns D into D' = (D \\ Z) ∪ Z̃.

The stored bytes are deterministic (fixed column order, stable number formatting, "\\n" line ends,
sorted JSON keys): the same table always gives the same DVC hash, on every machine.

A user's file becomes a `Table` in unlearning.tabular.files (reading, validating, normalising).
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

from unlearning.errors import UnlearnError
from unlearning.storage import staging_dir, swap_in

RECORDS_FILE = "records.csv"
SCHEMA_FILE = "schema.json"
DEFAULT_ID_NAME = "record_id"
MISSING_CATEGORY = "?"
TRAIN_SHARE = 0.8
SCHEMA_VERSION = 1
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
    # the version of this dataset's files these rows are (tasks.common.dataset_digest), where known:
    # what a model version's encoded cache is keyed by (tasks.state), so that a cache of other data is
    # never read, and one of this dataset outlives a new data version made by another dataset's change
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


def format_number(value: float) -> str:
    """Shortest exact text for a number; integral values without a decimal point."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)



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
