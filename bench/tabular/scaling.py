"""bench.tabular part 2: how retraining, second_order (cached Cholesky / CG) and first_order grow with
n, p and |Z| on seeded synthetic binary data (record deletions)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.tabular.timing import say, timed_method
from unlearning.tabular import influence, logreg
from unlearning.tabular.problem import Problem, make_problem

SCALING_LAM = 1e-3  # λ per row, as Adult's TrainConfig; Λ = λ·n
SCALING_MAX_ITER = 300  # retraining's L-BFGS iteration cap in the scaling series
SCALING_PRECOMPUTE_LIMIT = 60.0  # s: skip the dense factor when forming it is predicted to cost more
DENSE_MAX_P = 5000  # the library's own limit for dense Hessians (second_order's `auto`)


@dataclass(frozen=True)
class ScalingCase:
    series: str  # "n" | "p" | "|Z|"
    n: int
    p: int
    removed: int


def scaling_cases(quick: bool) -> list[ScalingCase]:
    if quick:
        return ([ScalingCase("n", n, 50, 10) for n in (5_000, 20_000)]
                + [ScalingCase("p", 5_000, p, 10) for p in (50, 400)]
                + [ScalingCase("|Z|", 20_000, 50, z) for z in (1, 100, 1000)])
    return ([ScalingCase("n", n, 100, 100) for n in (10_000, 100_000, 1_000_000)]
            + [ScalingCase("p", 20_000, p, 100) for p in (100, 1_000, 3_000, 10_000)]
            + [ScalingCase("|Z|", 100_000, 100, z) for z in (1, 10, 100, 1_000, 10_000)])


def synthetic_data(n: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary data: p−1 Gaussian features with a power-law spectrum (column j scaled by
    (1+j)^−½, so the Hessian is not an easy isotropic one), a bias column, rows scaled so that
    max ‖x‖₂ = 1, labels from a logistic model with logit std 2.  X (n, p) float64, y (n,)."""
    rng = np.random.default_rng([seed, n, p])
    X = rng.standard_normal((n, p))  # numpy's ziggurat: ~5× faster than torch's seeded normal_
    X[:, :-1] *= (1.0 + np.arange(p - 1)) ** -0.5
    X[:, -1] = 1.0
    beta = rng.standard_normal(p)
    beta[-1] = 0.0
    z = X @ beta
    z = 2.0 * z / z.std() + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    X /= math.sqrt(float(np.einsum("ij,ij->i", X, X).max()))
    return torch.from_numpy(X), torch.from_numpy(y)


def matmul_gflops() -> float:
    """Float64 matrix-product throughput, to predict what forming a Hessian would cost."""
    A = torch.randn(4000, 600, dtype=logreg.DTYPE)
    A.T @ A  # warm-up
    started = time.perf_counter()
    for _ in range(3):
        A.T @ A
    return 3 * 2 * 4000 * 600**2 / (time.perf_counter() - started) / 1e9


def predicted_precompute_seconds(n: int, p: int, gflops: float) -> float:
    """Xᵀ W X (2·n·p² flops, torch does not exploit the symmetry) plus its Cholesky (p³/3)."""
    return (2 * n * p**2 + p**3 / 3) / (gflops * 1e9)


def precompute_model_cache(theta: torch.Tensor, X: torch.Tensor, obj: logreg.Objective) -> tuple[dict, float]:
    """H(θ*; D), its Cholesky factor, λmax and diagonal, as registration computes them, and how long it took."""
    started = time.perf_counter()
    H = logreg.hessian(theta, X, obj)
    cache = {"H": H, "L": torch.linalg.cholesky(H), **influence.spectral_cache(H)}
    return cache, time.perf_counter() - started


@dataclass
class ScalingModel:
    n: int
    p: int
    X: torch.Tensor
    y: torch.Tensor
    obj: logreg.Objective
    theta: torch.Tensor
    cache: dict | None  # None when the dense factor was skipped
    precompute_seconds: float | None
    predicted_precompute: float


