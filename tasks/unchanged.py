"""The parts of a request that would change nothing in the data, set aside before its batch runs.

Two such parts: a relabel to the label the record already carries, and a relabel or deletion of a
record an earlier completed request erased (two requests naming one record, the second batched
after the first). Left in, they would make the update fail (a record not in the dataset) or its
verification (a no-op relabel) on every comply run; set aside, each is listed under the
certificate's `unchanged` with why, and a request with nothing else left completes without a run.
"""

from __future__ import annotations

from pathlib import Path

from tasks import ledger, tracking
from unlearning.errors import UnlearnError

UNCHANGED_LABEL = "label already as requested: nothing to change"


def no_change_notes(root: Path, requests: list) -> dict[str, dict[str, str]]:
    """Per request id, the records the corrected data would not change, with why (see the module
    doc). Label values are not repeated (the certificate names record ids only)."""
    touching = [r for r in requests if r.fix_labels or r.delete_records]
    table = current_table(root, touching[0].model) if touching else None
    if table is None:
        return {}
    labels = table.frame[table.target]
    erased: dict[str, str] | None = None

    def erased_by() -> dict[str, str]:
        nonlocal erased  # read from the ledger only when a record is missing from the table
        if erased is None:
            erased = erased_records(root, touching[0].model)
        return erased

    return notes_against(touching, labels, erased_by)


def notes_against(requests: list, labels, erased_by) -> dict[str, dict[str, str]]:
    """`no_change_notes` against the current labels (a Series indexed by record id) and
    `erased_by()` (record id → the completed request that deleted it)."""
    notes: dict[str, dict[str, str]] = {}
    for request in requests:
        for record, label in [*request.fix_labels.items(), *((r, None) for r in request.delete_records)]:
            why = (relabel_note(labels.at[record], label) if record in labels.index
                   else erased_note(erased_by().get(record), label))
            if why is not None:
                notes.setdefault(request.id, {})[record] = why
    return notes


def relabel_note(current, label) -> str | None:
    """Why a present record's part changes nothing, or None (`label` None: a deletion)."""
    return UNCHANGED_LABEL if label is not None and str(current) == str(label) else None


def erased_note(erased_by: str | None, label) -> str | None:
    """Why a missing record's part changes nothing: an earlier request erased it; None when none
    did (the forget run then reports the record as unknown)."""
    if erased_by is None:
        return None
    return f"record erased by request {erased_by}: nothing left to {'relabel' if label is not None else 'erase'}"


def current_table(root: Path, model: str):
    """The table the model's production version was trained on, as checked out; None for text and
    image models, or when it cannot be read (the forget run then reports why)."""
    from tasks import data as data_store
    from unlearning.data.tables import Table

    try:
        tracking.connect(root)
        production = tracking.require_production(model, root)
        table = data_store.load_dataset(root, production.tags.get("dataset", model))
    except UnlearnError:
        return None
    return table if isinstance(table, Table) else None


def erased_records(root: Path, model: str) -> dict[str, str]:
    """Record id → the completed ledger request on `model` that deleted it."""
    erased = {}
    for record in ledger.list_requests(root, status="completed"):
        try:
            request = ledger.load_submitted(root, record.id)
        except UnlearnError:
            continue
        if request.model == model:
            erased.update({r: record.id for r in request.delete_records})
    return erased


def narrowed(request, notes: dict[str, str] | None):
    """The request without the parts that change nothing; None when nothing is left to do."""
    if not notes:
        return request
    fixes = {k: v for k, v in request.fix_labels.items() if k not in notes}
    rest = request.model_copy(update={"fix_labels": fixes,
                                      "delete_records": [r for r in request.delete_records if r not in notes]})
    return rest if rest.kinds() else None
