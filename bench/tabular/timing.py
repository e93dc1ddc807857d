"""bench.tabular's measurements: an update's time as the registry measures it (the median of repeats,
each on a fresh problem), and the progress lines on stderr."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, replace

from unlearning.tabular import methods
from unlearning.tabular.problem import Problem

SLOW_ENOUGH = 1.0  # s: a single timing is enough above this, below it the median of repeats
MIN_REPEATS, MAX_REPEATS, REPEAT_BUDGET = 3, 11, 0.3


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Timed:
    result: methods.Result
    seconds: float  # median over `repeats` runs of Result.stats["update_seconds"]
    min_seconds: float
    repeats: int


def needs_another_run(times: list[float], always_repeat: bool = False) -> bool:
    """One run above SLOW_ENOUGH (unless `always_repeat`); else at least MIN_REPEATS, and more (up to
    MAX_REPEATS, while under REPEAT_BUDGET s in all) for millisecond updates, which a busy core
    stalls for tens of ms."""
    if not times:
        return True
    if times[0] >= SLOW_ENOUGH and not always_repeat:
        return False
    return len(times) < MIN_REPEATS or (sum(times) < REPEAT_BUDGET and len(times) < MAX_REPEATS)


def fresh_problem(problem: Problem, model_cache: dict) -> Problem:
    """A new Problem (no memoised D') holding a new copy of the registration-time cache, so a
    timing never reuses a factor or a D' computed by an earlier timing."""
    return replace(problem, cache=dict(model_cache))


def timed_method(problem: Problem, model_cache: dict, name: str, options: dict,
                 always_repeat: bool = False) -> Timed:
    """The update time as the registry measures it (residual diagnostic excluded)."""
    times, result = [], None
    while needs_another_run(times, always_repeat):
        result = methods.run_method(name, fresh_problem(problem, model_cache), options)
        times.append(result.stats["update_seconds"])
    return Timed(result, statistics.median(times), min(times), len(times))

