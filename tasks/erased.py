"""Records that completed erasure requests deleted, and secrets that completed redactions removed,
kept out of a dataset's data for good.

Three gates read the same lists (every completed ledger request on a model trained on the dataset,
audited or not: `erased_from_dataset`, `redacted_from_dataset`, which adds the redactions made with
`unlearn forget` outside the ledger, the demo's, from the registry):
- `unlearn data add NAME --replace` with the original source used to bring them back
  (`refuse_erased`, passed to tasks.data.add_dataset, which cannot import this module: the ledger
  imports that module's readers, through tasks.scan);
- `unlearn train` on data that holds them again by another way (a backup restored by hand, a
  `dvc checkout` of an old version) learned them again while their certificates still said erased
  (`refuse_erased_training`);
- the audit fails, and promotes nothing, when it finds them in the data it retrained on
  (`audit_back`, for tasks.audit_checks.erased_records_back), also for requests an earlier audit covered.

Tables and image datasets: their requests delete records by id. A text corpus: its requests redact
secrets, which no record id names; a removed secret is known by its salted fingerprint (the ledger's
`completed` entry records those each request removed, tasks.outcomes.redacted_by), and found again
by scanning the corpus with the detectors and the project's salt that found it (tasks.scan) — only
when a completed redaction is on the dataset. Counts and request ids only in what is said: record
ids are personal data, and a fingerprint points at a secret."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.ledger_db import _sqlite_file, ledger_url
from unlearning.errors import UnlearnError


@dataclass(frozen=True)
class Removed:
    """What a kind's requests remove, in the words of the messages: "record(s)" an erasure
    "erased", or "secret(s)" a redaction "redacted"."""

    noun: str
    verb: str


RECORDS, SECRETS = Removed("record(s)", "erased"), Removed("secret(s)", "redacted")


def refuse_erased(root: Path, dataset) -> None:
    """UnlearnError (one line, nothing written yet) for a source holding records (secrets) that
    completed ledger requests deleted (redacted) on a model trained on it: how many, which requests,
    and the fix."""
    if (back := erased_back(root, dataset)) is None:
        return
    count, requests = back
    if removed_kind(dataset) is SECRETS:
        raise UnlearnError(f"{count} secret(s) in this source were redacted from data/{dataset.name} by completed "
                           f"request(s) {', '.join(requests)}: adding them would bring them back into the data; "
                           f"remove them from the source (`unlearn scan SOURCE` lists its secrets by fingerprint) "
                           f"and add it again; nothing was written")
    raise UnlearnError(f"{count} record(s) in this source were erased from data/{dataset.name} by completed request(s) "
                       f"{', '.join(requests)}: adding them would bring them back into the data; drop those rows "
                       f"from the source (the requests' delete_records) and add it again; nothing was written")


def refuse_erased_training(root: Path, dataset) -> None:
    """UnlearnError (one line, before any run is recorded) for training on data/NAME while it holds
    records (secrets) that completed ledger requests deleted (redacted): the new production model
    would hold them."""
    if (back := erased_back(root, dataset)) is None:
        return
    count, requests = back
    removed = removed_kind(dataset)
    raise UnlearnError(f"{count} {removed.noun} in data/{dataset.name} were {removed.verb} by completed request(s) "
                       f"{', '.join(requests)} and are back in the data: training on it would learn them again; "
                       f"remove them (`unlearn data add {dataset.name} --file SOURCE --replace` from a source "
                       f"without them) and train again")


def erased_back(root: Path, dataset) -> tuple[int, list[str]] | None:
    """(how many erased records or redacted secrets `dataset` holds, the requests that removed them), or None."""
    if removed_kind(dataset) is SECRETS:
        redacted = redacted_from_dataset(root, dataset.name)
        return records_back(redacted, fingerprints_in(root, dataset)) if redacted else None
    if not ledger_exists(root):
        return None
    from tasks.formats import format_of

    present = format_of(dataset).record_ids(dataset)
    return None if present is None else records_back(erased_from_dataset(root, dataset.name), present)


def audit_back(root: Path, plan) -> tuple[int, list[str], Removed] | None:
    """(how many erased records or redacted secrets the data the audit retrains on holds, the requests
    that removed them, sorted, which of the two) or None. The removals: every completed ledger request
    on the dataset, also those an earlier audit covered (a backup restored after it), and the covered
    requests, also those made with `unlearn forget` outside the ledger (from their sealed escrows)."""
    if removed_kind(plan.dataset) is SECRETS:
        redacted = merged(redacted_from_dataset(root, plan.dataset.name), escrowed_secrets(plan))
        back = records_back(redacted, fingerprints_in(root, plan.dataset)) if redacted else None
        return None if back is None else (*back, SECRETS)
    from tasks.formats import format_of

    present = format_of(plan.dataset).record_ids(plan.dataset)
    if present is None:
        return None
    back = records_back({**erased_from_dataset(root, plan.dataset.name), **deleted_records(plan)}, present)
    return None if back is None else (*back, RECORDS)


def removed_kind(dataset) -> Removed:
    """SECRETS for a text corpus (its requests redact secrets), RECORDS for the others."""
    from tasks.formats import TEXT, format_of

    return SECRETS if format_of(dataset) is TEXT else RECORDS


def records_back(erased: dict[str, set[str]], present: set[str]) -> tuple[int, list[str]] | None:
    """(how many distinct erased records are `present`, the requests that erased them, sorted), or None.
    Also for secrets: `erased` and `present` then hold salted fingerprints."""
    back = {request: ids & present for request, ids in erased.items() if ids & present}
    if not back:
        return None
    return len(set().union(*back.values())), sorted(back)


def fingerprints_in(root: Path, corpus) -> set[str]:
    """The salted fingerprints of the secrets the detectors find in a text corpus: the same scan, with
    every detector and the project's salt, that a redaction's findings were selected from
    (tasks.kinds.text.plan_findings), so a secret it removed has the same fingerprint here."""
    from tasks import scan

    return {f["fingerprint"] for f in scan.scan_corpus(corpus, scan.project_salt(root))}


def erased_from_dataset(root: Path, dataset: str) -> dict[str, set[str]]:
    """Completed ledger request id → the record ids it deleted (from its recorded nature), of the
    requests on models trained on `dataset`. An audit leaves a request `completed`: audited ones count."""
    return removed_on_dataset(root, dataset, lambda record: set(record.request.get("delete_records") or ()))


def redacted_from_dataset(root: Path, dataset: str) -> dict[str, set[str]]:
    """Request id → the salted fingerprints of the secrets it redacted, of the requests on models
    trained on `dataset`: completed ledger requests (audited ones too), and those made with `unlearn
    forget` outside the ledger (the demo's), from the registry (`redacted_outside_ledger`)."""
    in_ledger = removed_on_dataset(root, dataset, lambda record: redacted_fingerprints(root, record))
    return merged(in_ledger, redacted_outside_ledger(root, dataset))


def redacted_outside_ledger(root: Path, dataset: str) -> dict[str, set[str]]:
    """Request id → the fingerprints it redacted, of the requests made with `unlearn forget` outside
    the ledger on a model trained on `dataset`: each promoted version's `request_id` and the result
    its lineage run logged (`redacted_findings`; older results: their own secrets' rows). No ledger
    entry vouches for these: the registry keeps them (a purged version keeps its tags and lineage
    run), and a retired model's are gone. A comply batch's versions are skipped (their ledger entries say it)."""
    from tasks import tracking

    if not tracking.store_exists(root):
        return {}
    tracking.connect(root)
    in_ledger = ledger_runs(root)
    found: dict[str, set[str]] = {}
    for model in tracking.registered_model_names():
        for v in tracking.model_versions(model):
            tags = v.tags
            if (tags.get("dataset", model) != dataset or "request_id" not in tags or tags.get("verified") != "true"
                    or "rolled_back" in tags or tags.get("lineage_run") in in_ledger):
                continue
            if fingerprints := result_secrets(tracking.load_result(tags["lineage_run"]) or {}):
                found.setdefault(tags["request_id"], set()).update(fingerprints)
    return found


def result_secrets(result: dict) -> set[str]:
    """The fingerprints a forget run's logged result says it redacted (none for a table's)."""
    if result.get("redacted_findings") is not None:
        return {f["fingerprint"] for f in result["redacted_findings"]}
    return {r["fingerprint"] for r in result.get("secrets") or () if "fingerprint" in r and "earlier_requests" not in r}


def ledger_runs(root: Path) -> set[str]:
    """The forget runs of the ledger's completed requests (comply batches)."""
    if not ledger_exists(root):
        return set()
    from tasks import ledger

    return {run for r in ledger.list_requests(root, status="completed") if (run := (r.response or {}).get("run_id"))}


def redacted_fingerprints(root: Path, record) -> set[str]:
    """The fingerprints a completed redaction removed: those its `completed` entry records; for one
    completed by older code, the fingerprints it named, or, for `findings: all`, those its certificate
    lists as removed — read only while the file is the one the ledger recorded the SHA-256 of."""
    response, spec = record.response or {}, record.request.get("redact")
    if spec is None:
        return set()
    if response.get("redacted") is not None:
        return set(response["redacted"])
    if isinstance(spec.get("findings"), list):
        return set(spec["findings"])
    return certified_secrets(root, response)


def certified_secrets(root: Path, response: dict) -> set[str]:
    """The fingerprints of the secrets a certificate says its request removed (its own, not the
    earlier secrets of a chain it kept down), or none when the file is gone or not the recorded one."""
    path = Path(root) / str(response.get("certificate") or "")
    if not response.get("certificate") or not path.is_file():
        return set()
    body = path.read_bytes()
    if hashlib.sha256(body).hexdigest() != response.get("certificate_sha256"):
        return set()
    rows = ((json.loads(body).get("fidelity") or {}).get("secrets")) or []
    return {r["fingerprint"] for r in rows if "fingerprint" in r and "earlier_requests" not in r}


def removed_on_dataset(root: Path, dataset: str, removed: Callable) -> dict[str, set[str]]:
    """Completed ledger request id → what `removed(record)` says it removed (skipped when nothing),
    of the requests on models trained on `dataset`."""
    if not ledger_exists(root):
        return {}
    from tasks import ledger  # here: a project without a ledger never loads it (nor MLflow)

    by_request = {r.id: (r.request.get("model"), ids)
                  for r in ledger.list_requests(root, status="completed") if (ids := removed(r))}
    on_dataset = {model for model in {m for m, _ in by_request.values()} if trained_on(root, model, dataset)}
    return {request: ids for request, (model, ids) in by_request.items() if model in on_dataset}


def deleted_records(plan) -> dict[str, set[str]]:
    """Covered request id → the record ids it deleted: a ledger request's from its recorded nature, one
    made with `unlearn forget` outside the ledger from its sealed escrow (tasks.audit.escrow_content;
    escrows sealed before it kept them hold none, and cannot be checked)."""
    deleted = {r.id: set((r.request or {}).get("delete_records") or ()) for r in plan.records}
    for escrowed in plan.escrows:
        if set(escrowed["requests"]) & deleted.keys():  # a ledger batch's: its members' own records are above
            continue
        for request in escrowed["requests"]:
            deleted.setdefault(request, set()).update(escrowed.get("delete_records") or ())
    return deleted


def escrowed_secrets(plan) -> dict[str, set[str]]:
    """Covered request id → the fingerprints of the secrets its sealed escrow holds (each secret's own
    requests of the batch): a request made with `unlearn forget` outside the ledger, and a ledger
    request completed by older code that recorded none."""
    found: dict[str, set[str]] = {}
    for escrowed in plan.escrows:
        for secret in escrowed.get("secrets") or ():
            for request in secret.get("requests", escrowed["requests"]):
                found.setdefault(request, set()).add(secret["fingerprint"])
    return found


def merged(*removals: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for removal in removals:
        for request, ids in removal.items():
            out.setdefault(request, set()).update(ids)
    return out


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
