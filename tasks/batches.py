"""A comply run's batches on disk and in the ledger: claiming the pending requests, writing each
batch's merged request and its manifest, and finishing what a killed run left.

A batch is one merged request (`unlearning.compliance.batching`) written as `.unlearn/requests/<batch id>.yaml`,
where `forget` reads request files from, with a manifest `.unlearn/batches/<batch id>.json`
(batch id → member ids). The manifest lives until every member's outcome is in the ledger: one
left behind means the run died in between, and if its batch was promoted the next run completes
the members from the batch's recorded result (their records are gone: rerunning them would fail).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tasks import ledger, outcomes, release, state, steps, tracking
from tasks.common import earlier_result, request_hash
from tasks.unchanged import no_change_notes
from unlearning.compliance.batching import batch_id, merge_requests, narrowed
from unlearning.compliance.requests import load_request
from unlearning.errors import UnlearnError, failure_reason

BATCHES = ".unlearn/batches"


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


def batch_file(root: Path, requests: list) -> Path:
    """The merged request of a batch, written where `forget` reads request files from, and its
    manifest, which lets a later run finish the batch if this process dies between the promotion
    and the ledger's `completed` entries."""
    merged = merge_requests(requests, batch_id(requests, datetime.now(timezone.utc)))
    path = root / ".unlearn" / "requests" / f"{merged.id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged.model_dump(exclude_none=True), sort_keys=False))
    write_manifest(root, {"batch": merged.id, "request": str(path.relative_to(root)),
                          "members": [r.id for r in requests]})
    return path


def manifest_path(root: Path, batch: str) -> Path:
    return root / BATCHES / f"{batch}.json"


def write_manifest(root: Path, manifest: dict) -> None:
    """Whole or absent: the next run reads it after a kill at any point."""
    ledger.write_private_json(manifest_path(root, manifest["batch"]), manifest)


def keep_erased_rows(root: Path, path: Path, rows: dict[str, dict]) -> None:
    """The deleted images' salted hashes (tasks.erased_rows), taken before the run, kept in the
    batch's manifest too: a run killed between the promotion and the ledger entries leaves them
    there for the next run, which completes the members (`finish_promoted_batches`) when the data
    no longer holds the images to hash."""
    manifest = manifest_path(root, path.stem)
    if rows and manifest.exists():
        write_manifest(root, {**json.loads(manifest.read_text()), "erased_rows": rows})


def drop_manifest(root: Path, path: Path | None) -> None:
    """Forget the manifest of the batch whose merged request is `path`: the ledger has (or is about
    to be given) every member's outcome, or the batch was written over."""
    if path is not None:
        manifest_path(root, path.stem).unlink(missing_ok=True)


def write_batches(root: Path, batches: list[list]) -> list[tuple[list, Path | None, str | None]]:
    """(requests, merged request file, None) per batch; a batch whose file cannot be written gets
    (requests, None, the reason) and is failed when its turn comes."""
    out = []
    for requests in batches:
        try:
            out.append((requests, batch_file(root, requests), None))
        except Exception as exc:  # noqa: BLE001 — recorded per request, the run goes on
            out.append((requests, None, failure_reason(exc)))
    return out


def finish_promoted_batches(root: Path) -> list[dict]:
    """Batches a killed run left behind: members still `processing` whose batch was promoted are
    completed from the batch's recorded result; the rest is left to `reclaim_stale`."""
    finished = []
    for unfinished in (root / BATCHES).glob(".*.tmp") if (root / BATCHES).exists() else []:
        unfinished.unlink(missing_ok=True)  # a manifest whose writer was killed before its rename (the lock: none runs now)
    for path in sorted((root / BATCHES).glob("*.json")) if (root / BATCHES).exists() else []:
        manifest = json.loads(path.read_text())
        stale = [m for m in manifest["members"] if ledger.show(root, m).status == "processing"]
        summary = promoted_result(root, root / manifest["request"]) if stale else None
        requests = [ledger.load_submitted(root, m) for m in stale] if summary is not None else []
        if summary is not None and not completes_from(summary, requests):
            summary = None  # left to reclaim_stale, as before the recovery wrote results
        if summary is not None:
            finished += [{**r, "outcome": "completed after an interrupted run"}
                         for r in outcomes.complete_batch(root, requests, summary, manifest["members"],
                                                          rows=manifest.get("erased_rows"))]
        path.unlink()
    return finished


