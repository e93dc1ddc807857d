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

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml
from prefect import flow

from flows.forget import forget_flow
from tasks import ledger, release, steps, tracking
from tasks import references as prefetch
from unlearning import signing
from unlearning.batching import group_requests, merge_requests
from unlearning.errors import UnlearnError
from unlearning.requests import load_request
from unlearning.verify import describe_failures

LOCK_FILE = ".unlearn/comply.lock"
CERTIFICATES = ".unlearn/certificates"
BATCHES = ".unlearn/batches"


class ComplyBusy(UnlearnError):
    """Another comply run holds the lock."""


@contextmanager
def comply_lock(root: Path):
    """An exclusive advisory lock on .unlearn/comply.lock, held for the whole run; a second run
    does not wait: it stops with a message naming the holder (its requests stay pending)."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ComplyBusy(f"another `unlearn comply` run is in progress (pid {holder}); "
                             f"its requests are being processed — run again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    digest = hashlib.sha256(",".join(sorted(r.id for r in requests)).encode()).hexdigest()[:10]
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
        return prefetch.retrain_references.with_options(task_runner=task_runner)(
            root=str(root), request_paths=[str(p) for p in paths], threads=threads)
    except Exception as exc:  # noqa: BLE001 — e.g. the local cluster cannot start: verify inline
        steps.progress(f"  warning: the {runner} task runner failed ({first_line(exc)}); "
                       f"each batch retrains its reference inline")
        return {}


def process_batch(root: Path, requests: list, keep_days: int | None = None, path: Path | None = None,
                  error: str | None = None) -> list[dict]:
    """One forget run for a batch (its merged request file `path`, written now if not given);
    ledger + certificates per request. Never raises for a request's own failure: it is recorded as
    `failed` with the reason (`error`: the batch already failed before its run)."""
    try:
        if error is not None:
            raise UnlearnError(error)
        path = path or batch_file(root, requests)
        summary = forget_flow(root=str(root), request_path=str(path), keep_superseded_days=keep_days)
    except Exception as exc:  # noqa: BLE001 — any step's failure is recorded, the run goes on
        results = [fail(root, r, first_line(exc)) for r in requests]
    else:
        results = complete_batch(root, requests, summary)
    if path is not None:
        manifest_path(root, path.stem).unlink(missing_ok=True)
    return results


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def complete_batch(root: Path, requests: list, summary: dict, members: list[str] | None = None) -> list[dict]:
    """Ledger + signed certificate per request from a batch's forget summary (`members`: every
    request of the batch, for the certificates; default the requests given)."""
    ids = members or [r.id for r in requests]
    if not summary.get("verified"):
        failed = describe_failures([c for c in summary.get("checks", []) if not c["passed"]])
        return [fail(root, r, f"verification failed ({failed}); nothing promoted") for r in requests]
    batch_cert = tracking.load_json(summary["run_id"], "certificate.json") or {}
    plots = tracking.run_plots(summary["run_id"])  # embedded in every member's HTML report
    out = []
    for request in requests:
        record = ledger.show(root, request.id)
        cert = request_certificate(batch_cert, request, record, summary["request_id"], ids)
        cert_path = write_certificate(root, cert, plots)
        model = {"name": summary["model"]["name"], "version": summary["model"]["version"]}
        ledger.transition(root, request.id, "completed", certificate=str(cert_path.relative_to(root)),
                          certificate_sha256=hashlib.sha256(cert_path.read_bytes()).hexdigest(),
                          model=model, guarantee=summary["guarantee"], method=summary["method"],
                          data=summary["data"], run_id=summary["run_id"])
        out.append({"id": request.id, "status": "completed", "model": model,
                    "certificate": str(cert_path.relative_to(root)), "batch": summary["request_id"]})
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
    with comply_lock(root_path):
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
