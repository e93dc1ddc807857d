"""The table (convex) unlearning methods: each a config plus a function, registered under a stable
name in the one registry (unlearning/registry.py) for the kind `tabular`.

Every method takes a `Problem` and its validated config and returns a `Result` carrying the new θ,
its guarantee class (`exact`, `certified` or `empirical`) and the exact gradient residual
‖∇L_b(θ_new; D')‖₂. Adding a method = write it, register it; the contract tests cover it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearning import registry
from unlearning.errors import UnlearnError
from unlearning.linalg import single_threaded
from unlearning.tabular import certified, influence, noise
from unlearning.tabular import logreg
from unlearning.tabular.problem import Problem, make_problem
from unlearning.registry import Method

KIND = "tabular"


@dataclass(frozen=True)
class Result:
    theta: torch.Tensor
    method: str
    guarantee: str
    residual: float | None = None  # ‖∇L_b(θ_new; D')‖₂ on all of D' (run_method fills it in)
    # ∇L_b(θ_new; D') itself, shaped like θ, when the residual came from a pass that computed it: the
    # version the update makes keeps it, and the next request starts from it (erasure.version_cache)
    gradient: torch.Tensor | None = field(default=None, compare=False, repr=False)
    residual_bound: float | None = None  # certified methods only
    epsilon: float | None = None
    delta: float | None = None
    stats: dict = field(default_factory=dict)


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


METHODS: dict[str, Method] = registry.table(KIND)  # live: a method registered anywhere appears here


def register(name: str, guarantee: str, config: type[MethodConfig]):
    """registry.register for a table method: `fn(problem, cfg) -> Result`."""
    return registry.register(KIND, name, guarantee, config)


def get_method(name: str) -> Method:
    return registry.get(KIND, name)


def run_method(name: str, problem: Problem, options: dict | None = None) -> Result:
    """Validate `options` against the method's config and run it (registry.run for tables)."""
    return registry.run(KIND, name, problem, options)


def _execute(method: Method, problem: Problem, config: MethodConfig) -> Result:
    started = time.perf_counter()
    with single_threaded():
        result = method.run(problem, config)
    # Timed without the diagnostic below: the residual is a pass over all of D' that the update
    # itself does not need (only `certified` pays for its bound inside the update).
    seconds = time.perf_counter() - started
    if result.residual is None:
        gradient = influence.corrected_gradient(problem, result.theta)
        result = replace(result, residual=float(gradient.norm()), gradient=gradient)
    return replace(result, stats={**result.stats, "update_seconds": seconds})


def _facts(problem: Problem) -> dict:
    return {"certified": problem.certification is not None}


registry.define_kind(KIND, _execute, _facts)


def _result(p: Problem, name: str, theta: torch.Tensor, **extra) -> Result:
    return Result(theta=theta, method=name, guarantee=METHODS[name].guarantee, **extra)


# --- methods ----------------------------------------------------------------------------------

class FirstOrderConfig(MethodConfig):
    tau: float | None = Field(None, gt=0, description="unlearning rate; None = 1/λmax(H), the step that cannot overshoot")
    chunks: int = Field(1, ge=1, description="iterative variant: apply the update in this many chunks of Z")


@register("first_order", "empirical", FirstOrderConfig)
def first_order(p: Problem, cfg: FirstOrderConfig) -> Result:
    """θ* − τ·G: one gradient-sized step per chunk of affected points."""
    tau = cfg.tau if cfg.tau is not None else influence.default_tau(p)
    theta = _chunked(p, cfg.chunks, lambda sub: influence.first_order_update(sub, tau))
    return _result(p, "first_order", theta, stats={"tau": tau, "chunks": cfg.chunks})


class SecondOrderConfig(MethodConfig):
    solver: Literal["auto", "cholesky", "cg"] = "auto"
    hessian: Literal["auto", "exact", "cached"] = "auto"
    refine_steps: int = Field(0, ge=0, le=20)
    cg_tol: float = Field(1e-10, gt=0)
    cg_max_iter: int = Field(500, ge=1)
    chunks: int = Field(1, ge=1, description="iterative variant: apply the update in this many chunks of Z")


@register("second_order", "empirical", SecondOrderConfig)
def second_order(p: Problem, cfg: SecondOrderConfig) -> Result:
    """θ* − H⁻¹·G with a cached Cholesky factor or Hessian-free conjugate gradient."""
    info = {}

    def step(sub: Problem) -> torch.Tensor:
        out = influence.second_order_update(sub, cfg.solver, cfg.hessian, cfg.refine_steps,
                                            cfg.cg_tol, cfg.cg_max_iter, from_start_gradient=True)
        info.update(solver=out.solver, hessian=out.hessian, hvps=info.get("hvps", 0) + out.hvps)
        return out.theta

    theta = _chunked(p, cfg.chunks, step)
    return _result(p, "second_order", theta, stats={**info, "chunks": cfg.chunks, **hessian_distance(p)})


