"""A table request's Newton matrix and gradient without a pass over D (erasure.moved_hessian,
moved_gradient, kept_hessian, HESSIAN_DRIFT), checked against H and ∇L_b computed on the rows
encoded in the new map: the refit moves them as M·H·Mᵀ and M·g on the rows it keeps linear, and
the rows it clips or imputes are taken out and put back."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from unlearning.tabular import certified, erasure, logreg
from unlearning.tabular.data import correct_table
from unlearning.tabular.files import table_from_frame
from unlearning.tabular.methods import run_method
from unlearning.tabular.training import TrainConfig, train_bundle


def outlier_table(n: int = 400, seed: int = 0, K: int = 2):
    """Numeric columns with outliers (clipped at ±3 deviations) and missing values (imputed), so
    that a refit moves some rows off the affine map."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round()
    age[:6] = [300, 250, 220, 5, 2, 280]
    hours = np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 6, n))
    sex, city = rng.choice(["f", "m"], n), rng.choice(["Ames", "Boise", "Cork"], n)
    score = 0.05 * (np.minimum(age, 90) - 40) + np.where(sex == "m", 0.8, -0.8) + rng.normal(0, 1, n)
    label = np.digitize(score, np.quantile(score, np.linspace(0, 1, K + 1)[1:-1]))
    frame = pd.DataFrame({"id": [f"R{i}" for i in range(n)], "age": age, "hours": hours, "sex": sex,
                          "city": city, "y": [f"c{v}" for v in label]})
    return table_from_frame("outliers", frame, "y", "id")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def build(bundle, table, after, b, cache):
    encoded = erasure.encode_version(table, bundle)
    changes = erasure.changes_between(table, after)
    return erasure.build_problem(bundle, table, after, b, {k: v for k, v in cache.items() if k != "encoded"},
                                 encoded, changes)


@pytest.mark.parametrize("certify", [False, True])
@pytest.mark.parametrize("deleted", [["R0", "R1"], ["R20", "R21", "R22"]])
def test_a_refit_moves_the_cached_hessian_and_gradient_exactly(certify, deleted):
    """Deleting outliers (the deviations move far, rows change clipping) or plain rows: the moved
    H(θ*; D) and ∇L_b(θ*; D) equal the ones computed over D encoded in the refitted map, at the
    re-expressed θ, to rounding — and the rows off the map were there to take out."""
    table = outlier_table()
    bundle, b, _ = train_bundle(table, TrainConfig(lam=1e-3, certified=certify, budget=10.0, epsilon=1.0,
                                                   delta=1e-5) if certify else TrainConfig(lam=1e-3))
    after = correct_table(table, deleted, [], {})
    problem, _, _ = build(bundle, table, after, b, erasure.model_cache(bundle, table, b))
    H = logreg.hessian(problem.theta, problem.X, problem.obj)
    g = logreg.gradient(problem.theta, problem.X, problem.y, problem.obj)
    assert torch.equal(problem.cache["hessian_at"], problem.theta)  # moved, not drifted
    assert rel(problem.cache["H"], H) <= 1e-12
    assert float((problem.cache["gradient"] - g).norm()) <= 1e-10 * float(g.norm() + 1)
    before = erasure.encode_version(table, bundle).train
    change = erasure.MapChange.between(before.X, problem.X, before.numbers.numpy(), bundle.encoder,
                                       problem_encoder(bundle, after))
    assert len(change.off_rows) > 0  # hours' missing values at least


def problem_encoder(bundle, after):
    """The map a refit on `after`'s training rows gives (what build_problem moves to)."""
    encoded = erasure.encode_version(after, bundle)
    raw = bundle.encoder.raw_from(encoded.train.X.numpy(), encoded.train.numbers.numpy())
    return bundle.encoder.refit(raw)


def test_without_the_moved_rows_the_hessian_would_be_wrong():
    """The rows off the map matter: M·H·Mᵀ alone misses their curvature (so the test above would
    fail without taking them out and putting them back)."""
    table = outlier_table()
    bundle, _, _ = train_bundle(table, TrainConfig(lam=1e-3))
    cache = erasure.model_cache(bundle, table, None)
    after = correct_table(table, ["R0", "R1"], [], {})
    problem, _, _ = build(bundle, table, after, None, cache)
    encoded = erasure.encode_version(table, bundle).train
    change = erasure.MapChange.between(encoded.X, problem.X, encoded.numbers.numpy(), bundle.encoder,
                                       problem_encoder(bundle, after))
    no_rows = replace(change, off_rows=torch.zeros(0, dtype=torch.long))
    naive = erasure.moved_hessian(cache, no_rows, bundle.l2)["H"]
    H = logreg.hessian(problem.theta, problem.X, problem.obj)
    assert rel(naive, H) > 1e-4
    assert rel(erasure.moved_hessian(cache, change, bundle.l2)["H"], H) <= 1e-12


def chain(table, bundle, b, cache, steps: int):
    """`steps` deletions of 3 rows each as forget runs them: each version keeps what version_cache
    keeps; yields (problem, result) per request."""
    ids = list(table.ids())
    for k in range(steps):
        after = correct_table(table, ids[40 + 3 * k:43 + 3 * k], [], {})
        problem, bundle_after, encoded = build(bundle, table, after, b, cache)
        result = run_method("second_order", problem)
        yield problem, result
        bundle = erasure.unlearned_bundle(bundle_after, result.theta)
        cache, table = erasure.version_cache(encoded, problem, result), after


