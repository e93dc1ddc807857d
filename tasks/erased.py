"""Records that completed erasure requests deleted, kept out of a dataset's data for good.

Three gates read the same list (`erased_from_dataset`: every completed ledger request on a model
trained on the dataset, audited or not):
- `unlearn data add NAME --replace` with the original source used to bring them back
  (`refuse_erased`, passed to tasks.data.add_dataset, which cannot import this module: the ledger
  imports that module's readers, through tasks.scan);
- `unlearn train` on data that holds them again by another way (a backup restored by hand, a
  `dvc checkout` of an old version) learned them again while their certificates still said erased
  (`refuse_erased_training`);
- the audit fails, and promotes nothing, when it finds them in the data it retrained on
  (tasks.audit_checks.erased_records_back), also for requests an earlier audit covered.

Tables and image datasets (their requests delete records by id); a text corpus's requests redact
secrets, which these ids do not name. Counts and request ids only in what is said: the record ids are
personal data."""

from __future__ import annotations

from pathlib import Path

from tasks.ledger_db import _sqlite_file, ledger_url
from unlearning.errors import UnlearnError


def refuse_erased(root: Path, dataset) -> None:
    """UnlearnError (one line, nothing written yet) for a source holding records that completed
    ledger requests deleted on a model trained on it: how many, which requests, and the fix."""
    if (back := erased_back(root, dataset)) is None:
        return
    count, requests = back
    raise UnlearnError(f"{count} record(s) in this source were erased from data/{dataset.name} by completed request(s) "
                       f"{', '.join(requests)}: adding them would bring them back into the data; drop those rows "
                       f"from the source (the requests' delete_records) and add it again; nothing was written")


def refuse_erased_training(root: Path, dataset) -> None:
    """UnlearnError (one line, before any run is recorded) for training on data/NAME while it holds
    records that completed ledger requests deleted: the new production model would hold them."""
    if (back := erased_back(root, dataset)) is None:
        return
    count, requests = back
    raise UnlearnError(f"{count} record(s) in data/{dataset.name} were erased by completed request(s) "
                       f"{', '.join(requests)} and are back in the data: training on it would learn them again; "
                       f"remove them (`unlearn data add {dataset.name} --file SOURCE --replace` from a source "
                       f"without them) and train again")


def erased_back(root: Path, dataset) -> tuple[int, list[str]] | None:
    """(how many erased records `dataset` holds, the requests that erased them), or None."""
    from tasks.formats import format_of

    present = format_of(dataset).record_ids(dataset)
    if present is None or not ledger_exists(root):
        return None
    return records_back(erased_from_dataset(root, dataset.name), present)


def records_back(erased: dict[str, set[str]], present: set[str]) -> tuple[int, list[str]] | None:
    """(how many distinct erased records are `present`, the requests that erased them, sorted), or None."""
    back = {request: ids & present for request, ids in erased.items() if ids & present}
    if not back:
        return None
    return len(set().union(*back.values())), sorted(back)


def erased_from_dataset(root: Path, dataset: str) -> dict[str, set[str]]:
    """Completed ledger request id → the record ids it deleted (from its recorded nature), of the
    requests on models trained on `dataset`. An audit leaves a request `completed`: audited ones count."""
    if not ledger_exists(root):
        return {}
    from tasks import ledger  # here: a project without a ledger never loads it (nor MLflow)

    by_request = {r.id: (r.request.get("model"), set(r.request.get("delete_records") or ()))
                  for r in ledger.list_requests(root, status="completed") if r.request.get("delete_records")}
    on_dataset = {model for model in {m for m, _ in by_request.values()} if trained_on(root, model, dataset)}
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