def hessian_distance(p: Problem) -> dict:
    """How far from θ* the version's H was taken (erasure.HESSIAN_DRIFT: a Newton matrix kept from an
    earlier request's θ), for the certificate's reader; {} when the cache does not say."""
    at = p.cache.get("hessian_at")
    return {"hessian_at_distance": float((p.theta - at).norm())} if at is not None and at.shape == p.theta.shape else {}


# Newton steps the pipeline takes after a second_order update whose evidence failed, before it retrains
# (tasks.kinds.tabular): each with H at the θ it starts from, so they converge quadratically where the
# update's one step, on the matrix at θ*, left too much — deleting an outlier from 300 rows moves the
# refitted map's deviations so far that it left 17 % of θ*'s residual (review of 2026-12-07); the next
# steps leave 0.76 % and 0.0017 %. On Adult one step leaves at most 0.2 % (5–20 outliers of a column).
NEWTON_STEPS = 3
NEWTON_TARGET = 1e-3  # of θ*'s residual on D': far inside the evidence's 10 %


def newton_from(p: Problem, theta: torch.Tensor, max_steps: int | None = None,
                target: float = NEWTON_TARGET) -> Result:
    """Newton steps on L_b(·; D') from `theta` (an update's result), each solving with H(θ; D') at
    the θ it starts from (second_order posed at θ, with θ's own gradient on D), until the residual
    on D' is at most `target` of p.theta's or after `max_steps` (None: NEWTON_STEPS). Result.stats:
    `newton_steps`."""
    max_steps = NEWTON_STEPS if max_steps is None else max_steps
    started = time.perf_counter()
    with single_threaded():
        goal = target * influence.gradient_residual(p, p.theta)
        gradient, steps = influence.corrected_gradient(p, theta), 0
        while steps < max_steps and float(gradient.norm()) > goal:
            at = replace(p, theta=theta, cache={"gradient": logreg.gradient(theta, p.X, p.y, p.obj),
                                                "gradient_at": theta})
            theta = influence.second_order_update(at, "auto", "exact", from_start_gradient=True).theta
            gradient, steps = influence.corrected_gradient(p, theta), steps + 1
    return _result(p, "second_order", theta, residual=float(gradient.norm()), gradient=gradient,
                   stats={"newton_steps": steps, "update_seconds": time.perf_counter() - started})


class CertifiedConfig(MethodConfig):
    solver: Literal["auto", "cholesky", "cg"] = "auto"


@register("certified", "certified", CertifiedConfig)
def certified_update(p: Problem, cfg: CertifiedConfig) -> Result:
    """Second-order update with an (ε, δ) certificate from its exact gradient residual on D'."""
    if p.certification is None:
        raise UnlearnError("method 'certified' needs a model trained with certification: "
                           "retrain with `unlearn train NAME --certified` or use second_order")
    if not logreg.is_binary(p.theta):
        raise UnlearnError("method 'certified' supports binary models only (the bound uses the "
                           "logistic loss): use second_order for a multi-class model")
    # The same Newton step as second_order (Woodbury on the cached factor for a deletion, the cached
    # H with one refinement for a revocation), from θ*'s own residual so that it is removed too.
    # A revocation's first step is on the gradient predicted from the cache (influence.
    # revocation_gradient_from_cache): its one pass over D' is then the refinement's, and the
    # certificate's exact pass is the second read of D', not a third.
    out = influence.second_order_update(p, cfg.solver, "auto", from_start_gradient=True, predicted_start=True)
    c = p.certification
    bound = certified_bound_without_pass(p, out.theta, out.start_gradient)
    theta, residual, gradient, passes, refined = out.theta, None, None, 0, 0
    if bound is None:
        exact, passes = certified.exact_residual(p, theta), 1
        if exact.bound > certified.REFINE_SHARE * (c.budget - c.spent):
            # Too much of the budget for one request: one more Newton step on the gradient this
            # pass computed, certified by a second pass (certified.REFINE_SHARE).
            # Both iterates are certified by their own pass: the one with the smaller bound is kept.
            S = out.surviving
            further = influence.apply_step(p, theta, out.solve(exact.gradient.reshape(-1)[S]), S)
            again, passes = certified.exact_residual(p, further), 2
            if again.bound < exact.bound:
                theta, exact, refined = further, again, 1
        residual, bound, gradient = exact.residual, exact.bound, exact.gradient
    spent = c.spent + bound
    return _result(p, "certified", theta, residual=residual, residual_bound=bound, gradient=gradient,
                   epsilon=noise.epsilon_for(spent, c.sigma, c.delta), delta=c.delta,
                   stats={"solver": out.solver, "hvps": out.hvps, "hessian": out.hessian,  # refinement's included
                          "exact_pass": passes, "refined": refined, "budget": c.budget, **hessian_distance(p),
                          "budget_used": spent, "budget_left": c.budget - spent,
                          "within_budget": spent <= c.budget})


