"""bench.tabular part 1: UCI Adult — the plain and the certified model with their Hessian cache, the
seeded requests, and every method on each request against the exact retraining and scikit-learn."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.tabular.sklearn_baseline import SklearnRun, sklearn_fields, sklearn_warm_sweep
from bench.tabular.timing import Timed, say, timed_method
from unlearning.builtin import BUILTIN
from unlearning.tabular import erasure, methods, verify
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table, correct_table
from unlearning.tabular.training import TrainConfig, train_bundle

DELTA = 1e-5
LABEL_FIX_SHARE = 0.01
REVOCATIONS = {"revoke sex": ("sex",), "revoke sex+race": ("sex", "race")}


@dataclass(frozen=True)
class TrainedModel:
    kind: str  # "plain" | "certified"
    bundle: ModelBundle
    b: torch.Tensor | None  # objective-perturbation noise (certified only)
    cache: dict  # what registration stores per model version: H(θ*; D), its factor, ‖X‖₂
    fit_seconds: float
    cache_seconds: float
    test_accuracy: float
    test_rows: int


@dataclass(frozen=True)
class AdultRequest:
    name: str
    kind: str  # "delete" | "revoke" | "labels"
    after: Table  # D' as a table


@dataclass(frozen=True)
class MethodSpec:
    label: str
    name: str
    options: dict = field(default_factory=dict)


RETRAIN = MethodSpec("retrain from scratch", "retrain")
WARM = MethodSpec("retrain warm-started", "retrain", {"warm_start": True})
FIRST = MethodSpec("first_order", "first_order")
CHOLESKY = MethodSpec("second_order", "second_order")  # the default path (cached Cholesky factor)
EXACT_H = MethodSpec("second_order (cholesky, exact H(θ*;D'), 2 refinements)", "second_order",
                     {"solver": "cholesky", "hessian": "exact", "refine_steps": 2})
CG = MethodSpec("second_order (CG)", "second_order", {"solver": "cg"})
CERTIFIED = MethodSpec("certified", "certified")


def adult_train_config(kind: str) -> TrainConfig:
    if kind == "certified":
        return TrainConfig(lam=1e-3, certified=True, budget=10.0, epsilon=1.0, delta=DELTA)
    return TrainConfig(lam=1e-3)


def train_adult_model(table: Table, kind: str) -> TrainedModel:
    started = time.perf_counter()
    bundle, b, _ = train_bundle(table, adult_train_config(kind))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cache = erasure.model_cache(bundle, table, b)
    cache_seconds = time.perf_counter() - started
    test = erasure.held_out_data(table, bundle)
    return TrainedModel(kind, bundle, b, cache, fit_seconds, cache_seconds,
                        verify.accuracy(bundle.theta, test.X, test.y), len(test.y))


def train_ids(table: Table) -> np.ndarray:
    return np.asarray(table.frame.index[table.train_mask()])


def delete_request(table: Table, k: int, seed: int) -> AdultRequest:
    chosen = np.random.default_rng([seed, k]).choice(train_ids(table), size=k, replace=False)
    return AdultRequest(f"delete {k}", "delete", correct_table(table, list(chosen), [], {}))


def revoke_request(table: Table, name: str, features: tuple[str, ...]) -> AdultRequest:
    return AdultRequest(name, "revoke", correct_table(table, [], list(features), {}))


def label_fix_request(table: Table, seed: int) -> AdultRequest:
    """Flip 1 % of the training labels: the 'wrong' labels the request corrects."""
    ids = train_ids(table)
    k = round(LABEL_FIX_SHARE * len(ids))
    chosen = np.random.default_rng([seed, 7919]).choice(ids, size=k, replace=False)
    labels = table.frame[table.target].astype(str)
    other = {label: next(x for x in table.labels if x != label) for label in table.labels}
    fixes = {str(i): other[labels[i]] for i in chosen}
    return AdultRequest(f"fix {LABEL_FIX_SHARE:.0%} labels ({k})", "labels", correct_table(table, [], [], fixes))


def adult_requests(table: Table, seed: int, quick: bool, model_kind: str) -> list[AdultRequest]:
    """Seeded requests; revocations do not depend on the seed, so only seed 0 includes them.
    --quick keeps one deletion per model and one revocation on the plain one: every method row
    (exact-H and certified included) still runs once."""
    if quick:
        revocation = revoke_request(table, *next(iter(REVOCATIONS.items())))
        return [delete_request(table, 10, seed)] + ([revocation] if model_kind == "plain" and seed == 0 else [])
    requests = [delete_request(table, k, seed) for k in (1, 10, 100, 1000)]
    if seed == 0:
        requests += [revoke_request(table, name, features) for name, features in REVOCATIONS.items()]
    requests.append(label_fix_request(table, seed))
    return requests


def adult_methods(request_kind: str, model_kind: str) -> list[MethodSpec]:
    specs = [RETRAIN, WARM, FIRST, CHOLESKY]
    if request_kind == "revoke":
        specs.append(EXACT_H)
    specs.append(CG)
    if model_kind == "certified":
        specs.append(CERTIFIED)
    return specs


def epsilon_text(result: methods.Result) -> str:
    """ε at δ for a certified result, with the residual bound this request spends and how it was
    obtained (the O(p²) bound from the version's cache, or the exact pass over D'); over budget
    means the pipeline retrains instead."""
    if result.epsilon is None:
        return "—"
    passes = result.stats.get("exact_pass", 1)
    how = ("O(p²) bound" if not passes else "exact pass" if passes == 1
           else f"{passes} exact passes, refined" if result.stats.get("refined") else f"{passes} exact passes")
    text = f"{result.epsilon:.3g} (spends {result.residual_bound:.2g}, {how})"
    if result.stats.get("within_budget", True):
        return text
    return f"{text} (over budget → retrain)"



def fidelity_row(spec: MethodSpec, timed: Timed, reference: Timed, test: erasure.TrainingData,
                 sklearn_runs: list[SklearnRun] | None = None) -> dict:
    theta, theta_ref = timed.result.theta, reference.result.theta
    return {
        **sklearn_fields(sklearn_runs, timed.seconds, timed.result.residual),
        "method": spec.label,
        "seconds": timed.seconds,
        "min_seconds": timed.min_seconds,
        "repeats": timed.repeats,
        "speedup": reference.seconds / timed.seconds,
        "acc_diff_pts": 100 * (verify.accuracy(theta, test.X, test.y) - verify.accuracy(theta_ref, test.X, test.y)),
        "agreement_pct": 100 * verify.agreement(theta, theta_ref, test.X),
        "residual": timed.result.residual,
        "epsilon": timed.result.epsilon,
        "residual_bound": timed.result.residual_bound,  # what a certified request spends of the budget
        "within_budget": timed.result.stats.get("within_budget"),
        "epsilon_text": epsilon_text(timed.result),
        "hvps": timed.result.stats.get("hvps"),
        "iterations": timed.result.stats.get("iterations"),
    }


def run_adult_request(table: Table, model: TrainedModel, request: AdultRequest,
                      plain_sweeps: dict | None = None) -> tuple[list[dict], tuple[float, float]]:
    """Every method on one request; returns the rows and the (uncharged) problem-build time and the
    time to compute what the version the request makes keeps for the next (`erasure.version_cache`:
    registration, before the promotion).
    `plain_sweeps` (request name → scikit-learn runs) collects the plain model's sweeps; for the
    certified model, which scikit-learn cannot fit (no bᵀθ), the plain model's sweep on the same D'
    stands in, marked as such."""
    # as `forget` builds it: from the version's kept encoding, the feature map refitted on D'
    encoded = erasure.Encoded.from_state(model.cache["encoded"])
    changes = erasure.changes_between(table, request.after)
    started = time.perf_counter()
    problem, bundle_after, encoded_after = erasure.build_problem(model.bundle, table, request.after, model.b,
                                                                 dict(model.cache), encoded, changes)
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    erasure.version_cache(encoded_after, problem)
    registration_seconds = time.perf_counter() - started
    # the cache the request reads: the version's, or (map refitted) H and ∇L_b at the re-expressed θ
    request_cache = dict(problem.cache)
    test = erasure.held_out_data(request.after, bundle_after)
    sklearn_runs = sklearn_warm_sweep(problem) if model.b is None else None
    if plain_sweeps is not None and sklearn_runs is not None:
        plain_sweeps[request.name] = sklearn_runs
    proxy = plain_sweeps.get(request.name) if plain_sweeps is not None and sklearn_runs is None else None
    reference = None
    rows = []
    for spec in adult_methods(request.kind, model.kind):
        # The reference is every speed-up's denominator: always a median, even above SLOW_ENOUGH.
        timed = timed_method(problem, request_cache, spec.name, spec.options, always_repeat=spec is RETRAIN)
        reference = reference or timed  # RETRAIN comes first: the exact reference
        row = fidelity_row(spec, timed, reference, test, sklearn_runs)
        if proxy is not None and spec is CERTIFIED:
            row.update(sklearn_fields(proxy, timed.seconds, timed.result.residual))
            row["sklearn_text"] += " [plain model's objective, no bᵀθ]"
        rows.append({"request": request.name, "kind": request.kind, "load": os.getloadavg()[0], **row})
        say(f"  [{model.kind}] {request.name:<22} {spec.label:<44} {timed.seconds:9.4f} s "
            f"(×{timed.repeats})  agree {row['agreement_pct']:6.2f} %  ‖∇L‖ {row['residual']:.2e}  "
            f"sklearn {row['sklearn_text']}")
    return rows, (build_seconds, registration_seconds)


def worst(values: list[float]) -> float:
    return max(values, key=abs)


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """One row per (request, method) over seeds: median time and speed-up, worst-case fidelity."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["request"], row["method"]), []).append(row)
    out = []
    for group in groups.values():
        first = group[0]
        eps = [r["epsilon"] for r in group if r["epsilon"] is not None]
        out.append({
            **first,
            "seeds": len(group),
            "seconds": statistics.median(r["seconds"] for r in group),
            "min_seconds": min(r["min_seconds"] for r in group),
            "speedup": statistics.median(r["speedup"] for r in group),
            "speedup_sklearn": (statistics.median(r["speedup_sklearn"] for r in group)
                                if all(r["speedup_sklearn"] is not None for r in group) else None),
            "load": max(r["load"] for r in group),
            "acc_diff_pts": worst([r["acc_diff_pts"] for r in group]),
            "agreement_pct": min(r["agreement_pct"] for r in group),
            "residual": max(r["residual"] for r in group),
            "epsilon": max(eps) if eps else None,
            "residual_bound": max((r["residual_bound"] for r in group if r["residual_bound"] is not None), default=None),
            "epsilon_text": max(group, key=lambda r: r["epsilon"] or 0)["epsilon_text"],
        })
    return out


def run_adult(seeds: int, quick: bool) -> tuple[list[TrainedModel], dict[str, list[dict]], list[tuple[float, float]]]:
    say("[adult] loading UCI Adult ...")
    table = BUILTIN["adult"]()
    models, rows_by_kind, builds = [], {}, []
    sweeps = {seed: {} for seed in range(seeds)}  # the plain model's scikit-learn runs, per request
    for kind in ("plain", "certified"):
        say(f"[adult] training the {kind} model and its Hessian cache ...")
        model = train_adult_model(table, kind)
        models.append(model)
        rows = []
        for seed in range(seeds):
            for request in adult_requests(table, seed, quick, kind):
                request_rows, build = run_adult_request(table, model, request, sweeps[seed])
                rows += [{**r, "seed": seed} for r in request_rows]
                builds.append(build)
        rows_by_kind[kind] = aggregate_seeds(rows)
    return models, rows_by_kind, builds