def scaling_model(n: int, p: int, seed: int, gflops: float) -> ScalingModel:
    X, y = synthetic_data(n, p, seed)
    obj = logreg.Objective(l2=SCALING_LAM * n)
    theta = logreg.fit(X, y, 2, obj, max_iter=SCALING_MAX_ITER).theta
    predicted = predicted_precompute_seconds(n, p, gflops)
    cache, seconds = None, None
    if p <= DENSE_MAX_P and predicted <= SCALING_PRECOMPUTE_LIMIT:
        cache, seconds = precompute_model_cache(theta, X, obj)
    return ScalingModel(n, p, X, y, obj, theta, cache, seconds, predicted)


def deletion_problem(model: ScalingModel, removed: int, seed: int) -> Problem:
    z_index = np.random.default_rng([seed, model.n, model.p, removed]).choice(model.n, size=removed, replace=False)
    return make_problem(model.theta, model.obj, model.X, model.y, 2, z_index,
                        model.X[:0], model.y[:0], cache={})


def run_scaling_case(model: ScalingModel, case: ScalingCase, seed: int) -> dict:
    problem = deletion_problem(model, case.removed, seed)
    retrain = timed_method(problem, {}, "retrain", {"max_iter": SCALING_MAX_ITER})
    target = 1e-9 * problem.n_new  # the fit's own stopping rule (tol·n)
    row = {"series": case.series, "n": case.n, "p": case.p, "removed": case.removed,
           "retrain_s": retrain.seconds, "retrain_iterations": retrain.result.stats["iterations"],
           "retrain_hit_cap": retrain.result.stats["iterations"] >= SCALING_MAX_ITER,
           "retrain_converged": retrain.result.residual <= target, "retrain_residual": retrain.result.residual,
           "precompute_s": model.precompute_seconds, "precompute_predicted_s": model.predicted_precompute}
    if model.cache is not None:
        chol = timed_method(problem, model.cache, "second_order", {"solver": "cholesky"})
        row.update(cholesky_s=chol.seconds, cholesky_min_s=chol.min_seconds,
                   cholesky_speedup=retrain.seconds / chol.seconds,
                   cholesky_residual=chol.result.residual)
    cg = timed_method(problem, {}, "second_order", {"solver": "cg"})
    # first_order's τ = 1/λmax comes from the version's cache when there is one (as registered
    # versions have), else from power iteration inside the timed update.
    first = timed_method(problem, model.cache or {}, "first_order", {})
    row.update(cg_s=cg.seconds, cg_min_s=cg.min_seconds, first_order_min_s=first.min_seconds,
               cg_hvps=cg.result.stats["hvps"], cg_speedup=retrain.seconds / cg.seconds,
               cg_residual=cg.result.residual, first_order_s=first.seconds,
               first_order_speedup=retrain.seconds / first.seconds, first_order_residual=first.result.residual)
    say(f"  [scaling {case.series}] n={case.n} p={case.p} |Z|={case.removed}: retrain {retrain.seconds:.2f} s, "
        f"cholesky {row.get('cholesky_s', float('nan')):.4f} s, CG {cg.seconds:.4f} s ({row['cg_hvps']} HVPs), "
        f"first_order {first.seconds:.4f} s")
    return row


def run_scaling(cases: list[ScalingCase], seed: int) -> list[dict]:
    """Cases sharing (n, p) share one dataset and θ*; only one dataset is in memory at a time."""
    gflops = matmul_gflops()
    say(f"[scaling] float64 matmul throughput {gflops:.1f} GFLOP/s")
    done: dict[tuple, dict] = {}
    for n, p in dict.fromkeys((c.n, c.p) for c in cases):
        say(f"[scaling] n={n} p={p}: data, θ*, Hessian cache ...")
        model = scaling_model(n, p, seed, gflops)
        for case in (c for c in cases if (c.n, c.p) == (n, p)):
            if (n, p, case.removed) not in done:
                done[(n, p, case.removed)] = run_scaling_case(model, case, seed)
        del model
    return [{**done[(c.n, c.p, c.removed)], "series": c.series} for c in cases]

