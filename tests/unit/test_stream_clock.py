"""bench.stream's simulated clock and policy arithmetic, with operations of known cost (no model):
when each policy's model without a request's data reaches production, what it is charged, and
which model ends in production."""

import pytest

from bench.stream.clock import DAY, HOUR, arrival_times, next_daily, next_weekly, nightly_batches
from bench.stream.options import parse_args
from bench.stream.policies import DEFAULT_CADENCE, DEFAULT_POLICIES, POLICIES, REBASED, simulate
from bench.stream.report import Base, audit_schedule, failed_check_values, share_rows, share_terms, targets
from bench.stream.run import run_scenario
from bench.stream.text import secret_groups

RETRAIN, UPDATE, CHECK, EVIDENCE, AUDIT = 100.0, 2.0, 5.0, 1.0, 7.0


class Ops:
    """Costs fixed by the test; models are labels; checks fail for the requests/audits named."""

    original = "original"

    def __init__(self, failing_checks=(), failing_audits=()):
        self.failing_checks, self.failing_audits = set(failing_checks), set(failing_audits)
        self.audited: list[list[int]] = []
        self.retrained: list[int] = []

    def retrain(self, j):
        self.retrained.append(j)
        return RETRAIN, f"retrained@{j}"

    def update(self, model, k):
        return UPDATE, f"{model}+u{k}"

    def reference(self, model, before, k, retrained):
        assert retrained == f"retrained@{k}" and model == f"{before}+u{k}"
        return CHECK, k not in self.failing_checks

    def evidence(self, model, before, k):
        return EVIDENCE, ["evidence_check (2 vs ≤ 1)"] if k in self.failing_checks else []

    def repair(self, model, before, k):
        return 0.0, None  # no repair: a failed update is retrained

    def audit(self, model, ks, retrained):
        self.audited.append(ks)
        return AUDIT, ["exposure_vs_retrain_bits (5 vs ≤ 2)"] if len(self.audited) in self.failing_audits else []

    def exact_on(self, model, j):
        return model == f"retrained@{j}"


def test_daily_and_weekly_runs_are_the_next_ones_strictly_after_arrival():
    assert next_daily(1 * HOUR, 2) == 2 * HOUR
    assert next_daily(2 * HOUR, 2) == DAY + 2 * HOUR  # at 02:00 sharp the batch has started
    assert next_daily(DAY + 23 * HOUR, 2) == 2 * DAY + 2 * HOUR
    assert next_weekly(0.0, 0, 3) == 3 * HOUR
    assert next_weekly(4 * HOUR, 0, 3) == 7 * DAY + 3 * HOUR
    assert next_weekly(0.0, 6, 3) == 6 * DAY + 3 * HOUR  # day 0 is a Monday: Sunday is day 6
    assert next_weekly(6 * DAY + 3 * HOUR, 6, 3) == 13 * DAY + 3 * HOUR
    assert next_weekly(13 * DAY, 6, 3) == 13 * DAY + 3 * HOUR


def test_arrivals_are_sorted_seeded_and_within_the_month():
    times = arrival_times(30, 30, seed=0)
    assert times == sorted(times) and len(times) == 30 and 0 <= times[0] and times[-1] < 30 * DAY
    assert times == arrival_times(30, 30, seed=0) != arrival_times(30, 30, seed=1)


def test_nightly_batches_group_every_request_before_two_oclock():
    arrivals = [1 * HOUR, 1.5 * HOUR, 3 * HOUR, DAY + 1 * HOUR]
    assert nightly_batches(arrivals) == [(2 * HOUR, [1, 2]), (DAY + 2 * HOUR, [3, 4])]


def test_retrain_per_request_queues_on_one_worker():
    out = simulate(POLICIES[0], [10.0, 11.0, DAY], Ops())
    assert out.removal_s == [RETRAIN, 2 * RETRAIN - 1, RETRAIN]  # the second waits for the first
    assert out.cpu_s == 3 * RETRAIN and out.model == "retrained@3"


def test_nightly_retrains_once_per_night_and_removal_waits_for_it():
    ops = Ops()
    out = simulate(POLICIES[1], [1 * HOUR, 1.5 * HOUR, 3 * HOUR], ops)
    assert ops.retrained == [2, 3]  # one retraining per night, on the data after its last request
    assert out.removal_s == [HOUR + RETRAIN, 0.5 * HOUR + RETRAIN, 23 * HOUR + RETRAIN]
    assert out.cpu_s == 2 * RETRAIN and out.model == "retrained@3"


def test_update_with_reference_pays_a_retraining_per_request_and_falls_back_on_failure():
    out = simulate(POLICIES[2], [10.0, DAY, 2 * DAY], Ops(failing_checks={2}))
    cost = UPDATE + RETRAIN + CHECK
    assert out.removal_s == [cost] * 3 and out.cpu_s == 3 * cost
    assert out.checks == [True, False, True] and out.fallbacks == 1
    assert out.model == "retrained@2+u3"  # request 2's failed update was replaced by its reference


