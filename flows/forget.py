"""Flow `forget`: validate request → corrected data, new DVC version → update model → verify →
register → promote → supersede and purge the earlier versions and the replaced data.

The decisions live here: a certified update whose accumulated bound would exceed the model's
budget is replaced by retraining (guarantee `exact`, budget reset); `production` moves only when
verification passes. The promotion is the commit point (tasks.release): a failure before it, or a
failed verification, rolls the data back to the version the run started from and leaves the
previous version in production; after it, the superseded versions and data are purged (or kept
"beyond use" until a purge date, with `keep_superseded_days`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from prefect.runtime import flow_run

from flows.runs import failed_run, outcome_flow, requests_label
from tasks import image_steps, release as release_steps, steps, text_steps, tracking
from unlearning import certificate as cert_lib
from unlearning.images.verify import ImageVerifyConfig
from unlearning.methods import Result
from unlearning.verify import VerifyConfig, describe_failures


def forget_run_name() -> str:
    """'forget REQ-1' (a comply batch: 'forget PAT-001, PAT-002'): a user finds the run by the
    request's id in the Prefect UI. Ids only, never record values."""
    params = flow_run.parameters
    return f"forget {requests_label(params.get('members') or [request_id_of(params['request_path'])])}"


def request_id_of(request_path: str) -> str:
    """The request's id, or the file's name when it cannot be read (the flow then says why)."""
    from unlearning.requests import load_request

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
                keep_superseded_days: int | None = None, members: list[str] | None = None) -> dict:
    """Process one erasure request end to end; returns the result summary (see README). A failed
    verification ends the flow run Failed (its MLflow run too, tagged `verified=false`); called
    from Python it still returns the summary (flows.runs).

    Image models only: `compare` = baselines (method → options) run and evaluated beside the
    update for the comparison table; `image_verify` = the image thresholds.
    `keep_superseded_days`: keep the superseded versions and data "beyond use" that many days
    instead of purging them now (default: the UNLEARN_KEEP_SUPERSEDED_DAYS setting, else purge now).
    `members`: the ids of the requests a comply batch merged into this one (names the runs)."""
    root_path = Path(root)
    plan = steps.plan_request(root_path, Path(request_path), method)
    if plan.earlier is not None:
        return {**plan.earlier, "status": "already_processed"}
    plan.keep_days = release_steps.keep_days_setting(keep_superseded_days)

    experiment = tracking.configure(root_path)
    req = plan.request
    tags = {"data_version": plan.data_version, "dataset": plan.table.name, "request_id": req.id,
            "git_commit": tracking.git_commit(root_path), "code_version": tracking.code_version(),
            "prefect_flow_run": flow_run.id, "model": plan.model_name}
    run_tags = {**tags, "flow": "forget", **({"batch_requests": ",".join(members)[:5000]} if members else {})}
    with tracking.run(experiment, f"forget {requests_label(members or [req.id])}", run_tags) as parent:
        lineage = steps.Lineage(root_path, experiment, parent, tags)
        tracking.log_params(parent, {"request_id": req.id, "method": plan.method, "kinds": ",".join(req.kinds()),
                                     "n_delete": len(req.delete_records), "n_revoke": len(req.revoke_features),
                                     "n_fix_labels": len(req.fix_labels), "parent_version": plan.parent_version})
        with release_steps.rollback_unless_promoted(lineage, plan, plan.keep_days) as outcome:
            if plan.findings is not None:
                summary = forget_text(lineage, plan, options)
            elif plan.image is not None:
                summary = forget_images(lineage, plan, options, compare, image_verify)
            else:
                summary = forget_table(lineage, plan, options, verify_config)
        if outcome.get("outcome") == "rolled back":
            summary["rollback"] = outcome
        tracking.log_json(parent, summary, "result.json")
        tracking.set_run_tags(parent, {"verified": str(summary["verified"]).lower()})
    if not summary["verified"]:
        tracking.end_run(parent, ok=False)  # after tracking.run ended it FINISHED: the work failed, not the code
        return failed_run(verification_failure(summary), summary)
    return summary


def verification_failure(summary: dict) -> str:
    """Why a forget run failed, in one line: each failed check with its value and threshold."""
    failed = describe_failures([c for c in summary.get("checks", []) if not c["passed"]])
    return f"verification failed ({failed}); nothing promoted"