def completes_from(summary: dict, requests: list) -> bool:
    """Whether the members can be completed from the batch's result: a result the recovery rebuilt
    from a killed run's registered version (tasks.release.interrupted_result) lacks what a redaction's
    or a class forgetting's `completed` entry records for the gates (the fingerprints it redacted,
    the class name it resolved to: tasks.outcomes), so such members are reclaimed instead."""
    return not summary.get("interrupted") or not any(r.redact is not None or getattr(r, "forget_class", None)
                                                     is not None for r in requests)


def finished_in_place(root: Path, merged_path: Path | None, requests: list) -> dict | None:
    """The result of a batch whose forget run raised after its promotion, which the run's release
    logged finishing in place as for a killed run (tasks.release), when its members can be completed
    from it (`completes_from`); else None: not promoted, or left to be failed as before."""
    summary = promoted_result(root, merged_path) if merged_path is not None else None
    return summary if summary is not None and completes_from(summary, requests) else None


def promoted_result(root: Path, merged_path: Path) -> dict | None:
    """The recorded result of a merged batch request whose model version was promoted, or None. Which
    forget run processed the batch, and that its version was verified, come from the project's signed
    copy of the run's certificate (state.runs_certifying), never from the version's MLflow tags where
    such a copy exists: a tag rewritten to `verified` or to another run would complete the members of
    a batch that removed nothing. The tags (earlier_result) only where no copy names the batch: one
    certified before copies were kept, or whose certificate could not be logged (its run raised past
    its promotion, and logging it failed again at the release's end: nothing else says it was
    promoted). AlteredState when the copy naming the batch does not verify: the members stay
    `processing`."""
    if not merged_path.exists() or not tracking.store_exists(root):
        return None
    tracking.connect(root)
    request = load_request(merged_path)
    certified = state.runs_certifying(root, request.id)
    if certified:
        return certified_result(root, request, certified)
    try:
        return earlier_result(root, request)
    except UnlearnError:
        return None


def certified_result(root: Path, request, certified: list[tuple[str, dict]]) -> dict | None:
    """The result of the run whose signed certificate says it verified this very request (its salted
    hash) and so was promoted; None when none did."""
    digest = request_hash(root, request)
    runs = [run for run, cert in certified if cert.get("verified") is True
            and (cert.get("request") or {}).get("request_hash") == digest]
    summary = tracking.load_result(runs[-1]) if runs else None
    return summary if summary is not None and summary.get("run_id") == runs[-1] else None


def refused_alone(root: Path, requests: list, verify: str | None = None) -> dict[str, str]:
    """Request id → why the current data and model refuse it on its own (in verification mode
    `verify`), for the requests of a failed batch that do not plan alone (see `plan_problem`)."""
    return {r.id: why for r in requests if (why := plan_problem(root, r, verify)) is not None}


def plan_problem(root: Path, request, verify: str | None = None) -> str | None:
    """Why the request alone, without its parts that change nothing, cannot be planned against the
    current data and model, or None. Read-only: the plan is made from the request in memory."""
    alone = narrowed(request, no_change_notes(root, [request]).get(request.id))
    if alone is None:
        return None
    try:
        steps.plan_for(root, alone, verify=verify)
    except Exception as exc:  # noqa: BLE001 — whatever stops its plan is the request's reason
        if environment_error(exc):
            raise
        return failure_reason(exc)
    return None


def environment_error(exc: BaseException) -> bool:
    """A full disk or a project that cannot be written: no request is at fault, every later step
    would fail the same way, so the run stops (see flows.cli)."""
    return release.unwritable_cause(exc) is not None

