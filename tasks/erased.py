"""Records that completed ledger requests erased, kept out of a table's data at ingestion: `unlearn
data add NAME --replace` with the original source used to bring them back, and the next training
learned them again while their certificates still said erased (the audit's own safety net for
records brought back another way is tasks.audit_checks.erased_records_back). `unlearn data add`
passes `refuse_erased` to tasks.data.add_dataset, which cannot import it: the ledger imports that
module's readers (through tasks.scan).

Counts and request ids only in what is said: the record ids are personal data."""

from __future__ import annotations

from pathlib import Path

from tasks.ledger_db import _sqlite_file, ledger_url
from unlearning.errors import UnlearnError


def refuse_erased(root: Path, table) -> None:
    """UnlearnError (one line, nothing written yet) for a table holding records that completed
    ledger requests deleted on a model trained on it: how many, which requests, and the fix. Text
    and image datasets pass (their requests redact text or forget images, named otherwise)."""
    from tasks.formats import format_of

    if format_of(table).name != "table" or not ledger_exists(root):
        return
    present = set(table.frame.index)
    back = {request: ids & present for request, ids in erased_from_dataset(root, table.name).items() if ids & present}
    if not back:
        return
    count, requests = len(set().union(*back.values())), sorted(back)
    raise UnlearnError(f"{count} record(s) in this source were erased from data/{table.name} by completed request(s) "
                       f"{', '.join(requests)}: adding them would bring them back into the data; drop those rows "
                       f"from the source (the requests' delete_records) and add it again; nothing was written")


def erased_from_dataset(root: Path, dataset: str) -> dict[str, set[str]]:
    """Completed ledger request id → the record ids it deleted (from its recorded nature), of the
    requests on models trained on `dataset`. An audit leaves a request `completed`: audited ones count."""
    from tasks import ledger  # here: a project without a ledger never loads it (nor MLflow)

    by_request = {r.id: (r.request.get("model"), set(r.request.get("delete_records") or ()))
                  for r in ledger.list_requests(root, status="completed") if r.request.get("delete_records")}
    on_dataset = {model for model, _ in by_request.values() if trained_on(root, model, dataset)}
    return {request: records for request, (model, records) in by_request.items() if model in on_dataset}


def trained_on(root: Path, model: str, dataset: str) -> bool:
    """Whether a version of `model` was trained on `dataset` (its `dataset` tag, which defaults to the
    model's name as everywhere else); a model with no version left (retired): the one named after it."""
    from tasks import tracking

    versions = []
    if tracking.store_exists(root):
        tracking.connect(root)
        versions = tracking.model_versions(model)
    if not versions:
        return model == dataset
    return any(v.tags.get("dataset", model) == dataset for v in versions)


def ledger_exists(root: Path) -> bool:
    """Whether the project has a ledger to read (no SQLite file is created to find out)."""
    file = _sqlite_file(ledger_url(root))
    return file is None or Path(file).exists()