def forget_table(lineage: steps.Lineage, plan: steps.Plan, options: dict | None, verify_config: VerifyConfig) -> dict:
    """The table recipe: corrected data → the update (retraining when a certificate's budget is
    spent) → verify against a retrained reference → register → promote if verified → purge."""
    req, tags = plan.request, lineage.tags
    after, data_after = steps.correct_data(lineage, plan)
    lineage.tags["data_version"] = data_after
    result, bundle_after, problem, update_s = steps.update_model(lineage, plan, after, plan.method, options)
    b_after = plan.b
    if result.method == "certified" and not result.stats["within_budget"]:
        # The certificate cannot be issued: retrain with fresh noise, which resets the budget.
        result, bundle_after, problem, update_s = steps.update_model(
            lineage, plan, after, "retrain", {"noise_seed": _seed(req.id)})
        b_after = result.stats.get("b")
    bundle_after = _with_spent_budget(bundle_after, result)

    metrics, checks, retrain_s, reference = steps.verify_update(lineage, plan, after, problem, result,
                                                                 bundle_after, verify_config)
    attempt = None
    if steps.falls_back_to_retraining(plan.requested, result.method, checks):
        result, bundle_after, metrics, checks, attempt = steps.fall_back_to_reference(
            lineage, after, problem, result, reference, bundle_after, checks, verify_config, update_s)
        bundle_after = _with_spent_budget(bundle_after, result)
        update_s += retrain_s  # the request cost the failed update and the retraining
    verified = all(c["passed"] for c in checks)
    version, model_run, superseded = release(lineage, plan, bundle_after, after, data_after, result.method,
                                             result.guarantee, verified, b_after,
                                             steps.certification_tags(bundle_after))

    timings = {"update_s": update_s, "retrain_s": retrain_s,
               "speedup": retrain_s / update_s if update_s > 0 else None}
    model = {"name": plan.model_name, "version": version, "parent_version": plan.parent_version,
             "run_id": model_run, "parent_run_id": plan.parent_run}
    data = {"before": plan.data_version, "after": data_after}
    certificate = cert_lib.certificate(
        req, result, model=model, data=data, metrics=metrics, checks=checks, timings=timings,
        code_version=tags["code_version"], config={"method": result.method, "requested": plan.requested,
                                                 "options": options or {}, "fallback": attempt,
                                                 "verify": verify_config.model_dump()},
        request_hash=steps.request_hash(lineage.root, req), superseded=superseded)
    tracking.log_json(lineage.parent_run, certificate, "certificate.json")
    tracking.log_metrics(lineage.parent_run, {**metrics, **{k: v for k, v in timings.items() if v is not None}})
    return {
        "request_id": req.id, "status": "completed" if verified else "verification_failed",
        "verified": verified, "method": result.method, "guarantee": result.guarantee,
        "requested_method": plan.requested, "fallback": attempt,
        "model": {k: model[k] for k in ("name", "version", "parent_version")},
        "promoted": verified, "data": data, "certificate": cert_lib.summary_block(result),
        "metrics": metrics, "checks": checks, "failed_checks": [describe_failures([c]) for c in checks if not c["passed"]],
        "timings": timings, "run_id": lineage.parent_run, "superseded": superseded,
    }


def release(lineage: steps.Lineage, plan: steps.Plan, bundle, after, data_after: str, method: str,
            guarantee: str, verified: bool, b=None, extra_tags: dict | None = None) -> tuple[str, str, list]:
    """Register the new model version with its lineage tags; only if verified, promote it, mark the
    versions it supersedes and purge those due now. Returns (version, model run id, what happened
    to each superseded artifact)."""
    req = plan.request
    version, model_run = steps.register(lineage, plan.model_name, bundle, b, {
        "parent_version": plan.parent_version, "request_id": req.id, "request_hash": steps.request_hash(lineage.root, req),
        "method": method, "guarantee": guarantee, "data_before": plan.data_version, "data_after": data_after,
        "verified": str(verified).lower(), "lineage_run": lineage.parent_run,
        "dataset_digest": steps.dataset_digest(lineage.root, after.name), **(extra_tags or {})}, after)
    superseded = []
    if verified:
        steps.promote(lineage, plan.model_name, version)  # the commit point
        superseded = release_steps.supersede(lineage, plan, version, plan.keep_days)
        superseded += release_steps.purge_due(lineage, plan.model_name)
    return version, model_run, superseded


def _seed(request_id: str) -> int:
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16)


def _with_spent_budget(bundle, result):
    """Carry the accumulated residual bound to the new version (reset to 0 after a retrain)."""
    if bundle.certification is None:
        return bundle
    spent = result.stats.get("budget_used", 0.0) if result.guarantee == "certified" else 0.0
    return replace(bundle, certification=replace(bundle.certification, spent=spent))


