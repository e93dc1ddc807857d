"""Flow `comply`: every pending request in the ledger → one batched update per model → a signed
certificate per request → the ledger updated.

The recipe, under the project lock (one comply run at a time):
  recover what a killed run left (tasks.release: its release rolled back or committed;
  tasks.batches: requests of a batch it promoted completed from the batch's recorded result,
  other `processing` requests failed as interrupted: pending again) → purge the superseded
  artifacts whose "beyond use" date has come → claim the pending requests (ledger: received|failed
  → processing; a request another run claimed is skipped) → group them per model into mergeable
  batches (unlearning.compliance.batching), each written as a merged request with its manifest → with a Dask
  task runner, every batch's verification reference trained at once (tasks.references) → each
  batch, in order: the parts that change nothing set aside (tasks.unchanged), the rest through
  the `forget` flow (corrected data, update, verification, registration, promotion, purge) → per
  request (tasks.outcomes, tasks.certificates): the batch's certificate narrowed to it, signed
  (HMAC-SHA256) with an HTML report, ledger: completed (with the certificate) or failed (with the
  reason; a later run retries). A batch of several that fails is split: the requests refused on
  their own fail alone, the rest run again.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import SecretStr

from flows.forget import forget_flow
from flows.references import retrain_references
from flows.runs import failed_run, outcome_flow, rename_current_run, requests_label
from flows.settings import private_tempdir
from tasks import batches, erased_rows, outcomes, release, unchanged
from tasks import references as prefetch
from tasks.kinds.base import check_verify_mode_name
from unlearning.compliance.batching import group_requests, narrowed, retry_groups
from unlearning.devices import resolve_device
from unlearning.errors import failure_reason


def process_batch(root: Path, requests: list, keep_days: int | None = None, path: Path | None = None,
                  error: str | None = None, verify: str | None = None, device: str = "auto") -> list[dict]:
    """One forget run for a batch (its merged request file `path`, written now if not given);
    ledger + certificates per request (tasks.outcomes). Never raises for a request's own failure:
    it is recorded as `failed` with the reason (`error`: the batch already failed before its run).
    The parts of a request that change nothing are set aside first (tasks.unchanged); a batch of
    several that fails is split (`split_failed_batch`). `verify`: forget's verification mode."""
    if error is not None:
        return [outcomes.fail(root, r, error) for r in requests]
    notes = unchanged.no_change_notes(root, requests)
    rest = {r.id: left for r in requests if (left := narrowed(r, notes.get(r.id))) is not None}
    results = [outcomes.complete_unchanged(root, r, notes[r.id]) for r in requests if r.id not in rest]
    active = [r for r in requests if r.id in rest]
    if not active:
        return results
    if any(r.id in notes for r in active):
        batches.drop_manifest(root, path)  # written before the notes were known: the batch is written anew
        path = None
    # the deleted rows hashed while the data still holds them: their entries keep them out of every dataset
    rows = erased_rows.deleted_rows(root, [rest[r.id] for r in active])
    path, summary, problem = run_forget(root, active, [rest[r.id] for r in active], path, keep_days, verify, device,
                                        rows)
    if problem is None:
        results += outcomes.complete_batch(root, active, summary, notes=notes, rows=rows)
    elif len(active) == 1:
        results.append(outcomes.fail(root, active[0], problem))
    batches.drop_manifest(root, path)  # the ledger has every member's outcome
    if problem is not None and len(active) > 1:
        results += split_failed_batch(root, active, keep_days, verify, device)
    return results


def split_failed_batch(root: Path, requests: list, keep_days: int | None, verify: str | None = None,
                       device: str = "auto") -> list[dict]:
    """A batch of several failed: the requests the current data refuses on their own fail alone
    with their reason, the others are processed again (`unlearning.compliance.batching.retry_groups`)."""
    refused = batches.refused_alone(root, requests, verify)
    results = [outcomes.fail(root, r, refused[r.id]) for r in requests if r.id in refused]
    for group in retry_groups(requests, set(refused)):
        results += process_batch(root, group, keep_days, verify=verify, device=device)
    return results


