"""Images: a CNN (or the user's own model, built by `--model-factory`) over an image dataset, corrected by deleting or relabelling images (or a whole
class); updated by the image methods of unlearning.images; verified by evidence without retraining
(unlearning.images.evidence, the default) or against a retrained reference, with every metric of
unlearning.metrics (and, on demand, the baselines beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from tasks import dvc, factories, formats, tracking
from tasks import references as prefetch
from tasks.common import step, Lineage, Plan, Trained, Update, Verification, progress
from tasks.data import save_dataset
from tasks.kinds import images_chain
from tasks.kinds.base import Kind, replaced_by
from tasks.kinds.images_verify import (
    checks_table, evidence_images, headline_metrics, judged, known_outputs, outputs_on_samples, reference_job,
    reference_verdict, repair_after_failed_checks, retrain_after_failed_checks, rows_table, run_method, verify_images,
)
from unlearning import references
from unlearning import registry
from unlearning.images import ImageRequest
from unlearning.images.data import ImageDataset, correct_images
from unlearning.images.bundle import (
    ImageBundle, ImageTrainConfig, default_train_config, image_request, tensors, test_positions, train_image_model,
    training_data, unlearned_ids,
)
from unlearning.compliance.requests import UnlearningRequest
from unlearning.images import cnn, factory
from unlearning.images.outputs import KnownOutputs
from unlearning.images.repair import repairable
from unlearning.images import chain as chain_rules
from unlearning.images.verify import ImageVerifyConfig
from unlearning.linalg import single_threaded


# --- methods: the one place this kind looks them up -----------------------------------------------

def resolve_method(requested: str) -> str:
    """The image method to run (`auto`: registry.choose); unknown or convex-only methods: one-line
    UnlearnError."""
    return registry.choose("images", requested)


@dataclass(frozen=True)
class ImagePlan:
    """A validated image request: positions in the model's training set, and the data edit."""

    request: ImageRequest
    delete_ids: list[str]
    fixes: dict[str, str]
    class_name: str | None


def plan_images(request: UnlearningRequest, dataset: ImageDataset, bundle: ImageBundle, method: str) -> ImagePlan:
    """Validate an image request (one-line UnlearnError on any problem) before anything is written."""
    resolve_method(method)  # unknown or convex-only methods: one-line error before the dataset is read
    image_req, delete, fixes = image_request(request, dataset, bundle)
    name = None if image_req.forget_class is None else dataset.classes[image_req.forget_class]
    return ImagePlan(image_req, delete, fixes, name)


# --- train ------------------------------------------------------------------------------------

def factory_tags(bundle: ImageBundle) -> dict:
    """Lineage of a user's model: the factory that builds it and its module's source hash."""
    config = bundle.model.config
    if "factory" not in config:
        return {}
    return {"model_factory": config["factory"], "model_factory_sha256": config.get("factory_sha256") or "none"}


@step("fit CNN")
def fit_cnn(lineage: Lineage, dataset: ImageDataset, cfg: ImageTrainConfig):
    with lineage.child("fit") as run_id:
        bundle, stats = train_image_model(dataset, cfg, progress=lambda s: progress(
            f"  fit: epoch {s.epochs:.1f}, {s.seconds:.0f} s, loss {s.loss:.3f}"))
        tracking.log_params(run_id, {**cfg.model_dump(), "preset": bundle.preset, "n_train": len(bundle.train_ids),
                                     **{f"schedule_{k}": v for k, v in bundle.schedule.to_dict().items()},
                                     **factory_tags(bundle)})
        tracking.log_metrics(run_id, {"fit_seconds": stats.seconds, "steps": stats.steps, "train_loss": stats.loss})
    return bundle, stats.seconds


@step("evaluate CNN")
def evaluate_cnn(lineage: Lineage, dataset: ImageDataset, bundle: ImageBundle) -> dict:
    with lineage.child("evaluate") as run_id, single_threaded():
        data = training_data(dataset, bundle)
        X_test, y_test = tensors(dataset, test_positions(dataset))
        metrics = {"train_accuracy": cnn.accuracy(bundle.model, data.X, data.y),
                   "test_accuracy": cnn.accuracy(bundle.model, X_test, y_test)}
        tracking.log_metrics(run_id, metrics)
    return metrics


# --- forget -----------------------------------------------------------------------------------

