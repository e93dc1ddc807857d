"""`unlearn forget`, `scan`, `comply` and `audit`: finding personal data and erasing it, one request,
the ledger's queue, and the audit that judges the updates (flows/cli.py runs the commands; their
parser is flows/arguments.py). Each prints its console lines, or with --json one object."""

from __future__ import annotations

import sys
from pathlib import Path

from flows.arguments import checked_device, checked_verify_mode
from flows.compliance_cli import EXIT_FAILED, EXIT_OK, emit
from unlearning.errors import UnlearnError


def cmd_forget(args, root: Path) -> int:
    from flows.forget import forget_flow
    from tasks import release, steps

    keep_days = release.keep_days_setting(args.keep_superseded)
    checked_verify_mode(args)
    device = checked_device(args)
    # all validation before anything is written; the flow nests under the lock taken here
    with release.validated_release(root, "forget",
                                   lambda: steps.plan_request.fn(root, args.request, args.method, args.verify)):
        summary = forget_flow(root=str(root), request_path=str(args.request), method=args.method,
                              keep_superseded_days=keep_days, verify=args.verify, device=device)
    emit(args, summary, format_forget(summary))
    return EXIT_OK if summary.get("verified", summary.get("status") == "completed") else EXIT_FAILED


def format_forget(s: dict) -> str:
    if s.get("status") == "already_processed":
        return f"request {s['request_id']} was already processed: model {s['model']['name']} v{s['model']['version']} ({s['guarantee']})"
    from tasks.kinds import kind_of_summary

    kind = kind_of_summary(s)
    lines = [
        f"request {s['request_id']}: {s['status']} — method {s['method']}, guarantee {s['guarantee']}"
        + kind.forget_headline(s),
        f"  model {s['model']['name']} v{s['model']['parent_version']} → v{s['model']['version']}"
        f" ({'promoted to production' if s['promoted'] else 'NOT promoted'})",
        f"  data  {s['data']['before']} → {s['data']['after']}",
        *kind.format_forget(s),
        *verification_lines(s),
        *superseded_lines(s),
        *failed_check_lines(s["checks"]),
    ]
    return "\n".join(lines)


def verification_lines(s: dict) -> list[str]:
    """How the update was verified, the checks it passed and how long the data took to leave production."""
    v, t = s.get("verification"), s["timings"]
    if not v:
        return []
    from unlearning.checks import outcome

    passed = [c["name"] for c in v["checks"] if outcome(c) == "ok"]
    undecided = [c for c in v["checks"] if outcome(c) == "undecided"]
    removal = (f"; time to removal {t['time_to_removal_s']:.1f} s" if t.get("time_to_removal_s") is not None
               else "; production unchanged")
    names = ", ".join(passed) or "none"
    return [f"  verified by {v['mode']}: {len(passed)}/{len(v['checks'])} checks passed ({names}), "
            f"{v['retrains']} model(s) retrained, {t['verify_s']:.2f} s" + removal,
            *(f"  undecided check {c['name']} ({c['reason']})" for c in undecided),
            *([f"  removal undecided: no check with power judged the forget set ({v['reason']})"]
              if v.get("decided") is False else [])]


def failed_check_lines(checks: list[dict]) -> list[str]:
    from unlearning.tabular.verify import describe_failures

    return [f"  FAILED check {describe_failures([c])}" for c in checks if not c["passed"]]


def superseded_lines(s: dict) -> list[str]:
    """What happened to the superseded artifacts, or that the run was rolled back."""
    if s.get("rollback"):
        r = s["rollback"]
        return [f"  rolled back: data restored to {r['data']['restored']}, production stays v{r['production']}"]
    return [f"  superseded: {x['artifact']} — {x['action']}" for x in s.get("superseded", [])]


def cmd_scan(args, root: Path) -> int:
    from tasks.scan import ONE_OFF_SALT, counts_by_detector, load_allowlist, scan_target

    what, findings, salt = scan_target(root, args.target, load_allowlist(args.allowlist))
    if salt == ONE_OFF_SALT:
        print(f"note: {root} is not an unlearnflow project: the fingerprints use a one-off salt (nothing is "
              "written here) and match no other scan; run it in the project, or set the project's UNLEARN_SALT, "
              "to match requests and allowlists", file=sys.stderr)
    counts = counts_by_detector(findings)
    if args.model and findings:
        findings = with_exposure(root, args.target, args.model, findings)
    lines = [f"{what}: {len(findings)} finding(s)" + (f" — {counts}" if counts else "")]
    for f in findings:
        where = ", ".join(f"{k} {v}" for k, v in f["location"].items())
        exposure = f"  exposure {f['exposure']:.1f} bits" if "exposure" in f else ""
        lines.append(f"  {f['detector']:<7} {f['masked']:<28} {f['fingerprint']}{exposure}  ({where})")
    emit(args, {"target": args.target, "findings": findings, "counts": counts, "salt": salt}, "\n".join(lines))
    return EXIT_FAILED if findings else EXIT_OK


