"""`python -m bench.stream`: a month of erasure requests under four policies (issue 13 §4).

Requests arrive over `--days` days (uniform arrival times from a seeded RNG; the month starts on a
Monday at 00:00) on three scenarios, and each policy processes them on one worker per model
(operations on a model run one at a time, as the pipeline's model lock makes them):

- tables: UCI Adult as bench.tabular builds it, the plain logistic model; record deletions of 1–5
  training rows and one revocation of the attribute `sex`.
- text: the demo corpus and the `small` char-LSTM of bench.text (the demo's 400 steps; `--cache`
  keeps the original model, which is trained once and is not part of any policy's cost); every
  request redacts every occurrence of 1–3 of the 20 secrets. As the pipeline does, a `suppress` update
  on a fast-updated model also keeps the earlier secrets of its chain (since the last exact model,
  while no audit has deleted their escrow) down, and the evidence measures them again.
- images: Fashion-MNIST, the first 800 training images, the small CNN trained 2 epochs (bench.images
  --quick); every request deletes 1–5 images.

Policies:
1. `retrain per request`: the model retrained on the corrected data for every request.
2. `retrain nightly`: the requests that arrived before 02:00 retrained at once, at 02:00.
3. `update + reference`: the fast update (`auto`) and a reference retrained per request to verify it
   (the old default); a failed verification promotes the reference.
4. `update + evidence + weekly audit`: the fast update and the reference-free evidence checks per
   request (a failed check falls back to retraining, whose model the same checks judge); every
   Sunday at 03:00 an audit retrains one model on the current data and checks the production model
   against it for every request since the last audit (a failed audit promotes the retrained model).
   Audits continue past the month until every request of the month is covered.
5. `update + evidence + audit by cadence`: the same, but the Sunday run audits only once
   `--min-requests` requests wait or the oldest waiting one is `--max-age` days old (default 30 and
   30: `unlearn audit --min-requests 30 --max-age 30` in the weekly deployment; the decision is
   tasks.audit.Cadence's own). On a month of requests its one audit often falls after the month:
   the table gives CPU both with that covering audit and within the month.
6. and 7. (run only when named: `--policies 6,7`): 4 and 5 with `unlearn audit --rebase`: an
   audit that passes promotes its retrained model too, so the next updates start from an exact
   model (their drift checks are against it) at no extra cost.

Per scenario, a second table cuts each audited policy's share into what it spent it on:
retrainings (audits and the evidence's fall-backs), updates, evidence and audit checks, and the
floor its counts set — (audits + fall-backs)/requests + mean(update + evidence)/retraining —
whatever the checks cost: weekly audits of 30 requests alone are ≥ 5/30 = 17 %.

Every training, update and check is really run, through the library and the one registry, on one
thread; its CPU time (time.process_time) is what it costs and is also how long it keeps the worker
busy on the simulated clock. Time to removal = arrival → the moment a model without the request's
data would be in production. A retraining on a data version already retrained (the same D', the same
schedule and seeds: the same model) is run once and its measured CPU time charged to every policy that
runs it; the table's notes say how many were reused. Fidelity: the final production model against
the model retrained on the final data.

Output: one table per scenario and the targets, on stdout and in bench/results/stream.md, with the
machine's load in the header. Default: 30 table, 10 text and 30 image requests over 30 days in 2
processes: text ≈ 17 min of CPU (its 10 retrainings, 72–74 s each, dominate), tables + images ≈ 6 min
in the other (measured: 33 min wall at load 5–7); `--quick`: a smoke run of a few minutes
(6/3/6 requests over 7 days, the text model trained 100 steps). `--requests images=90` runs a
busier month (three a day), `--text-people 12 --requests text=30` a busier text month (60
secrets, 2 a request on average: the demo corpus holds 20); `--image-evidence KEY=VALUE,...` and `--image-verify KEY=VALUE,...`
set the image evidence's and audit's thresholds (unlearning.images.verify), `--compare-audits`
also judges every image audit on whole sets (not charged) and reports any verdict that differs.

    python -m bench.stream [--quick] [--scenarios tables,text,images] [--seed 0] [--cache DIR]
                           [--requests tables=30,text=10,images=30] [--days 30] [--jobs 2]
                           [--image-subset 800] [--image-epochs 2] [--min-requests 30] [--max-age 30]
                           [--policies 1,2,3,4,5] [--image-evidence K=V,...] [--image-verify K=V,...]
                           [--compare-audits] [--text-people 4]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see environment notes: spin-waits on 2 shared cores

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

DAY = 86_400.0
HOUR = 3_600.0
# prefect.yaml's schedules: the nightly deployment at 02:00 ("0 2 * * *"), the weekly audit on
# Sundays at 03:00 ("0 3 * * 0"); day 0 of the month is a Monday.
NIGHTLY_HOUR = 2.0
AUDIT_WEEKDAY, AUDIT_HOUR = 6, 3.0
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
SCENARIOS = ("tables", "text", "images")
DEFAULT_REQUESTS = {"tables": 30, "text": 10, "images": 30}
QUICK_REQUESTS = {"tables": 6, "text": 3, "images": 6}
QUICK_STEPS = 100  # --quick: a text model trained (and retrained) a quarter of the demo's steps
RESULTS = Path(__file__).parent / "results" / "stream.md"
TARGET_CPU_SHARE, TARGET_REMOVAL_SHARE = 0.10, 0.10


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# === the simulated clock and the policies (pure: tests/unit/test_stream_clock.py) ===============

def arrival_times(n: int, days: float, seed: int) -> list[float]:
    """n sorted arrival times in seconds since the month's start, uniform over `days` days."""
    rng = np.random.default_rng([seed, n])
    return sorted(float(t) for t in rng.uniform(0.0, days * DAY, size=n))


def next_daily(t: float, hour: float) -> float:
    """The first `hour`:00 strictly after t (a request arriving at 02:00 sharp waits for tomorrow's)."""
    at = math.floor(t / DAY) * DAY + hour * HOUR
    return at if at > t else at + DAY


def next_weekly(t: float, weekday: int, hour: float) -> float:
    """The first weekday `weekday` (0 = the month's first day) at `hour`:00 strictly after t."""
    at = math.floor((t - weekday * DAY) / (7 * DAY)) * 7 * DAY + weekday * DAY + hour * HOUR
    return at if at > t else at + 7 * DAY


def batches_at(arrivals: list[float], when: Callable[[float], float]) -> list[tuple[float, list[int]]]:
    """(run time, the 1-based request indices it covers) for each scheduled run that covers a request:
    a request is covered by the first run after its arrival."""
    out: dict[float, list[int]] = {}
    for k, t in enumerate(arrivals, start=1):
        out.setdefault(when(t), []).append(k)
    return sorted(out.items())


