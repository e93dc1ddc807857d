"""bench.tabular's second baseline: scikit-learn's LogisticRegression warm-started from θ* on D', at the
loosest tolerance whose result reaches a method's own gradient residual."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.tabular.formatting import seconds_text, speedup_text
from bench.tabular.timing import MIN_REPEATS
from unlearning.tabular import logreg
from unlearning.tabular.problem import Problem

SKLEARN_TOLS = tuple(10.0 ** -k for k in range(3, 13))  # lbfgs `tol` sweep for the warm-started baseline


@dataclass(frozen=True)
class SklearnRun:
    tol: float
    seconds: float  # median of MIN_REPEATS fits
    residual: float  # ‖∇L_b(θ; D')‖₂ of its result, by the project's formula
    iterations: int


def sklearn_warm_sweep(problem: Problem) -> list[SklearnRun]:
    """scikit-learn's `LogisticRegression` (lbfgs) warm-started from θ* on D', one thread like the
    methods, once per tolerance in SKLEARN_TOLS. Objective: C·Σℓ + ½‖w‖² is L_b/Λ for C = 1/Λ
    (b = 0), without an intercept (the bias is a column of X, regularised as in the project)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, y = problem.X_new.numpy(), problem.y_new.numpy()
    runs = []
    for tol in SKLEARN_TOLS:
        times = []
        for _ in range(MIN_REPEATS):
            model = LogisticRegression(C=1.0 / problem.obj.l2, fit_intercept=False, tol=tol, max_iter=10_000,
                                       warm_start=True)
            model.coef_, model.intercept_ = problem.theta.numpy()[None, :].copy(), np.zeros(1)
            model.classes_ = np.arange(2)
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                started = time.perf_counter()
                model.fit(X, y)
                times.append(time.perf_counter() - started)
        theta = torch.from_numpy(model.coef_[0].copy())
        residual = float(logreg.gradient(theta, problem.X_new, problem.y_new, problem.obj).norm())
        runs.append(SklearnRun(tol, statistics.median(times), residual, int(model.n_iter_[0])))
    return runs


def sklearn_match(runs: list[SklearnRun], residual: float) -> SklearnRun | None:
    """The cheapest scikit-learn run whose result is at least as close to the optimum as `residual`."""
    reached = [r for r in runs if r.residual <= residual]
    return min(reached, key=lambda r: r.seconds) if reached else None


def sklearn_fields(runs: list[SklearnRun] | None, seconds: float, residual: float) -> dict:
    if runs is None:
        return {"speedup_sklearn": None, "sklearn_text": "n/a (bᵀθ)"}
    match = sklearn_match(runs, residual)
    if match is None:
        best = min(runs, key=lambda r: r.residual)
        return {"speedup_sklearn": None,
                "sklearn_text": f"not reached (best ‖∇L‖ {best.residual:.2g}, {seconds_text(best.seconds)} s)"}
    return {"speedup_sklearn": match.seconds / seconds, "sklearn_seconds": match.seconds, "sklearn_tol": match.tol,
            "sklearn_text": f"{speedup_text(match.seconds / seconds)} ({seconds_text(match.seconds)} s, tol {match.tol:.0e})"}
