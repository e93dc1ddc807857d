"""bench.stream's real operations: the `ops` of `simulate` over a scenario, every training, update
and check run on one thread and charged its CPU time; the check rows the scenarios return."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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

    def repair(self, model, before, k: int):
        """auto's repair of a failed update: (its CPU, the repaired model, None where the scenario has no
        repair for this failure)."""
        return cpu_of(lambda: self.scenario.repair(model, before, k))

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
