"""bench.stream's simulated clock: seeded arrival times over the month, the deployments' schedules
(prefect.yaml) and one worker per model whose operations run one at a time (pure:
tests/unit/test_stream_clock.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

DAY = 86_400.0
HOUR = 3_600.0
# prefect.yaml's schedules: the nightly deployment at 02:00 ("0 2 * * *"), the weekly audit on
# Sundays at 03:00 ("0 3 * * 0"); day 0 of the month is a Monday.
NIGHTLY_HOUR = 2.0
AUDIT_WEEKDAY, AUDIT_HOUR = 6, 3.0


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