def run_forget(root: Path, requests: list, merged: list, path: Path | None, keep_days: int | None,
               verify: str | None = None, device: str = "auto",
               rows: dict[str, dict] | None = None) -> tuple[Path | None, dict | None, str | None]:
    """The forget run of the batch of `requests` (as `merged`: without their parts that change
    nothing), its request file `path` written first if not given: (that file, the run's summary,
    None when verified, else why it failed). `rows`: the deleted images' hashes, kept in the batch's
    manifest for a run that finishes it after a kill. A full disk or an unwritable project is no request's
    fault: the requests are failed and the comply run stops. A run that raised after its promotion ends
    with the result its release logged (`batches.finished_in_place`); one whose release could not be
    finished, even on a second try, stops the comply run with its requests left `processing`
    (tasks.release.finish_left_open): the next run's recovery decides them."""
    try:
        path = path or batches.batch_file(root, merged)
        batches.keep_erased_rows(root, path, rows)
        summary = forget_flow(root=str(root), request_path=str(path), keep_superseded_days=keep_days,
                              members=[r.id for r in requests], verify=verify, device=device)
    except Exception as exc:  # noqa: BLE001 — any step's failure is recorded, the run goes on
        # after its promotion the records are gone: failed, its requests would fail on every retry
        finished = batches.finished_in_place(root, path, requests)
        # its release left open: finished once more now (ReleaseLeftOpen, stopping the run, if that fails too)
        if finished is None and release.finish_left_open(root, exc):
            finished = batches.finished_in_place(root, path, requests)
        if finished is not None:
            return path, finished, None
        if batches.environment_error(exc):
            for request in requests:
                outcomes.fail_quietly(root, request, failure_reason(exc))
            raise
        return path, None, failure_reason(exc)
    return path, summary, None if summary.get("verified") else outcomes.verification_failure(summary)


def prefetch_references(root: Path, paths: list[Path], runner: str, address: str | None,
                        workers: int | None, verify: str | None = None) -> dict:
    """Every batch's verification reference trained at once on the chosen task runner (see
    tasks.references): {job key: reference}. Inline (the default) prefetches nothing, and neither
    does any mode but `--verify reference`: the other modes train no model per request (an `auto`
    update that fails its checks retrains inline, for its batch alone)."""
    if runner == "inline" or not paths or verify != "reference":
        return {}
    return prefetch.run_on_task_runner(retrain_references, runner, address, workers,
                                       f"{len(paths)} verification reference(s)", "each batch retrains its reference inline",
                                       root=str(root), request_paths=[str(p) for p in paths])


@outcome_flow(name="comply", flow_run_name="comply", log_prints=False)
def comply_flow(root: str, keep_superseded_days: int | None = None, task_runner: str | None = None,
                dask_address: SecretStr | str | None = None, workers: int | None = None,
                verify: str | None = None, device: str = "auto") -> dict:
    """Process every pending erasure request (see the module doc). Returns {"requests": [...],
    "recovered": [...], "purged": [...], "references": {...}}. `keep_superseded_days`: as `forget`'s.
    `task_runner`: inline (default; UNLEARN_TASK_RUNNER) or dask — train every batch's
    verification reference at once on that Prefect task runner before the batches are released
    (`dask_address`: an existing Dask scheduler, else a local cluster of `workers` processes).
    The run is renamed after the requests it claimed, and ends Failed when any of them failed
    (called from Python it still returns the summary: flows.runs). `verify`: how each batch's update is
    verified (tasks.kinds.base.VERIFY_MODES; None: each model's default); references are trained,
    and prefetched on a task runner, only with `reference`. `device`: as `forget`'s (references
    prefetched on a task runner train on its workers' CPUs)."""
    root_path = Path(root)
    keep_days = release.keep_days_setting(keep_superseded_days)
    runner, address = prefetch.runner_setting(task_runner, dask_address)
    workers = prefetch.check_workers(workers)
    check_verify_mode_name(verify)  # a deployment run with a bad mode fails here, before anything is claimed
    resolve_device(device)  # and one with a device this machine lacks
    # its own temp folder here too: a deployment's run does not start from the CLI (flows.cli.main)
    with private_tempdir(root_path), release.release_lock(root_path, "comply", report=False) as released:
        recovered = released + batches.finish_promoted_batches(root_path) + batches.reclaim_stale(root_path)
        purged = release.due_purges(root_path)
        claimed = batches.claim_pending(root_path)
        rename_current_run(f"comply {requests_label(r.id for r in claimed)}" if claimed else "comply (nothing pending)")
        written = batches.write_batches(root_path, group_requests(claimed))
        started = time.perf_counter()
        pool = prefetch_references(root_path, [p for _, p, _ in written if p is not None], runner, address, workers,
                                   verify)
        prefetched, prefetch_s = len(pool), time.perf_counter() - started
        results = []
        with prefetch.prefetched(pool):
            for requests, path, error in written:
                results += process_batch(root_path, requests, keep_days, path, error, verify, device)
    references = {"task_runner": runner, "prefetched": prefetched, "used": prefetched - len(pool),
                  "seconds": round(prefetch_s, 1)}
    summary = {"requests": results, "processed": len(results), "failed": sum(r["status"] == "failed" for r in results),
               "recovered": recovered, "purged": purged, "references": references}
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        reasons = "; ".join(f"{r['id']}: {r['reason']}" for r in failed)
        return failed_run(f"{len(failed)} of {len(results)} request(s) failed — {reasons}"[:1000], summary)
    return summary
