"""The audit's signed record, the ledger's verdicts and crash recovery (tasks.audit plans the
audit, tasks.audit_checks judges it; docs/compliance.md, "Audits").

- The record: one signed document (`.unlearn/audits/<id>.json`, HMAC as certificates are) naming
  the requests and certificates it covers; each covered ledger request gets an `audited` or
  `audit_failed` entry recording the record's SHA-256 (an undecided audit's `audited` entries say
  why its retrained model was promoted); then the covered escrow is deleted.
- Crash safety: a marker `.unlearn/audits/<id>.open` lives from before the first write to after the
  last; `recover_audits` deletes the record of an audit whose promotion was rolled back, or
  finishes the ledger entries and escrow deletion of one that was promoted or needed no promotion.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

from tasks import ledger, state, tracking
from tasks.audit import AuditPlan, drop_escrows
from tasks.audit_checks import Judgement
from tasks.certificates import AUDIT_DIR, AUDIT_FORMAT
from unlearning.compliance import ledger as lg
from unlearning.compliance import signing
from unlearning.compliance.purge import ROLLED_BACK
from unlearning.errors import UnlearnError


def audit_id(model: str, now: datetime) -> str:
    return f"AUDIT-{model}-{now.strftime('%Y%m%dT%H%M%S%f')}"


def record_path(root: Path, audit: str) -> Path:
    return Path(root) / AUDIT_DIR / f"{audit}.json"


def marker_path(root: Path, audit: str) -> Path:
    return Path(root) / AUDIT_DIR / f"{audit}.open"


def open_marker(root: Path, audit: str, model: str) -> None:
    """Written whole or not at all: a full disk used to leave an empty marker, on which every later
    audit's recovery crashed."""
    path = marker_path(root, audit)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps({"audit": audit, "model": model}))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def certificate_of(record: lg.RequestRecord) -> dict:
    response = record.response or {}
    return {"id": record.id, "certificate": response.get("certificate"),
            "certificate_sha256": response.get("certificate_sha256"),
            "model_version": (response.get("model") or {}).get("version"), "guarantee": response.get("guarantee"),
            "method": response.get("method")}


def audit_record(audit: str, plan: AuditPlan, judgement: Judgement, promoted: str | None, rebase: bool,
                 code_version: str, run_id: str, now: datetime, teacher: dict | None = None,
                 promoted_run: str | None = None) -> dict:
    """The record's body (signed by `write_record`): no raw value, fingerprints and masked forms only.
    `teacher`: what became of a text chain's sealed teacher or an image chain's sealed first model
    (the kind's after_audit hook: tasks.kinds.text_teacher.hand_over_teacher,
    tasks.kinds.images_chain.hand_over_chain)."""
    passed = all(c["passed"] for c in judgement.checks)
    decided = judgement.undecided is None
    metrics = {k: v for k, v in judgement.metrics.items() if k != "per_secret"}
    if "per_secret" in judgement.metrics:
        metrics["secrets_measured"] = judgement.metrics["per_secret"]
    ledger_ids = [r.id for r in plan.records]
    return {
        "format": AUDIT_FORMAT,
        "audit": {"id": audit, "model": plan.model, "kind": plan.kind.name, "at": now.isoformat(), "passed": passed,
                  "decided": decided, "undecided_reason": judgement.undecided,
                  "rebased": bool(promoted) and passed and rebase, "run_id": run_id, "code_version": code_version},
        "production": {"version": str(plan.production.version), "run_id": plan.production.run_id},
        "data_version": plan.data_version,
        "requests": [certificate_of(r) for r in plan.records],
        "unrecorded_requests": [i for i in plan.request_ids if i not in ledger_ids],
        "checks": judgement.checks, "metrics": metrics,
        "shortfall": judgement.shortfall,
        "promoted": None if promoted is None else {
            "version": promoted, "run_id": promoted_run, "guarantee": "exact",
            "why": why_promoted(passed, judgement.undecided)},
        "escrow": {"files": [e["file"] for e in plan.escrows] + plan.unreadable, "unreadable": plan.unreadable,
                   "action": "deleted when this audit completed"},
        "timings": {"retrain_s": judgement.retrain_s},
        **({} if teacher is None else {"teacher": teacher}),
        **({} if judgement.unpromotable is None else {"not_promoted": judgement.unpromotable}),
    }


def why_promoted(passed: bool, undecided: str | None) -> str:
    """Why an audit promoted its retrained model: it failed, it could not decide, or --rebase."""
    if not passed:
        return "the audit failed: the retrained model replaces the production model"
    if undecided is not None:
        return (f"the audit was undecided ({undecided}): no check with power judged the removed data, so the "
                f"retrained model replaces the production model and the data is out for sure")
    return "--rebase: the retrained model replaces the production model"


def write_record(root: Path, body: dict) -> Path:
    path = record_path(root, body["audit"]["id"])
    signing.write_signed(path, signing.sign(body, signing.signing_key(root)))
    path.with_suffix(".html").write_text(signing.audit_record_html(json.loads(path.read_text())), encoding="utf-8")
    return path