def forget_text(lineage: steps.Lineage, plan: steps.Plan, options: dict | None) -> dict:
    """The text recipe: redact the findings (new data version) → update the language model →
    verify exposure, perplexity and regeneration against a retrained reference → register →
    promote if verified → purge the superseded corpus (the last copy of the raw secrets)."""
    req = plan.request
    after, data_after = text_steps.redact_data(lineage, plan)
    lineage.tags["data_version"] = data_after
    bundle_after, guarantee, stats, update_s = text_steps.update_lm(lineage, plan, after, plan.method, options)
    metrics, checks, retrain_s, secrets, reference = text_steps.verify_lm(lineage, plan, after, bundle_after, update_s)
    verified = all(c["passed"] for c in checks)
    method, attempt = plan.method, None
    if steps.falls_back_to_retraining(plan.requested, plan.method, checks):
        # The fast update missed a threshold: promote the reference verification already retrained.
        metrics, checks, secrets, attempt = text_steps.fall_back_to_retrained(
            lineage, plan.method, metrics, checks, secrets, update_s)
        bundle_after, guarantee, method = reference, "exact", "retrain"
        stats = {"fallback_from": attempt["method"], "seconds": retrain_s, "affected_windows": stats["affected_windows"]}
        verified = all(c["passed"] for c in checks)
    version, model_run, superseded = release(lineage, plan, bundle_after, after, data_after, method, guarantee,
                                             verified)
    timings = {"update_s": update_s, "retrain_s": retrain_s, "speedup": retrain_s / update_s if update_s else None}
    model = {"name": plan.model_name, "version": version, "parent_version": plan.parent_version,
             "run_id": model_run, "parent_run_id": plan.parent_run}
    data = {"before": plan.data_version, "after": data_after}
    result = Result(theta=None, method=method, guarantee=guarantee, stats=stats)
    certificate = cert_lib.certificate(
        req, result, model=model, data=data, metrics={**metrics, "secrets": secrets}, checks=checks,
        timings=timings, code_version=lineage.tags["code_version"],
        config={"method": method, "requested": plan.requested, "options": options or {}, "fallback": attempt},
        request_hash=steps.request_hash(lineage.root, req), superseded=superseded)
    tracking.log_json(lineage.parent_run, certificate, "certificate.json")
    tracking.log_metrics(lineage.parent_run, {**metrics, **{k: v for k, v in timings.items() if v is not None}})
    return {
        "request_id": req.id, "status": "completed" if verified else "verification_failed", "verified": verified,
        "method": method, "guarantee": guarantee, "promoted": verified, "fallback": attempt,
        "model": {k: model[k] for k in ("name", "version", "parent_version")}, "data": data,
        "certificate": cert_lib.summary_block(result), "findings": text_steps.counts(plan.findings),
        "exposure": {"before": metrics["exposure_before"], "after": metrics["exposure_after"],
                     "retrain": metrics["exposure_retrain"]},
        "perplexity": {"before": metrics["perplexity_before"], "after": metrics["perplexity_after"],
                       "retrain": metrics["perplexity_retrain"]},
        "affected_windows": stats["affected_windows"], "requested_method": plan.requested,
        "secrets": secrets, "metrics": metrics, "checks": checks, "timings": timings, "run_id": lineage.parent_run,
        "superseded": superseded,
    }


def forget_images(lineage: steps.Lineage, plan: steps.Plan, options: dict | None, compare: dict[str, dict] | None,
                  cfg: ImageVerifyConfig) -> dict:
    """The image recipe: corrected data (new DVC version) → the image method (auto → alignment) →
    verify every metric against a retrained reference (and the `compare` baselines beside it) →
    register → promote if verified → purge the superseded data. Guarantee `empirical`."""
    req = plan.request
    after, data_after = image_steps.correct_data(lineage, plan)
    lineage.tags["data_version"] = data_after
    bundle_after, method, guarantee, update_s = image_steps.update_cnn(lineage, plan, plan.method, options)
    rows, checks, retrain_s = image_steps.verify_images(lineage, plan, method, bundle_after, update_s, compare, cfg)
    verified = all(c["passed"] for c in checks)
    version, model_run, superseded = release(lineage, plan, bundle_after, after, data_after, method, guarantee,
                                             verified)
    timings = {"update_s": update_s, "retrain_s": retrain_s,
               "speedup": retrain_s / update_s if retrain_s and update_s else None}
    model = {"name": plan.model_name, "version": version, "parent_version": plan.parent_version,
             "run_id": model_run, "parent_run_id": plan.parent_run}
    data = {"before": plan.data_version, "after": data_after}
    by_name = {r["method"]: r for r in rows}
    metrics = {f"{k}{suffix}": by_name[name][k] for name, suffix in ((method, ""), ("original", "_before"),
                                                                   ("retrain", "_retrain")) if name in by_name
               for k in ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi", "f1")}
    result = Result(theta=None, method=method, guarantee=guarantee, stats={"forget_images": len(plan.image.request.forget)})
    certificate = cert_lib.certificate(
        req, result, model=model, data=data, metrics=metrics, checks=checks, timings=timings,
        code_version=lineage.tags["code_version"],
        config={"method": method, "requested": plan.requested, "options": options or {},
                "compare": compare or {}, "verify": cfg.model_dump()}, request_hash=steps.request_hash(lineage.root, req), superseded=superseded)
    tracking.log_json(lineage.parent_run, certificate, "certificate.json")
    tracking.log_metrics(lineage.parent_run, {**metrics, **{k: v for k, v in timings.items() if v is not None}})
    return {
        "request_id": req.id, "status": "completed" if verified else "verification_failed", "verified": verified,
        "method": method, "guarantee": guarantee, "promoted": verified, "requested_method": plan.requested,
        "kind": plan.image.request.kind, "forget_class": plan.image.class_name,
        "forget_images": len(plan.image.request.forget),
        "model": {k: model[k] for k in ("name", "version", "parent_version")}, "data": data,
        "certificate": cert_lib.summary_block(result), "metrics": metrics, "results": rows, "checks": checks,
        "timings": timings, "run_id": lineage.parent_run, "superseded": superseded,
    }
