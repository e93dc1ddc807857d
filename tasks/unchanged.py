"""The parts of a request that would change nothing in the data, found before its batch runs
(the rule: `unlearning.compliance.batching.no_change_notes`).

Two such parts: a relabel to the label the record already carries, and a relabel or deletion of a
record an earlier completed request erased (two requests naming one record, the second batched
after the first). Left in, they would make the update fail (a record not in the dataset) or its
verification (a no-op relabel) on every comply run; set aside, each is listed under the
certificate's `unchanged` with why, and a request with nothing else left completes without a run.
"""

from __future__ import annotations

from pathlib import Path

from tasks import ledger
from unlearning.compliance import batching
from unlearning.errors import UnlearnError


def no_change_notes(root: Path, requests: list) -> dict[str, dict[str, str]]:
    """Per request id, the records the corrected data would not change, with why, against the
    table the model's production version was trained on (none for text and image models)."""
    touching = [r for r in requests if r.fix_labels or r.delete_records]
    table = current_table(root, touching[0].model) if touching else None
    if table is None:
        return {}
    named = {record for r in touching for record in (*r.fix_labels, *r.delete_records)}
    labels = {record: table.frame.at[record, table.target] for record in named if record in table.frame.index}
    # the ledger is read only when a named record is gone from the data
    erased = erased_records(root, touching[0].model) if named - labels.keys() else {}
    return batching.no_change_notes(touching, labels, erased)


def current_table(root: Path, model: str):
    """The table the model's production version was trained on, as checked out; None for text and
    image models, or when it cannot be read (the forget run then reports why)."""
    from tasks.common import production_dataset
    from unlearning.tabular.data import Table

    table = production_dataset(root, model)
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