@step("correct data")
def correct_data(lineage: Lineage, plan: Plan) -> tuple[ImageDataset, str]:
    """D' of the request saved over data/NAME and versioned with DVC (a new data version)."""
    with lineage.child("correct data") as run_id:
        after = correct_images(plan.dataset, plan.part.delete_ids, plan.part.fixes)
        save_dataset(after, lineage.root / "data" / after.name)
        version = dvc.add_data(lineage.root)
        tracking.log_params(run_id, {"data_before": plan.data_version, "data_after": version,
                                     "forget_class": plan.part.class_name})
        tracking.log_metrics(run_id, {"images_before": len(plan.dataset), "images_after": len(after),
                                      "deleted": len(plan.part.delete_ids), "relabelled": len(plan.part.fixes)})
    return after, version


@step("update model")
def update_cnn(lineage: Lineage, plan: Plan, method: str, options: dict | None = None):
    """Run the image method on the model's training set; returns (new bundle, stats, seconds)."""
    with lineage.child(f"update model ({method})", method=method) as run_id:
        start_run = start_version = None  # the run and version of the chain's first model, where it continues one
        if method == "retrain" and not options:  # the same job as verification's reference
            result, source = prefetch.obtain(reference_job(plan), "  retraining the CNN on the corrected data ...")
            tracking.log_params(run_id, {"reference": source})
        else:
            data = training_data(plan.dataset, plan.bundle)
            # the chain (unlearning.images.chain) is opened only for a deletion that continues it
            taken = (images_chain.chain_of(lineage.root, plan)
                     if chain_rules.takes_the_chain(method, options, data, plan.part.request) else None)
            result = run_method(method, plan.bundle.model, data, plan.part.request, options,
                                None if taken is None else taken[0])
            if taken is not None:  # the first model the new version's chain starts from, if it keeps one
                first = chain_rules.first_model(taken, result.chain, (plan.parent_run, plan.parent_version))
                start_run, start_version = first or (None, None)
            del taken  # the chain's first model and gradient: in memory only, sealed again by keep_for_next_update
        bundle = new_bundle(plan.bundle, result.model, plan.part.request)
        seconds = result.stats["seconds"]
        carry = images_chain.carried(result.chain, start_run, start_version) if start_run else None
        tracking.log_params(run_id, {"method": result.method, **(options or {}),
                                     "forget_images": len(plan.part.request.forget), "kind": plan.part.request.kind,
                                     **unrolled_from(result.stats, carry, plan.parent_run)})
        tracking.log_metrics(run_id, {"update_seconds": seconds,
                                      **{k: v for k, v in result.stats.items() if isinstance(v, (int, float))}})
    return bundle, result.method, result.guarantee, seconds, carry


def unrolled_from(stats: dict, carry, parent_run: str) -> dict:
    """The MLflow param naming where an unrolled deletion was taken from: the run id of its chain's
    first model, or "the model before" (none for another path)."""
    if carry is None or "unrolled_from" not in stats:
        return {}
    return {"unrolled_from": "the model before" if carry.start_run == parent_run else carry.start_run}


def new_bundle(old: ImageBundle, model, request: ImageRequest) -> ImageBundle:
    return ImageBundle(model, old.schedule, old.preset, old.classes, unlearned_ids(old, request))


# --- evidence ---------------------------------------------------------------------------------


# --- auto's fall-back ------------------------------------------------------------------------