def nightly_batches(arrivals: list[float], hour: float = NIGHTLY_HOUR) -> list[tuple[float, list[int]]]:
    return batches_at(arrivals, lambda t: next_daily(t, hour))


def weekly_runs(start: float, weekday: int = AUDIT_WEEKDAY, hour: float = AUDIT_HOUR):
    """The weekly deployment's run times strictly after `start`, for ever."""
    at = next_weekly(start, weekday, hour)
    while True:
        yield at
        at += 7 * DAY


class Worker:
    """One model's pipeline: an operation starts when it is due and the previous one has finished,
    and keeps the worker busy for its measured CPU seconds. `cpu_month_s`: the CPU of operations
    due before `month_end` (a final audit or nightly run after the month is outside it)."""

    def __init__(self, month_end: float = math.inf):
        self.free_at = 0.0
        self.cpu_s = 0.0
        self.cpu_month_s = 0.0
        self.month_end = month_end

    def run(self, due: float, cost: float) -> float:
        """The simulated time the operation finishes."""
        self.free_at = max(due, self.free_at) + cost
        self.cpu_s += cost
        self.cpu_month_s += cost if due < self.month_end else 0.0
        return self.free_at


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


# === measuring the real operations ===============================================================

def cpu_of(fn: Callable[[], object]) -> tuple[float, object]:
    """(CPU seconds of this process while fn ran, its value); everything runs on one torch thread."""
    from unlearning.linalg import single_threaded
    with single_threaded():
        started = time.process_time()
        value = fn()
        return time.process_time() - started, value


class Measured:
    """The `ops` of `simulate` over a scenario: every operation really run and its CPU time
    measured; retrainings memoised per data version (the same D', schedule and seeds)."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.original = scenario.original
        self.retrained: dict[int, tuple[float, object]] = {}
        self.retrain_calls = 0

    def retrain(self, j: int):
        self.retrain_calls += 1
        if j not in self.retrained:
            say(f"    [{self.scenario.name}] retraining on the data after request {j} ...")
            self.retrained[j] = cpu_of(lambda: self.scenario.retrain(j))
        return self.retrained[j]

    def update(self, model, k: int):
        return cpu_of(lambda: self.scenario.update(model, k))

    def reference(self, model, before, k: int, retrained):
        return cpu_of(lambda: passed(self.scenario.reference_checks(model, before, [k], retrained)))

    def evidence(self, model, before, k: int):
        return cpu_of(lambda: failed_names(self.scenario.evidence_checks(model, before, k)))

    def audit(self, model, ks: list[int], retrained):
        return cpu_of(lambda: failed_names(self.scenario.audit_checks(model, ks, retrained)))

    def exact_on(self, model, j: int) -> bool:
        """Is `model` the retraining on the data after request j (the same object: retrainings are memoised)?"""
        return j in self.retrained and self.retrained[j][1] is model


def passed(checks: list[dict]) -> bool:
    return all(c["passed"] for c in checks)


def failed_names(checks: list[dict]) -> list[str]:
    """The failed checks, each as "name (value vs threshold)": what a failed audit is reported by."""
    return [f"{c['name']} ({c['value']:.3g} vs {c['threshold']})" for c in checks if not c["passed"]]


def check(name: str, value: float, threshold: str, ok: bool) -> dict:
    return {"name": name, "value": float(value), "threshold": threshold, "passed": bool(ok)}


# === tables =======================================================================================
# Adult (bench.tabular's table), the plain model (λ = 1e-3 per row). A model version carries the
# Hessian cache the pipeline computes for every registered version (charged to the operation that
# produced it), and the problem it came from (its θ before and D', for the evidence).

@dataclass(frozen=True, eq=False)
class TableModel:
    bundle: object  # unlearning.tabular.bundle.ModelBundle
    cache: dict
    problem: object = None  # the Problem the version was computed on (None: the original)
    residual: float | None = None  # ‖∇L(θ; D')‖, exact (methods.run_method computes it)


class Tables:
    name = "tables"
    REVOKED = ("sex",)

    def __init__(self, n_requests: int, seed: int):
        from unlearning.builtin import BUILTIN
        from unlearning.tabular import erasure
        from unlearning.tabular.data import correct_table
        from unlearning.tabular.training import TrainConfig, train_bundle

        self.erasure = erasure
        table = BUILTIN["adult"]()
        say("  [tables] training the plain Adult model and its Hessian cache (not charged) ...")
        bundle, b, _ = train_bundle(table, TrainConfig(lam=1e-3))
        self.original = TableModel(bundle, erasure.model_cache(bundle, table, b))
        rng = np.random.default_rng([seed, 1])
        ids = list(rng.permutation(np.asarray(table.frame.index[table.train_mask()]).astype(str)))
        revoke_at = int(rng.integers(1, n_requests + 1))
        self.data, self.requests = [table], []
        for k in range(1, n_requests + 1):
            if k == revoke_at:
                self.requests.append({"revoke": self.REVOKED, "delete": []})
            else:
                self.requests.append({"revoke": (), "delete": [ids.pop() for _ in range(int(rng.integers(1, 6)))]})
            r = self.requests[-1]
            self.data.append(correct_table(self.data[-1], r["delete"], list(r["revoke"]), {}))

    def describe(self) -> str:
        deleted = sum(len(r["delete"]) for r in self.requests)
        return (f"Adult, plain logistic model (λ = 1e-3), {len(self.requests)} requests: {deleted} record(s) deleted "
                f"in {sum(1 for r in self.requests if r['delete'])} request(s), one revocation of `sex`")

    def _run(self, method: str, model: TableModel, k_from: int, k_to: int) -> TableModel:
        """The method on the request(s) k_from+1..k_to through the registry, registered as the
        pipeline registers a version (new feature map, θ, Hessian cache)."""
        from unlearning import registry
        problem, bundle_after, _ = self.erasure.build_problem(model.bundle, self.data[k_from], self.data[k_to],
                                                              None, dict(model.cache))
        result = registry.run("tabular", method, problem)
        bundle = self.erasure.unlearned_bundle(bundle_after, result.theta)
        return TableModel(bundle, self.erasure.model_cache(bundle, self.data[k_to], None), problem, result.residual)

    def retrain(self, j: int) -> TableModel:
        return self._run("retrain", self.original, 0, j)

    def update(self, model: TableModel, k: int) -> TableModel:
        return self._run("auto", model, k - 1, k)

    def _test(self, bundle, k: int):
        return self.erasure.held_out_data(self.data[k], bundle)

    def reference_checks(self, model: TableModel, before: TableModel, ks: list[int], retrained: TableModel) -> list[dict]:
        """Today's reference verification (unlearning.tabular.verify) on the held-out rows."""
        from unlearning.tabular import verify
        test = self._test(model.bundle, ks[-1])
        metrics = verify.fidelity(model.bundle.theta, retrained.bundle.theta, before.bundle.theta, test.X, test.y)
        return verify.checks(metrics, verify.VerifyConfig())

    def evidence_checks(self, model: TableModel, before: TableModel, k: int) -> list[dict]:
        """The evidence mode of unlearning.tabular.verify: strong convexity turns the exact residual
        on D' into ‖θ − θ_retrain‖ ≤ ‖∇L(θ; D')‖ / Λ and a guaranteed agreement; no model trained."""
        from unlearning.tabular import influence, verify
        problem = model.problem
        test = self._test(model.bundle, k)
        metrics = verify.convexity_evidence(model.bundle.theta, before.bundle.theta, model.residual,
                                            influence.gradient_residual(problem, problem.theta), model.bundle.l2,
                                            problem.n_new, test.X, test.y)
        return verify.convexity_checks(metrics, verify.VerifyConfig())

    def audit_checks(self, model: TableModel, ks: list[int], retrained: TableModel) -> list[dict]:
        return self.reference_checks(model, model, ks, retrained)

    def fidelity(self, model: TableModel, final: TableModel) -> dict:
        from unlearning.tabular import verify
        test = self._test(model.bundle, len(self.requests))
        return {"agreement %": 100 * verify.agreement(model.bundle.theta, final.bundle.theta, test.X),
                "‖θ − θ_r‖": float((model.bundle.theta - final.bundle.theta).norm())}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        return f"agreement {f['agreement %']:.2f} %, ‖θ − θ_r‖ {f['‖θ − θ_r‖']:.2e}"


