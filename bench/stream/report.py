"""bench.stream's tables: per scenario the policies' costs and times to removal, what each audited
policy's share of retrain per request is made of, and the targets met or missed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.stream.clock import DAY, HOUR
from bench.stream.policies import POLICIES, Outcome

TARGET_CPU_SHARE, TARGET_REMOVAL_SHARE = 0.10, 0.10


def minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / HOUR:.1f} h"


def verdicts(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "—"


@dataclass(frozen=True)
class Base:
    """Retrain per request's CPU, the denominator of every share: measured, or (when the policy was
    not run: `--policies`) estimated as n × the mean retraining measured in the same run."""

    cpu_s: float
    cpu_month_s: float
    note: str = ""


def base_of(outcomes: list[Outcome], ops, n: int) -> Base:
    by = {o.policy: o for o in outcomes}
    if POLICIES[0] in by:
        return Base(by[POLICIES[0]].cpu_s, by[POLICIES[0]].cpu_month_s)
    costs = [c for c, _ in ops.retrained.values()]
    mean = statistics.mean(costs)
    return Base(n * mean, n * mean, f"retrain per request not run: its CPU is estimated as {n} × the mean of the "
                                    f"{len(costs)} retraining(s) measured in this run ({mean:.1f} s)")


def scenario_rows(outcomes: list[Outcome], fidelity: dict[str, dict], fidelity_text, base: Base | None = None) -> list[str]:
    lines = ["| policy | CPU s | share of retrain per request | CPU s within the month (share) | CPU s by operation | "
             "median time to removal | max time to removal | checks passed (per request) | audits passed | "
             "fall-backs to retraining (failed updates repaired instead) | fidelity to a retrain on the final data |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    base = base or Base(outcomes[0].cpu_s, outcomes[0].cpu_month_s)
    base, base_month = base.cpu_s, base.cpu_month_s
    for o in outcomes:
        spent = ", ".join(f"{what} {cpu:.1f}" for what, cpu in o.spent.items())
        lines.append(f"| {o.policy} | {o.cpu_s:.1f} | {100 * o.cpu_s / base:.1f} % | "
                     f"{o.cpu_month_s:.1f} ({100 * o.cpu_month_s / base_month:.1f} %) | {spent} | "
                     f"{minutes(statistics.median(o.removal_s))} | {minutes(max(o.removal_s))} | {verdicts(o.checks)} | "
                     f"{verdicts(o.audits)} | {o.fallbacks} ({o.repairs}) | {fidelity_text(fidelity[o.policy])} |")
    return lines


def per_request_costs(o: Outcome) -> str:
    """Mean CPU seconds of each operation of a policy: what each target needs cut."""
    return ", ".join(f"{what} {o.spent[what] / n:.2f} s × {n}" for what, n in o.operations.items())


@dataclass(frozen=True)
class ShareTerms:
    """A policy's share of retrain per request's CPU, cut into what it spent it on (each a share of
    the same base, so they add up to `share`), and the bound its counts alone set: r retrainings (its
    audits and its evidence fall-backs) of n requests cost r/n of retrain per request at the mean
    retraining, whatever the checks cost; the update and evidence of every request add theirs."""

    share: float
    parts: dict  # operation → share of the base (retrain, update, evidence checks, audit checks, ...)
    requests: int
    audits: int
    fallbacks: int  # retrainings at request time (the evidence's fall-backs); a failed audit is an audit
    floor: float  # (audits + fall-backs)/requests + mean(update + evidence)/mean retraining

    @property
    def audit_floor(self) -> float:
        """What the audits alone cost at the mean retraining: a cadence's lower bound on the share."""
        return self.audits / self.requests if self.requests else 0.0


def share_terms(o: Outcome, base_cpu: float, n: int, mean_retrain: float) -> ShareTerms:
    """The decomposition of o.cpu_s / base_cpu (ShareTerms), with `mean_retrain` the mean CPU of the
    retrainings measured in the run."""
    parts = {what: cpu / base_cpu for what, cpu in o.spent.items()}
    retrainings = o.operations.get("retrain", 0)
    audits = len(o.audits) - o.exact_audits  # those that retrained
    fallbacks = retrainings - audits
    per_request = sum(o.spent.get(w, 0.0) for w in ("update", "evidence checks")) / n if n else 0.0
    floor = (retrainings / n if n else 0.0) + per_request / mean_retrain
    return ShareTerms(o.cpu_s / base_cpu, parts, n, audits, fallbacks, floor)


