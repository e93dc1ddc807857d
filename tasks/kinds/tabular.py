"""Tables: logistic regression (certifiable), corrected by deleting records, revoking features and
fixing labels; updated by the convex methods of unlearning.tabular.methods; verified against an exactly
retrained reference (fidelity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path


from tasks import dvc, formats, state, tracking
from tasks import references as prefetch
from tasks.common import (step, Lineage, Plan, Trained, Update, Verification, dataset_digest, fallback_record, progress,
                          pyplot)
from tasks.kinds.base import Kind
from unlearning import references, registry
from unlearning.compliance.requests import UnlearningRequest, validate_request
from unlearning.errors import UnlearnError
from unlearning.tabular import certified, erasure, influence, logreg, methods, verify
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table, check_trainable, correct_table, save_table
from unlearning.tabular.training import TrainConfig, train_bundle


# --- methods: the one place this kind looks them up -----------------------------------------------

def check_method_name(request: UnlearningRequest, table: Table, method: str) -> None:
    validate_request(request, table, ["auto", *registry.names("tabular")])
    if method != "auto":
        registry.get("tabular", method)  # raises the one-line error listing the valid names


def resolve_method(requested: str, bundle: ModelBundle) -> str:
    """The table method to run (`auto`: registry.choose, on whether the model is certifiably trained)."""
    return registry.choose("tabular", requested, certified=getattr(bundle, "certification", None) is not None)


def run_method(method: str, problem, options: dict | None):
    return registry.run("tabular", method, problem, options)


# --- train --------------------------------------------------------------------------------------

def certification_tags(bundle: ModelBundle) -> dict:
    """Model-version tags describing the certification state (budget carried to the next version)."""
    cert = bundle.certification
    if cert is None:
        return {"certified": "false"}
    return {"certified": "true", "epsilon_target": cert.epsilon, "delta": cert.delta, "sigma": cert.sigma,
            "budget": cert.budget, "budget_used": cert.spent}


@step("fit")
def fit(lineage: Lineage, table: Table, cfg: TrainConfig):
    with lineage.child("fit") as run_id:
        tracking.log_params(run_id, cfg.model_dump())
        started = time.perf_counter()
        bundle, b, report = train_bundle(
            table, cfg, progress=lambda it, g: progress(f"  fit: L-BFGS iteration {it}, ‖∇L‖ = {g:.2e}"))
        seconds = time.perf_counter() - started
        tracking.log_metrics(run_id, {"grad_norm": report.grad_norm, "iterations": report.iterations,
                                      "fit_seconds": seconds, "n_train": int(table.train_mask().sum()),
                                      "n_parameters": bundle.theta.numel()})
    return bundle, b, seconds


@step("evaluate")
def evaluate(lineage: Lineage, encoded: erasure.Encoded, bundle: ModelBundle) -> dict:
    with lineage.child("evaluate") as run_id:
        train, test = encoded.train, encoded.test
        metrics = {"train_accuracy": verify.accuracy(bundle.theta, train.X, train.y),
                   "test_accuracy": verify.accuracy(bundle.theta, test.X, test.y),
                   "test_loss": verify.mean_loss(bundle.theta, test.X, test.y)}
        tracking.log_metrics(run_id, metrics)
    return metrics


# --- forget -------------------------------------------------------------------------------------

@step("correct data")
def correct_data(lineage: Lineage, plan: Plan) -> tuple[Table, str]:
    """D' of the request saved over data/NAME and versioned with DVC (a new data version)."""
    with lineage.child("correct data") as run_id:
        req = plan.request
        after = corrected_table(plan)
        save_table(after, lineage.root / "data" / after.name)
        version = dvc.add_data(lineage.root)
        after = replace(after, version=dataset_digest(lineage.root, after.name))  # its encoding's key
        tracking.log_params(run_id, {"data_before": plan.data_version, "data_after": version})
        tracking.log_dataset(run_id, after.name, version, lineage.root / "data" / after.name, after.frame)
        tracking.log_metrics(run_id, {"rows_before": len(plan.dataset.frame), "rows_after": len(after.frame),
                                      "deleted": len(req.delete_records), "relabelled": len(req.fix_labels),
                                      "revoked": len(req.revoke_features)})
    return after, version