# === text =========================================================================================
# bench.text's setting: the demo corpus, the `small` char-LSTM, every occurrence of a secret
# redacted with the token policy. A model is an lm.LMBundle; D_k is the corpus after requests 1..k.

class Text:
    name = "text"

    def __init__(self, n_requests: int, seed: int, steps: int, cache: Path | None, candidates: int,
                 people: int = 4):
        from bench import text as bench_text
        from tasks.scan import scan_corpus
        from unlearning.text import chain as rules
        from unlearning.text import lm
        from unlearning.text.data import redact
        from unlearning.text.shakespeare import build_shakespeare

        self.lm, self.rules, self.candidates, self.salt, self.people = lm, rules, candidates, bench_text.SALT, people
        # id(updated model) → (it, the exact model it is held to — None: trained exactly, it is one —,
        # the requests of its chain since that model whose escrow no audit has deleted), by the rules
        # of unlearning.text.chain, as tasks/kinds/text_chain.py keeps and reads them (chain_secrets)
        self._since: dict[int, tuple] = {}
        self._ppl: dict[int, tuple] = {}  # id(model) → (it, its held-out perplexity)
        # id(fast-updated model) → (it, the model its fast updates are anchored to: unlearning.text.chain.teacher_of;
        # None: itself, once an audit passed it), as tasks/kinds/text_teacher.py keeps it
        self._teachers: dict[int, tuple] = {}
        self.retrained: dict[int, object] = {}  # j → the model retrained on D_j
        self._judged: dict[int, tuple] = {}  # id(model) → (it, fingerprint → (request, its evidence row))
        self.exposure_misses: list[str] = []  # audits failed on exposure: the secret and what its evidence saw
        corpus = self.original_corpus = build_shakespeare(n_people=people)  # 5 secrets a person
        findings = scan_corpus(corpus, bench_text.SALT)

        def train():
            say(f"  [text] training the original `small` model ({steps} steps; not charged) ...")
            bundle, st = lm.train_text_model(corpus, "small", steps=steps)
            return bundle, {"seconds": st.seconds, "steps": st.steps, "epochs": st.epochs}

        key = f"small-{steps}steps" + ("" if people == 4 else f"-{people}people")  # 4: the demo corpus
        self.original, _ = bench_text.cached_model(cache, key, train)
        prints = list(dict.fromkeys(f["fingerprint"] for f in findings))
        rng = np.random.default_rng([seed, 2])
        groups = secret_groups([prints[i] for i in rng.permutation(len(prints))], n_requests, rng)
        self.requests = [[f for f in findings if f["fingerprint"] in set(g)] for g in groups]
        self.data = [corpus]
        for part in self.requests:
            self.data.append(redact(self.data[-1], lm.occurrences_of(part), policy="token"))
        self.secrets = [lm.secrets_of(corpus, part) for part in self.requests]  # raw values: in memory only

    def describe(self) -> str:
        sizes = [len(s) for s in self.secrets]
        corpus = "demo corpus" if self.people == 4 else f"demo corpus with {self.people} people ({5 * self.people} secrets)"
        return (f"{corpus}, `small` char-LSTM ({self.original.settings['steps']} steps), {len(sizes)} requests of "
                f"{min(sizes)}–{max(sizes)} secrets ({sum(sizes)} secrets, "
                f"{sum(len(r) for r in self.requests)} occurrences), exposure over {self.candidates} candidates")

    def _context(self, model, k_from: int, k_to: int):
        lm = self.lm
        part = [f for r in self.requests[k_from:k_to] for f in r]
        request, windows = lm.window_request(model, self.data[k_from], self.data[k_to], part)
        return lm.TextContext(model, request, windows)

    def retrain(self, j: int):
        from unlearning import registry
        self.retrained[j] = registry.run("text", "retrain", self._context(self.original, 0, j)).bundle
        return self.retrained[j]

    def notes(self) -> list[str]:
        """How far a retraining's held-out perplexity lies from the original model's: what the
        evidence's `max_drift` must leave below the audit's threshold (measured outside the CPU)."""
        misses = ([f"Audits failed on exposure (the worst secret): {'; '.join(self.exposure_misses)}.", ""]
                  if self.exposure_misses else [])
        if not self.retrained:
            return misses
        base = self.perplexity(self.original, 0)
        rel = {j: self.perplexity(m, j) / base - 1 for j, m in sorted(self.retrained.items())}
        return [f"Held-out perplexity of the retrained models against the original's ({base:.4f}), per data "
                f"version: " + ", ".join(f"D{j} {r:+.2%}" for j, r in rel.items()) + f" (range {min(rel.values()):+.2%} "
                f"to {max(rel.values()):+.2%}). A fast update's drift since its exact model is held to "
                f"≤ {self.evidence_cfg().max_drift:.1%}, the audit to ≤ "
                f"{self.lm.TextVerifyConfig().max_perplexity_increase:.0%} over the retrained model.", "", *misses]

    @staticmethod
    def evidence_cfg():
        from unlearning.text import evidence
        return evidence.EvidenceConfig()

    def update(self, model, k: int):
        """`auto` decided on the request's own windows, as the pipeline's plan does; a suppress update
        also keeps the earlier secrets of the chain still in escrow down (unlearning.text.chain.takes_the_chain)."""
        from unlearning import registry
        rules = self.rules
        context = self._context(model, k - 1, k)
        method = registry.choose("text", "auto", windows=len(context.request), hf=False)
        chain = self.chain_of(model)
        if rules.takes_the_chain(method) and chain:
            context = self._chain_context(model, k, chain)
        teacher = rules.teacher_of(model, self._teachers.get(id(model), (None, None))[1])
        result = registry.run("text", method, context._replace(teacher=teacher))
        exact = rules.trained_exactly(result.guarantee)
        anchor = self.anchor_of(model) if rules.held_to_its_chain(exact) else None
        self._since[id(result.bundle)] = (result.bundle, anchor, rules.chain_after(chain, k, exact))
        if not exact:
            self._teachers[id(result.bundle)] = (result.bundle, teacher)
        return result.bundle

    def _kept(self, model) -> tuple:
        """(the exact model `model` is held to, its chain): none and an empty chain for a model
        trained or retrained."""
        return self._since[id(model)][1:] if id(model) in self._since else (None, [])

    def trained_exactly(self, model) -> bool:
        """Trained, retrained or updated exactly: it is held to no earlier model (it kept no anchor)."""
        return self._kept(model)[0] is None

    def chain_of(self, model) -> list[int]:
        """The requests since the last exact model `model` descends from whose escrow is held."""
        return self._kept(model)[1]

    def _restored(self, k: int, chain: list[int]):
        """D_{k-1} with the chain's secrets written back where they were (unlearning.text.chain.restored)."""
        if not chain:
            return self.data[k - 1]
        places = [{"record": o.record, "start": o.start, "end": o.end,
                   "written": self.original_corpus.text_of(o.record)[o.start:o.end]}
                  for j in chain for s in self.secrets[j - 1] for o in s.occurrences]
        return self.rules.restored(self.data[k - 1], places)

    def _chain_context(self, model, k: int, chain: list[int]):
        lm = self.lm
        part = [*self.requests[k - 1], *(f for j in chain for f in self.requests[j - 1])]
        request, windows = lm.window_request(model, self._restored(k, chain), self.data[k], part)
        return lm.TextContext(model, request, windows)

    def anchor_of(self, model):
        """The last model trained exactly that `model` descends from by fast updates (itself if it
        was trained or retrained), as the pipeline keeps it with each version (tasks/kinds/text_chain.py)."""
        return self.rules.drift_anchor(model, self._kept(model)[0])

    def perplexity(self, model, k: int) -> float:
        """Held-out perplexity, measured once per model, as the pipeline keeps it with each version
        (the next request's "before" is the number the update's evidence measured)."""
        if id(model) not in self._ppl:
            self._ppl[id(model)] = (model, self.lm.held_out_perplexity(model, self.data[k]))
        return self._ppl[id(model)][1]

    def _measure(self, model, secrets, k: int, regenerate: bool = True) -> dict:
        lm = self.lm
        return {"exposures": [lm.secret_exposure(model, s, self.candidates) for s in secrets],
                "regenerated": sum(lm.regenerates(model, s, self.salt, lm.TextVerifyConfig().samples)
                                   for s in secrets) if regenerate else 0,
                "perplexity": lm.held_out_perplexity(model, self.data[k])}

    def _checks(self, after: dict, ppl_base: float, ref: dict, judged: list[bool] | None = None) -> list[dict]:
        """Today's reference checks (tasks/kinds/text_verify.py): every secret's exposure ≤ retrained + 2
        bits, held-out perplexity ≤ +3 % over `ppl_base`, nothing regenerated. `judged`: which
        secrets the exposure check takes (the audit's: those of the model's chain, tasks.audit_checks)."""
        cfg = self.lm.TextVerifyConfig()
        gaps = [a - r for a, r, j in zip(after["exposures"], ref["exposures"], judged or [True] * len(ref["exposures"]))
                if j]
        increase = after["perplexity"] / ppl_base - 1
        return [*([check("exposure_vs_retrain_bits", max(gaps), f"<= {cfg.exposure_margin_bits}",
                         max(gaps) <= cfg.exposure_margin_bits)] if gaps else []),
                check("perplexity_increase", increase, f"<= {cfg.max_perplexity_increase}",
                      increase <= cfg.max_perplexity_increase),
                check("secrets_regenerated", after["regenerated"], "== 0", after["regenerated"] == 0)]

    def reference_checks(self, model, before, ks: list[int], retrained) -> list[dict]:
        secrets = [s for k in ks for s in self.secrets[k - 1]]
        after = self._measure(model, secrets, ks[-1])
        ppl_before = self.lm.held_out_perplexity(before, self.data[ks[0] - 1])
        return self._checks(after, ppl_before, self._measure(retrained, secrets, ks[-1], regenerate=False))

    def evidence_checks(self, model, before, k: int) -> list[dict]:
        """The evidence mode (unlearning.text.evidence): each removed secret against controls of its
        format in the same model, regeneration from every occurrence's context, held-out perplexity
        against the model before and against the last model trained exactly, relearning on held-out
        text; no model trained."""
        from unlearning.text import evidence
        cfg = evidence.EvidenceConfig()
        # a fast update is also judged on the earlier secrets of its chain still in escrow (a
        # fall-back's retrained model starts a new chain: the request's own secrets only)
        held = self.rules.held_to_its_chain(self.trained_exactly(model))
        chain = self.chain_of(before) if held else []
        secrets = [*self.secrets[k - 1], *(s for j in chain for s in self.secrets[j - 1])]
        items = evidence.prepare(secrets, self._restored(k, chain), self.data[k], cfg)
        rows = evidence.judge(model, items, cfg, self.salt, evidence.relearning_windows(model, self.data[k]),
                              figures=len(self.secrets[k - 1]))  # the chain's earlier secrets: no exposure figure
        self._judged[id(model)] = (model, {r["fingerprint"]: (k, r) for r in rows})
        ppl = {"before": self.perplexity(before, k - 1), "after": self.perplexity(model, k)}
        if held:  # a fast update; a fall-back's retrained model is held to no earlier one
            ppl["anchor"] = self.perplexity(self.anchor_of(before), k - 1)
        return evidence.evidence_checks(rows, ppl, cfg)

    def audit_checks(self, model, ks: list[int], retrained) -> list[dict]:
        """The audit: the reference checks for every covered secret (exposure: those of the model's
        chain, as tasks.audit_checks judges them), perplexity against the retrained model's. It
        deletes the covered requests' escrow: later fast updates no longer see their secrets."""
        chain = self.chain_of(model)
        if id(model) in self._since:
            self._since[id(model)] = (model, self._kept(model)[0], [j for j in chain if j not in ks])
        secrets = [s for k in ks for s in self.secrets[k - 1]]
        judged = [not self.rules.removed_exactly(k, chain) for k in ks for _ in self.secrets[k - 1]]
        ref = self._measure(retrained, secrets, ks[-1], regenerate=False)
        after = self._measure(model, secrets, ks[-1])
        checks = self._checks(after, ref["perplexity"], ref, judged)
        if any(c["name"] == "exposure_vs_retrain_bits" and not c["passed"] for c in checks):
            self.exposure_misses.append(self._miss(model, ks, secrets, after["exposures"], ref["exposures"], judged))
        if id(model) in self._teachers and passed(checks):  # if it stays (no --rebase), it teaches its chain
            self._teachers[id(model)] = (model, self.rules.teacher_after_audit(self._teachers[id(model)][1]))
        return checks

    def _miss(self, model, ks: list[int], secrets, after: list[float], retrained: list[float], judged: list[bool]) -> str:
        """The secret an audit's exposure check failed on: its numbers, and those the evidence of the
        request that last judged it saw (masked form only)."""
        i = max((n for n in range(len(secrets)) if judged[n]), key=lambda n: after[n] - retrained[n])
        s = secrets[i]
        judged = self._judged.get(id(model), (None, {}))[1].get(s.fingerprint)
        seen = ("not judged by the evidence of the model's last update" if judged is None else
                f"its evidence at request {judged[0]}: {figure(judged[1])}({judged[1]['controls']} controls), "
                f"excess {judged[1]['excess_bits']:+.2f} "
                f"bits, after relearning {judged[1]['relearned_excess_bits']:+.2f}, free characters "
                f"{judged[1].get('free_chars', '?')}")
        return (f"audit of requests {ks[0]}–{ks[-1]}: {s.masked} exposure {after[i]:.2f} bits, retrained "
                f"{retrained[i]:.2f}; {seen}")

    def fidelity(self, model, final) -> dict:
        secrets = [s for group in self.secrets for s in group]
        k = len(self.requests)
        m, r = self._measure(model, secrets, k, regenerate=False), self._measure(final, secrets, k, regenerate=False)
        return {"worst exposure gap (bits)": max(a - b for a, b in zip(m["exposures"], r["exposures"])),
                "perplexity ratio": m["perplexity"] / r["perplexity"]}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        return f"worst exposure gap {f['worst exposure gap (bits)']:+.1f} bits, perplexity ×{f['perplexity ratio']:.3f}"


