"""The image kind's verification (tasks.kinds.images): by the evidence on the request's hashed
samples (no model trained) or against a retrained reference, the fall-back to retraining when an
update's checks fail, and the tables and metrics they report. Split from tasks/kinds/images.py,
which keeps the kind itself (methods, training, the forget steps, the `Images` class).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tasks import state, tracking
from tasks import references as prefetch
from tasks.common import (
    step, Lineage, Plan, Update, Verification, console_table, fallback_record, progress, pyplot,
)
from unlearning import references
from unlearning import registry
from unlearning.images import ImageRequest
from unlearning.images.data import ImageDataset
from unlearning.images.registry import ImageContext
from unlearning.images.bundle import ImageBundle, tensors, test_positions, training_data
from unlearning.images.evidence import RequestImages, control_positions, judge_request, request_sample
from unlearning.images.outputs import KnownOutputs, known_of
from unlearning.images.repair import RepairConfig, repair
from unlearning.metrics import model_outputs
from unlearning.checks import outcome, undecided_removal
from unlearning.images.verify import REMOVAL_CHECKS, ImageVerifyConfig, image_checks, markdown_table
from unlearning.metrics import compare_to_retrain, evaluate_model
from unlearning.linalg import single_threaded




def run_method(method: str, model, data, request: ImageRequest, options: dict | None, chain=None):
    return registry.run("images", method, ImageContext(model, data, request, chain), options)


def reference_job(plan: Plan) -> references.ReferenceJob:
    """The CNN retrained on D' (the retained images and Z̃ only), replaying the original schedule."""
    data = training_data(plan.dataset, plan.bundle)
    return references.image_job(plan.bundle.model.config, *plan.part.request.d_prime(data), data.schedule,
                                plan.device)


def eval_sets(plan: Plan, cfg: ImageVerifyConfig):
    """(forget, retain, test) as (X, y): Z with its recorded labels, D \\ Z, and the test split —
    without the forgotten class for class forgetting (TA measures what should be kept; the
    retrained model cannot predict that class, so it would only shift every TA by the same amount)."""
    data, req = training_data(plan.dataset, plan.bundle), plan.part.request
    test = tensors(plan.dataset, test_positions(plan.dataset, req.forget_class, cfg.max_test))
    return (data.X[req.forget], data.y[req.forget]), (data.X[req.retain], data.y[req.retain]), test


def evaluate_row(name: str, model, sets, seconds: float) -> dict:
    with single_threaded():
        return {"method": name, **evaluate_model(model, *sets), "rte_s": seconds}


@step("verify")
def verify_images(lineage: Lineage, plan: Plan, method: str, bundle_after: ImageBundle, update_s: float,
                  compare: dict[str, dict] | None = None, cfg: ImageVerifyConfig = ImageVerifyConfig()):
    """Every metric for the original, the update, the retrained reference and each baseline in
    `compare` (method → options; run and evaluated, never registered). Logs a child run per
    method, the comparison table (results.md / results.json) and a plot (results.png).
    Returns (rows with gaps to retrain, checks, retrain seconds, the reference model retrained here
    or prefetched: None for a retraining, which is its own reference, or with `reference: false`)."""
    with lineage.child("verify") as run_id:
        sets = eval_sets(plan, cfg)
        req = plan.part.request
        rows = [evaluate_row("original", plan.bundle.model, sets, 0.0)]
        retrain_row, reference = None, None
        if method == "retrain":
            retrain_row = evaluate_row("retrain", bundle_after.model, sets, update_s)
            tracking.log_params(run_id, {"reference": "the update"})
        elif cfg.reference:
            reference, source = prefetch.obtain(reference_job(plan),
                                                "  verify: retraining a reference CNN on the corrected data ...")
            retrain_row = evaluate_row("retrain", reference.model, sets, reference.stats["seconds"])
            tracking.log_params(run_id, {"reference": source})
        if retrain_row is not None:
            rows.append(retrain_row)
        if method != "retrain":
            rows.append(evaluate_row(method, bundle_after.model, sets, update_s))
        rows += baseline_rows(plan, method, sets, compare)
        by_name = {r["method"]: r for r in rows}
        checks = image_checks(by_name[method], by_name["original"], retrain_row, req.kind, cfg,
                              n_forget=len(sets[0][1]))  # the UA bound widens for a handful of images
        if retrain_row is not None:
            rows = compare_to_retrain(rows)
            for row in rows:
                row["speedup"] = retrain_row["rte_s"] / row["rte_s"] if row["rte_s"] > 0 else None
        retrain_s = retrain_row["rte_s"] if retrain_row is not None else None
        for row in rows:
            with lineage.child(f"metrics {row['method']}", method=row["method"]) as child:
                tracking.log_metrics(child, {k: v for k, v in row.items() if k != "method" and v is not None})
        tracking.log_metrics(run_id, {**{f"{k}_{r}": by_name[r][k] for r in by_name if r in ("original", method, "retrain")
                                         for k in ("ua", "ra", "ta", "da")},
                                      "retrain_seconds": retrain_s, "passed": float(all(c["passed"] for c in checks))})
        table = markdown_table(rows)
        tracking.log_text(run_id, table, "results.md")
        tracking.log_text(lineage.parent_run, table, "results.md")
        tracking.log_json(run_id, {"rows": rows, "checks": checks, "config": cfg.model_dump()}, "results.json")
        log_plot(run_id, rows)
    return rows, checks, retrain_s, None if reference is None else reference.model