class Images(Kind):
    """`config` of the forget steps: {"compare": baselines (method → options), "verify": ImageVerifyConfig}."""

    format = formats.IMAGES
    verify_modes = ("evidence", "reference")  # evidence: the default (no model trained per request)

    def check_trainable(self, dataset, config) -> None:
        default_train_config(dataset, config)  # a too-large --subset: one line, nothing recorded
        if config.factory is not None:  # a factory that does not build a usable model: the same
            factory.build(config.factory, len(dataset.classes), int(dataset.images.shape[1]),
                          tuple(int(s) for s in dataset.images.shape[2:]), seed=config.seed)

    def train_params(self, dataset: str, config) -> dict:
        return {"dataset": dataset, "kind": "images", **config.model_dump()}

    def train(self, lineage: Lineage, dataset, config, data_version: str, prepared=None) -> Trained:
        if config.factory is not None:  # the user passed it: later requests may rebuild the model with it
            factories.remember(lineage.root, config.factory)
        bundle, seconds = fit_cnn(lineage, dataset, config)
        return Trained(bundle, seconds, evaluate_cnn(lineage, dataset, bundle),
                       {"certified": "false", **factory_tags(bundle)}, cache=lambda: known_outputs(dataset, bundle))

    def version_tags(self, update: Update) -> dict:
        return factory_tags(update.bundle)

    def plan(self, root: Path, request, dataset, bundle, production, method: str, checked):
        return resolve_method(method), plan_images(request, dataset, bundle, method)

    def correct_data(self, lineage: Lineage, plan: Plan):
        return correct_data(lineage, plan)

    def update(self, lineage: Lineage, plan: Plan, after, method: str, options: dict | None) -> Update:
        bundle, method, guarantee, seconds, carry = update_cnn(lineage, plan, method, options)
        return Update(bundle, method, guarantee, seconds, {"forget_images": len(plan.part.request.forget)},
                      carry=carry)

    def verify(self, lineage: Lineage, plan: Plan, after, update: Update, config) -> Verification:
        config = config or {}
        cfg = config.get("verify") or ImageVerifyConfig()
        rows, checks, retrain_s, reference = verify_images(lineage, plan, update.method, update.bundle, update.seconds,
                                                           config.get("compare"), cfg)
        if reference is not None and update.method != "retrain":
            # what evidence mode keeps: the version's outputs for the next request's model before and,
            # as the exact model its chain is judged against, the reference (trained on this very data)
            update.detail = tuple(outputs_on_samples(plan, [update.bundle.model, reference], cfg))
        return judged(Verification(headline_metrics(rows, update.method), checks, retrain_s, detail=(rows, reference)))

    def reference_job(self, plan: Plan) -> references.ReferenceJob:
        return reference_job(plan)

    # --- evidence ---
    def evidence(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        config = config or {}
        rows, checks, metrics, known, anchor = evidence_images(lineage, plan, update.method, update.bundle,
                                                               update.seconds, config.get("compare"),
                                                               config.get("verify") or ImageVerifyConfig())
        # the new version's outputs (the model before of the next request) and, for a fast update,
        # the last exact model's on the samples (a retrained version is exact: it is the next anchor)
        update.detail = (known, None if update.method == "retrain" else anchor)
        return judged(Verification(metrics, checks, None, detail=(rows, None), mode="evidence", retrains=0))

    def fall_back(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification, config):
        """What replaces the failed update: where its evidence failed by too much change only
        (unlearning.images.repair), the update repaired on D', if that passes the same evidence;
        else the CNN retrained on D' — the verification's reference in `reference` mode (judged from
        the rows already measured), else retrained now and judged by the same checks. A retrained
        version is exact: the next request's drift checks start from it."""
        rows, reference = verification.detail
        config = config or {}
        cfg = config.get("verify") or ImageVerifyConfig()
        tried = None
        if reference is None and plan.part.request.kind == "delete_records" and repairable(verification.checks):
            repaired, judged_after, tried = self.repaired(lineage, plan, update, verification.checks, rows, cfg)
            if judged_after.passed:
                return repaired, judged_after, tried
        if reference is None and plan.bundle.schedule is None:  # nothing to replay: the failure stands
            return None
        known = None if reference is None else (reference, verification.retrain_s)
        model, retrain_s, attempt = retrain_after_failed_checks(lineage, plan, update, verification.checks, known)
        repair_s = tried["repair"]["seconds"] if tried else 0.0
        attempt |= {"outcome": "retrained", **({"repair": tried["repair"]} if tried else {})}
        # the request cost the failed update, the failed repair if one was tried, and the retraining
        replaced = Update(new_bundle(plan.bundle, model, plan.part.request), "retrain", "exact",
                          update.seconds + repair_s + retrain_s, {**update.stats, "fallback_from": update.method})
        if reference is not None:
            metrics, checks = reference_verdict(plan, rows, cfg)
            replaced.detail = (outputs_on_samples(plan, [reference], cfg)[0], None)  # exact: the next anchor itself
            return replaced, judged(Verification(metrics, checks, retrain_s, detail=(rows, reference))), attempt
        rows_after, checks, metrics, known_after, _ = evidence_images(lineage, plan, "retrain", replaced.bundle,
                                                                      retrain_s, None, cfg)
        replaced.detail = (known_after, None)  # exact: no anchor, it is the next one
        failed_row = [r for r in rows if r["method"] == update.method]  # shown beside, not promoted
        shown = rows_after[:1] + failed_row + rows_after[1:]
        return (replaced, judged(Verification(metrics, checks, retrain_s, detail=(shown, None), mode="evidence",
                                              retrains=1)), attempt)

    def repaired(self, lineage: Lineage, plan: Plan, update: Update, checks: list[dict], rows: list[dict],
                 cfg: ImageVerifyConfig) -> tuple[Update, Verification, dict]:
        """The failed update repaired on D' (unlearning.images.repair), judged by the same evidence:
        (the repaired update, its verification, the attempt with its `repair` block). Its teacher is
        the chain's first model where the update continued one (what its drift is measured from),
        else the model before; the repaired version keeps no chain (its next deletion starts one)."""
        teacher = update.carry.chain.model if isinstance(update.carry, images_chain.Carried) else plan.bundle.model
        model, repair_s, attempt = repair_after_failed_checks(lineage, plan, update, checks, teacher)
        fixed = Update(new_bundle(plan.bundle, model, plan.part.request), update.method, update.guarantee,
                       update.seconds + repair_s, {**update.stats, "repaired": True})
        rows_after, checks_after, metrics, known_after, anchor = evidence_images(
            lineage, plan, update.method, fixed.bundle, fixed.seconds, None, cfg)
        fixed.detail = (known_after, anchor)
        failed_row = [{**r, "method": f"{r['method']} before repair"} for r in rows if r["method"] == update.method]
        shown = rows_after[:1] + failed_row + rows_after[1:]
        verification = judged(Verification(metrics, checks_after, None, detail=(shown, None), mode="evidence", retrains=0))
        still = [c["name"] for c in checks_after if not c["passed"]]
        attempt["outcome"] = "repaired"
        attempt["repair"] |= {"passed": verification.passed, "failed_checks": still}
        return fixed, verification, attempt

    def private_state(self, update: Update, after):
        ids = images_chain.evidence_ids(update)  # the chain the version continues (tasks.kinds.images_chain)
        if isinstance(update.detail, tuple) and isinstance(update.detail[0], KnownOutputs):
            known, anchor = update.detail
            return lambda: {"outputs": {**known.as_state(), "anchor": anchor.as_state() if anchor else None},
                            "evidence": ids}
        return (lambda: {"evidence": ids}) if ids else None

    def keep_for_next_update(self, root: Path, plan: Plan, update: Update) -> list[dict]:
        return images_chain.keep_chain(root, plan, update)

    def after_audit(self, root: Path, plan, stays: bool) -> dict | None:
        return images_chain.hand_over_chain(root, plan, stays)

    def certificate_config(self, plan: Plan, update: Update, attempt: dict | None, config) -> dict:
        config = config or {}
        return {"compare": config.get("compare") or {}, "verify": (config.get("verify") or ImageVerifyConfig()).model_dump(),
                **replaced_by(attempt)}

    def summary_fields(self, plan: Plan, update: Update, verification: Verification, attempt: dict | None) -> dict:
        return {"kind": plan.part.request.kind, "forget_class": plan.part.class_name,
                "forget_images": len(plan.part.request.forget), "results": verification.detail[0],
                **replaced_by(attempt)}

    def forget_headline(self, s: dict) -> str:
        what = (f"class '{s['forget_class']}'" if s.get("forget_class") else f"{s['forget_images']} images") + \
            f" ({s['kind']})"
        if fell_back := s.get("fallback"):
            return f"; forgot {what}; auto fell back to retraining: {fell_back['method']} failed " + \
                ", ".join(fell_back["failed_checks"])
        if repaired := s.get("repaired"):
            return f"; forgot {what}; auto repaired the update: {repaired['method']} failed " + \
                ", ".join(repaired["failed_checks"])
        return f"; forgot {what}"

    def format_forget(self, s: dict) -> list[str]:
        lines = ["  " + line for line in rows_table(s["results"])]
        mode = (s.get("verification") or {}).get("mode")
        if mode == "evidence" or (mode is None and not any(r["method"] == "retrain" for r in s["results"])):
            judged = ("the retrained model" if s.get("fallback") else
                      "the repaired update, no model retrained" if s.get("repaired") else "no model retrained")
            lines += [f"  evidence, {judged} (forget set against held-out images of its classes):",
                      *("    " + line for line in checks_table(s["checks"]))]
        if f := s.get("fallback"):
            tried = (f"; a repair on D' was tried first ({f['repair']['seconds']:.2f} s) and still failed "
                     f"{', '.join(f['repair']['failed_checks'])}") if f.get("repair") else ""
            lines.append(f"  auto: {f['method']} was not promoted ({f['reason']}){tried}; the CNN retrained on the "
                         f"corrected data was (guarantee exact; {f['reference']})")
        if f := s.get("repaired"):
            lines.append(f"  auto: {f['method']} failed by too much change ({f['reason']}); repaired by "
                         f"{f['repair']['steps']} steps on the corrected data ({f['repair']['seconds']:.2f} s), it "
                         "passed the same evidence (guarantee empirical; no model retrained)")
        return lines


KIND = Images()
