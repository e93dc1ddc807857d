"""Prefect tasks of the train and forget flows: each one step and one MLflow child run.

Tasks are thin: the math is in `unlearning`, storage in `tasks.dvc` / `tasks.data` /
`tasks.tracking` / `tasks.state`. They run in the flow's process and hand objects to each other,
so caching and result persistence are off (Prefect would otherwise hash whole tensors).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import data as data_store
from tasks import dvc, state, tracking
from tasks import references as prefetch
from unlearning import erasure, lm, methods, references, verify
from unlearning.data.images import ImageDataset
from unlearning.data.tables import Table, correct_table, save_table
from unlearning.data.text import TextCorpus
from unlearning.errors import UnlearnError
from unlearning.models.bundle import ModelBundle
from unlearning.requests import UnlearningRequest, load_request, validate_request
from unlearning.training import TrainConfig, train_bundle

STEP = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)


@dataclass
class Lineage:
    """Where a flow run records itself: the parent MLflow run and the tags every run carries."""

    root: Path
    experiment: str
    parent_run: str
    tags: dict = field(default_factory=dict)

    def child(self, step: str, **extra_tags):
        """A child run of the flow's parent run, carrying the lineage tags."""
        return tracking.run(self.experiment, step, {**self.tags, "step": step, **extra_tags}, self.parent_run)