def certified_bound_without_pass(p: Problem, theta: torch.Tensor,
                                 start_gradient: torch.Tensor | None = None) -> float | None:
    """The O(|Z|·p + p²) bound (certified.fast_bound) when the version's cache allows it and it is
    at most FAST_BOUND_SHARE of the budget left; None: pay the exact pass over D' and spend the
    residual itself (7–10× smaller on Adult), which keeps big requests from draining the budget."""
    if not certified.fast_bound_applies(p):
        return None
    c = p.certification
    bound = certified.fast_bound(p, theta, start_gradient).bound
    return bound if bound <= certified.FAST_BOUND_SHARE * (c.budget - c.spent) else None


class RetrainConfig(MethodConfig):
    warm_start: bool = False
    tol: float = Field(1e-9, gt=0)
    max_iter: int = Field(1000, ge=1)
    fresh_noise: bool = Field(False, description="draw a fresh perturbation b (certified models; noise.draw_noise)")


@register("retrain", "exact", RetrainConfig)
def retrain(p: Problem, cfg: RetrainConfig) -> Result:
    """Exact: train on D' from scratch (or from θ*), the reference every method is judged by."""
    obj = p.obj
    if cfg.fresh_noise and p.certification is not None:
        obj = logreg.Objective(l2=obj.l2, b=noise.draw_noise(p.theta.shape, p.certification.sigma))
    fitted = logreg.fit(p.X_new, p.y_new, p.n_classes, obj,
                        theta0=p.theta if cfg.warm_start else None, tol=cfg.tol, max_iter=cfg.max_iter)
    residual = float(logreg.gradient(fitted.theta, p.X_new, p.y_new, obj).norm())
    return Result(theta=fitted.theta, method="retrain", guarantee="exact", residual=residual,
                  stats={"iterations": fitted.iterations, "new_noise": obj is not p.obj,
                         "b": obj.b if obj is not p.obj else None})


class FinetuneConfig(MethodConfig):
    steps: int = Field(10, ge=1)


@register("finetune", "empirical", FinetuneConfig)
def finetune(p: Problem, cfg: FinetuneConfig) -> Result:
    """Baseline: a few full-batch gradient steps on D' from θ*, step 1/L (L a smoothness bound)."""
    smoothness = 0.25 * certified.spectral_norm(p) ** 2 + p.obj.l2
    # columns zero in D' start (and, their gradient being 0 there, stay) at their exact optimum
    theta = influence.revoked_optimum(p)
    for _ in range(cfg.steps):
        theta = theta - influence.corrected_gradient(p, theta) / smoothness
    return _result(p, "finetune", theta, stats={"steps": cfg.steps})


# --- iterative variants -----------------------------------------------------------------------

def _chunked(p: Problem, chunks: int, update: Callable[[Problem], torch.Tensor]) -> torch.Tensor:
    """Apply `update` to Z in `chunks` sequential parts, each from the previous part's θ and data.

    A large request as one step extrapolates far from θ*; smaller steps stay closer to where the
    local quadratic model is accurate (science.md §1, iterative variants)."""
    if chunks <= 1 or len(p.z_index) <= 1:
        return update(p)
    replacement = p.replacement_of_z()  # (m,) index into X_tilde, −1 for a deletion
    theta, X, y = p.theta, p.X, p.y
    position = torch.arange(p.n)  # current row of each original row, −1 once deleted
    parts = torch.tensor_split(torch.arange(len(p.z_index)), min(chunks, len(p.z_index)))
    for i, part in enumerate(parts):
        rows, rep = position[p.z_index[part]], replacement[part]
        order = torch.argsort((rep >= 0).long(), stable=True)  # deletions first (Problem layout)
        rows, rep = rows[order], rep[order]
        kept = rep[rep >= 0]
        # Revoked columns are zero in D' only once the last chunk has replaced its rows; before
        # that they still carry data, and their closed-form optimum does not hold yet.
        revoked = p.revoked if i == len(parts) - 1 else ()
        sub = make_problem(theta, p.obj, X, y, p.n_classes, rows, p.X_tilde[kept], p.y_tilde[kept],
                           revoked, p.certification)
        theta = update(sub)
        X, y = sub.X_new, sub.y_new
        position = _positions_after(position, rows, rep, len(X))
    return theta


def _positions_after(position: torch.Tensor, rows: torch.Tensor, rep: torch.Tensor, n_new: int) -> torch.Tensor:
    """Where each original row sits in D' = [untouched rows; Z̃] after one chunk."""
    n_old = int(position.max()) + 1
    new_index = torch.full((n_old,), -1, dtype=torch.long)
    untouched = torch.ones(n_old, dtype=torch.bool)
    untouched[rows] = False
    new_index[untouched] = torch.arange(int(untouched.sum()))
    replaced = rows[rep >= 0]
    new_index[replaced] = torch.arange(int(untouched.sum()), n_new)
    alive = position >= 0
    out = torch.full_like(position, -1)
    out[alive] = new_index[position[alive]]
    return out