SUNDAY_AUDIT = 6 * DAY + 3 * HOUR  # the first weekly audit of the month (prefect.yaml: Sundays 03:00)


def test_weekly_audit_covers_the_week_and_delays_nothing_when_it_passes():
    ops = Ops()
    arrivals = [DAY, 2 * DAY, SUNDAY_AUDIT + 1.0, 8 * DAY]
    out = simulate(POLICIES[3], arrivals, ops)
    assert ops.audited == [[1, 2], [3, 4]] and ops.retrained == [2, 4]
    # request 3 arrives a second after the Sunday audit started: it waits for the audit to finish
    assert out.removal_s == [UPDATE + EVIDENCE, UPDATE + EVIDENCE, RETRAIN + AUDIT - 1.0 + UPDATE + EVIDENCE,
                             UPDATE + EVIDENCE]
    assert out.audits == [True, True] and out.fallbacks == 0
    assert out.cpu_s == pytest.approx(4 * (UPDATE + EVIDENCE) + 2 * (RETRAIN + AUDIT))
    assert out.model == "original+u1+u2+u3+u4"


def test_failed_audit_promotes_the_retrained_model_and_removal_waits_for_it():
    arrivals = [DAY, 2 * DAY, 8 * DAY]
    out = simulate(POLICIES[3], arrivals, Ops(failing_audits={1}))
    audit_done = SUNDAY_AUDIT + RETRAIN + AUDIT
    assert out.removal_s[:2] == [audit_done - DAY, audit_done - 2 * DAY]
    assert out.removal_s[2] == UPDATE + EVIDENCE
    assert out.audits == [False, True] and out.fallbacks == 1
    assert out.model == "retrained@2+u3"
    assert out.failed_checks == ["audit 1 (requests 1–2): exposure_vs_retrain_bits (5 vs ≤ 2)"]
    assert "    - failed: audit 1 (requests 1–2): exposure_vs_retrain_bits (5 vs ≤ 2)" in targets("text", [
        simulate(policy, arrivals, Ops(failing_audits={1})) for policy in POLICIES])


def test_failed_evidence_falls_back_to_retraining_at_once():
    out = simulate(POLICIES[3], [DAY], Ops(failing_checks={1}))
    # the retrained model is judged by the same checks before it is promoted
    assert out.removal_s == [UPDATE + EVIDENCE + RETRAIN + EVIDENCE] and out.checks == [False] and out.fallbacks == 1
    assert out.failed_checks == ["request 1: evidence_check (2 vs ≤ 1)"]
    # the Sunday audit finds production retrained on the current data: nothing retrained, nothing checked
    assert out.cpu_s == UPDATE + 2 * EVIDENCE + RETRAIN and out.audits == [True] and out.exact_audits == 1


REPAIR = 3.0


class RepairingOps(Ops):
    """Ops whose scenario repairs a failed update: the repair of request k passes unless k is in
    `failing_repairs`, and a failure a repair does not answer (k in `unrepairable`) gets none."""

    def __init__(self, failing_checks=(), failing_repairs=(), unrepairable=()):
        super().__init__(failing_checks)
        self.failing_repairs, self.unrepairable = set(failing_repairs), set(unrepairable)

    def repair(self, model, before, k):
        return (0.0, None) if k in self.unrepairable else (REPAIR, f"{model}+repaired")

    def evidence(self, model, before, k):
        if model.endswith("+repaired"):
            return EVIDENCE, ["evidence_check (2 vs ≤ 1)"] if k in self.failing_repairs else []
        return super().evidence(model, before, k)


def test_a_repaired_update_is_promoted_without_retraining_and_one_that_fails_falls_back():
    out = simulate(POLICIES[3], [DAY, 2 * DAY, 3 * DAY], RepairingOps(failing_checks={1, 2, 3}, failing_repairs={2},
                                                                      unrepairable={3}))
    # request 1: repaired and judged again; 2: the repair failed, retrained; 3: nothing to repair, retrained
    assert out.removal_s[0] == UPDATE + EVIDENCE + REPAIR + EVIDENCE
    assert out.removal_s[1] == UPDATE + EVIDENCE + REPAIR + EVIDENCE + RETRAIN + EVIDENCE
    assert out.removal_s[2] == UPDATE + EVIDENCE + RETRAIN + EVIDENCE
    assert out.repairs == 1 and out.fallbacks == 2 and out.operations["repair"] == 2
    assert out.checks == [False, False, False]  # what the update's own evidence said
    assert out.spent["repair"] == 2 * REPAIR
    rows = share_rows([out], Base(3 * RETRAIN, 3 * RETRAIN), 3, RETRAIN)
    assert "| + repairs |" in rows[0] and f"| {100 * 2 * REPAIR / (3 * RETRAIN):.1f} % |" in rows[2]


