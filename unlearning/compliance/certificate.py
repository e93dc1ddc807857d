"""The erasure certificate: what was asked, what was done, what guarantee holds, what was checked.

Record ids, hashes and versions only — never the personal values themselves (compliance.md).
"""

from __future__ import annotations

from datetime import datetime, timezone

from unlearning.compliance.requests import UnlearningRequest
from unlearning.tabular.methods import Result

FORMAT = "unlearnflow.certificate/1"


def certificate(request: UnlearningRequest, result: Result, *, model: dict, data: dict, metrics: dict,
                checks: list[dict], timings: dict, code_version: str, config: dict, request_hash: str,
                superseded: list[dict] | None = None, verification: dict | None = None,
                timestamps: dict | None = None) -> dict:
    """Assemble the certificate. `model` = {name, version, parent_version, run_id, parent_run_id},
    `data` = {before, after} DVC versions, `request_hash` = the request's salted hash (the
    ledger's; a plain hash of the content would let the corrected labels be brute-forced),
    `verification` = {mode, checks, retrains}: how the update was verified and how many models
    that trained, `timestamps` = {accepted, removed}: the request accepted, production moved."""
    return {
        "format": FORMAT,
        "issued_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "request": {
            "id": request.id,
            "request_hash": request_hash,
            "kinds": request.kinds(),
            "delete_records": list(request.delete_records),
            "revoke_features": list(request.revoke_features),
            "fix_labels": sorted(request.fix_labels),  # the ids only: corrected labels stay in the data
            "redact": request.redact.model_dump() if request.redact is not None else None,
        },
        **guarantee_block(result),
        "model": model,
        "data": data,
        "fidelity": metrics,
        "checks": checks,
        "verified": all(c["passed"] for c in checks),
        "verification": verification,
        "timings": timings,
        "timestamps": timestamps or {},
        "code_version": code_version,
        "config": config,
        "superseded": superseded or [],
    }


def guarantee_block(result: Result) -> dict:
    """The certificate's method and guarantee fields (ε, δ, the residual and its bound, the budget
    where certified). A forget run's model version records them too (its `certificate_guarantee`
    tag), so that the certificate of a run that stopped after its promotion carries the same
    (`interrupted_certificate`)."""
    stats = result.stats
    certified = result.guarantee == "certified"
    return {
        "method": result.method,
        "guarantee": result.guarantee,
        "epsilon": result.epsilon,
        "delta": result.delta,
        "residual": result.residual,
        "residual_bound": result.residual_bound,
        "budget_used": stats.get("budget_used") if certified else None,
        "budget_left": stats.get("budget_left") if certified else None,
        "budget": stats.get("budget") if certified else None,
    }


GUARANTEE_FIELDS = ("method", "guarantee", "epsilon", "delta", "residual", "residual_bound", "budget_used",
                    "budget_left", "budget")
SUMMARY_FIELDS = ("epsilon", "delta", "residual", "residual_bound", "budget_used", "budget_left")


def summary_block(result: Result) -> dict:
    """The `certificate` object of the CLI's JSON output (None values where not certified)."""
    block = guarantee_block(result)
    return {k: block[k] for k in SUMMARY_FIELDS}


def interrupted_certificate(guarantee: dict, *, model: dict, data: dict, verified: bool, code_version: str | None,
                            timestamps: dict | None, superseded: list[dict] | None, interrupted: str) -> dict:
    """The body of the certificate of a request whose run stopped (killed, or raised) after its
    promotion, before it logged its own: the model, method and guarantee blocks a certificate
    has, from what the registered version recorded (`guarantee`: its `guarantee_block`; method and
    guarantee alone for a version registered before it was kept), and no checks — the
    verification's record died with the run (its MLflow child runs keep the metrics); `interrupted`
    says so."""
    return {"format": FORMAT, "issued_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{k: guarantee.get(k) for k in GUARANTEE_FIELDS}, "model": model, "data": data,
            "verified": verified, "verification": None, "timestamps": timestamps or {},
            "code_version": code_version, "superseded": superseded or [], "interrupted": interrupted}


def request_certificate(batch_cert: dict, request: UnlearningRequest, record, batch_id: str, members: list[str],
                        completed: datetime | None = None) -> dict:
    """The batch's certificate narrowed to one request: its own ids, its ledger timestamps
    (`record`: its `unlearning.compliance.ledger.RequestRecord`), the batch it was processed in."""
    completed = completed or datetime.now(timezone.utc)
    # Time to removal counts from when the ledger accepted this request (its `received` entry
    # was recorded), not from the batch run's start; `received` (the legal clock) may be earlier.
    accepted = record.entries[0].at if record.entries else None
    removed = (batch_cert.get("timestamps") or {}).get("removed")
    timings = dict(batch_cert.get("timings") or {})
    if accepted and removed:
        timings["time_to_removal_s"] = (datetime.fromisoformat(removed) - datetime.fromisoformat(accepted)).total_seconds()
    own = {"id": request.id, "request_hash": record.request_hash, "kinds": request.kinds(),
           "delete_records": sorted(request.delete_records), "revoke_features": sorted(request.revoke_features),
           "fix_labels": sorted(request.fix_labels),
           "redact": request.redact.model_dump() if request.redact is not None else None,
           "forget_class": request.forget_class}
    return {**batch_cert, "request": own, **({"timings": timings} if timings else {}),
            "batch": {"id": batch_id, "requests": members},
            "timestamps": {"received": record.received.isoformat(), "deadline": record.deadline.isoformat(),
                           "accepted": accepted, "removed": removed,
                           "completed": completed.isoformat(timespec="seconds")},
            "channel": record.channel}


def unchanged_entries(notes: dict[str, str]) -> list[dict]:
    """The certificate's `unchanged` list: per record left as it was, why (record ids only)."""
    return [{"record": record, "reason": why} for record, why in sorted(notes.items())]


def no_change_certificate(model: str, production, data_version: str | None, issued: datetime) -> dict:
    """The body of a certificate for a request that changes nothing: the production version and
    the data stay as they are."""
    return {"format": FORMAT, "issued_at": issued.isoformat(timespec="seconds"),
            "method": "none", "guarantee": "no change",
            "model": {"name": model, "version": str(production.version), "run_id": production.run_id},
            "data": {"before": data_version, "after": data_version}, "checks": [], "verified": True,
            "superseded": []}
