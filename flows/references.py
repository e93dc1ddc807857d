"""Subflow `retrain references`: every batch's verification reference trained at once on the flow's
task runner (Dask), before `comply` releases the batches one at a time (see tasks/references.py)."""

from __future__ import annotations

from pathlib import Path

from flows.runs import flow
from tasks import references as prefetch
from tasks import steps


@flow(name="retrain references", persist_result=False, log_prints=False)
def retrain_references(root: str, request_paths: list[str], threads: int | None = None) -> dict:
    """Plan each batch request, submit its reference job to this flow's task runner, collect them:
    {job key: reference}. A batch that cannot be planned or whose job fails is left out: its own
    forget run trains inline and reports the error where it belongs."""
    jobs = []
    for path in request_paths:
        try:
            job = steps.reference_job_for(Path(root), Path(path))
        except Exception:  # noqa: BLE001 — the batch's own run will fail with the reason
            continue
        if job is not None:
            jobs.append(job)
    return prefetch.retrain_ahead(jobs, threads)