def test_an_audit_of_a_model_retrained_on_the_current_data_retrains_nothing_but_one_updated_since_does():
    arrivals = [DAY, 2 * DAY, 8 * DAY, 9 * DAY]
    ops = Ops(failing_checks={2, 3})  # request 2 falls back before the first Sunday; 3 before the second, then 4 updates
    out = simulate(POLICIES[3], arrivals, ops)
    assert ops.audited == [[3, 4]] and ops.retrained == [2, 3, 4]  # the first audit (requests 1–2) retrained nothing
    assert out.audits == [True, True] and out.exact_audits == 1 and out.model == "retrained@3+u4"
    t = share_terms(out, 4 * RETRAIN, 4, RETRAIN)
    assert (t.audits, t.fallbacks) == (1, 2)
    assert "(1 of them of a production model retrained on the current data" in audit_schedule(out, 30 * DAY)


def test_cadence_audits_once_enough_requests_wait_at_the_weekly_run():
    from tasks.audit import Cadence
    ops = Ops()
    arrivals = [DAY, 2 * DAY, 3 * DAY, 8 * DAY, 9 * DAY]
    out = simulate(POLICIES[4], arrivals, ops, Cadence(3, 30.0))
    # Sunday 1 finds 3 waiting: due; Sunday 2 finds 2 of at most 6 days: not due; they wait until
    # the oldest is 30 days old (day 8 + 30 = day 38 → the Sunday of day 41)
    assert ops.audited == [[1, 2, 3], [4, 5]] and ops.retrained == [3, 5]
    assert out.audit_runs == [(SUNDAY_AUDIT, 3), (41 * DAY + 3 * HOUR, 2)]
    assert out.removal_s == [UPDATE + EVIDENCE] * 5 and out.audits == [True, True]
    assert out.cpu_s == pytest.approx(5 * (UPDATE + EVIDENCE) + 2 * (RETRAIN + AUDIT))


def test_cadence_policy_counts_the_covering_audit_after_the_month_apart():
    from tasks.audit import Cadence
    arrivals = [DAY, 2 * DAY, 3 * DAY]
    out = simulate(POLICIES[4], arrivals, Ops(), Cadence(30, 30.0), month_end=30 * DAY)
    assert out.audit_runs == [(34 * DAY + 3 * HOUR, 3)]  # day 1 + 30 days → the Sunday after day 31
    assert out.cpu_month_s == pytest.approx(3 * (UPDATE + EVIDENCE))
    assert out.cpu_s == pytest.approx(out.cpu_month_s + RETRAIN + AUDIT)
    lines = targets("images", [simulate(p, arrivals, Ops(), Cadence(30, 30.0), 30 * DAY) for p in POLICIES])
    assert any("update + evidence + audit by cadence" in line for line in lines)
    assert any("(within the month" in line for line in lines)


def test_weekly_policy_is_the_cadence_of_one_request_and_a_cadence_that_never_audits_is_refused():
    from tasks.audit import Cadence
    arrivals = [DAY, 2 * DAY, SUNDAY_AUDIT + 1.0, 8 * DAY]
    weekly, one = Ops(), Ops()
    simulate(POLICIES[3], arrivals, weekly)
    simulate(POLICIES[4], arrivals, one, Cadence(1))
    assert weekly.audited == one.audited == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="never audit"):
        simulate(POLICIES[4], arrivals, Ops(), Cadence(5, None))


def test_without_retrain_per_request_the_shares_are_of_an_estimate_and_say_so():
    from tasks.audit import Cadence

    class Scenario:
        name, original = "text", "original"

        def retrain(self, j):
            return f"retrained@{j}"

        def update(self, model, k):
            return f"{model}+u{k}"

        def evidence_checks(self, model, before, k):
            return []

        def audit_checks(self, model, ks, retrained):
            return []

        def describe(self):
            return "three requests"

        def fidelity(self, model, final):
            return {}

        @staticmethod
        def fidelity_text(f):
            return "-"

    assert parse_args(["--policies", "5,4"]).policies == (POLICIES[4], POLICIES[3])
    with pytest.raises(SystemExit):
        parse_args(["--policies", "8"])
    section, goals = run_scenario(Scenario(), [DAY, 2 * DAY, 3 * DAY], (POLICIES[4],), Cadence(1))
    assert any(line.startswith("**Estimate**: retrain per request not run: its CPU is estimated as 3 ×")
               for line in section)
    assert any("(estimated)" in line for line in goals) and any("nightly policy was not run" in line for line in goals)


