"""Flow `forget`: validate request → corrected data, new DVC version → update model → verify →
register → promote → supersede and purge the earlier versions and the replaced data. One recipe
for every kind of model (tables, text, images): the steps are the kind's (tasks/kinds/).

The decisions live here: an update that spent a budget it did not have is replaced (a certified
table model: retraining, guarantee `exact`, budget reset); with `auto`, an update failing
verification is replaced by the retrained reference; `production` moves only when
verification passes. The promotion is the commit point (tasks.release): a failure before it, or a
failed verification, rolls the data back to the version the run started from and leaves the
previous version in production; after it, the superseded versions and data are purged (or kept
"beyond use" until a purge date, with `keep_superseded_days`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect.runtime import flow_run

from flows.runs import failed_run, outcome_flow, requests_label
from tasks import devices, erased, release as release_steps, state, steps, tracking
from tasks.common import (
    GUARANTEE_TAG, RETRAINED_AS_TRAINED, Lineage, Plan, Update, Verification, dataset_digest, falls_back_to_retraining,
    now_utc, promote, register, request_hash, seconds_between,
)
from tasks.outcomes import log_run_certificate, verification_failure
from tasks.version import code_version
from unlearning.compliance import certificate as cert_lib
from unlearning.images.verify import ImageVerifyConfig
from unlearning.tabular.verify import VerifyConfig


def forget_run_name() -> str:
    """'forget REQ-1' (a comply batch: 'forget PAT-001, PAT-002'): a user finds the run by the
    request's id in the Prefect UI. Ids only, never record values."""
    params = flow_run.parameters
    return f"forget {requests_label(params.get('members') or [request_id_of(params['request_path'])])}"


def request_id_of(request_path: str) -> str:
    """The request's id, or the file's name when it cannot be read (the flow then says why)."""
    from unlearning.compliance.requests import load_request

    try:
        return load_request(Path(request_path)).id
    except Exception:  # noqa: BLE001 — a name must never stop the run: planning reports the problem
        return Path(request_path).stem


@outcome_flow(name="forget", flow_run_name=forget_run_name, log_prints=False, validate_parameters=True)
@release_steps.under_project_lock("forget")
def forget_flow(root: str, request_path: str, method: str | None = None,
                options: dict | None = None, verify_config: VerifyConfig = VerifyConfig(),
                compare: dict[str, dict] | None = None,
                image_verify: ImageVerifyConfig = ImageVerifyConfig(),
                keep_superseded_days: int | None = None, members: list[str] | None = None,
                verify: str | None = None, device: str = "auto") -> dict:
    """Process one erasure request end to end; returns the result summary (see docs/forget.md). A failed
    verification ends the flow run Failed (its MLflow run too, tagged `verified=false`); called
    from Python it still returns the summary (flows.runs).

    Image models only: `compare` = baselines (method → options) run and evaluated beside the
    update for the comparison table; `image_verify` = the image thresholds.
    `keep_superseded_days`: keep the superseded versions and data "beyond use" that many days
    instead of purging them now (default: the UNLEARN_KEEP_SUPERSEDED_DAYS setting, else purge now).
    `members`: the ids of the requests a comply batch merged into this one (names the runs).
    `verify`: how the update is verified (tasks.kinds.base.VERIFY_MODES; None: the kind's default).
    `device`: where a deep model's update, verification and reference compute (unlearning.devices)."""
    root_path = Path(root)
    accepted = now_utc()  # a bare forget is accepted when its run starts (comply re-times it per request)
    plan = devices.place(steps.plan_request(root_path, Path(request_path), method, verify), device)
    plan.accepted_at = accepted
    if plan.earlier is not None:
        release_steps.certify_earlier(root_path, plan.earlier)
        return {**plan.earlier, "status": "already_processed"}
    plan.keep_days = release_steps.keep_days_setting(keep_superseded_days)

    experiment = tracking.configure(root_path)
    req = plan.request
    tags = {"data_version": plan.data_version, "dataset": plan.dataset.name, "request_id": req.id,
            "git_commit": tracking.git_commit(root_path), "code_version": code_version(),
            "prefect_flow_run": flow_run.id, "model": plan.model_name}
    run_tags = {**tags, "flow": "forget", **({"batch_requests": ",".join(members)[:5000]} if members else {})}
    with tracking.run(experiment, f"forget {requests_label(members or [req.id])}", run_tags) as parent:
        lineage = Lineage(root_path, experiment, parent, tags)
        tracking.log_params(parent, {"request_id": req.id, "method": plan.method, "kinds": ",".join(req.kinds()),
                                     "n_delete": len(req.delete_records), "n_revoke": len(req.revoke_features),
                                     "n_fix_labels": len(req.fix_labels), "parent_version": plan.parent_version,
                                     "verify": verify or "default", **device_param(plan)})
        # what the gates read of a request made outside the ledger when the run ends without a certificate
        tracking.log_json(parent, erased.request_record(req), erased.RERECORDED)
        with release_steps.rollback_unless_promoted(lineage, plan, plan.keep_days) as outcome:
            configs = {"table": verify_config, "images": {"compare": compare, "verify": image_verify}}
            summary = forget_request(lineage, plan, options, configs.get(plan.kind.name), verify)
            # logged before the journal is dropped: a kill between the two left a promoted version whose
            # request a rerun could not answer "already processed" (its records gone: exit 2)
            tracking.log_json(parent, summary, "result.json")
        if outcome.get("outcome") == "rolled back":
            summary["rollback"] = outcome
            tracking.log_json(parent, summary, "result.json")
        tracking.set_run_tags(parent, {"verified": str(summary["verified"]).lower()})
    if not summary["verified"]:
        tracking.end_run(parent, ok=False)  # after tracking.run ended it FINISHED: the work failed, not the code
        return failed_run(verification_failure(summary), summary)
    return summary