def baseline_rows(plan: Plan, method: str, sets, compare: dict[str, dict] | None) -> list[dict]:
    """Each baseline of `compare` (method → options) run on the model's training set and evaluated
    on `sets` (never registered); the update's own method and retrain are rows already."""
    data, rows = training_data(plan.dataset, plan.bundle), []
    for name, options in (compare or {}).items():
        if name in (method, "retrain"):
            continue
        progress(f"  compare: {name} ...")
        result = run_method(name, plan.bundle.model, data, plan.part.request, options)
        rows.append(evaluate_row(name, result.model, sets, result.stats["seconds"]))
    return rows


def log_plot(run_id: str, rows: list[dict]) -> None:
    """Output metrics (percent) and DA per model, the retrained reference in grey."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1]})
    keys = ("ua", "ra", "ta", "mia_efficacy")
    x = np.arange(len(rows))
    for j, key in enumerate(keys):
        ax1.bar(x + (j - 1.5) * 0.2, [r[key] for r in rows], width=0.2, label=key.upper().replace("_", "-"))
    ax1.set_xticks(x, [r["method"] for r in rows], rotation=30, fontsize=8)
    ax1.set_ylabel("%")
    ax1.legend(fontsize=8, ncol=4)
    ax2.bar(x, [r["da"] for r in rows], color=["tab:gray" if r["method"] == "retrain" else "tab:blue" for r in rows])
    ax2.set_xticks(x, [r["method"] for r in rows], rotation=60, fontsize=7)
    ax2.set_ylabel("DA (forget features in the retain subspace)")
    ax2.set_ylim(min(r["da"] for r in rows) * 0.95, 1.0)
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "results.png")
    plt.close(fig)


def headline_metrics(rows: list[dict], method: str) -> dict:
    """Every metric of the update (no suffix), of the original (`_before`) and of the retrained
    reference (`_retrain`): what MLflow, the certificate and the summary report."""
    by_name = {r["method"]: r for r in rows}
    return {f"{k}{suffix}": by_name[name][k] for name, suffix in ((method, ""), ("original", "_before"),
                                                                ("retrain", "_retrain")) if name in by_name
            for k in ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi", "f1")}


def request_images(plan: Plan, cfg: ImageVerifyConfig) -> RequestImages:
    """What the evidence evaluates, with record ids: Z (recorded labels), D \\ Z and the test
    images (eval_sets), the held-out images of Z's classes (the test split, seeded subsample) and
    the classes D' still holds."""
    data, req, ids, records = training_data(plan.dataset, plan.bundle), plan.part.request, plan.bundle.train_ids, \
        plan.dataset.record_ids
    test = test_positions(plan.dataset, req.forget_class, cfg.max_test)
    controls = control_positions(plan.dataset.train, plan.dataset.labels, set(data.y[req.forget].tolist()),
                                 cfg.evidence.max_controls)
    return RequestImages(
        (data.X[req.forget], data.y[req.forget], [ids[i] for i in req.forget.tolist()]),
        (data.X[req.retain], data.y[req.retain], [ids[i] for i in req.retain.tolist()]),
        (*tensors(plan.dataset, test), [records[p] for p in test]),
        (*tensors(plan.dataset, controls), [records[p] for p in controls]),
        frozenset(torch.unique(req.d_prime(data)[1]).tolist()), req.corrected is not None)


def known_outputs(dataset: ImageDataset, bundle: ImageBundle) -> dict:
    """A freshly trained version's outputs on its training images and the test split (the private
    state `outputs/`): the model before of its first request, evaluated once."""
    data, test = training_data(dataset, bundle), test_positions(dataset)
    with single_threaded():
        known = KnownOutputs.of(bundle.train_ids, model_outputs(bundle.model, data.X, data.y)).merged(
            KnownOutputs.of([dataset.record_ids[p] for p in test], model_outputs(bundle.model, *tensors(dataset, test))))
    return {"outputs": known.as_state()}


