"""Flow `audit`: retraining, amortised. Per model, one reference retrained on the current data
version judges the production model for every request completed since its last audit.

The recipe, under the project lock: finish what a killed release or audit left (tasks.release,
tasks.audit_record.recover_audits) → per model due (or the one named): plan (production, current data,
covered requests, their escrow) → with a Dask task runner, every model's reference retrained at
once (tasks.references) → per model: the reference checks on the production model → if the audit
failed, was undecided (no check with power judged the forget set: unlearning.checks) or with
`rebase`, the retrained model registered and promoted (guarantee exact, a certified
budget reset; the superseded versions purged as a forget does) → one signed audit record naming the
requests and certificates it covers → an `audited` / `audit_failed` ledger entry per covered
request → their escrow deleted.

A failed audit is not rolled back: it is the event the audit exists for. The retrained model
replaces production (the data is then out for sure) and the record names the check that failed
and the request(s) whose update fell short; the run ends Failed so that it stands out. One
exception: when what an erasure removed (records, a revoked feature, a forgotten class, secrets, wrong labels) is back in the current data
(tasks.audit_checks.erased_data_back), the retrained model holds them too and is not promoted.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.runtime import flow_run
from pydantic import SecretStr

from flows.runs import failed_run, flow, outcome_flow
from flows.settings import private_tempdir
from tasks import audit as steps
from tasks import audit_record as records
from tasks import references as prefetch
from tasks import devices, release, state, tracking
from tasks.audit_checks import Judgement, judge
from tasks.common import RETRAINED_AS_TRAINED, step, Lineage, Plan, dataset_digest, progress, promote, register
from tasks.version import code_version
from unlearning.devices import resolve_device


def audit_run_name() -> str:
    return f"audit {flow_run.parameters.get('model') or 'every model due'}"


@outcome_flow(name="audit", flow_run_name=audit_run_name, log_prints=False, validate_parameters=True)
def audit_flow(root: str, model: str | None = None, rebase: bool = False, keep_superseded_days: int | None = None,
               task_runner: str | None = None, dask_address: SecretStr | str | None = None,
               workers: int | None = None, min_requests: int | None = None, max_age_days: float | None = None,
               device: str = "auto") -> dict:
    """Audit `model` (None: every model with a request since its last audit) once its cadence makes
    it due (`min_requests` requests since its last audit, or the oldest `max_age_days` old; either
    alone, or neither: every model with a request; see tasks.audit.cadence_setting); see the module
    doc. Returns {"audits": [per model: model, covered_requests, passed, decided, checks, rebased,
    promoted, why_promoted, record, timings.retrain_s, ...], "recovered": [...]}. `device`: where a
    deep model's reference and checks compute (unlearning.devices; a table model stays on the CPU)."""
    root_path = Path(root)
    keep_days = release.keep_days_setting(keep_superseded_days)
    runner, address = prefetch.runner_setting(task_runner, dask_address)
    workers = prefetch.check_workers(workers)
    cadence = steps.cadence_setting(min_requests, max_age_days)
    resolve_device(device)  # a device this machine lacks: one line before anything is audited
    with private_tempdir(root_path), release.release_lock(root_path, "audit", report=False) as released:
        recovered = released + records.recover_audits(root_path)
        names = [model] if model else steps.models_due(root_path, cadence)
        plans = [devices.place(steps.plan_audit(root_path, name), device) for name in names
                 if steps.is_due(root_path, name, cadence)]
        # a model the audit judges exact without retraining has no reference job to prefetch
        pool = prefetch_references(root_path, [p.model for p in plans if p.job is not None], runner, address, workers)
        with prefetch.prefetched(pool):
            audits = [audit_model(root_path, plan, rebase, keep_days) for plan in plans]
    summary = {"audits": audits, "recovered": recovered}
    failed = [a for a in audits if not a["passed"]]
    if failed:
        return failed_run("audit failed for " + ", ".join(f"{a['model']} ({promotion_words(a)})" for a in failed),
                          summary)
    return summary