def device_param(plan) -> dict:
    """The resolved device a deep model's work ran on ("cpu", "cuda:0"), as an MLflow param (none
    for a table model: always the CPU, float64)."""
    return {} if plan.kind is None or plan.kind.name == "table" else {"device": plan.device}


def forget_request(lineage: Lineage, plan: Plan, options: dict | None, config, verify: str | None = None) -> dict:
    """The recipe of every kind: corrected data (a new DVC version) → the update (replaced by
    retraining when it spent a budget it did not have) → verify it in the mode asked for
    (`certificate`, `evidence`: no model trained; `reference`: against a retrained reference) →
    with `auto`, fall back to retraining if the update failed → register → promote if verified
    → purge the superseded versions and data → certificate. `config`: the kind's verification
    settings (None: its defaults); `verify`: the verification mode (None: the kind's default)."""
    kind = plan.kind
    after, data_after = kind.correct_data(lineage, plan)
    lineage.tags["data_version"] = data_after
    update = kind.respect_budget(lineage, plan, after, kind.update(lineage, plan, after, plan.method, options))
    started = time.perf_counter()
    verification = kind.verification(lineage, plan, after, update, config,
                                     verify or kind.default_verify_mode(plan, update))
    verification.seconds = time.perf_counter() - started
    attempt = None
    if falls_back_to_retraining(plan.requested, update.method, verification.checks):
        fallback = kind.fall_back(lineage, plan, after, update, verification, config)
        if fallback is not None:
            # the fallback's retraining counts as the update's time, the first verification as verify_s
            seconds = verification.seconds
            update, verification, attempt = fallback
            verification.seconds = seconds
    from tasks import audit as audit_steps  # the audit's own stack (its text and image parts) only once here

    escrow = audit_steps.escrow_request(lineage, plan, verification.passed)  # what a later audit needs, sealed
    # what the next fast update needs of the model this one supersedes (a text chain's teacher), sealed
    kept = kind.keep_for_next_update(lineage.root, plan, update) if verification.passed else []
    # a retraining on the model's own schedule: the model an audit would train (a fall-back's retraining takes
    # no options; one asked for with options overriding the schedule is not)
    as_trained = update.method == "retrain" and (attempt is not None or not options)
    version, model_run, superseded = release(lineage, plan, update, after, data_after, verification.passed,
                                             as_trained)
    superseded = [*superseded, *audit_steps.escrow_entries(plan, escrow), *kept]
    model = {"name": plan.model_name, "version": version, "parent_version": plan.parent_version,
             "run_id": model_run, "parent_run_id": plan.parent_run}
    data = {"before": plan.data_version, "after": data_after}
    return certify(lineage, plan, update, verification, attempt, model, data, superseded, options, config, as_trained)