def outputs_on_samples(plan: Plan, models: list[torch.nn.Module], cfg: ImageVerifyConfig) -> list[KnownOutputs]:
    """Each model's outputs on the request's fixed samples of D' and of the test images (what the
    evidence keeps with a version): for a version verified by reference, which ran no evidence."""
    sampled = request_sample(request_images(plan, cfg), cfg.evidence)
    with single_threaded():
        return [known_of([(ids, model_outputs(model, x, y)) for x, y, ids in (sampled.retain, sampled.test)])
                for model in models]


def evidence_metrics(evidence: dict, suffix: str = "") -> dict:
    """The evidence statistics as flat MLflow metrics (counts and rates only, no record)."""
    acc, absent, mia = evidence["accuracy"], evidence["absent"], evidence["membership"]
    out = {"evidence_forget_images": evidence["n_forget"], "evidence_controls": evidence["n_controls"],
           "evidence_uncontrolled": evidence["uncontrolled"]}
    if acc is not None:
        out |= {"forget_accuracy": acc["forget"], "heldout_accuracy": acc["heldout"], "forget_accuracy_gap": acc["gap"]}
    if absent is not None:
        out |= {"forgotten_class_accuracy": absent["forget"], "forgotten_class_heldout_accuracy": absent["heldout"]}
    if mia is not None:
        out["membership_auc"] = mia["auc"]
    return {f"{k}{suffix}": v for k, v in out.items() if v is not None}


@step("verify")
def evidence_images(lineage: Lineage, plan: Plan, method: str, bundle_after: ImageBundle, update_s: float,
                    compare: dict[str, dict] | None = None, cfg: ImageVerifyConfig = ImageVerifyConfig()):
    """The evidence checks (unlearning.images.evidence; no model trained): Z against held-out images
    of its classes in the updated model, utility against the original. Rows for the original, the
    update and each baseline of `compare`, without a retrain row or gaps to it; logged as
    verify_images logs them. Returns (rows, checks, metrics)."""
    with lineage.child("verify") as run_id:
        images = request_images(plan, cfg)
        progress(f"  verify: evidence (no retraining): {len(images.forget[1])} forget images against "
                 f"{len(images.controls[1])} held-out images of their classes ...")
        content = state.load_outputs(lineage.root, plan.parent_run) or {}
        # a version made by a fast update keeps the outputs of the exact model its chain started
        # from (`anchor`); a trained or retrained one has none: it is the anchor
        known, anchor = KnownOutputs.from_state(content), KnownOutputs.from_state(content.get("anchor"))
        if method == "retrain":  # exact itself: held to no earlier exact model (its data changed since)
            anchor = None
        with single_threaded():
            judged = judge_request(plan.bundle.model, bundle_after.model, images, cfg.evidence, known, anchor)
        if judged.known_before is not None:  # a version kept from before the outputs were: once
            state.save_outputs(lineage.root, plan.parent_run, {**judged.known_before.as_state(),
                                                               "anchor": content.get("anchor")})
        rows = [{"method": "original", **judged.before, "rte_s": 0.0},
                {"method": method, **judged.after, "rte_s": update_s}]
        if compare:
            rows += baseline_rows(plan, method, eval_sets(plan, cfg), compare)
        checks, before, after = judged.checks, judged.evidence_before, judged.evidence_after
        metrics = {**headline_metrics(rows, method), **evidence_metrics(after), **evidence_metrics(before, "_before")}
        tracking.log_params(run_id, {"verification_mode": "evidence", "retrains": 0})
        metrics["evidence_images_evaluated_before"] = judged.evaluated_before  # 0: all known to the version
        metrics |= {f"evidence_{name}_images": judged.judged_images[name] for name in ("retain", "test")}  # the samples
        for row in rows:
            with lineage.child(f"metrics {row['method']}", method=row["method"]) as child:
                tracking.log_metrics(child, {k: v for k, v in row.items() if k != "method" and v is not None})
        tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
        table = markdown_table(rows)
        tracking.log_text(run_id, table, "results.md")
        tracking.log_text(lineage.parent_run, table, "results.md")
        tracking.log_json(run_id, {"rows": rows, "checks": checks, "evidence": {"after": after, "before": before},
                                   "config": cfg.model_dump()}, "results.json")
        log_plot(run_id, rows)
    return rows, checks, metrics, judged.known_after, judged.anchor_after