def progress(message: str) -> None:
    """Console progress for long steps, on stderr so `--json` stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def dataset_digest(root: Path, name: str) -> str:
    """sha256 over one dataset's files: its version within the repository-wide data.dvc."""
    h = hashlib.sha256()
    for path in sorted((Path(root) / "data" / name).iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def certification_tags(bundle: ModelBundle) -> dict:
    """Model-version tags describing the certification state (budget carried to the next version)."""
    cert = bundle.certification
    if cert is None:
        return {"certified": "false"}
    return {"certified": "true", "epsilon_target": cert.epsilon, "delta": cert.delta, "sigma": cert.sigma,
            "budget": cert.budget, "budget_used": cert.spent}


# --- train ------------------------------------------------------------------------------------

@task(name="load data", **STEP)
def load_data(root: Path, name: str) -> tuple[Table, str, str]:
    table = data_store.load_dataset(root, name)
    version = dvc.data_version(root)
    if version is None:
        raise UnlearnError(f"data/ is not versioned yet: run `unlearn data add {name}` first")
    return table, version, dataset_digest(root, name)


@task(name="fit", **STEP)
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


@task(name="fit language model", **STEP)
def fit_lm(lineage: Lineage, corpus, cfg):
    with lineage.child("fit") as run_id:
        tracking.log_params(run_id, cfg.model_dump())
        bundle, stats = lm.train_text_model(
            corpus, cfg.preset, cfg.seconds, cfg.steps, cfg.seed,
            progress=lambda s: progress(f"  fit: epoch {s.epochs:.1f}, step {s.steps}, {s.seconds:.0f} s, loss {s.loss:.3f}"))
        tracking.log_metrics(run_id, {"steps": stats.steps, "epochs": stats.epochs, "fit_seconds": stats.seconds,
                                      "train_loss": stats.loss})
    return bundle, stats.seconds


@task(name="evaluate language model", **STEP)
def evaluate_lm(lineage: Lineage, corpus, bundle) -> dict:
    with lineage.child("evaluate") as run_id:
        metrics = {"held_out_perplexity": lm.held_out_perplexity(bundle, corpus)}
        tracking.log_metrics(run_id, metrics)
    return metrics


@task(name="evaluate", **STEP)
def evaluate(lineage: Lineage, table: Table, bundle: ModelBundle) -> dict:
    with lineage.child("evaluate") as run_id:
        train = erasure.training_data(table, bundle)
        test = erasure.held_out_data(table, bundle)
        metrics = {"train_accuracy": verify.accuracy(bundle.theta, train.X, train.y),
                   "test_accuracy": verify.accuracy(bundle.theta, test.X, test.y),
                   "test_loss": verify.mean_loss(bundle.theta, test.X, test.y)}
        tracking.log_metrics(run_id, metrics)
    return metrics


@task(name="register", **STEP)
def register(lineage: Lineage, name: str, bundle: ModelBundle, b: torch.Tensor | None,
             version_tags: dict, table: Table) -> tuple[str, str]:
    """Log the model under a child run, register it, and keep its private state by that run id:
    the noise b and the Hessian cache of the new version on its training data `table`."""
    with lineage.child("register") as run_id:
        uri = tracking.log_model(run_id, bundle)
        version = tracking.register(name, uri, run_id, {**lineage.tags, **version_tags})
        state.save_noise(lineage.root, run_id, b)
        started = time.perf_counter()
        if isinstance(bundle, ModelBundle):
            state.save_cache(lineage.root, run_id, erasure.model_cache(bundle, table, b))
        tracking.log_params(run_id, {"registered_model": name, "version": version})
        tracking.log_metrics(run_id, {"hessian_cache_seconds": time.perf_counter() - started})
    return version, run_id


@task(name="promote", **STEP)
def promote(lineage: Lineage, name: str, version: str) -> None:
    with lineage.child("promote") as run_id:
        tracking.promote(name, version)
        tracking.log_params(run_id, {"alias": tracking.PRODUCTION, "version": version})


# --- forget -----------------------------------------------------------------------------------

@dataclass
class Plan:
    """A validated request with everything it refers to, before anything is written."""

    request: UnlearningRequest
    earlier: dict | None = None  # the earlier result when this request id was processed already
    table: Table | None = None
    data_version: str | None = None
    model_name: str | None = None
    parent_version: str | None = None
    parent_run: str | None = None
    bundle: ModelBundle | None = None
    b: torch.Tensor | None = None
    method: str | None = None
    findings: list[dict] | None = None  # text corpora: the scan findings the request removes
    requested: str | None = None  # the method as asked (`auto` allows falling back to retraining)
    image: object | None = None  # image datasets: the validated request (tasks.image_steps.ImagePlan)
    keep_days: int | None = None  # keep superseded artifacts "beyond use" this long (None: purge at once)


def resolve_method(requested: str, bundle: ModelBundle) -> str:
    """`auto` → certified for certifiably trained models, else second_order."""
    if requested != "auto":
        return requested
    return "certified" if getattr(bundle, "certification", None) is not None else "second_order"


def image_method_name(requested: str) -> str:
    """`auto` → alignment for a deep image model (unlearning.images.choose_method)."""
    from unlearning.images import get_image_method

    return get_image_method(requested).name


def request_hash(root: Path, request: UnlearningRequest) -> str:
    """The request's salted hash (the ledger's `request_hash`): what MLflow and certificates hold."""
    from tasks.scan import project_salt
    from unlearning.ledger import request_fingerprint

    return request_fingerprint(request, project_salt(root))


def earlier_result(root: Path, request: UnlearningRequest) -> dict | None:
    """The recorded result of an already processed request id (a version it promoted, not one
    rolled back or failing verification); UnlearnError if its content differs."""
    tried = [v for v in tracking.model_versions(request.model) if v.tags.get("request_id") == request.id]
    done = [v for v in tried if v.tags.get("verified") == "true" and "rolled_back" not in v.tags]
    if not tried:
        return None
    found = (done or tried)[-1]
    if found.tags.get("request_hash") != request_hash(root, request):
        raise UnlearnError(f"request id {request.id!r} was already used for a different request "
                           f"(model {request.model} v{found.version}): give the new request a new id")
    return tracking.load_result(found.tags["lineage_run"]) if done else None


def other_models_on(dataset: str, model: str) -> list[str]:
    """Production models other than `model` whose registered lineage (tag `dataset`) is `dataset`."""
    found = []
    for name in tracking.registered_model_names():
        version = None if name == model else tracking.production_version(name)
        if version is not None and version.tags.get("dataset", name) == dataset:
            found.append(name)
    return found


def require_sole_model(model: str, dataset: str) -> None:
    """An erasure must reach every model that saw the data: refuse while another production model
    was trained on the same dataset (it would keep the removed records and could no longer be
    unlearned once the data is corrected)."""
    others = other_models_on(dataset, model)
    if others:
        names = ", ".join(others)
        raise UnlearnError(f"dataset '{dataset}' is also used by production model(s) {names}: an erasure must "
                           f"reach every model trained on it; retire them first (`unlearn model retire NAME`) "
                           f"and retrain after the erasure if needed")


@task(name="validate request", **STEP)
def plan_request(root: Path, request_path: Path, method: str | None = None) -> Plan:
    request = load_request(Path(request_path))
    tracking.connect(root)
    production = tracking.require_production(request.model, root)
    earlier = earlier_result(root, request)
    if earlier is not None:
        return Plan(request=request, earlier=earlier)
    dataset = production.tags.get("dataset", request.model)
    require_sole_model(request.model, dataset)
    table = data_store.load_dataset(root, dataset)
    findings = None
    if isinstance(table, TextCorpus):
        from tasks.text_steps import plan_findings

        findings = plan_findings(root, request, table, method or request.method)
    elif isinstance(table, ImageDataset):
        pass  # validated against the model's training set below (image_steps.plan_images)
    else:
        validate_request(request, table, ["auto", *methods.METHODS])
        if method is not None and method not in ("auto", *methods.METHODS):
            methods.get_method(method)  # raises the one-line error listing the valid names
    digest = dataset_digest(root, table.name)
    if production.tags.get("dataset_digest") not in (None, digest):
        raise UnlearnError(f"model {request.model} v{production.version} was trained on another version of "
                           f"data/{table.name} than the one checked out: restore that data version "
                           f"(`git checkout` data.dvc + `dvc checkout`) or retrain")
    bundle = tracking.load_version_bundle(request.model, production.version)
    if isinstance(table, ImageDataset):
        from tasks.image_steps import plan_images

        image = plan_images(request, table, bundle, method or request.method)
        return Plan(request=request, table=table, data_version=dvc.data_version(root), model_name=request.model,
                    parent_version=str(production.version), parent_run=production.run_id, bundle=bundle,
                    method=image_method_name(method or request.method), requested=method or request.method,
                    image=image)
    resolved = resolve_method(method or request.method, bundle)
    if findings is not None and resolved == "second_order" and (method or request.method) == "auto":
        resolved = lm.auto_method(lm.affected_window_count(table, findings, bundle.seq_len))
    if resolved == "certified" and getattr(bundle, "certification", None) is None:
        raise UnlearnError(f"method 'certified' needs a certifiably trained model: model {request.model} "
                           f"v{production.version} was not; use second_order or retrain with --certified")
    return Plan(request=request, table=table, data_version=dvc.data_version(root),
                model_name=request.model, parent_version=str(production.version), parent_run=production.run_id,
                bundle=bundle, b=state.load_noise(root, production.run_id), method=resolved,
                findings=findings, requested=method or request.method)


@task(name="correct data", **STEP)
def correct_data(lineage: Lineage, plan: Plan) -> tuple[Table, str]:
    """D' of the request saved over data/NAME and versioned with DVC (a new data version)."""
    with lineage.child("correct data") as run_id:
        req = plan.request
        after = corrected_table(plan)
        save_table(after, lineage.root / "data" / after.name)
        version = dvc.add_data(lineage.root)
        tracking.log_params(run_id, {"data_before": plan.data_version, "data_after": version})
        tracking.log_dataset(run_id, after.name, version, lineage.root / "data" / after.name, after.frame)
        tracking.log_metrics(run_id, {"rows_before": len(plan.table.frame), "rows_after": len(after.frame),
                                      "deleted": len(req.delete_records), "relabelled": len(req.fix_labels),
                                      "revoked": len(req.revoke_features)})
    return after, version


def corrected_table(plan: Plan) -> Table:
    """D' of a table request, in memory."""
    req = plan.request
    return correct_table(plan.table, list(req.delete_records), list(req.revoke_features), dict(req.fix_labels))


def reference_job_for(root: Path, request_path: Path) -> references.ReferenceJob | None:
    """The verification reference a request file will need, planned from the current data and
    production version without writing anything (None: already processed)."""
    plan = plan_request.fn(root, request_path)
    if plan.earlier is not None:
        return None
    if plan.findings is not None:
        from tasks.text_steps import reference_job, redacted_corpus

        return reference_job(plan, redacted_corpus(plan))
    if plan.image is not None:
        from tasks.image_steps import reference_job

        return reference_job(plan)
    problem, _, _ = erasure.build_problem(plan.bundle, plan.table, corrected_table(plan), plan.b)
    return references.table_job(problem)


@task(name="update model", **STEP)
def update_model(lineage: Lineage, plan: Plan, after: Table, method: str, options: dict | None = None):
    """Run the unlearning method; returns (result, new bundle, problem, seconds)."""
    with lineage.child(f"update model ({method})", method=method) as run_id:
        cache = state.load_cache(lineage.root, plan.parent_run)
        problem, bundle_after, _ = erasure.build_problem(plan.bundle, plan.table, after, plan.b, cache)
        if method == "retrain" and not options:  # the same job as verification's reference
            result, source = prefetch.obtain(references.table_job(problem), "  retraining on the corrected data ...")
            tracking.log_params(run_id, {"reference": source})
        else:
            if method == "retrain":
                progress("  retraining on the corrected data ...")
            result = methods.run_method(method, problem, options)
        bundle_after = erasure.unlearned_bundle(bundle_after, result.theta)
        seconds = result.stats["update_seconds"]
        tracking.log_params(run_id, {"method": method, **(options or {}), "affected_rows": len(problem.z_index),
                                     "replacement_rows": len(problem.X_tilde)})
        tracking.log_metrics(run_id, {"update_seconds": seconds, "residual": result.residual,
                                      "residual_bound": result.residual_bound, "epsilon": result.epsilon,
                                      **{k: v for k, v in result.stats.items() if isinstance(v, (int, float))}})
    return result, bundle_after, problem, seconds


@task(name="verify", **STEP)
def verify_update(lineage: Lineage, plan: Plan, after: Table, problem, result: methods.Result,
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
        test = erasure.held_out_data(after, bundle_after)
        # The bundle about to be registered is what is judged, not only the method's output.
        metrics = verify.fidelity(bundle_after.theta, reference.theta, problem.theta, test.X, test.y)
        metrics["residual"] = result.residual
        metrics["residual_retrain"] = reference.residual
        checks = verify.checks(metrics, cfg)
        tracking.log_metrics(run_id, {**metrics, "retrain_seconds": retrain_seconds,
                                      "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"checks": checks, "metrics": metrics}, "verification.json")
        log_coefficient_plot(run_id, result.theta, reference.theta, problem.theta, result.method)
    return metrics, checks, retrain_seconds, reference


def falls_back_to_retraining(requested: str | None, method: str, checks: list[dict]) -> bool:
    """The one rule for every kind of model: a fast update that fails verification is replaced by
    the retrained reference only when the method was `auto`. An explicitly requested method is
    not silently replaced: it fails (exit 1) with its failed checks."""
    return requested == "auto" and method != "retrain" and not all(c["passed"] for c in checks)


def fallback_record(method: str, update_s: float, checks: list[dict], **measured) -> dict:
    """What the certificate and the JSON say about a failed fast update that was replaced."""
    failed = [c for c in checks if not c["passed"]]
    return {"method": method, "update_s": update_s, "failed_checks": [c["name"] for c in failed],
            "reason": "verification failed: " + verify.describe_failures(failed), **measured}


@task(name="fall back to retraining", **STEP)
def fall_back_to_reference(lineage: Lineage, after: Table, problem, failed: methods.Result, reference: methods.Result,
                           bundle_after: ModelBundle, checks: list[dict], cfg: verify.VerifyConfig, update_s: float):
    """`auto` and the fast update failed verification: the reference verification already
    retrained on D' becomes the new model (guarantee `exact`). Returns (result, bundle, metrics,
    checks, the failed attempt)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = fallback_record(failed.method, update_s, checks, residual=failed.residual)
        bundle_after = erasure.unlearned_bundle(bundle_after, reference.theta)
        test = erasure.held_out_data(after, bundle_after)
        metrics = verify.fidelity(bundle_after.theta, reference.theta, problem.theta, test.X, test.y)
        metrics["residual"] = metrics["residual_retrain"] = reference.residual
        checks = verify.checks(metrics, cfg)
        tracking.log_params(run_id, {"failed_method": failed.method, "failed_checks": ",".join(attempt["failed_checks"])})
        tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"attempt": attempt, "checks": checks, "metrics": metrics}, "fallback.json")
    return reference, bundle_after, metrics, checks, attempt


def log_coefficient_plot(run_id: str, theta, theta_ref, theta_before, method: str) -> None:
    """Every coefficient of the updated and of the original model against the retrained model's:
    on the diagonal = what retraining would have given (the certificate report shows it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = theta_ref.detach().reshape(-1).double().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.scatter(ref, theta_before.detach().reshape(-1).double().numpy(), s=8, color="tab:red", alpha=0.5,
               label="original model")
    ax.scatter(ref, theta.detach().reshape(-1).double().numpy(), s=8, color="tab:blue", label=f"{method} update")
    low, high = float(ref.min()), float(ref.max())
    ax.plot([low, high], [low, high], color="gray", linewidth=0.8)
    ax.set_xlabel("coefficient in the model retrained on the corrected data")
    ax.set_ylabel("coefficient")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "coefficients.png")
    plt.close(fig)