def with_exposure(root: Path, dataset: str, model: str, findings: list[dict]) -> list[dict]:
    """Findings with their exposure in the model's production version, via the detect tasks."""
    from tasks import data as data_store
    from tasks import tracking
    from tasks.formats import TEXT, format_of
    from tasks.kinds.text import measure_exposure

    corpus = data_store.load_dataset(root, dataset)
    if format_of(corpus) is not TEXT:
        raise UnlearnError(f"--model measures exposure in a language model: '{dataset}' is not a text dataset")
    tracking.connect(root)
    tracking.require_production(model, root)
    experiment = tracking.configure(root)
    with tracking.run(experiment, f"scan {dataset}", {"flow": "scan", "model": model, "dataset": dataset}) as run_id:
        from tasks.common import Lineage

        rows = measure_exposure.fn(Lineage(root, experiment, run_id, {"model": model}), model, corpus, findings)
    by_print = {r["fingerprint"]: r["exposure"] for r in rows}
    return [{**f, "exposure": by_print[f["fingerprint"]]} for f in findings]


def cmd_comply(args, root: Path) -> int:
    from flows.comply import comply_flow
    from tasks import ledger_verify, references as prefetch, release

    keep_days = release.keep_days_setting(args.keep_superseded)
    runner, address = prefetch.runner_setting(args.task_runner, args.dask_address)
    workers = prefetch.check_workers(args.workers)
    checked_verify_mode(args)
    device = checked_device(args)
    ledger_verify.check_intact(root)  # a bad UNLEARN_LEDGER_URL, a forged ledger: one line before any flow starts
    try:
        summary = comply_flow(root=str(root), keep_superseded_days=keep_days, task_runner=runner,
                              dask_address=address, workers=workers, verify=args.verify, device=device)
    except release.ProjectBusy as busy:  # not bad input: the other run is doing the work
        print(f"comply: {busy}", file=sys.stderr)
        return EXIT_FAILED
    lines = [f"recovered after an interrupted run: {r.get('id') or 'release of model ' + r['model']} — {r['outcome']}"
             for r in summary.get("recovered", [])]
    lines += [f"due purge: {x['artifact']} — {x['action']}" for x in summary.get("purged", [])]
    refs = summary.get("references", {})
    if refs.get("task_runner", "inline") != "inline":
        lines.append(f"verification references trained ahead on the {refs['task_runner']} task runner: "
                     f"{refs['prefetched']} in {refs['seconds']:.0f} s, used {refs['used']}")
    lines.append(f"{summary['processed']} request(s) processed, {summary['failed']} failed")
    for r in summary["requests"]:
        where = (f"model {r['model']['name']} v{r['model']['version']}, certificate {r['certificate']}"
                 if r["status"] == "completed" else r["reason"])
        where += "".join(f"; {record}: {why}" for record, why in sorted(r.get("unchanged", {}).items()))
        lines.append(f"  {r['id']}: {r['status']} — {where}")
    emit(args, summary, "\n".join(lines))
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def cmd_audit(args, root: Path) -> int:
    from flows.audit import audit_flow
    from tasks import audit, audit_record, ledger_verify, references as prefetch, release

    keep_days = release.keep_days_setting(args.keep_superseded)
    runner, address = prefetch.runner_setting(args.task_runner, args.dask_address)
    workers = prefetch.check_workers(args.workers)
    cadence = audit.cadence_setting(args.min_requests, args.max_age)
    device = checked_device(args)
    ledger_verify.check_intact(root)  # a forged ledger: one line before anything is audited
    due = audit.due_models(root, args.model, cadence)  # an unknown or unauditable model: one line, exit 2
    if not due and not (release.open_journals(root) or audit_record.open_audits(root)):
        message = nothing_due_message(root, args.model, cadence)
        emit(args, audit_payload(args.model, [], [], message), message)
        return EXIT_OK
    try:
        summary = audit_flow(root=str(root), model=args.model, rebase=args.rebase, keep_superseded_days=keep_days,
                             task_runner=runner, dask_address=address, workers=workers,
                             min_requests=cadence.min_requests, max_age_days=cadence.max_age_days, device=device)
    except release.ProjectBusy as busy:
        print(f"audit: {busy}", file=sys.stderr)
        return EXIT_FAILED
    audits, recovered = summary["audits"], summary["recovered"]
    message = audited_message(audits) if audits else nothing_due_message(root, args.model, cadence)
    lines = [f"recovered an interrupted audit {r['id']}: {r['outcome']}" if "id" in r
             else f"recovered an interrupted run of model {r['model']}: {r['outcome']}" for r in recovered]
    emit(args, audit_payload(args.model, audits, recovered, message),
         "\n".join([*lines, *(line for a in audits for line in format_audit(a))] if audits else [*lines, message]))
    return EXIT_OK if all(a["passed"] for a in audits) else EXIT_FAILED