def audit_model(root: Path, plan: steps.AuditPlan, rebase: bool, keep_days: int | None) -> dict:
    for name in plan.unreadable:
        progress(unreadable_warning(plan, name))
    now = steps.utc_now()
    audit = records.audit_id(plan.model, now)
    experiment = tracking.configure(root)
    tags = {"model": plan.model, "dataset": plan.dataset.name, "data_version": plan.data_version, "audit_id": audit,
            "git_commit": tracking.git_commit(root), "code_version": code_version(),
            "prefect_flow_run": flow_run.id}
    with tracking.run(experiment, f"audit {plan.model}", {**tags, "flow": "audit"}) as parent:
        lineage = Lineage(root, experiment, parent, tags)
        tracking.log_params(parent, {"covered_requests": ",".join(plan.request_ids)[:5000], "rebase": rebase,
                                     "production_version": plan.production.version})
        records.open_marker(root, audit, plan.model)  # from here a killed run is finished or rolled back
        judgement = run_checks(lineage, plan)
        passed, decided = all(c["passed"] for c in judgement.checks), judgement.undecided is None
        # an undecided audit promotes the reference it already trained, as --rebase does: no check could
        # say the data is out of production, the retrained model has it out for sure
        # exact: production is the retraining itself; unpromotable: the retraining holds erased records too
        stays = plan.exact or judgement.unpromotable is not None or (passed and decided and not rebase)
        teacher = plan.kind.after_audit(root, plan, stays)  # e.g. a text chain's sealed teacher
        record = lambda version, run=None: records.audit_record(  # noqa: E731
            audit, plan, judgement, version, rebase, tags["code_version"], parent, now, teacher, run)
        if stays:
            path, superseded = records.write_record(root, record(None)), []
        else:
            path, superseded = promote_retrained(lineage, plan, judgement, keep_days, record)
        finished = records.finish_audit(root, path)
        body = record(None)  # for the MLflow copy's metrics only; the signed file is the record
        tracking.log_metrics(parent, {"passed": float(passed), "decided": float(decided),
                                      "retrain_seconds": judgement.retrain_s,
                                      **{k: v for k, v in body["metrics"].items() if isinstance(v, (int, float))}})
        tracking.log_json(parent, json.loads(path.read_text()), "audit_record.json")
    signed = json.loads(path.read_text())
    promoted = records.promoted_version(path)
    return {"model": plan.model, "audit": audit, "covered_requests": plan.request_ids, "passed": passed,
            "decided": decided, "undecided_reason": judgement.undecided, "checks": judgement.checks,
            "rebased": signed["audit"]["rebased"], "promoted": promoted,
            "why_promoted": signed["promoted"]["why"] if promoted is not None else None,
            "shortfall": judgement.shortfall, "record": str(path.relative_to(root)),
            "metrics": {k: v for k, v in judgement.metrics.items() if k != "per_secret"},
            "timings": {"retrain_s": judgement.retrain_s}, "superseded": superseded,
            "ledger_entries": finished["ledger_entries"], "escrow_deleted": finished["escrow_deleted"],
            "escrow_unreadable": plan.unreadable, "production_version": str(plan.production.version),
            "teacher": teacher, "not_promoted": judgement.unpromotable}


def promotion_words(a: dict) -> str:
    """What a failed audit did about production, in a few words."""
    return f"retrained v{a['promoted']} promoted" if a["promoted"] else "nothing promoted: " + a["not_promoted"]


def idle_audit(model: str) -> dict:
    """The keys `audit_model` returns, for a model not audited by this run (`unlearn audit MODEL
    --json` keeps one shape: flows.erasure_cli.audit_payload)."""
    return {"model": model, "audit": None, "covered_requests": [], "passed": None, "decided": None,
            "undecided_reason": None, "checks": [], "rebased": False, "promoted": None, "why_promoted": None,
            "shortfall": [], "record": None, "metrics": {}, "timings": {"retrain_s": None},
            "superseded": [], "ledger_entries": [], "escrow_deleted": [], "escrow_unreadable": [],
            "production_version": None, "teacher": None, "not_promoted": None}


