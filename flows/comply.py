"""Flow `comply`: every pending request in the ledger → one batched update per model → a signed
certificate per request → the ledger updated.

The recipe, under a lock (one comply run at a time):
  recover what a killed run left (its release rolled back or committed; requests of a batch it
  promoted completed from the batch's recorded result; other `processing` requests failed as
  interrupted: pending again) → purge the superseded artifacts whose "beyond use" date
  has come → claim the pending requests (ledger: received|failed → processing; a request another
  run claimed is skipped) → group them per model into mergeable batches → with a Dask task
  runner, every batch's verification reference trained at once (tasks.references) → each batch,
  in order, through the `forget` flow (corrected data, update, verification, registration, promotion, purge) → per
  request: the batch's certificate narrowed to it, signed (HMAC-SHA256) with an HTML report →
  ledger: completed (with the certificate) or failed (with the reason; a later run retries).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from prefect import flow

from flows.forget import forget_flow
from flows.settings import private_tempdir
from tasks import dvc, ledger, release, steps, tracking
from flows.references import retrain_references
from tasks import references as prefetch
from unlearning import certificate as cert_lib
from unlearning import signing
from unlearning.batching import group_requests, merge_requests
from unlearning.errors import UnlearnError
from unlearning.requests import load_request
from unlearning.verify import describe_failures

CERTIFICATES = ".unlearn/certificates"
BATCHES = ".unlearn/batches"


ComplyBusy = release.ProjectBusy  # another comply (or forget) run holds the project lock


def comply_lock(root: Path):
    """The project lock (tasks.release.project_lock), held for the whole run; a second run does
    not wait: it stops with a message naming the holder (its requests stay pending)."""
    return release.project_lock(root, "comply")


def claim_pending(root: Path) -> list:
    """Move every pending request to `processing`; those another run claimed first are skipped."""
    claimed = []
    for record in ledger.pending(root):
        try:
            ledger.transition(root, record.id, "processing")
        except UnlearnError:
            continue
        claimed.append(ledger.load_submitted(root, record.id))
    return claimed


def reclaim_stale(root: Path) -> list[dict]:
    """Requests left `processing` by a comply run that was killed: the lock proves no run is
    processing them now, so they are recorded as failed (interrupted) and become pending again."""
    reclaimed = []
    for record in ledger.list_requests(root, status="processing"):
        ledger.transition(root, record.id, "failed", step="recovery",
                          reason="interrupted: the comply run processing it stopped; reclaimed by a later run")
        reclaimed.append({"id": record.id, "outcome": "reclaimed", "since": record.entries[-1].at})
    return reclaimed


def due_purges(root: Path) -> list[dict]:
    """Superseded artifacts kept "beyond use" whose purge date has come, purged now."""
    if not tracking.store_exists(root):
        return []
    tracking.connect(root)
    return release.enforce_due_purges(root)


def batch_file(root: Path, requests: list) -> Path:
    """The merged request of a batch, written where `forget` reads request files from, and its
    manifest (batch id → member ids), which lets a later run finish the batch if this process
    dies between the promotion and the ledger's `completed` entries."""
    # over the content, not the ids alone: a batch retried without the parts that change nothing
    # must not reuse the id of the one first written
    members = json.dumps(sorted((r.model_dump() for r in requests), key=lambda m: m["id"]), sort_keys=True, default=str)
    digest = hashlib.sha256(members.encode()).hexdigest()[:10]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    merged = merge_requests(requests, f"BATCH-{stamp}-{digest}")
    path = root / ".unlearn" / "requests" / f"{merged.id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged.model_dump(exclude_none=True), sort_keys=False))
    manifest = manifest_path(root, merged.id)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"batch": merged.id, "request": str(path.relative_to(root)),
                                    "members": [r.id for r in requests]}))
    return path


def manifest_path(root: Path, batch_id: str) -> Path:
    return root / BATCHES / f"{batch_id}.json"


def finish_promoted_batches(root: Path) -> list[dict]:
    """Batches a killed run left behind: members still `processing` whose batch was promoted are
    completed from the batch's recorded result (their records are gone: rerunning them would fail);
    the rest is left to `reclaim_stale`."""
    finished = []
    for path in sorted((root / BATCHES).glob("*.json")) if (root / BATCHES).exists() else []:
        manifest = json.loads(path.read_text())
        stale = [m for m in manifest["members"] if ledger.show(root, m).status == "processing"]
        summary = promoted_result(root, root / manifest["request"]) if stale else None
        if summary is not None:
            requests = [ledger.load_submitted(root, m) for m in stale]
            finished += [{**r, "outcome": "completed after an interrupted run"}
                         for r in complete_batch(root, requests, summary, manifest["members"])]
        path.unlink()
    return finished