@step("fall back to retraining")
def retrain_after_failed_checks(lineage: Lineage, plan: Plan, update: Update, checks: list[dict],
                                reference: tuple | None):
    """`auto`, and the fast update failed its checks: the CNN retrained on D' replaces it — the
    reference the verification retrained (`reference`: (model, seconds)), else one retrained now
    (evidence mode trains none; a prefetched one is taken). Returns (the retrained model, its
    training seconds, the failed attempt)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = fallback_record(update.method, update.seconds, checks)
        if reference is None:
            result, source = prefetch.obtain(reference_job(plan), "  auto: the update failed its checks; retraining "
                                                                   "the CNN on the corrected data ...")
            model, seconds = result.model, result.stats["seconds"]
        else:
            (model, seconds), source = reference, "the verification's reference"
        attempt["reference"] = source
        tracking.log_params(run_id, {"failed_method": update.method, "reference": source,
                                     "failed_checks": ",".join(attempt["failed_checks"])})
        tracking.log_metrics(run_id, {"retrain_seconds": seconds})
        tracking.log_json(run_id, {"attempt": attempt}, "fallback.json")
    return model, seconds, attempt


@step("repair the update")
def repair_after_failed_checks(lineage: Lineage, plan: Plan, update: Update, checks: list[dict], teacher):
    """`auto`, and the fast update failed its evidence by too much change only (unlearning.images.repair.
    repairable): a few steps on D' from it, distilled from `teacher` (the chain's first model, or the
    model before). Returns (the repaired model, its seconds, the failed attempt with its `repair`
    block: seconds and steps)."""
    with lineage.child("repair the update") as run_id:
        attempt = fallback_record(update.method, update.seconds, checks)
        progress(f"  auto: the update failed {', '.join(attempt['failed_checks'])} by too much change; repairing "
                 "it on the corrected data before any retraining ...")
        data, cfg = training_data(plan.dataset, plan.bundle), RepairConfig()
        started = time.perf_counter()
        with single_threaded():
            result = repair(update.bundle.model, data, plan.part.request.retain, teacher, cfg)
        seconds = time.perf_counter() - started
        tracking.log_params(run_id, {"failed_method": update.method, "failed_checks": ",".join(attempt["failed_checks"]),
                                     **cfg.model_dump()})
        tracking.log_metrics(run_id, {"repair_seconds": seconds, "image_passes": result.stats["image_passes"]})
    attempt["repair"] = {"seconds": seconds, "steps": result.stats["repair_steps"]}
    return result.model, seconds, attempt


def reference_verdict(plan: Plan, rows: list[dict], cfg: ImageVerifyConfig) -> tuple[dict, list[dict]]:
    """The retrained reference judged by the reference checks, from the rows the verification
    measured (it is its own reference: no gap; its drops are zero by construction, its UA is the
    one every update is held to). Returns (metrics, checks)."""
    by_name = {r["method"]: r for r in rows}
    checks = image_checks(by_name["retrain"], by_name["original"], by_name["retrain"], plan.part.request.kind, cfg,
                          n_forget=len(plan.part.request.forget))
    return headline_metrics(rows, "retrain"), checks


def rows_table(rows: list[dict]) -> list[str]:
    """The comparison table of a forget's `results` as console lines."""
    header = ("model", "UA %", "RA %", "TA %", "MIA-eff %", "MIA-AUC", "DA", "LP %", "NMI", "F1", "RTE s", "avg gap")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    return console_table(header, [
        (r["method"], fmt(r["ua"], ".1f"), fmt(r["ra"], ".1f"), fmt(r["ta"], ".1f"), fmt(r["mia_efficacy"], ".1f"),
         fmt(r["mia_auc"], ".3f"), fmt(r["da"], ".3f"), fmt(r["lp"], ".1f"), fmt(r["nmi"], ".3f"),
         fmt(r["f1"], ".3f"), fmt(r["rte_s"], ".1f"), fmt(r.get("avg_gap"), ".2f")) for r in rows])


def judged(verification: Verification) -> Verification:
    """`verification` saying whether a check with power judged the removal (REMOVAL_CHECKS)."""
    verification.undecided = undecided_removal(verification.checks, REMOVAL_CHECKS)
    return verification


def checks_table(checks: list[dict]) -> list[str]:
    """One row per check; an undecided one says so where the others say yes or NO."""
    return console_table(("check", "value", "needs", "passed"), [
        (c["name"], f"{c['value']:.4g}", c["threshold"], verdict_cell(c)) for c in checks])


def verdict_cell(c: dict) -> str:
    return {"ok": "yes", "FAILED": "NO"}.get(outcome(c), f"undecided ({c.get('reason')})")