def record_verdicts(root: Path, record: dict, path: Path) -> list[str]:
    """An `audited` / `audit_failed` entry for each covered ledger request that has none from this
    audit yet (a rerun after a crash appends only what is missing)."""
    audit, passed = record["audit"]["id"], record["audit"]["passed"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    relative = str(path.relative_to(root))
    written = []
    for request in record["requests"]:
        if any(a.get("audit") == audit for a in ledger.show(root, request["id"]).audits):
            continue
        failed = not passed
        reason = None
        if failed:
            reason = shortfall_reason(record["shortfall"], request["id"])
        elif record["audit"].get("decided") is False:  # older records have no `decided`: they decided
            reason = undecided_reason(record)
        ledger.transition(root, request["id"], "audit_failed" if failed else "audited", audit=audit, record=relative,
                          record_sha256=digest, model={"name": record["audit"]["model"],
                                                       "version": record["production"]["version"]},
                          run_id=record["audit"]["run_id"], **({"reason": reason} if reason else {}))
        written.append(request["id"])
    return written


def finish_audit(root: Path, path: Path) -> dict:
    """The steps after the record: the ledger's verdicts, the escrow and the chain's sealed teacher
    deleted, the marker removed."""
    record = json.loads(path.read_text())
    written = record_verdicts(root, record, path)
    dropped = drop_escrows(root, record["escrow"]["files"])
    if (record.get("teacher") or {}).get("deleted"):  # older records: deleted before they were written
        state.drop_teacher(root, record["audit"]["model"], record["teacher"].get("file_sha256"))
    marker_path(root, record["audit"]["id"]).unlink(missing_ok=True)
    return {"ledger_entries": written, "escrow_deleted": dropped}


def recover_audits(root: Path) -> list[dict]:
    """Finish or roll back the audits a killed run left (call under the project lock, after
    tasks.release.recover has settled any release journal)."""
    folder = Path(root) / AUDIT_DIR
    outcomes = []
    for marker in sorted(folder.glob("*.open")) if folder.is_dir() else []:
        info = marker_info(marker)
        path = record_path(root, info["audit"])
        if not path.exists():  # stopped before its record: any candidate version was rolled back
            marker.unlink()
            outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "rolled back"})
            continue
        record = verified_record(root, path)
        promoted = record.get("promoted")
        if promoted and rolled_back(info["model"], promoted["version"]):
            path.unlink()
            path.with_suffix(".html").unlink(missing_ok=True)
            marker.unlink()
            outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "rolled back"})
            continue
        finish_audit(root, path)
        outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "completed"})
    return outcomes


def verified_record(root: Path, path: Path) -> dict:
    """The record an interrupted audit left, once its signature verifies under the project's key and it
    is filed under its audit's id: the recovery writes MACed ledger verdicts and deletes escrow files
    from what it says, so an altered record (a verdict flipped, a request or file added) must not
    be finished — nor withdrawn, which would destroy the evidence. UnlearnError (one line) otherwise;
    nothing is changed."""
    ok, why = signing.verify(path, signing.signing_key(root, create=False))
    if not ok:
        raise UnlearnError(f"the record {path.name} of an interrupted audit does not verify ({why}): it was altered "
                           f"or signed with another key, so the audit cannot be finished from it and is left as it is "
                           f"— restore it (or set the project's key), or delete its marker "
                           f"{AUDIT_DIR / marker_path(root, path.stem).name} to have its requests audited again")
    return json.loads(path.read_text())


def marker_info(marker: Path) -> dict:
    """{"audit", "model"} of an open marker. The audit is the one its file is named after (a marker cut
    short, as an earlier version wrote on a full disk, still names it); the model from its content,
    else from the audit's id (`AUDIT-<model>-<time>`)."""
    audit = marker.name.removesuffix(".open")
    try:
        model = json.loads(marker.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        model = None
    if not isinstance(model, str):
        model = audit.removeprefix("AUDIT-").rpartition("-")[0]
    return {"audit": audit, "model": model}


def rolled_back(model: str, version: str) -> bool:
    found = [v for v in tracking.model_versions(model) if str(v.version) == str(version)]
    return not found or ROLLED_BACK in found[0].tags


def promoted_version(path: Path) -> str | None:
    promoted = json.loads(Path(path).read_text()).get("promoted")
    return None if promoted is None else promoted["version"]


def open_audits(root: Path) -> bool:
    folder = Path(root) / AUDIT_DIR
    return folder.is_dir() and any(folder.glob("*.open"))


def undecided_reason(record: dict) -> str:
    """The ledger's reason on the `audited` entry of an undecided audit: not a failure, and why its
    retrained model is production now."""
    return (f"the audit was undecided ({record['audit']['undecided_reason']}); the retrained model "
            f"v{record['promoted']['version']} was promoted, so the data is out for sure")


ESCROW_CHECKS = {"escrow_present": "its audit escrow is gone", "escrow_intact": "its audit escrow did not open"}
# the failed checks that are not this request's update falling short
NOT_THE_UPDATE = {**ESCROW_CHECKS, "production_not_superseded": "production was a model an erasure had superseded",
                  "erased_records_absent": "what this request erased (records, a revoked feature, a forgotten class, "
                                           "redacted secrets, wrong labels) "
                                           "is back in the data production was trained on (nothing was promoted: a "
                                           "retraining on that data holds it too); "
                                           "remove them from the data (`unlearn data add NAME --file SOURCE --replace` "
                                           "from a source without them) and train again, or submit the request again"}


def shortfall_reason(shortfall: list[dict], request_id: str) -> str:
    """The ledger's reason for a failed audit: what this request's own shortfall was (an escrow that
    could not be read is not an update that fell short), else what failed the audit."""
    own = [s["check"] for s in shortfall if request_id in s["requests"]]
    if not own:
        # e.g. records an earlier audit's request erased, back in the data: not this request's doing
        return ("the audit failed on what other requests are charged with: "
                + ", ".join(f"{s['check']} ({', '.join(s['requests'])})" if s["requests"] else s["check"]
                            for s in shortfall) + "; this request's own checks passed")
    escrow = [NOT_THE_UPDATE[c] for c in own if c in NOT_THE_UPDATE]
    updates = [c for c in own if c not in NOT_THE_UPDATE]
    return "; ".join([*escrow, *(["this request's update fell short: " + ", ".join(updates)] if updates else [])])