def figure(row: dict) -> str:
    """A judged secret's exposure and control band, when its evidence measured them (not for an
    earlier secret of a chain: unlearning.text.evidence.judge's `figures`)."""
    return "" if row["after"] is None else f"exposure {row['after']:.2f}, control band {row['band']:.2f} "


def secret_groups(prints: list[str], n_requests: int, rng: np.random.Generator) -> list[list[str]]:
    """`prints` cut into n_requests consecutive groups of 1–3 secrets, as many secrets as that allows
    (sizes as even as possible, then varied at random); with more requests than secrets, the extra
    requests are dropped."""
    n = min(n_requests, len(prints))
    sizes = [max(1, min(3, len(prints) // n))] * n
    spare = min(len(prints), 3 * n) - sum(sizes)
    for i in rng.permutation(n):
        if spare <= 0:
            break
        grow = min(3 - sizes[i], spare)
        sizes[i] += grow
        spare -= grow
    for _ in range(n):  # vary the sizes, keeping their sum: move one secret between two requests
        i, j = (int(x) for x in rng.integers(n, size=2))
        if sizes[i] > 1 and sizes[j] < 3 and i != j:
            sizes[i], sizes[j] = sizes[i] - 1, sizes[j] + 1
    out, start = [], 0
    for size in sizes:
        out.append(prints[start:start + size])
        start += size
    return out


# === images =======================================================================================
# bench.images --quick's setting: Fashion-MNIST, the first 800 training images, the small CNN
# trained 2 epochs. A model is a CNN; D_k = the images left after requests 1..k, in their order.

class Images:
    name = "images"

    def __init__(self, n_requests: int, seed: int, subset: int = 800, epochs: float = 2.0, verify=None,
                 evidence_cfg=None, compare_audits: bool = False):
        import torch
        from unlearning.images.verify import ImageEvidenceConfig, ImageVerifyConfig
        verify, evidence_cfg = verify or ImageVerifyConfig(), evidence_cfg or ImageEvidenceConfig()
        from bench.images import record_requests, tensors, train_original
        from unlearning.images.data import build_fashion_mnist

        fm = build_fashion_mnist(n_train=subset, n_test=2000, allow_download=False)
        X, y = tensors(fm.images[fm.train], fm.labels[fm.train])
        say(f"  [images] training the original CNN ({subset} images, {epochs:g} epochs; not charged) ...")
        self.original, data = train_original(X, y, epochs, seed)
        self.X, self.y, self.schedule = X, y, data.schedule
        self.test = tensors(fm.images[~fm.train], fm.labels[~fm.train])
        self.requests = record_requests(len(y), n_requests, seed)
        alive = torch.ones(len(y), dtype=torch.bool)
        self.alive = [alive.clone()]
        for deleted in self.requests:
            alive[deleted] = False
            self.alive.append(alive.clone())
        self.subset, self.epochs, self.fm, self.tensors = subset, epochs, fm, tensors
        # record ids: positions in the Fashion-MNIST arrays (training images first, as X holds them)
        self.train_ids = [f"fm{p}" for p in np.flatnonzero(fm.train)]
        self.test_ids = [f"fm{p}" for p in np.flatnonzero(~fm.train)]
        # what each model version's evidence knows of its outputs (tasks/state.py `outputs/`): the
        # original's computed when it was trained, as the train flow does (not charged, as training is not)
        from unlearning.images.outputs import KnownOutputs
        from unlearning.metrics import model_outputs
        self.known = {self.original: KnownOutputs.of(self.train_ids, model_outputs(self.original, X, y)).merged(
            KnownOutputs.of(self.test_ids, model_outputs(self.original, *self.test)))}
        # the fast updates, and what each keeps of the exact model its chain of updates started from
        self.fast, self.anchors = set(), {}
        self._chains = {}  # id(fast update) → (it, (the chain its next deletion continues, its first model))
        self.verify, self.evidence_cfg = verify, evidence_cfg
        self.compare_audits, self.audit_verdicts, self.audit_images_judged = compare_audits, [], []

    def describe(self) -> str:
        return (f"Fashion-MNIST, first {self.subset} training images, small CNN {self.epochs:g} epochs; "
                f"{len(self.requests)} requests deleting {sum(map(len, self.requests))} images (1–5 each)")

    def _data(self, k: int):
        from unlearning.images import ImageData
        keep = self.alive[k]
        return ImageData(self.X[keep], self.y[keep], self.schedule)

    def _context(self, model, k_from: int, k_to: int):
        from unlearning.images import delete_records
        from unlearning.images.registry import ImageContext
        before, after = self.alive[k_from], self.alive[k_to]
        positions = (before & ~after)[before].nonzero().squeeze(1)  # the deleted images among D_{k_from}
        return ImageContext(model, self._data(k_from), delete_records(int(before.sum()), positions))

    def retrain(self, j: int):
        from unlearning import registry
        return registry.run("images", "retrain", self._context(self.original, 0, j)).model

    def update(self, model, k: int):
        """`auto` as the pipeline runs it, by the rules of unlearning.images.chain (tasks/kinds/images.py
        follows them too): an unrolled deletion continues the chain the model before keeps (from the
        chain's first model over every image it deleted); a model trained, retrained, updated otherwise
        or audited and kept starts one. A chain is named by its first model itself here."""
        from unlearning import registry
        from unlearning.images import chain as rules
        context = self._context(model, k - 1, k)
        method = registry.choose("images", "auto")
        taken = (rules.continued(self._chains.get(id(model), (None, None))[1], model, model)
                 if rules.takes_the_chain(method, None, context.data, context.request) else None)
        result = registry.run("images", method, context._replace(chain=None if taken is None else taken[0]))
        updated = result.model
        if taken is not None and (first := rules.first_model(taken, result.chain, model)) is not None:
            self._chains[id(updated)] = (updated, (result.chain, first))  # the model too: its id stays its own
        self.fast.add(updated)  # not trained exactly: its evidence also judges it against its chain's anchor
        return updated

    def _forget(self, ks: list[int]):
        idx = [i for k in ks for i in self.requests[k - 1]]
        return self.X[idx], self.y[idx]

    def _metrics(self, model, ks: list[int]) -> dict:
        from unlearning.metrics import evaluate_model
        keep = self.alive[ks[-1]]
        return evaluate_model(model, self._forget(ks), (self.X[keep], self.y[keep]), self.test)

    def reference_checks(self, model, before, ks: list[int], retrained) -> list[dict]:
        """Today's reference verification (unlearning.images.verify) against the retrained CNN."""
        from unlearning.images.verify import ImageVerifyConfig, image_checks
        return image_checks(self._metrics(model, ks), {}, self._metrics(retrained, ks), "delete_records",
                            ImageVerifyConfig(), n_forget=len(self._forget(ks)[1]))

    def evidence_checks(self, model, before, k: int) -> list[dict]:
        """The evidence mode (unlearning.images.evidence.judge_request), as tasks/kinds/images_verify.py runs
        it: the deleted images against held-out images of their classes (accuracy gap, membership
        AUC) in the updated model, utility (every metric, as the pipeline evaluates it, on fixed
        samples) against the model before, whose outputs its version knows (computed when it was
        trained or by the request that made it), and, when the model before is a fast update,
        against the last exact model of its chain; the update's outputs are kept for the next request."""
        from unlearning.images import evidence
        cfg = self.evidence_cfg
        forget, keep = self.requests[k - 1], self.alive[k].nonzero().squeeze(1).tolist()
        classes = set(self.y[forget].tolist())
        controls = evidence.control_positions(self.fm.train, self.fm.labels, classes, cfg.max_controls)
        images = evidence.RequestImages(
            (self.X[forget], self.y[forget], [self.train_ids[i] for i in forget]),
            (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
            (*self.test, self.test_ids),
            (*self.tensors(self.fm.images[controls], self.fm.labels[controls]), [f"fm{p}" for p in controls]),
            frozenset(self.y[keep].unique().tolist()), relabelled=False)
        anchor = self.anchors.get(before) if before in self.fast else None  # None: `before` is exact
        judged = evidence.judge_request(before, model, images, cfg, self.known.get(before), anchor)
        self.known[model] = judged.known_after
        if model in self.fast:  # as the pipeline keeps it with a fast update's version
            self.anchors[model] = judged.anchor_after
        if judged.known_before is not None:
            self.known[before] = judged.known_before
        return judged.checks

    def audit_checks(self, model, ks: list[int], retrained) -> list[dict]:
        """The audit as tasks.audit_checks runs it (unlearning.images.audit): the UA gap on every covered
        request's images, the TA/RA drops against the retrained model on fixed samples, the whole
        sets where a sample is not clear of the threshold. With `compare_audits`, the whole-set
        verdicts too, computed by notes() outside the measured CPU."""
        from unlearning.images.audit import audit_checks
        from unlearning.images.verify import ImageVerifyConfig
        keep = self.alive[ks[-1]].nonzero().squeeze(1).tolist()
        sets = (self._forget(ks), (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
                (*self.test, self.test_ids))
        checks, metrics = audit_checks(model, retrained, *sets, "delete_records", self.verify)
        self._chains.pop(id(model), None)  # the audit deletes the sealed chain: production, if it stays, starts the next
        self.audit_images_judged.append((metrics["ra_images_judged"], metrics["ta_images_judged"]))
        if self.compare_audits:  # judged on whole sets in notes(), outside the measured CPU
            self.audit_verdicts.append((model, retrained, ks, checks))
        return checks

    def whole_set_verdicts(self) -> list[tuple[list[bool], list[bool], list[float], list[float]]]:
        """Per audit: (sampled verdicts, whole-set verdicts, sampled values, whole-set values)."""
        from unlearning.images.audit import audit_checks
        out = []
        for model, retrained, ks, checks in self.audit_verdicts:
            keep = self.alive[ks[-1]].nonzero().squeeze(1).tolist()
            whole, _ = audit_checks(model, retrained, self._forget(ks),
                                    (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
                                    (*self.test, self.test_ids), "delete_records",
                                    self.verify.model_copy(update={"audit_images": None}))
            out.append(([c["passed"] for c in checks], [c["passed"] for c in whole],
                        [round(c["value"], 2) for c in checks], [round(c["value"], 2) for c in whole]))
        return out

    def fidelity(self, model, final) -> dict:
        from unlearning.metrics import compare_to_retrain
        ks = list(range(1, len(self.requests) + 1))
        rows = compare_to_retrain([{"method": "retrain", **self._metrics(final, ks)},
                                   {"method": "final", **self._metrics(model, ks)}])
        return {"avg gap": rows[1]["avg_gap"]}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        return f"average gap {f['avg gap']:.2f} points (UA/RA/TA/MIA)"

    def notes(self) -> list[str]:
        """How the audits' drops were decided and, with compare_audits, whole sets against samples."""
        if not self.audit_images_judged:
            return []
        judged = ", ".join(f"{ra}/{ta}" for ra, ta in self.audit_images_judged)
        lines = [f"Image audits (D′ {int(self.alive[-1].sum())} images, test {len(self.test[1])}; sample "
                 f"{self.verify.audit_images}, z {self.verify.audit_z:g}): images judged per audit, D′/test: {judged}.",
                 f"Evidence settings: {self.evidence_cfg.model_dump(exclude_defaults=True) or 'defaults'}.", ""]
        if self.compare_audits:
            compared = self.whole_set_verdicts()
            differ = [i for i, (a, b, _, _) in enumerate(compared, start=1) if a != b]
            lines += [f"Sampled audit checks against whole sets (same models, same process): {len(compared)} "
                      f"audits, {len(differ)} with a different verdict{' (audits ' + str(differ) + ')' if differ else ''}; "
                      "values (UA gap, TA drop, RA drop) sampled → whole: "
                      + "; ".join(f"{s} → {w}" for _, _, s, w in compared) + ".", ""]
        return lines


# === the table ====================================================================================

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
             "fall-backs to retraining | fidelity to a retrain on the final data |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    base = base or Base(outcomes[0].cpu_s, outcomes[0].cpu_month_s)
    base, base_month = base.cpu_s, base.cpu_month_s
    for o in outcomes:
        spent = ", ".join(f"{what} {cpu:.1f}" for what, cpu in o.spent.items())
        lines.append(f"| {o.policy} | {o.cpu_s:.1f} | {100 * o.cpu_s / base:.1f} % | "
                     f"{o.cpu_month_s:.1f} ({100 * o.cpu_month_s / base_month:.1f} %) | {spent} | "
                     f"{minutes(statistics.median(o.removal_s))} | {minutes(max(o.removal_s))} | {verdicts(o.checks)} | "
                     f"{verdicts(o.audits)} | {o.fallbacks} | {fidelity_text(fidelity[o.policy])} |")
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
    lines = ["| policy | share | = retrainings | + updates | + evidence | + audit checks | audits + fall-backs "
             "of requests | ≥ floor: (audits + fall-backs)/requests + mean(update + evidence)/retraining |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for o in outcomes:
        if o.policy not in POLICIES[3:]:
            continue
        t = share_terms(o, base.cpu_s, n, mean_retrain)
        part = {w: f"{100 * t.parts.get(w, 0.0):.1f} %" for w in ("retrain", "update", "evidence checks", "audit checks")}
        lines.append(f"| {o.policy} | {100 * t.share:.1f} % | {part['retrain']} | {part['update']} | "
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


def run_scenario(scenario, arrivals: list[float], policies=POLICIES, cadence=None,
                 month_end: float = math.inf) -> tuple[list[str], list[str]]:
    """(the scenario's markdown section, its target lines)."""
    ops = Measured(scenario)
    outcomes = []
    # The new default first: its update, evidence and audit fail early if they are to fail at all
    # (retrainings are memoised, so the order changes no policy's cost); shown in POLICIES order.
    for policy in sorted(policies, key=lambda p: (p != POLICIES[3], POLICIES.index(p))):
        say(f"  [{scenario.name}] {policy} ...")
        started = time.perf_counter()
        outcomes.append(simulate(policy, arrivals, ops, cadence, month_end))
        say(f"  [{scenario.name}] {policy}: {outcomes[-1].cpu_s:.1f} CPU s charged, "
            f"{time.perf_counter() - started:.0f} s wall")
    outcomes.sort(key=lambda o: POLICIES.index(o.policy))
    final = ops.retrain(len(arrivals))[1]
    fidelity = {o.policy: scenario.fidelity(o.model, final) for o in outcomes}
    reused = ops.retrain_calls - len(ops.retrained)
    audited = [o for o in outcomes if o.policy in POLICIES[3:]]
    base = base_of(outcomes, ops, len(arrivals))
    section = [f"## {scenario.name}: {scenario.describe()}", "",
               *scenario_rows(outcomes, fidelity, scenario.fidelity_text, base), "",
               *([f"**Estimate**: {base.note}.", ""] if base.note else []),
               f"Notes: {len(arrivals)} requests over {(arrivals[-1] - arrivals[0]) / DAY:.1f} days; "
               f"{len(ops.retrained)} distinct retrainings run (measured CPU "
               f"{', '.join(f'{c:.1f}' for c, _ in ops.retrained.values())} s), "
               f"{reused} more charged at the measured cost of the same data version's. "
               f"Operations: " + "; ".join(f"{o.policy}: " + ", ".join(f"{n}× {w}" for w, n in o.operations.items())
                                           for o in outcomes) + ".", "",
               "Mean CPU per operation: " + "; ".join(f"{o.policy}: {per_request_costs(o)}" for o in audited) + ".", "",
               "Audits: " + "; ".join(audit_schedule(o, month_end) for o in audited) + ".", ""]
    mean_retrain = statistics.mean(c for c, _ in ops.retrained.values())
    section += [f"What the ≤ {TARGET_CPU_SHARE:.0%} target is made of (shares of retrain per request; mean "
                f"retraining {mean_retrain:.2f} s):", "", *share_rows(outcomes, base, len(arrivals), mean_retrain), ""]
    if fell := [o for o in audited if any(f.startswith("request") for f in o.failed_checks)]:
        section += ["Requests' failed evidence checks: " + "; ".join(
            f"{o.policy}: " + ", ".join(f"{name} ×{len(v)} ({', '.join(v)})" for name, v in failed_check_values(o).items())
            for o in fell)
            + ".", ""]
    if rebased := [o for o in outcomes if o.policy in REBASED]:
        section += ["Rebased: " + "; ".join(f"{o.policy}: {o.rebases} passing audit(s) promoted their retrained model"
                                             for o in rebased) + ".", ""]
    section += scenario.notes() if hasattr(scenario, "notes") else []
    goals = targets(scenario.name, outcomes, base)
    return section + ["Targets:", "", *goals, ""], goals


def build(name: str, n: int, args):
    if name == "tables":
        return Tables(n, args.seed)
    if name == "text":
        return Text(n, args.seed, args.steps, args.cache, args.candidates, args.text_people)
    return Images(n, args.seed, args.image_subset, args.image_epochs, args.image_verify, args.image_evidence,
                  args.compare_audits)


def parse_requests(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in SCENARIOS or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"bad --requests entry {part!r}: SCENARIO=N with N ≥ 1, "
                                             f"SCENARIO one of {', '.join(SCENARIOS)}")
        out[name] = int(count)
    return out


def settings_of(name: str) -> Callable[[str], object]:
    """An argparse type: "k=v,k=v" → unlearning.images.verify.<name>(k=v, ...), validated."""
    def parse(text: str):
        from pydantic import ValidationError

        from unlearning.images import verify
        pairs = [p.partition("=") for p in filter(None, (p.strip() for p in text.split(",")))]
        try:
            return getattr(verify, name)(**{k.strip(): None if v.strip().lower() == "none" else v.strip()
                                            for k, _, v in pairs})
        except ValidationError as e:
            raise argparse.ArgumentTypeError(f"bad {name} settings {text!r}: {e.errors()[0]['loc']} "
                                             f"{e.errors()[0]['msg']}") from None
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    from flows.settings import DEMO_TEXT_STEPS
    ap = argparse.ArgumentParser(prog="bench.stream", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_REQUESTS} requests over 7 days")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: tables,text,images")
    ap.add_argument("--requests", type=parse_requests, default={}, help="e.g. text=10,images=30 (default "
                    + ",".join(f"{k}={v}" for k, v in DEFAULT_REQUESTS.items()) + ")")
    ap.add_argument("--days", type=float, default=None, help="length of the stream (default 30; --quick 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None,
                    help=f"text: training steps of the LM (default: the demo's {DEMO_TEXT_STEPS}; --quick {QUICK_STEPS})")
    ap.add_argument("--policies", default=None,
                    help="comma-separated numbers of the policies to run (1–7, the list above; default 1–5); "
                    "without 1 the shares are of an estimate (n × the mean retraining measured)")
    ap.add_argument("--min-requests", default=str(DEFAULT_CADENCE[0]),
                    help=f"the cadence policy: audit once N requests wait (default {DEFAULT_CADENCE[0]}), "
                    "as `unlearn audit --min-requests N`")
    ap.add_argument("--max-age", default=str(DEFAULT_CADENCE[1]),
                    help=f"... or once the oldest is DAYS old (default {DEFAULT_CADENCE[1]:g})")
    ap.add_argument("--candidates", type=int, default=1000, help="text: same-format candidates per exposure")
    ap.add_argument("--text-people", type=int, default=4,
                    help="text: people pasting 5 secrets each into the corpus (default 4: the demo's 20 secrets; at most "
                    "16); a busier month, e.g. --text-people 12 --requests text=30")
    ap.add_argument("--image-subset", type=int, default=800, help="images: training images (bench.images --quick: 800)")
    ap.add_argument("--image-epochs", type=float, default=2.0, help="images: epochs of the CNN (bench.images --quick: 2)")
    ap.add_argument("--image-verify", type=settings_of("ImageVerifyConfig"), default=None,
                    help="images: reference/audit settings, KEY=VALUE,... of unlearning.images.verify.ImageVerifyConfig "
                    "(e.g. audit_images=200,audit_z=3; none for None)")
    ap.add_argument("--image-evidence", type=settings_of("ImageEvidenceConfig"), default=None,
                    help="images: evidence settings, KEY=VALUE,... of ImageEvidenceConfig (e.g. drift_z=1)")
    ap.add_argument("--compare-audits", action="store_true",
                    help="images: judge every audit on whole sets too (not charged) and report differing verdicts")
    ap.add_argument("--cache", type=Path, default=RESULTS.parent / "text-cache",
                    help="text: keep/reuse the original LM here (only the original: retrainings are measured)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="scenarios run side by side in separate processes (default: 2 where there are 2 cores: "
                    "text in one, tables then images in the other)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/stream.md (quick: stream-quick.md)")
    args = ap.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        ap.error(f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    from tasks.audit import cadence_setting
    from unlearning.errors import UnlearnError
    try:
        args.cadence = cadence_setting(args.min_requests, args.max_age)
    except UnlearnError as e:
        ap.error(str(e))
    chosen = [p.strip() for p in (args.policies or "").split(",") if p.strip()]
    if any(not p.isdigit() or not 1 <= int(p) <= len(POLICIES) for p in chosen):
        ap.error(f"--policies takes numbers 1–{len(POLICIES)}, got {args.policies!r}")
    args.policies = tuple(POLICIES[int(p) - 1] for p in chosen) or DEFAULT_POLICIES
    counts = dict(QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    counts.update(args.requests)
    args.counts = counts
    args.days = args.days or (7.0 if args.quick else 30.0)
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEMO_TEXT_STEPS)
    if args.days <= 0 or args.jobs < 1 or args.image_subset < 10 or args.image_epochs <= 0:
        ap.error("--days, --jobs and --image-epochs must be positive, --image-subset at least 10")
    from unlearning.text.shakespeare import MAX_PEOPLE
    if not 1 <= args.text_people <= MAX_PEOPLE:
        ap.error(f"--text-people must be from 1 to {MAX_PEOPLE}")
    if args.out is None:
        args.out = RESULTS.with_name("stream-quick.md") if args.quick else RESULTS
    return args


def scenario_section(name: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """One scenario from its set-up to its section (what a --jobs worker process runs)."""
    say(f"bench.stream: {name}, {args.counts[name]} requests over {args.days:g} days")
    arrivals = arrival_times(args.counts[name], args.days, args.seed)
    section, lines = run_scenario(build(name, args.counts[name], args), arrivals, args.policies, cadence=args.cadence,
                                  month_end=args.days * DAY)
    print("\n".join(section), flush=True)
    return section, [f"- {name}: {line[2:]}" if line.startswith("- ") else line for line in lines]


def all_sections(args: argparse.Namespace, done: Callable[[dict], None]) -> None:
    """Every scenario's (section, targets), handed to `done` as {name: ...} after each finishes; with
    --jobs > 1 each scenario in its own process (CPU time is measured per process, so scenarios
    running side by side do not count each other's)."""
    finished: dict[str, tuple[list[str], list[str]]] = {}
    if args.jobs <= 1 or len(args.scenarios) == 1:
        for name in args.scenarios:
            finished[name] = scenario_section(name, args)
            done(finished)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(scenario_section, name, args): name for name in args.scenarios}
        for future in as_completed(futures):
            finished[futures[future]] = future.result()
            done(finished)


def write_results(args: argparse.Namespace, argv, started: float, finished: dict) -> None:
    """The results file with every scenario finished so far (rewritten as each finishes)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    pending = [name for name in args.scenarios if name not in finished]
    still = f" (still running: {', '.join(pending)})" if pending else ""
    header = (f"# bench.stream — a month of requests — {stamp}, {platform.node()}, nproc {os.cpu_count()}, "
              f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) when written, "
              f"{time.perf_counter() - started:.0f} s wall{still}"
              f"\n\nGenerated by `python -m bench.stream {' '.join(sys.argv[1:] if argv is None else argv)}`. "
              "CPU s: the measured CPU time of every training, update and check the policy ran (one thread). "
              "Time to removal: arrival → a model without the data in production, on the simulated clock "
              "(nightly retraining at 02:00, audits Sundays 03:00, as prefect.yaml schedules them; one worker per model). "
              f"Cadence policy: {args.cadence}. CPU s within the month: the operations due before day {args.days:g} "
              "(a covering audit or nightly run after it is not counted there).\n")
    ordered = [finished[name] for name in args.scenarios if name in finished]
    sections = [line for section, _ in ordered for line in section]
    goals = [line for _, lines in ordered for line in lines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n" + "\n".join(sections) + "\nAll targets:\n\n" + "\n".join(goals) + "\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    all_sections(args, lambda finished: write_results(args, argv, started, finished))
    say(f"bench.stream: written {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
