"""bench.stream's run: each scenario through the chosen policies to its section (in processes of
their own with --jobs), and the results file rewritten as each finishes."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

from bench.stream.clock import DAY, arrival_times
from bench.stream.images import Images
from bench.stream.measured import Measured, say
from bench.stream.options import parse_args
from bench.stream.policies import POLICIES, REBASED, simulate
from bench.stream.report import (
    TARGET_CPU_SHARE,
    audit_schedule,
    base_of,
    failed_check_values,
    per_request_costs,
    scenario_rows,
    share_rows,
    targets,
)
from bench.stream.tables import Tables
from bench.stream.text import Text


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