def promoted_result(root: Path, merged_path: Path) -> dict | None:
    """The recorded result of a merged batch request whose model version was promoted, or None."""
    if not merged_path.exists() or not tracking.store_exists(root):
        return None
    tracking.connect(root)
    try:
        return steps.earlier_result(root, load_request(merged_path))
    except UnlearnError:
        return None


def request_certificate(batch_cert: dict, request, record, batch_id: str, members: list[str]) -> dict:
    """The batch's certificate narrowed to one request: its own ids, its ledger timestamps."""
    own = {"id": request.id, "request_hash": record.request_hash, "kinds": request.kinds(),
           "delete_records": sorted(request.delete_records), "revoke_features": sorted(request.revoke_features),
           "fix_labels": sorted(request.fix_labels),
           "redact": request.redact.model_dump() if request.redact is not None else None,
           "forget_class": request.forget_class}
    return {**batch_cert, "request": own,
            "batch": {"id": batch_id, "requests": members},
            "timestamps": {"received": record.received.isoformat(), "deadline": record.deadline.isoformat(),
                           "completed": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "channel": record.channel}


def write_certificate(root: Path, cert: dict, plots: dict | None = None) -> Path:
    """Sign the certificate, write it (JSON) and its HTML report under .unlearn/certificates/."""
    signed = signing.sign(cert, signing.signing_key(root))
    path = root / CERTIFICATES / f"{cert['request']['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    signing.write_signed(path, signed)
    path.with_suffix(".html").write_text(signing.certificate_html(signed, plots), encoding="utf-8")
    return path


def write_batches(root: Path, batches: list[list]) -> list[tuple[list, Path | None, str | None]]:
    """(requests, merged request file, None) per batch; a batch whose file cannot be written gets
    (requests, None, the reason) and is failed when its turn comes."""
    out = []
    for requests in batches:
        try:
            out.append((requests, batch_file(root, requests), None))
        except Exception as exc:  # noqa: BLE001 — recorded per request, the run goes on
            out.append((requests, None, first_line(exc)))
    return out


def prefetch_references(root: Path, paths: list[Path], runner: str, address: str | None,
                        workers: int | None) -> dict:
    """Every batch's verification reference trained at once on the chosen task runner (see
    tasks.references): {job key: reference}. Inline (the default) prefetches nothing."""
    if runner == "inline" or not paths:
        return {}
    steps.progress(f"  retraining {len(paths)} verification reference(s) on the {runner} task runner ...")
    problem = prefetch.unreachable(address) if address else None
    if problem is not None:
        steps.progress(f"  warning: the Dask scheduler {address} cannot be reached ({problem}); "
                       f"each batch retrains its reference inline")
        return {}
    try:
        task_runner, threads = prefetch.make_task_runner(runner, address, workers)
        return retrain_references.with_options(task_runner=task_runner)(
            root=str(root), request_paths=[str(p) for p in paths], threads=threads)
    except Exception as exc:  # noqa: BLE001 — e.g. the local cluster cannot start: verify inline
        steps.progress(f"  warning: the {runner} task runner failed ({first_line(exc)}); "
                       f"each batch retrains its reference inline")
        return {}


def process_batch(root: Path, requests: list, keep_days: int | None = None, path: Path | None = None,
                  error: str | None = None) -> list[dict]:
    """One forget run for a batch (its merged request file `path`, written now if not given);
    ledger + certificates per request. Never raises for a request's own failure: it is recorded as
    `failed` with the reason (`error`: the batch already failed before its run). Parts of a
    request that change nothing (a label already as asked, a record an earlier request erased)
    are set aside first; when a batch of several fails, the requests that fail on their own are
    found and failed alone, and the others are processed without them."""
    if error is not None:
        return [fail(root, r, error) for r in requests]
    notes = no_change_notes(root, requests)
    todo = [(r, narrowed(r, notes.get(r.id))) for r in requests]
    results = [complete_unchanged(root, r, notes[r.id]) for r, n in todo if n is None]
    active = [(r, n) for r, n in todo if n is not None]
    if not active:
        return results
    if path is not None and any(r.id in notes for r, _ in active):
        manifest_path(root, path.stem).unlink(missing_ok=True)  # written before the notes were known
        path = None
    try:
        path = path or batch_file(root, [n for _, n in active])
        summary = forget_flow(root=str(root), request_path=str(path), keep_superseded_days=keep_days)
        problem = None if summary.get("verified") else verification_failure(summary)
    except Exception as exc:  # noqa: BLE001 — any step's failure is recorded, the run goes on
        if environment_error(exc):
            for request, _ in active:
                fail_quietly(root, request, first_line(exc))
            raise
        problem = first_line(exc)
    originals = [r for r, _ in active]
    if problem is None:
        results += complete_batch(root, originals, summary, notes=notes)
    elif len(originals) == 1:
        results.append(fail(root, originals[0], problem))
    if path is not None:
        manifest_path(root, path.stem).unlink(missing_ok=True)  # the ledger has every member's outcome
    if problem is not None and len(originals) > 1:
        results += find_culprits(root, originals, keep_days)
    return results


def find_culprits(root: Path, requests: list, keep_days: int | None) -> list[dict]:
    """A batch of several failed: the requests the current data refuses on their own fail alone
    and the rest is processed again as one batch; when each is valid alone (a failed verification,
    a step's error), they are processed one at a time, in the order received."""
    refused = {r.id: why for r in requests if (why := plan_problem(root, r)) is not None}
    results = [fail(root, r, refused[r.id]) for r in requests if r.id in refused]
    rest = [r for r in requests if r.id not in refused]
    if refused:
        return results + (process_batch(root, rest, keep_days) if rest else [])
    for request in rest:
        results += process_batch(root, [request], keep_days)
    return results


def plan_problem(root: Path, request) -> str | None:
    """Why the request alone cannot be planned against the current data and model, or None
    (nothing is written but a private copy of the request, removed at once)."""
    alone = narrowed(request, no_change_notes(root, [request]).get(request.id))
    if alone is None:
        return None
    path = root / ".unlearn" / "requests" / f"CHECK-{request.id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(alone.model_dump(exclude_none=True), sort_keys=False))
    try:
        steps.plan_request.fn(root, path)
    except Exception as exc:  # noqa: BLE001 — whatever stops its plan is the request's reason
        if environment_error(exc):
            raise
        return first_line(exc)
    finally:
        path.unlink(missing_ok=True)
    return None


def verification_failure(summary: dict) -> str:
    failed = describe_failures([c for c in summary.get("checks", []) if not c["passed"]])
    return f"verification failed ({failed}); nothing promoted"


def environment_error(exc: BaseException) -> bool:
    """A full disk or a project that cannot be written: no request is at fault, every later step
    would fail the same way, so the run stops (see flows.cli)."""
    return release.unwritable_cause(exc) is not None


def fail_quietly(root: Path, request, reason: str) -> None:
    """Record the failure if the ledger can still be written; else the next run reclaims it."""
    try:
        fail(root, request, reason)
    except Exception:  # noqa: BLE001 — the run is stopping for a reason already being reported
        pass


# --- parts of a request that change nothing ---------------------------------------------------

UNCHANGED_LABEL = "label already as requested: nothing to change"


def no_change_notes(root: Path, requests: list) -> dict[str, dict[str, str]]:
    """Per request id, the records the corrected data would not change, with why: a relabelled
    record already carries the label asked for, or an earlier completed request erased a record
    this one relabels or deletes (two requests naming one record, the second batched after the
    first). Label values are not repeated (the certificate names record ids only)."""
    touching = [r for r in requests if r.fix_labels or r.delete_records]
    table = current_table(root, touching[0].model) if touching else None
    if table is None:
        return {}
    erased: dict[str, str] | None = None
    notes: dict[str, dict[str, str]] = {}
    for request in touching:
        for record, label in [*request.fix_labels.items(), *((r, None) for r in request.delete_records)]:
            if record in table.frame.index:
                if label is not None and str(table.frame.at[record, table.target]) == str(label):
                    notes.setdefault(request.id, {})[record] = UNCHANGED_LABEL
                continue
            erased = erased_records(root, request.model) if erased is None else erased
            if record in erased:
                left = "relabel" if label is not None else "erase"
                notes.setdefault(request.id, {})[record] = (f"record erased by request {erased[record]}: "
                                                            f"nothing left to {left}")
    return notes


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


def complete_unchanged(root: Path, request, notes: dict[str, str]) -> dict:
    """A request none of whose parts changes the data: completed without a run, its certificate
    naming the production version it leaves as it is and, per record, why nothing changed."""
    tracking.connect(root)
    production = tracking.require_production(request.model, root)
    version = dvc.data_version(root)
    cert = {"format": cert_lib.FORMAT, "issued_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": "none", "guarantee": "no change",
            "model": {"name": request.model, "version": str(production.version), "run_id": production.run_id},
            "data": {"before": version, "after": version}, "checks": [], "verified": True, "superseded": []}
    record = ledger.show(root, request.id)
    cert = {**request_certificate(cert, request, record, request.id, [request.id]),
            "unchanged": unchanged_entries(notes)}
    cert_path = write_certificate(root, cert)
    model = {"name": request.model, "version": str(production.version)}
    ledger.transition(root, request.id, "completed", certificate=str(cert_path.relative_to(root)),
                      certificate_sha256=hashlib.sha256(cert_path.read_bytes()).hexdigest(), model=model,
                      guarantee="no change", method="none", data=cert["data"])
    return {"id": request.id, "status": "completed", "model": model, "certificate": str(cert_path.relative_to(root)),
            "batch": None, "unchanged": notes}


def unchanged_entries(notes: dict[str, str]) -> list[dict]:
    return [{"record": record, "reason": why} for record, why in sorted(notes.items())]


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def complete_batch(root: Path, requests: list, summary: dict, members: list[str] | None = None,
                   notes: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """Ledger + signed certificate per request from a batch's forget summary (`members`: every
    request of the batch, for the certificates; default the requests given; `notes`: per request,
    the records left unchanged and why)."""
    ids = members or [r.id for r in requests]
    notes = notes or {}
    if not summary.get("verified"):
        return [fail(root, r, verification_failure(summary)) for r in requests]
    batch_cert = tracking.load_json(summary["run_id"], "certificate.json") or {}
    plots = tracking.run_plots(summary["run_id"])  # embedded in every member's HTML report
    out = []
    for request in requests:
        record = ledger.show(root, request.id)
        cert = request_certificate(batch_cert, request, record, summary["request_id"], ids)
        if request.id in notes:
            cert["unchanged"] = unchanged_entries(notes[request.id])
        cert_path = write_certificate(root, cert, plots)
        model = {"name": summary["model"]["name"], "version": summary["model"]["version"]}
        ledger.transition(root, request.id, "completed", certificate=str(cert_path.relative_to(root)),
                          certificate_sha256=hashlib.sha256(cert_path.read_bytes()).hexdigest(),
                          model=model, guarantee=summary["guarantee"], method=summary["method"],
                          data=summary["data"], run_id=summary["run_id"])
        out.append({"id": request.id, "status": "completed", "model": model,
                    "certificate": str(cert_path.relative_to(root)), "batch": summary["request_id"],
                    **({"unchanged": notes[request.id]} if request.id in notes else {})})
    return out


def fail(root: Path, request, reason: str) -> dict:
    ledger.transition(root, request.id, "failed", reason=reason)  # pending again: a later run retries
    return {"id": request.id, "status": "failed", "reason": reason, "model": {"name": request.model, "version": None},
            "certificate": None}


@flow(name="comply", log_prints=False)
def comply_flow(root: str, keep_superseded_days: int | None = None, task_runner: str | None = None,
                dask_address: str | None = None, workers: int | None = None) -> dict:
    """Process every pending erasure request (see the module doc). Returns {"requests": [...],
    "recovered": [...], "purged": [...], "references": {...}}. `keep_superseded_days`: as `forget`'s.
    `task_runner`: inline (default; UNLEARN_TASK_RUNNER) or dask — train every batch's
    verification reference at once on that Prefect task runner before the batches are released
    (`dask_address`: an existing Dask scheduler, else a local cluster of `workers` processes)."""
    root_path = Path(root)
    keep_days = release.keep_days_setting(keep_superseded_days)
    runner, address = prefetch.runner_setting(task_runner, dask_address)
    workers = prefetch.check_workers(workers)
    # its own temp folder here too: a deployment's run does not start from the CLI (flows.cli.main)
    with private_tempdir(root_path), comply_lock(root_path):
        recovered = release.recover(root_path) + finish_promoted_batches(root_path) + reclaim_stale(root_path)
        purged = due_purges(root_path)
        claimed = claim_pending(root_path)
        batches = write_batches(root_path, group_requests(claimed))
        started = time.perf_counter()
        pool = prefetch_references(root_path, [p for _, p, _ in batches if p is not None], runner, address, workers)
        prefetched, prefetch_s = len(pool), time.perf_counter() - started
        results = []
        with prefetch.prefetched(pool):
            for requests, path, error in batches:
                results += process_batch(root_path, requests, keep_days, path, error)
    references = {"task_runner": runner, "prefetched": prefetched, "used": prefetched - len(pool),
                  "seconds": round(prefetch_s, 1)}
    return {"requests": results, "processed": len(results), "failed": sum(r["status"] == "failed" for r in results),
            "recovered": recovered, "purged": purged, "references": references}