def audit_payload(model: str | None, audits: list[dict], recovered: list[dict], message: str) -> dict:
    """`unlearn audit --json`, one shape whatever happened: with MODEL one object, the keys of a
    model's audit (empty where nothing was audited), `recovered` (what an interrupted run left,
    finished or rolled back first) and `message`; without, `audits` (one per model), `recovered`
    and `message`."""
    from flows.audit import idle_audit

    if model is None:
        return {"audits": audits, "recovered": recovered, "message": message}
    return {**idle_audit(model), **(audits[0] if audits else {}), "recovered": recovered, "message": message}


def audited_message(audits: list[dict]) -> str:
    return "; ".join(f"model {a['model']}: {audit_verdict(a)}" for a in audits)


def audit_verdict(a: dict) -> str:
    """An audit's verdict in a few words: an undecided one (no check with power judged the forget
    set) promoted its retrained model and says so, as a failed one does."""
    if not a["passed"]:
        return (f"audit FAILED, retrained v{a['promoted']} promoted" if a["promoted"]
                else "audit FAILED, nothing promoted")
    if a.get("decided") is False:
        return f"audit undecided, retrained v{a['promoted']} promoted"
    return "audit passed"


def nothing_due_message(root: Path, model: str | None, cadence) -> str:
    """Why `unlearn audit` has nothing to do: no request since the last audit, or fewer than the cadence asks."""
    from tasks import audit

    waiting = ", ".join([*([f"fewer than {cadence.min_requests} requests waiting"] if cadence.min_requests else []),
                         *([f"none older than {cadence.max_age_days:g} days"] if cadence.max_age_days else [])])
    if model is None:  # any request waiting at all (the default cadence: one is enough)?
        return (f"no model is due: {waiting}; nothing to audit" if audit.models_due(root)
                else "no model has a request since its last audit; nothing to audit")
    count, _ = audit.pending_requests(root, model)
    if count == 0:
        return f"model {model}: no request since its last audit; nothing to audit"
    return f"model {model}: {count} request(s) since its last audit, {waiting}; nothing to audit"


def format_audit(a: dict) -> list[str]:
    from unlearning.checks import outcome

    verdict = "FAILED" if not a["passed"] else "UNDECIDED" if a.get("decided") is False else "PASSED"
    promoted = (f"; retrained model promoted: v{a['production_version']} → v{a['promoted']} (guarantee exact)"
                if a["promoted"] else "")
    lines = [f"audit of model {a['model']}: {verdict} — {len(a['covered_requests'])} request(s) covered "
             f"({', '.join(a['covered_requests'])}){promoted}",
             f"  retraining {a['timings']['retrain_s']:.2f} s; record {a['record']}"]
    lines += [f"  {outcome(c):6} {c['name']} {c['value']:.4g} (needs {c['threshold']})"
              + (f" — {c['reason']}" if outcome(c) == "undecided" else "") for c in a["checks"]]
    lines += [f"  fell short: {', '.join(fell_short(s))} ({s['check']})" for s in a["shortfall"]]
    if a.get("not_promoted"):
        lines.append(f"  nothing promoted: {a['not_promoted']}")
    if a.get("decided") is False:
        lines.append(f"  removal undecided: no check with power judged the forgotten data ({a['undecided_reason']})"
                     + ("; the retrained model was promoted, so the data is out for sure" if a["promoted"] else ""))
    return lines


def fell_short(shortfall: dict) -> list[str]:
    """The requests a failed check is attributed to; one whose id was sealed in an escrow that does
    not open is named by its forget run."""
    return [*shortfall["requests"],
            *(f"the request of forget run {run} (its escrow does not open)" for run in shortfall.get("runs", []))]