def corrected_table(plan: Plan) -> Table:
    """D' of a table request, in memory."""
    req = plan.request
    return correct_table(plan.dataset, list(req.delete_records), list(req.revoke_features), dict(req.fix_labels))


@step("update model")
def update_model(lineage: Lineage, plan: Plan, after: Table, method: str, options: dict | None = None):
    """Run the unlearning method; returns (result, new bundle, problem, seconds, D' encoded with
    the new bundle's feature map)."""
    with lineage.child(f"update model ({method})", method=method) as run_id:
        started = time.perf_counter()
        cache = unaltered(lambda: state.load_cache(lineage.root, plan.parent_run),
                          "computing H and the rest anew") or {}
        encoded = parent_encoding(lineage.root, plan)
        if encoded is None:
            # The version's XᵀX and row norm were computed with its kept encoding: without it (or
            # for another data version) nothing ties them to the D encoded now, and the certified
            # bound must not rest on them (it takes the exact pass instead).
            cache = certified.without_data_keys(cache)
        loaded = time.perf_counter()
        req = plan.request
        changes = erasure.requested_changes(plan.dataset, req.delete_records, dict(req.fix_labels))
        problem, bundle_after, encoded_after = erasure.build_problem(plan.bundle, plan.dataset, after, plan.part,
                                                                     cache, encoded, changes)
        phases = {"cache_load_seconds": loaded - started, "problem_seconds": time.perf_counter() - loaded,
                  "encoded_cache_hit": float(encoded is not None)}
        if method == "retrain" and not options:  # the same job as verification's reference
            result, source = prefetch.obtain(references.table_job(problem), "  retraining on the corrected data ...")
            tracking.log_params(run_id, {"reference": source})
        else:
            if method == "retrain":
                progress("  retraining on the corrected data ...")
            result = run_method(method, problem, options)
        bundle_after = erasure.unlearned_bundle(bundle_after, result.theta)
        seconds = result.stats["update_seconds"]
        tracking.log_params(run_id, {"method": method, **(options or {}), "affected_rows": len(problem.z_index),
                                     "replacement_rows": len(problem.X_tilde)})
        tracking.log_metrics(run_id, {"update_seconds": seconds, "residual": result.residual, **phases,
                                      "residual_bound": result.residual_bound, "epsilon": result.epsilon,
                                      **{k: v for k, v in result.stats.items() if isinstance(v, (int, float))}})
    return result, bundle_after, problem, seconds, encoded_after


def parent_encoding(root: Path, plan: Plan) -> erasure.Encoded | None:
    """D encoded with the production model's feature map, as kept with that version (None: not
    kept — a version produced before it was — or kept for other data: encode anew)."""
    kept = unaltered(lambda: state.load_encoded(root, plan.parent_run, plan.data_digest), "encoding the table anew")
    return erasure.Encoded.from_state(kept) if kept is not None else None


def unaltered(load: Callable[[], dict | None], instead: str) -> dict | None:
    """What `load` reads of a version's private state; None, with a warning saying what is done
    `instead`, when it is not the content it was saved with (state.AlteredState): nothing computed
    from it reaches a certificate."""
    try:
        return load()
    except state.AlteredState as e:
        progress(f"  warning: {e}: {instead}")
        return None