def share_rows(outcomes: list[Outcome], base: Base, n: int, mean_retrain: float) -> list[str]:
    """The target's arithmetic per audited policy: what of its share each operation takes."""
    lines = ["| policy | share | = retrainings | + updates | + repairs | + evidence | + audit checks | audits + "
             "fall-backs of requests | ≥ floor: (audits + fall-backs)/requests + mean(update + evidence)/retraining |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for o in outcomes:
        if o.policy not in POLICIES[3:]:
            continue
        t = share_terms(o, base.cpu_s, n, mean_retrain)
        part = {w: f"{100 * t.parts.get(w, 0.0):.1f} %" for w in ("retrain", "update", "repair", "evidence checks",
                                                                  "audit checks")}
        lines.append(f"| {o.policy} | {100 * t.share:.1f} % | {part['retrain']} | {part['update']} | {part['repair']} | "
                     f"{part['evidence checks']} | {part['audit checks']} | {t.audits} + {t.fallbacks} of {n} "
                     f"(audits alone ≥ {100 * t.audit_floor:.1f} %) | {100 * t.floor:.1f} % |")
    return lines


def failed_check_values(o: Outcome) -> dict[str, list[str]]:
    """Per evidence check, the values it failed requests with (what the fall-backs were for)."""
    values: dict[str, list[str]] = {}
    for what in o.failed_checks:
        if what.startswith("request"):
            name, _, rest = what.split(": ", 1)[1].partition(" (")
            values.setdefault(name, []).append(rest.split(" vs ")[0])
    return values


def audit_schedule(o: Outcome, month_end: float) -> str:
    runs = ", ".join(f"day {at / DAY:.1f}{' (after the month)' if at >= month_end else ''}: {n} requests"
                     for at, n in o.audit_runs)
    exact = (f" ({o.exact_audits} of them of a production model retrained on the current data: nothing retrained)"
             if o.exact_audits else "")
    return f"{o.policy}: audits {runs or 'none'}{exact}"


def targets(name: str, outcomes: list[Outcome], base: Base | None = None) -> list[str]:
    by = {o.policy: o for o in outcomes}
    base = base or Base(by[POLICIES[0]].cpu_s, by[POLICIES[0]].cpu_month_s)
    nightly = by.get(POLICIES[1])
    lines = []
    for new in (by[p] for p in POLICIES[3:] if p in by):
        share, month = new.cpu_s / base.cpu_s, new.cpu_month_s / base.cpu_month_s
        lines.append(f"- {new.policy}:")
        if name != "tables":
            lines.append(f"  - CPU ≤ {TARGET_CPU_SHARE:.0%} of retrain per request{' (estimated)' if base.note else ''}: "
                         f"{100 * share:.1f} % (within the month {100 * month:.1f} %) — "
                         f"{'met' if share <= TARGET_CPU_SHARE else 'MISSED'}")
        if nightly is None:
            lines.append(f"  - median time to removal: {minutes(statistics.median(new.removal_s))} (the nightly "
                         "policy was not run)")
        else:
            ratio = statistics.median(new.removal_s) / statistics.median(nightly.removal_s)
            lines.append(f"  - median time to removal ≤ a tenth of the nightly policy's: "
                         f"{minutes(statistics.median(new.removal_s))} vs {minutes(statistics.median(nightly.removal_s))} "
                         f"({ratio:.3g}×) — {'met' if ratio <= TARGET_REMOVAL_SHARE else 'MISSED'}")
        lines.append(f"  - every audit passes: {verdicts(new.audits)} — "
                     f"{'met' if new.audits and all(new.audits) else 'MISSED'}")
        lines += [f"    - failed: {what}" for what in new.failed_checks if what.startswith("audit")]
    return lines