def certify(lineage: Lineage, plan: Plan, update: Update, verification: Verification, attempt: dict | None,
            model: dict, data: dict, superseded: list, options: dict | None, config, as_trained: bool = False) -> dict:
    """The certificate (logged to the parent run) and the summary of a processed request: the
    entries every kind has, and the kind's own. `as_trained`: the new version is a retraining on the
    model's own schedule, which the certificate states (`config.retrained_as_trained`) for its reader;
    what an audit relies on is the project's signed word beside the key (tasks.state.attest_exact)."""
    kind, verified = plan.kind, verification.passed
    update_s, retrain_s = update.seconds, verification.retrain_s
    timings = {"update_s": update_s, "retrain_s": retrain_s,
               "speedup": retrain_s / update_s if retrain_s and update_s else None,
               "verify_s": verification.seconds,
               "time_to_removal_s": seconds_between(plan.accepted_at, plan.removed_at)}
    checked = verification.record()
    result = kind.certificate_result(update)
    certificate = cert_lib.certificate(
        plan.request, result, model=model, data=data, metrics=kind.certificate_metrics(verification),
        checks=verification.checks, timings=timings, code_version=lineage.tags["code_version"],
        config={"method": update.method, "requested": plan.requested, "options": options or {},
                "retrained_as_trained": as_trained,
                **kind.certificate_config(plan, update, attempt, config)},
        request_hash=request_hash(lineage.root, plan.request), superseded=superseded, verification=checked,
        timestamps=removal_timestamps(plan))
    log_run_certificate(lineage.root, lineage.parent_run, certificate)
    tracking.log_metrics(lineage.parent_run, {**verification.metrics,
                                              **{k: v for k, v in timings.items() if v is not None}})
    return {
        "request_id": plan.request.id, "status": "completed" if verified else "verification_failed",
        "verified": verified, "method": update.method, "guarantee": update.guarantee,
        "requested_method": plan.requested, "promoted": verified,
        "model": {k: model[k] for k in ("name", "version", "parent_version")}, "data": data,
        "certificate": cert_lib.summary_block(result), "metrics": verification.metrics,
        "checks": verification.checks, "verification": checked, "timings": timings, "run_id": lineage.parent_run,
        "superseded": superseded,
        **kind.summary_fields(plan, update, verification, attempt),
    }


def removal_timestamps(plan: Plan) -> dict:
    """When the request was accepted and when production moved to a model without the data (None:
    not promoted), UTC ISO 8601."""
    return {"accepted": plan.accepted_at.isoformat() if plan.accepted_at else None,
            "removed": plan.removed_at.isoformat() if plan.removed_at else None}


def release(lineage: Lineage, plan: Plan, update: Update, after, data_after: str,
            verified: bool, as_trained: bool = False) -> tuple[str, str, list]:
    """Register the new model version with its lineage tags; only if verified, promote it, mark the
    versions it supersedes and purge those due now. Returns (version, model run id, what happened
    to each superseded artifact)."""
    req = plan.request
    digest = dataset_digest(lineage.root, after.name)
    guarantee = json.dumps(cert_lib.guarantee_block(plan.kind.certificate_result(update)), default=str)
    version, model_run, files = register(lineage, plan.model_name, update.bundle, update.b, {
        "parent_version": plan.parent_version, "request_id": req.id, "request_hash": request_hash(lineage.root, req),
        "method": update.method, "guarantee": update.guarantee, "data_before": plan.data_version,
        "data_after": data_after, "verified": str(verified).lower(), "lineage_run": lineage.parent_run,
        "dataset_digest": digest, **plan.kind.version_tags(update),
        GUARANTEE_TAG: guarantee,
        **({RETRAINED_AS_TRAINED: "true"} if as_trained else {})},
        plan.kind.private_state(update, after))
    # what a certificate rebuilt after a stop past the promotion signs: the tag could be rewritten meanwhile
    state.keep_guarantee(lineage.root, plan.model_name, version, model_run, json.loads(guarantee))
    if as_trained and verified:  # what lets an audit take it as exact: signed here, not only tagged in MLflow
        state.attest_exact(lineage.root, state.exact_facts(plan.model_name, version, model_run, data_after, digest,
                                                           files))
    superseded = []
    if verified:
        promote(lineage, plan.model_name, version)  # the commit point
        plan.removed_at = now_utc()
        superseded = release_steps.supersede(lineage, plan, version, plan.keep_days)
        superseded += release_steps.purge_due(lineage, plan.model_name)
    return version, model_run, superseded
