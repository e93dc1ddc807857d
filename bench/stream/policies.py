"""bench.stream's policies over the simulated clock: `simulate` runs one of them with any operations
of known or measured cost and returns what it spent, when each request's data left production and
which model ended there (pure: tests/unit/test_stream_clock.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.stream.clock import Worker, nightly_batches, weekly_runs

POLICIES = ("retrain per request", "retrain nightly", "update + reference", "update + evidence + weekly audit",
            "update + evidence + audit by cadence", "update + evidence + weekly audit, rebased",
            "update + evidence + audit by cadence, rebased")
DEFAULT_POLICIES = POLICIES[:5]
# Policies 6 and 7 are 4 and 5 with `unlearn audit --rebase`: an audit that passes promotes its
# retrained model too, so the next updates start from an exact model (chains of at most one audit
# period) at no further cost — the audit has paid for the retraining.
REBASED = POLICIES[5:]
# The cadence of the fifth policy: `unlearn audit --min-requests 30 --max-age 30` run by the weekly
# deployment (prefect.yaml's commented min_requests/max_age_days): a model is audited on a Sunday at
# 03:00 once 30 requests wait or its oldest waiting request is 30 days old.
DEFAULT_CADENCE = (30, 30.0)


@dataclass
class Outcome:
    policy: str
    cpu_s: float = 0.0
    cpu_month_s: float = 0.0  # what of cpu_s was due within the month (the rest: the covering audit)
    removal_s: list[float] = field(default_factory=list)  # per request, in request order
    checks: list[bool] = field(default_factory=list)  # per-request verification verdicts (policies 3, 4)
    audits: list[bool] = field(default_factory=list)
    audit_runs: list[tuple[float, int]] = field(default_factory=list)  # (when, requests covered) per audit
    failed_checks: list[str] = field(default_factory=list)  # "audit 2: exposure_vs_retrain_bits", ...
    fallbacks: int = 0  # requests (or audits) whose fast model was replaced by a retrained one
    repairs: int = 0  # requests whose failed update a repair made pass (no retraining)
    rebases: int = 0  # passing audits whose retrained model was promoted (the rebased policies)
    exact_audits: int = 0  # audits of a production model retrained on the current data: nothing retrained
    model: object = None  # the production model at the end
    operations: dict[str, int] = field(default_factory=dict)  # what ran how often
    spent: dict[str, float] = field(default_factory=dict)  # CPU seconds per kind of operation

    def charge(self, what: str, cost: float) -> float:
        self.operations[what] = self.operations.get(what, 0) + 1
        self.spent[what] = self.spent.get(what, 0.0) + cost
        return cost


def simulate(policy: str, arrivals: list[float], ops, cadence=None, month_end: float = math.inf) -> Outcome:
    """Run one policy over the requests (1-based k, arriving at arrivals[k-1]) with `ops`:
    `original` (the model in production at the start) and five operations each returning
    (cost in seconds, value): retrain(j) → the model retrained on the data after requests 1..j;
    update(model, k) → the fast update of request k; reference(model, before, k, retrained) → passed;
    evidence(model, before, k) → the names of the failed checks; audit(model, ks, retrained) →
    the names of the failed checks. `cadence` (tasks.audit.Cadence; the last policy only, default
    DEFAULT_CADENCE) decides at each weekly run whether the waiting requests are audited; the weekly
    policy is the cadence of one request. Operations due from `month_end` on count in cpu_s only."""
    from tasks.audit import Cadence

    worker, out, model = Worker(month_end), Outcome(policy), ops.original
    removal: dict[int, float] = {}

    def retrain(j: int):
        cost, retrained = ops.retrain(j)
        return out.charge("retrain", cost), retrained

    if policy == POLICIES[0]:
        for k, t in enumerate(arrivals, start=1):
            cost, model = retrain(k)
            removal[k] = worker.run(t, cost) - t
    elif policy == POLICIES[1]:
        for at, ks in nightly_batches(arrivals):
            cost, model = retrain(ks[-1])
            done = worker.run(at, cost)
            removal.update({k: done - arrivals[k - 1] for k in ks})
    elif policy == POLICIES[2]:
        for k, t in enumerate(arrivals, start=1):
            c_update, updated = ops.update(model, k)
            c_retrain, retrained = retrain(k)
            c_check, passed = ops.reference(updated, model, k, retrained)
            out.charge("update", c_update), out.charge("reference checks", c_check)
            out.checks.append(passed)
            out.fallbacks += not passed
            model = updated if passed else retrained
            removal[k] = worker.run(t, c_update + c_retrain + c_check) - t
    elif policy in POLICIES[3:]:
        if policy in (POLICIES[3], POLICIES[5]):
            cadence = Cadence(1)  # every Sunday, whatever waits
        elif cadence is None:
            cadence = Cadence(*DEFAULT_CADENCE)
        model = evidence_and_audits(arrivals, ops, cadence, worker, out, removal, retrain, policy in REBASED)
    else:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    out.cpu_s, out.cpu_month_s, out.model = worker.cpu_s, worker.cpu_month_s, model
    out.removal_s = [removal[k] for k in range(1, len(arrivals) + 1)]
    return out


def evidence_and_audits(arrivals: list[float], ops, cadence, worker: Worker, out: Outcome, removal: dict,
                        retrain, rebase: bool = False) -> object:
    """The fast update and the evidence per request (a failed check falls back to retraining, whose
    model the same checks judge), and the weekly deployment's audit of the waiting requests when
    `cadence.due` says so — on until every request is covered. `rebase`: a passing audit promotes
    its retrained model too. Returns the production model."""
    if cadence.max_age_days is None and cadence.min_requests > 1:
        raise ValueError(f"{cadence} would never audit the month's last requests: give it a maximum age")
    model, waiting = ops.original, []
    runs = weekly_runs(arrivals[0]) if arrivals else iter(())
    at = next(runs, math.inf)
    for k in range(1, len(arrivals) + 2):
        t = arrivals[k - 1] if k <= len(arrivals) else math.inf
        while at < t and (waiting or t < math.inf):  # a request at the run's time goes first
            if cadence.due(len(waiting), at - arrivals[waiting[0] - 1] if waiting else 0.0):
                model = audit(waiting, at, arrivals, ops, model, worker, out, removal, retrain, rebase)
                waiting = []
            at = next(runs)
        if t == math.inf:
            break
        c_update, updated = ops.update(model, k)
        c_check, failed = ops.evidence(updated, model, k)
        cost = out.charge("update", c_update) + out.charge("evidence checks", c_check)
        out.checks.append(not failed)
        out.failed_checks += [f"request {k}: {name}" for name in failed]
        if failed and (fixed := repaired(ops, updated, model, k)) is not None:  # auto's repair, where it applies
            c_repair, c_check, updated, failed = fixed
            cost += out.charge("repair", c_repair) + out.charge("evidence checks", c_check)
            out.repairs += not failed
        if not failed:
            model = updated
        else:  # the fall-back retrains and judges the retrained model by the same checks
            c_retrain, retrained = retrain(k)
            cost += c_retrain + out.charge("evidence checks", ops.evidence(retrained, model, k)[0])
            out.fallbacks += 1
            model = retrained
        removal[k] = worker.run(t, cost) - t
        waiting.append(k)
    return model


def repaired(ops, updated, before, k: int):
    """(repair's cost, its evidence's, the repaired model, its failed checks) where `ops` repairs a
    failed update (`repair(model, before, k)` → (cost, the repaired model or None where the failure is
    not one a repair answers)); None where it does not."""
    c_repair, fixed = ops.repair(updated, before, k)
    if fixed is None:
        return None
    c_check, failed = ops.evidence(fixed, before, k)
    return c_repair, c_check, fixed, failed


def audit(ks: list[int], at: float, arrivals: list[float], ops, model, worker: Worker, out: Outcome, removal: dict,
          retrain, rebase: bool = False):
    """One audit of requests `ks` at `at`: a retraining on the current data and the checks of the
    production model against it; a failed audit promotes the retrained model, and so does a passing
    one with `rebase` (not a fall-back: the data was out already). A production model that is itself
    the retraining on the current data (a fall-back of the last request, nothing since) is judged
    exact without retraining, as tasks.audit.exact_on_current_data has the pipeline do. Returns the
    production model."""
    if ops.exact_on(model, ks[-1]):
        out.audits.append(True)
        out.audit_runs.append((at, len(ks)))
        out.exact_audits += 1
        return model
    c_retrain, retrained = retrain(ks[-1])
    c_check, failed = ops.audit(model, ks, retrained)
    out.charge("audit checks", c_check)
    out.audits.append(not failed)
    out.audit_runs.append((at, len(ks)))
    out.failed_checks += [f"audit {len(out.audits)} (requests {ks[0]}–{ks[-1]}): {name}" for name in failed]
    done = worker.run(at, c_retrain + c_check)
    if not failed:
        out.rebases += rebase
        return retrained if rebase else model
    out.fallbacks += 1  # the data is out for sure only once the retrained model is promoted
    removal.update({k: done - arrivals[k - 1] for k in ks})
    return retrained