@step("verify")
def verify_update(lineage: Lineage, plan: Plan, test: erasure.TrainingData, problem, result: methods.Result,
                  bundle_after: ModelBundle, cfg: verify.VerifyConfig):
    """Fidelity against an exactly retrained reference on D'; returns (metrics, checks, seconds,
    the reference: a `retrain` Result)."""
    with lineage.child("verify") as run_id:
        if result.method == "retrain":
            reference, source = result, "the update"
        else:
            reference, source = prefetch.obtain(references.table_job(problem),
                                                "  verify: retraining a reference model on the corrected data ...")
        retrain_seconds = reference.stats["update_seconds"]
        tracking.log_params(run_id, {"reference": source})
        # The bundle about to be registered is what is judged, not only the method's output.
        metrics = verify.fidelity(bundle_after.theta, reference.theta, problem.theta, test.X, test.y)
        metrics["residual"] = result.residual
        metrics["residual_retrain"] = reference.residual
        checks = verify.checks(metrics, cfg)
        tracking.log_metrics(run_id, {**metrics, "retrain_seconds": retrain_seconds,
                                      "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"checks": checks, "metrics": metrics}, "verification.json")
        log_coefficient_plot(run_id, result.theta, reference.theta, result.method)
    return metrics, checks, retrain_seconds, reference


@step("fall back to retraining")
def fall_back_to_reference(lineage: Lineage, test: erasure.TrainingData, problem, failed: methods.Result,
                           reference: methods.Result,
                           bundle_after: ModelBundle, checks: list[dict], cfg: verify.VerifyConfig, update_s: float):
    """`auto` and the fast update failed verification: the reference verification already
    retrained on D' becomes the new model (guarantee `exact`). Returns (result, bundle, metrics,
    checks, the failed attempt)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = fallback_record(failed.method, update_s, checks, residual=failed.residual)
        bundle_after = erasure.unlearned_bundle(bundle_after, reference.theta)
        metrics = verify.fidelity(bundle_after.theta, reference.theta, problem.theta, test.X, test.y)
        metrics["residual"] = metrics["residual_retrain"] = reference.residual
        checks = verify.checks(metrics, cfg)
        tracking.log_params(run_id, {"failed_method": failed.method, "failed_checks": ",".join(attempt["failed_checks"])})
        tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"attempt": attempt, "checks": checks, "metrics": metrics}, "fallback.json")
    return reference, bundle_after, metrics, checks, attempt


# --- evidence: certificate and evidence modes, no model trained ------------------------------------

@step("verify")
def verify_without_reference(lineage: Lineage, test: erasure.TrainingData, problem, result: methods.Result,
                             bundle_after: ModelBundle, cfg: verify.VerifyConfig, mode: str) -> tuple[dict, list[dict]]:
    """The update judged without training a model (unlearning.tabular.verify): `certificate` — a
    certified update's (ε, δ) certificate, its bound checked against the exact residual on D';
    `evidence` (and `certificate` for an exact retraining, whose proof is that it is a minimiser)
    — the strong-convexity bound on the distance to the retrained model. Both: utility against
    the model before. Returns (metrics, checks)."""
    with lineage.child("verify", mode=mode) as run_id:
        theta, obj = bundle_after.theta, objective_of(problem, result)
        residual = residual_on(problem, theta, obj)  # one pass over D'
        if mode == "certificate" and result.guarantee == "certified":
            stats = result.stats
            metrics = verify.certificate_evidence(residual, result.residual_bound, result.epsilon,
                                                  problem.certification.epsilon, stats["budget_used"], stats["budget"],
                                                  verify.utility(theta, problem.theta, test.X, test.y))
            checks = verify.certificate_checks(metrics, cfg)
        else:
            metrics = verify.convexity_evidence(theta, problem.theta, residual, residual_on(problem, problem.theta, obj),
                                                obj.l2, problem.n_new, test.X, test.y)
            checks = verify.convexity_checks(metrics, cfg, exact=result.guarantee == "exact")
        tracking.log_params(run_id, {"mode": mode})
        tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"mode": mode, "checks": checks, "metrics": metrics}, "verification.json")
    return metrics, checks


def objective_of(problem, result: methods.Result) -> logreg.Objective:
    """The objective the new model minimises on D': the problem's, or, for a certified model
    retrained with fresh noise (its budget spent), the one with the new perturbation b."""
    if result.stats.get("new_noise"):
        return logreg.Objective(l2=problem.obj.l2, b=result.stats["b"])
    return problem.obj


def residual_on(problem, theta, obj: logreg.Objective) -> float:
    """‖∇L_b(θ; D')‖₂ under `obj`, reading D' in place (no n×p copy)."""
    g = influence.new_data_gradient(problem, theta) + obj.l2 * theta
    return float((g + obj.b if obj.b is not None else g).norm())


@step("fall back to retraining")
def retrain_after_failed_checks(lineage: Lineage, problem, failed: methods.Result, checks: list[dict],
                                update_s: float):
    """`auto`, and the update failed its checks in a mode that trained no model: retrain on D'
    now. Returns (the retrained Result, the failed attempt)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = fallback_record(failed.method, update_s, checks, residual=failed.residual)
        reference, source = prefetch.obtain(references.table_job(problem),
                                            "  auto: the update failed its checks; retraining on the corrected data ...")
        tracking.log_params(run_id, {"failed_method": failed.method, "reference": source,
                                     "failed_checks": ",".join(attempt["failed_checks"])})
        tracking.log_metrics(run_id, {"retrain_seconds": reference.stats["update_seconds"]})
        tracking.log_json(run_id, {"attempt": attempt}, "fallback.json")
    return reference, attempt


def log_coefficient_plot(run_id: str, theta, theta_ref, method: str) -> None:
    """Every coefficient of the updated model against the retrained model's: on the diagonal = what
    retraining would have given (the certificate report shows it). Not the model before: its
    coefficients are of the superseded version, whose files the purge removes, and a column only
    erased records held carries their label in its sign."""
    plt = pyplot()
    ref = theta_ref.detach().reshape(-1).double().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.scatter(ref, theta.detach().reshape(-1).double().numpy(), s=8, color="tab:blue", label=f"{method} update")
    low, high = float(ref.min()), float(ref.max())
    ax.plot([low, high], [low, high], color="gray", linewidth=0.8)
    ax.set_xlabel("coefficient in the model retrained on the corrected data")
    ax.set_ylabel("coefficient")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "coefficients.png")
    plt.close(fig)


def with_spent_budget(bundle, result):
    """Carry the accumulated residual bound to the new version (reset to 0 after a retrain)."""
    if bundle.certification is None:
        return bundle
    spent = result.stats.get("budget_used", 0.0) if result.guarantee == "certified" else 0.0
    return replace(bundle, certification=replace(bundle.certification, spent=spent))


class Tabular(Kind):
    format = formats.TABLE
    verify_modes = ("certificate", "evidence", "reference")

    def check_trainable(self, dataset, config) -> None:
        check_trainable(dataset)  # a table too small to train and evaluate: one line, nothing recorded

    def train_params(self, dataset: str, config) -> dict:
        return {"dataset": dataset, **config.model_dump()}

    def train(self, lineage: Lineage, dataset, config, data_version: str, prepared=None) -> Trained:
        tracking.log_dataset(lineage.parent_run, dataset.name, data_version, lineage.root / "data" / dataset.name,
                             dataset.frame)
        bundle, b, seconds = fit(lineage, dataset, config)
        encoded = erasure.encode_version(dataset, bundle, dataset_digest(lineage.root, dataset.name))
        metrics = evaluate(lineage, encoded, bundle)
        return Trained(bundle, seconds, metrics, certification_tags(bundle), b,
                       cache=lambda: erasure.model_cache(bundle, dataset, b, encoded))

    def check_request(self, root: Path, request, dataset, method: str):
        check_method_name(request, dataset, method)

    def plan(self, root: Path, request, dataset, bundle, production, method: str, checked):
        resolved = resolve_method(method, bundle)
        if resolved == "certified" and getattr(bundle, "certification", None) is None:
            raise UnlearnError(f"method 'certified' needs a certifiably trained model: model {request.model} "
                               f"v{production.version} was not; use second_order or retrain with --certified")
        return resolved, state.load_noise(root, production.run_id)  # b: the noise of a certified model

    def correct_data(self, lineage: Lineage, plan: Plan):
        return correct_data(lineage, plan)

    def update(self, lineage: Lineage, plan: Plan, after, method: str, options: dict | None) -> Update:
        result, bundle, problem, seconds, encoded = update_model(lineage, plan, after, method, options)
        return Update(with_spent_budget(bundle, result), result.method, result.guarantee, seconds, result.stats,
                      b=plan.part, detail=(result, problem, encoded))

    def respect_budget(self, lineage: Lineage, plan: Plan, after, update: Update) -> Update:
        result = update.detail[0]
        if result.method != "certified" or result.stats["within_budget"]:
            return update
        # The certificate cannot be issued: retrain with fresh noise, which resets the budget.
        retrained = self.update(lineage, plan, after, "retrain", {"fresh_noise": True})
        retrained.b = retrained.stats.get("b")
        return retrained

    def verify(self, lineage: Lineage, plan: Plan, after, update: Update, config) -> Verification:
        result, problem, encoded = update.detail
        metrics, checks, retrain_s, reference = verify_update(lineage, plan, encoded.test, problem, result,
                                                              update.bundle, config or verify.VerifyConfig())
        return Verification(metrics, checks, retrain_s, detail=reference)

    def fall_back(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification, config):
        if verification.mode != "reference":
            return self.fall_back_without_reference(lineage, plan, after, update, verification, config)
        (failed, problem, encoded), reference = update.detail, verification.detail
        result, bundle, metrics, checks, attempt = fall_back_to_reference(
            lineage, encoded.test, problem, failed, reference, update.bundle, verification.checks,
            config or verify.VerifyConfig(), update.seconds)
        # The request cost the failed update and the retraining.
        replaced = Update(with_spent_budget(bundle, result), result.method, result.guarantee,
                          update.seconds + verification.retrain_s, result.stats, b=update.b,
                          detail=(result, problem, encoded))
        return replaced, Verification(metrics, checks, verification.retrain_s, detail=reference), attempt

    # --- evidence ---------------------------------------------------------------------------------
    def default_verify_mode(self, plan: Plan, update: Update) -> str:
        """`certificate` for a certifiably trained model updated by `certified` (or retrained:
        exact), else `evidence`."""
        certifiable = getattr(plan.bundle, "certification", None) is not None
        return "certificate" if certifiable and update.method in ("certified", "retrain") else "evidence"

    def check_verify_mode(self, plan: Plan, mode: str) -> None:
        super().check_verify_mode(plan, mode)
        if mode != "certificate":
            return
        if getattr(plan.bundle, "certification", None) is None:
            raise UnlearnError(f"--verify certificate needs a certifiably trained model: model {plan.model_name} "
                               f"v{plan.parent_version} was not (train with --certified); use --verify evidence")
        if plan.method not in ("certified", "retrain"):
            raise UnlearnError(f"--verify certificate needs method certified (or retrain): {plan.method} issues no "
                               f"certificate; use --verify evidence")

    def evidence(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        result, problem, encoded = update.detail
        metrics, checks = verify_without_reference(lineage, encoded.test, problem, result, update.bundle,
                                                   config or verify.VerifyConfig(), mode)
        return Verification(metrics, checks, None, mode=mode, retrains=0)

    def fall_back_without_reference(self, lineage: Lineage, plan: Plan, after, update: Update,
                                    verification: Verification, config):
        """The `auto` fallback in `certificate`/`evidence` mode: no reference exists yet, so
        retraining happens now; the retrained model is judged in the same mode."""
        failed, problem, encoded = update.detail
        if failed.method == "second_order" and verify.failed_on_residual_only(verification.checks):
            stepped = self.further_steps(lineage, problem, encoded, update)
            if stepped is not None:
                checked = self.evidence(lineage, plan, after, stepped, config, verification.mode)
                if checked.passed:
                    return stepped, checked, None
        result, attempt = retrain_after_failed_checks(lineage, problem, failed, verification.checks, update.seconds)
        retrain_s = result.stats["update_seconds"]
        # The request cost the failed update and the retraining.
        replaced = Update(with_spent_budget(erasure.unlearned_bundle(update.bundle, result.theta), result),
                          result.method, result.guarantee, update.seconds + retrain_s, result.stats, b=update.b,
                          detail=(result, problem, encoded))
        checked = self.evidence(lineage, plan, after, replaced, config, verification.mode)
        return replaced, replace(checked, retrain_s=retrain_s, retrains=1), attempt

    def further_steps(self, lineage: Lineage, problem, encoded, update: Update) -> Update | None:
        """Newton steps from the update's θ, each with H at the θ it starts from (methods.newton_from:
        an H and two passes over D' each, where retraining takes a training); None when it takes none."""
        failed = update.detail[0]
        with lineage.child("further newton steps") as run_id:
            result = methods.newton_from(problem, failed.theta)
            tracking.log_metrics(run_id, {"newton_steps": result.stats["newton_steps"], "residual": result.residual,
                                          "update_seconds": result.stats["update_seconds"]})
        if not result.stats["newton_steps"]:
            return None
        seconds = result.stats["update_seconds"]  # the request paid for both
        result = replace(result, stats={**failed.stats, **result.stats,
                                        "update_seconds": failed.stats["update_seconds"] + seconds})
        bundle = erasure.unlearned_bundle(update.bundle, result.theta)
        return Update(with_spent_budget(bundle, result), result.method, result.guarantee, update.seconds + seconds,
                      result.stats, b=update.b, detail=(result, problem, encoded))

    def reference_job(self, plan: Plan) -> references.ReferenceJob:
        problem, _, _ = erasure.build_problem(plan.bundle, plan.dataset, corrected_table(plan), plan.part)
        return references.table_job(problem)

    def version_tags(self, update: Update) -> dict:
        return certification_tags(update.bundle)

    def private_state(self, update: Update, after):
        result, problem, encoded = update.detail  # D' as the update encoded it: not encoded again
        return lambda: erasure.version_cache(encoded, problem, result)

    def certificate_config(self, plan: Plan, update: Update, attempt: dict | None, config) -> dict:
        return {"fallback": attempt, "verify": (config or verify.VerifyConfig()).model_dump()}

    def certificate_result(self, update: Update):
        return update.detail[0]

    def summary_fields(self, plan: Plan, update: Update, verification: Verification, attempt: dict | None) -> dict:
        return {"fallback": attempt,
                "failed_checks": [verify.describe_failures([c]) for c in verification.checks if not c["passed"]]}

    def format_forget(self, s: dict) -> list[str]:
        c, m, t = s["certificate"], s["metrics"], s["timings"]
        if "test_accuracy_retrain" in m:  # reference mode
            quality = (f"  test accuracy {100 * m['test_accuracy']:.2f} % (retrained "
                       f"{100 * m['test_accuracy_retrain']:.2f} %), agreement with retrained {100 * m['agreement']:.2f} %")
        else:
            quality = f"  test accuracy {100 * m['test_accuracy']:.2f} % (before {100 * m['test_accuracy_before']:.2f} %)"
            if "guaranteed_agreement" in m:
                quality += (f", agreement with a retrained model ≥ {100 * m['guaranteed_agreement']:.2f} % "
                            f"(‖θ − θ_retrain‖ ≤ {m['distance_bound']:.3g})")
        lines = [
            quality,
            f"  gradient residual {c['residual']:.3g}" + (
                f", bound {c['residual_bound']:.3g}, ε = {c['epsilon']:.3g} at δ = {c['delta']:g}, "
                f"budget left {c['budget_left']:.3g}" if c["epsilon"] is not None else ""),
            f"  update {t['update_s']:.3f} s" + (f" vs retraining {t['retrain_s']:.2f} s" if t["retrain_s"] else ""),
        ]
        if s.get("fallback"):
            lines.append(f"  auto: {s['fallback']['method']} was not promoted ({s['fallback']['reason']}); "
                         "the retrained reference was")
        return lines


KIND = Tabular()