def test_text_requests_take_one_to_three_secrets_each_and_every_secret_once():
    import numpy as np
    prints = [f"s{i}" for i in range(20)]
    for n in (1, 7, 10, 20, 25):
        groups = secret_groups(prints, n, np.random.default_rng(n))
        assert all(1 <= len(g) <= 3 for g in groups) and len(groups) == min(n, 20)
        flat = [p for g in groups for p in g]
        assert len(flat) == len(set(flat)) and len(flat) == min(20, 3 * min(n, 20))


def test_options_default_to_the_documented_month_and_refuse_bad_ones(capsys):
    args = parse_args([])
    assert args.counts == {"tables": 30, "text": 10, "images": 30} and args.days == 30
    assert (args.cadence.min_requests, args.cadence.max_age_days) == DEFAULT_CADENCE
    assert parse_args(["--quick", "--requests", "text=2"]).counts["text"] == 2
    for argv in (["--scenarios", "audio"], ["--requests", "text=0"], ["--requests", "video=3"], ["--days", "-1"],
                 ["--jobs", "0"], ["--image-subset", "5"], ["--min-requests", "0"], ["--max-age", "-2"]):
        with pytest.raises(SystemExit) as stop:
            parse_args(argv)
        assert stop.value.code == 2
        assert "bench.stream" in capsys.readouterr().err


@pytest.mark.parametrize("policy", POLICIES)
def test_cpu_by_operation_adds_up_to_the_total(policy):
    out = simulate(policy, [DAY, 2 * DAY, 8 * DAY], Ops(failing_checks={2}, failing_audits={1}))
    assert sum(out.spent.values()) == pytest.approx(out.cpu_s)
    assert sum(out.operations.values()) >= 3


def test_a_rebased_audit_promotes_its_retrained_model_when_it_passes_and_costs_nothing_more():
    arrivals = [DAY, 2 * DAY, 8 * DAY]
    plain, rebased = (simulate(p, arrivals, Ops()) for p in (POLICIES[3], REBASED[0]))
    assert rebased.model == "retrained@3" and plain.model == "original+u1+u2+u3"  # the last audit covers u3
    assert rebased.cpu_s == plain.cpu_s and rebased.removal_s == plain.removal_s
    assert rebased.rebases == 2 and rebased.fallbacks == 0 and rebased.audits == [True, True]
    failing = simulate(REBASED[0], arrivals, Ops(failing_audits={1}))
    assert failing.fallbacks == 1 and failing.rebases == 1  # a failed audit promotes too, as a fall-back
    assert parse_args([]).policies == DEFAULT_POLICIES == POLICIES[:5]


def test_the_share_is_cut_into_retrainings_updates_and_checks_above_the_floor_the_counts_set():
    n, arrivals = 4, [DAY, 2 * DAY, 3 * DAY, 8 * DAY]
    out = simulate(POLICIES[3], arrivals, Ops(failing_checks={2}))  # 2 audits, 1 fall-back at request 2
    base = n * RETRAIN
    t = share_terms(out, base, n, RETRAIN)
    assert (t.audits, t.fallbacks, t.requests) == (2, 1, n)
    assert sum(t.parts.values()) == pytest.approx(t.share) == pytest.approx(out.cpu_s / base)
    assert t.parts["retrain"] == pytest.approx(3 / n)  # every retraining costs RETRAIN here
    # 5 evidence runs: the fall-back's retrained model is judged too
    assert t.floor == pytest.approx(3 / n + (n * UPDATE + 5 * EVIDENCE) / n / RETRAIN)
    assert t.audit_floor == pytest.approx(2 / n) and t.share >= t.floor
    rows = share_rows([simulate(p, arrivals, Ops()) for p in POLICIES], Base(base, base), n, RETRAIN)
    assert len(rows) == 2 + len(POLICIES[3:]) and "2 + 0 of 4 (audits alone ≥ 50.0 %)" in rows[2]


def test_image_settings_are_validated_on_the_command_line(capsys):
    args = parse_args(["--image-evidence", "drift_z=0,utility_images=none", "--image-verify", "audit_images=50"])
    assert args.image_evidence.drift_z == 0 and args.image_evidence.utility_images is None
    assert args.image_verify.audit_images == 50
    for argv in (["--image-evidence", "nonsense=1"], ["--image-verify", "audit_z=-1"]):
        with pytest.raises(SystemExit) as stop:
            parse_args(argv)
        assert stop.value.code == 2 and "settings" in capsys.readouterr().err


def test_failed_evidence_checks_are_listed_by_name_with_their_values():
    out = simulate(POLICIES[3], [DAY, 2 * DAY, 3 * DAY], Ops(failing_checks={1, 3}))
    assert failed_check_values(out) == {"evidence_check": ["2", "2"]}
