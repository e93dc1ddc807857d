"""The records a completed deletion removed, known in any dataset of the project: a salted hash of
each one's id and content, kept in its `completed` ledger entry (`erased_rows`), so that a copy of
the data under another dataset name (`unlearn data add other --file <the restored backup>`) is
refused as the dataset the records were deleted from is.

Ids alone cannot be compared across datasets: they are each dataset's own, and another dataset's
records may carry the same ids (tasks.erased.made_on). A row's hash binds its id to its content:
a record of another dataset matches only when both are the same, and two rows identical but for
their ids (UCI Adult's duplicates) never match each other. The hash is an HMAC with the project's
salt (tasks.scan.project_salt, the fingerprints' and the request hashes'), so it reveals nothing of
the record to whoever reads the ledger without the salt, and it is the same in every dataset of
the project. Never a raw value: the entry holds the scheme, the column names (the schema, which
certificates name too) and the hashes.

Tables: the columns the row held when it was deleted, less revoked ones (blanked in place: a copy
from the source holds their values), looked for in a dataset with all those columns. Images: the
class name and the pixels. Entries completed before `erased_rows` was recorded, or by a run
finished after an interruption (the data before its run is gone), keep the check by id on the
dataset the request was made on (tasks.erased)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

TABLE, IMAGES = "table-v1", "images-v1"
DIGITS = 32  # hex digits kept of each HMAC-SHA256: 128 bits, no chance collision between rows


def deleted_rows(root: Path, requests: list) -> dict[str, dict]:
    """Request id → what its `delete_records` remove, hashed (`rows_recorded`), from the data its
    model's production version was trained on, read before the run deletes them; none for a request
    deleting nothing, for text, or when that data cannot be read (the run then says why)."""
    deleting = [r for r in requests if r.delete_records]
    if not deleting:
        return {}
    from tasks.scan import project_salt

    salt = project_salt(root)
    found = {}
    for model in {r.model for r in deleting}:
        if (dataset := production_dataset(root, model)) is None:
            continue
        for request in (r for r in deleting if r.model == model):
            if (recorded := rows_recorded(dataset, request.delete_records, salt)) is not None:
                found[request.id] = recorded
    return found


def production_dataset(root: Path, model: str):
    """The dataset `model`'s production version was trained on, as checked out; None when it cannot
    be read."""
    from tasks import data as data_store
    from tasks import tracking
    from unlearning.errors import UnlearnError

    try:
        tracking.connect(root)
        production = tracking.require_production(model, root)
        return data_store.load_dataset(root, production.tags.get("dataset", model))
    except UnlearnError:
        return None


def rows_recorded(dataset, ids, salt: bytes) -> dict | None:
    """{"scheme", "columns" (a table's), "rows": the sorted hashes} of the records `ids` of `dataset`
    (those it holds); None for a dataset whose records are not hashed (text) or holds none of them."""
    scheme = scheme_of(dataset)
    if scheme is None:
        return None
    columns = hashed_columns(dataset) if scheme == TABLE else []
    rows = set(row_hashes(dataset, scheme, columns, salt, only=set(map(str, ids))))
    if not rows:
        return None
    return {"scheme": scheme, **({"columns": columns} if scheme == TABLE else {}), "rows": sorted(rows)}


def rows_back(dataset, recorded: dict[str, dict], salt: bytes) -> dict[str, set[str]]:
    """Request id → the ids of `dataset`'s records whose hash is among its `erased_rows`
    (`recorded`): none when the dataset is of another kind or lacks a column the hashes were made
    over. The dataset's rows are hashed once per set of columns, not once per request: on a table of
    UCI Adult's size (48,842 rows) one hashing takes about 0.3 s."""
    kind = scheme_of(dataset)
    hashed: dict[tuple, dict[str, str]] = {}
    found = {}
    for request, rows in recorded.items():
        columns = tuple(rows.get("columns") or ())
        if rows.get("scheme") != kind or (kind == TABLE and not set(columns) <= set(dataset.frame.columns)):
            continue
        if columns not in hashed:
            hashed[columns] = row_hashes(dataset, kind, list(columns), salt)
        found[request] = {hashed[columns][d] for d in rows.get("rows") or () if d in hashed[columns]}
    return found


def scheme_of(dataset) -> str | None:
    """The hashing a dataset's records take: a table's or an image dataset's; None for text (its
    removed secrets are known by fingerprint: tasks.redacted)."""
    from tasks import formats

    kind = formats.format_of(dataset)
    return TABLE if kind is formats.TABLE else IMAGES if kind is formats.IMAGES else None


def hashed_columns(table) -> list[str]:
    """A table's columns a row is hashed over: all but the revoked ones (blank in it, full in a copy
    from the source), by name, so that a copy with its columns in another order matches."""
    return sorted(c for c in table.frame.columns if c not in set(table.revoked))


def row_hashes(dataset, scheme: str, columns: list[str], salt: bytes, only: set[str] | None = None) -> dict[str, str]:
    """Hash → record id, of every record of `dataset` (or those in `only`)."""
    if scheme == TABLE:
        frame = dataset.frame if only is None else dataset.frame[dataset.frame.index.isin(only)]
        cells = frame[columns].astype(str)
        return {row_hash(salt, [str(record), *values]): str(record)
                for record, values in zip(cells.index, cells.itertuples(index=False, name=None))}
    out = {}
    for position, record in enumerate(dataset.record_ids):
        if only is None or record in only:
            pixels = dataset.images[position]
            content = [str(record), dataset.classes[int(dataset.labels[position])], list(pixels.shape),
                       hashlib.sha256(pixels.tobytes()).hexdigest()]
            out[row_hash(salt, content)] = str(record)
    return out


def row_hash(salt: bytes, content: list) -> str:
    """HMAC-SHA256 with the project's salt of a record's id and content (domain-separated from the
    secrets' fingerprints and the request hashes, which use the same salt)."""
    body = b"erased-row\0" + json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return hmac.new(salt, body, hashlib.sha256).hexdigest()[:DIGITS]