def test_a_chain_reuses_a_kept_matrix_only_within_the_drift_and_steps_as_on_the_exact_one():
    """Each version keeps H(θ_H; D') from its request; the next request reuses it while its θ is
    within HESSIAN_DRIFT of θ_H (then within e^{±drift} of H(θ): the step leaves about that share of
    what it removes at most), and takes H at θ again beyond. The kept gradient is the version's own."""
    table = outlier_table(4000, seed=2)
    bundle, _, _ = train_bundle(table, TrainConfig(lam=1e-3))
    reused = 0
    for problem, result in chain(table, bundle, None, erasure.model_cache(bundle, table, None), 8):
        at = problem.cache["hessian_at"]
        drift = float((problem.theta - at).norm())
        assert drift <= erasure.HESSIAN_DRIFT
        assert rel(problem.cache["H"], logreg.hessian(at, problem.X, problem.obj)) <= 1e-12  # H(θ_H; D) itself
        g = logreg.gradient(problem.theta, problem.X, problem.y, problem.obj)
        assert float((problem.cache["gradient"] - g).norm()) <= 1e-10 * float(g.norm() + 1)
        exact = logreg.hessian(problem.theta, problem.X, problem.obj)
        data = exact - problem.obj.l2 * torch.eye(len(exact), dtype=exact.dtype)
        # within e^{±drift} of H(θ) in the Loewner order, as the drift's argument says
        gap = torch.linalg.eigvalsh(problem.cache["H"] - exact)
        assert float(gap.abs().max()) <= (math.exp(drift) - 1) * float(torch.linalg.eigvalsh(data)[-1]) + 1e-9
        # the step on the kept matrix leaves at most (e^drift − 1) of the start more than the step on H(θ)
        start = float(logreg.gradient(problem.theta, problem.X_new, problem.y_new, problem.obj).norm())
        on_exact = replace(problem, cache={**problem.cache, "H": exact, "L": torch.linalg.cholesky(exact),
                                           "hessian_at": problem.theta})
        best = run_method("second_order", on_exact).residual
        assert result.residual <= best + (math.exp(drift) - 1) * start, (drift, result.residual, best, start)
        reused += drift > 0
    assert reused >= 4  # the chain did reuse kept matrices (6 of 8 requests, measured)


def test_a_kept_matrix_beyond_the_drift_is_computed_again():
    """A version whose θ moved more than HESSIAN_DRIFT from its kept matrix's θ_H: the request takes
    H at its own θ."""
    table = outlier_table()
    bundle, _, _ = train_bundle(table, TrainConfig(lam=1e-3))
    cache = erasure.model_cache(bundle, table, None)
    far = bundle.with_theta(bundle.theta + 2 * erasure.HESSIAN_DRIFT / bundle.theta.numel() ** 0.5)
    stale = {"H": cache["H"], "hessian_at": bundle.theta, "X_norm": cache["X_norm"]}  # as version_cache keeps it
    after = correct_table(table, [], [], {"R30": "c1" if table.frame.loc["R30", "y"] == "c0" else "c0"})
    problem, _, _ = build(far, table, after, None, stale)
    assert torch.equal(problem.cache["hessian_at"], far.theta)
    assert rel(problem.cache["H"], logreg.hessian(far.theta, problem.X, problem.obj)) <= 1e-12
    near = bundle.with_theta(bundle.theta + 0.5 * erasure.HESSIAN_DRIFT / bundle.theta.numel() ** 0.5)
    problem, _, _ = build(near, table, after, None, stale)
    assert torch.equal(problem.cache["hessian_at"], bundle.theta) and torch.equal(problem.cache["H"], cache["H"])


def test_the_certified_bound_without_a_pass_needs_h_at_theta_itself():
    """The fast certified bound's Taylor term reads H(θ*): a matrix kept from a θ nearby is not it."""
    table = outlier_table()
    bundle, b, _ = train_bundle(table, TrainConfig(lam=1e-3, certified=True, budget=10.0, epsilon=1.0, delta=1e-5))
    after = correct_table(table, [], [], {"R30": "c1" if table.frame.loc["R30", "y"] == "c0" else "c0"})
    problem, _, _ = build(bundle, table, after, b, erasure.model_cache(bundle, table, b))
    assert certified.fast_bound_applies(problem)
    elsewhere = replace(problem, cache={**problem.cache, "hessian_at": problem.theta + 1e-3})
    assert not certified.fast_bound_applies(elsewhere)


def test_a_multinomial_model_takes_its_hessian_at_theta():
    """The drift argument is for σ(1−σ); a softmax model's H is computed at θ every time."""
    table = outlier_table(K=3)
    bundle, _, _ = train_bundle(table, TrainConfig(lam=1e-3))
    after = correct_table(table, ["R0"], [], {})
    problem, _, _ = build(bundle, table, after, None, erasure.model_cache(bundle, table, None))
    assert torch.equal(problem.cache["hessian_at"], problem.theta)
    assert rel(problem.cache["H"], logreg.hessian(problem.theta, problem.X, problem.obj)) <= 1e-12
    assert erasure.kept_hessian(problem) == {}