def unreadable_warning(plan: steps.AuditPlan, name: str) -> str:
    """The one line naming an escrow file that does not open, and what the audit does about it."""
    effect = ("its request fails this audit (its removed data cannot be judged)" if plan.kind.name != "table"
              else "a table audit does not need it")
    return (f"warning: audit escrow .unlearn/escrow/{name} does not open with this project's key (altered, renamed "
            f"or sealed under another signing key): {effect}; it is deleted when the audit completes")


@step("audit checks")
def run_checks(lineage: Lineage, plan: steps.AuditPlan) -> Judgement:
    """The retrained reference and today's reference checks on the production model (child run `audit`)."""
    with lineage.child("audit") as run_id:
        judgement = judge(lineage.root, plan)
        tracking.log_params(run_id, {"reference": judgement.metrics.get("reference")})
        tracking.log_metrics(run_id, {"retrain_seconds": judgement.retrain_s,
                                      "passed": float(all(c["passed"] for c in judgement.checks)),
                                      **{k: v for k, v in judgement.metrics.items() if isinstance(v, (int, float))}})
        tracking.log_json(run_id, {"checks": judgement.checks, "shortfall": judgement.shortfall,
                                   "metrics": judgement.metrics}, "audit.json")
    return judgement


def promote_retrained(lineage: Lineage, plan: steps.AuditPlan, judgement: Judgement, keep_days: int | None,
                      record) -> tuple[Path, list]:
    """Register the retrained model, write the record naming it, promote it and purge what it
    supersedes — through the release journal, so a killed run is rolled back or committed."""
    root = lineage.root
    release_plan = Plan(request=None, model_name=plan.model, parent_version=str(plan.production.version),
                        data_version=plan.data_version, keep_days=keep_days)
    digest = dataset_digest(root, plan.dataset.name)
    with release.rollback_unless_promoted(lineage, release_plan, keep_days):
        version, run, files = register(lineage, plan.model, judgement.retrained, plan.b, {
            "parent_version": str(plan.production.version), "method": "retrain", "guarantee": "exact",
            "data_before": plan.data_version, "data_after": plan.data_version, "verified": "true",
            "lineage_run": lineage.parent_run, "dataset_digest": digest,
            "audit_id": lineage.tags["audit_id"], RETRAINED_AS_TRAINED: "true", **judgement.tags}, judgement.private)
        state.attest_exact(root, state.exact_facts(plan.model, version, run, plan.data_version, digest, files))
        path = records.write_record(root, record(version, run))
        progress(f"  audit {plan.model}: promoting the retrained model v{version} (guarantee exact)")
        promote(lineage, plan.model, version)  # the commit point
        superseded = release.supersede(lineage, release_plan, version, keep_days)
        superseded += release.purge_due(lineage, plan.model)
    return path, superseded


def prefetch_references(root: Path, models: list[str], runner: str, address: str | None,
                        workers: int | None) -> dict:
    """Every audited model's reference trained at once on the Dask task runner (tasks.references);
    inline (the default) prefetches nothing."""
    if runner == "inline" or not models:
        return {}
    return prefetch.run_on_task_runner(retrain_audit_references, runner, address, workers,
                                       f"{len(models)} audit reference(s)", "each audit retrains inline",
                                       root=str(root), models=models)


@flow(name="retrain audit references", persist_result=False, log_prints=False)
def retrain_audit_references(root: str, models: list[str], threads: int | None = None) -> dict:
    """Plan each model's audit, submit its reference job to this flow's task runner: {job key: reference}."""
    jobs = []
    for name in models:
        try:
            jobs.append(steps.plan_audit(Path(root), name, warn=False).job)  # the audit itself warns
        except Exception:  # noqa: BLE001 — the model's own audit reports the error
            continue
    return prefetch.retrain_ahead([job for job in jobs if job is not None], threads)  # None: nothing to retrain
