"""Text: a language model over a corpus, corrected by redacting findings (secrets the detectors
found); updated by the methods of unlearning.text.lm; verified by default with reference-free
evidence (`verify_evidence`: exposure against controls in the same model, regeneration, held-out
perplexity, relearning; unlearning.text.evidence), or by exposure, perplexity and regeneration against
a retrained reference (`verify_lm`, `--verify reference`): both in tasks.kinds.text_verify. A fast
update on a fast-updated model also takes the earlier secrets of its chain (tasks.kinds.text_chain).
Raw secret values live only in memory inside the verification steps (read from the superseded corpus
before it is purged) and are never logged."""

from __future__ import annotations

import time
from pathlib import Path


from tasks import dvc, formats, scan, tracking
from tasks.common import step, Lineage, Plan, Trained, Update, Verification, progress
from tasks.data import load_dataset, save_dataset
from tasks.kinds.base import Kind, replaced_by
from tasks.kinds.text_chain import (chain_after, chain_secrets, earlier_line, evidence_state, reference_state,
                                    window_request)
from tasks.kinds.text_repair import repair_after_failed_checks
from tasks.kinds.text_teacher import chain_teacher, hand_over_teacher, keep_teacher, parent_teacher_run
from tasks.kinds.text_verify import (config_as, exposures_of, fall_back_evidence, fall_back_to_retrained,
                                     reference_job, retrained, verify_evidence, verify_lm)
from tasks.kinds.hf import (check_pretrained, fine_tune_pretrained, import_lm, lineage_params, load_base,
                             pretrained_tags, require_retrainable, retrainable, warn_secret_tokens)
from unlearning import references, registry
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError
from unlearning.text import evidence, lm
from unlearning.text.chain import takes_the_chain, trained_exactly
from unlearning.text.data import TextCorpus, check_trainable_corpus, redact
from unlearning.text.repair import repairable


# --- methods: the one place this kind looks them up -----------------------------------------------

def check_method_name(method: str) -> None:
    if method != "auto":
        registry.get("text", method)  # one line listing the text methods, e.g. for `certified`


def resolve_method(requested: str, corpus: TextCorpus, findings: list[dict], bundle: lm.LMBundle) -> str:
    """The text method to run (`auto`: registry.choose, on the number of affected windows)."""
    return registry.choose("text", requested, hf=lm.is_hf(bundle),
                           windows=lambda: lm.affected_window_count(corpus, findings, bundle.seq_len, bundle.vocab))


def run_method(method: str, bundle: lm.LMBundle, request, train_windows, options: dict | None,
               teacher: lm.LMBundle | None = None):
    result = registry.run("text", method, lm.TextContext(bundle, request, train_windows, teacher), options)
    return result.bundle, result.guarantee, result.stats


# --- train --------------------------------------------------------------------------------------

def fit_progress(s) -> None:
    progress(f"  fit: epoch {s.epochs:.1f}, step {s.steps}, {s.seconds:.0f} s, loss {s.loss:.3f}")


@step("fit language model")
def fit_lm(lineage: Lineage, corpus, cfg, base=None):
    """`base`: the checkpoint `--from-pretrained` names, loaded (Text.prepare)."""
    with lineage.child("fit") as run_id:
        tracking.log_params(run_id, cfg.model_dump())
        if cfg.from_pretrained:
            bundle, stats = fine_tune_pretrained(corpus, cfg, fit_progress, base)
            tracking.log_params(run_id, lineage_params(bundle))
        else:
            bundle, stats = lm.train_text_model(corpus, cfg.preset, cfg.seconds, cfg.steps, cfg.seed,
                                                device=cfg.device, precision=cfg.precision, progress=fit_progress)
        tracking.log_metrics(run_id, {"steps": stats.steps, "epochs": stats.epochs, "fit_seconds": stats.seconds,
                                      "train_loss": stats.loss})
    return bundle, stats.seconds


@step("evaluate language model")
def evaluate_lm(lineage: Lineage, corpus, bundle) -> dict:
    with lineage.child("evaluate") as run_id:
        metrics = {"held_out_perplexity": lm.held_out_perplexity(bundle, corpus)}
        tracking.log_metrics(run_id, metrics)
    return metrics


def import_pretrained(lineage: Lineage, corpus: TextCorpus, loaded: tuple) -> Trained:
    """A Hugging Face model fine-tuned elsewhere, as is (`loaded`: tasks.kinds.hf.load_import's),
    evaluated on the corpus's held-out records."""
    bundle, seconds = import_lm(lineage, loaded)
    return trained_lm(lineage, corpus, bundle, seconds)


def trained_lm(lineage: Lineage, corpus: TextCorpus, bundle, seconds: float) -> Trained:
    """A trained or imported model with its held-out metrics and version tags."""
    return Trained(bundle, seconds, evaluate_lm(lineage, corpus, bundle),
                   {"certified": "false", **pretrained_tags(bundle),
                    **warn_secret_tokens(lineage.root, lineage.tags["model"], corpus, bundle)})


# --- forget -------------------------------------------------------------------------------------

def plan_findings(root, request: UnlearningRequest, corpus: TextCorpus, method: str) -> list[dict]:
    """Validate a text request and return the findings it removes (masked, fingerprinted)."""
    if request.redact is None or request.kinds() != ["redact"]:
        raise UnlearnError(f"dataset '{corpus.name}' is a text corpus: a request on it takes 'redact' "
                           f"only (delete_records, revoke_features and fix_labels apply to tables)")
    check_method_name(method)
    if request.redact.detectors:  # a mistyped detector selected nothing: "selects no finding" hid why
        from unlearning.detect.scan import selected_detectors

        selected_detectors(request.redact.detectors)
    findings = scan.scan_corpus(corpus, scan.project_salt(root))
    chosen = lm.select_findings(findings, request.redact.findings, request.redact.detectors)
    if not chosen:
        raise UnlearnError(f"the request selects no finding in dataset '{corpus.name}' "
                           f"(run `unlearn scan {corpus.name}` to list fingerprints and detectors)")
    return chosen


@step("redact data")
def redact_data(lineage: Lineage, plan: Plan) -> tuple[TextCorpus, str]:
    """D': every selected occurrence overwritten (same length), saved and versioned with DVC."""
    with lineage.child("correct data") as run_id:
        spec = plan.request.redact
        after = redacted_corpus(plan)
        save_dataset(after, lineage.root / "data" / after.name)
        version = dvc.add_data(lineage.root)
        tracking.log_params(run_id, {"data_before": plan.data_version, "data_after": version,
                                     "policy": spec.policy})
        tracking.log_metrics(run_id, {"occurrences_redacted": len(plan.part),
                                      "secrets_redacted": len({f["fingerprint"] for f in plan.part})})
    return after, version


def redacted_corpus(plan: Plan) -> TextCorpus:
    """D' of a redaction, in memory: every selected occurrence overwritten (same length)."""
    return redact(plan.dataset, lm.occurrences_of(plan.part), policy=plan.request.redact.policy)


def counts(findings: list[dict]) -> dict[str, int]:
    return scan.counts_by_detector(findings)


def redacted_findings(findings: list[dict]) -> list[dict]:
    """The distinct secrets a redaction removed, by salted fingerprint and detector (no value, no
    place): what each request of the batch records in the ledger as removed (tasks.outcomes)."""
    distinct = {(f["fingerprint"], f["detector"]) for f in findings}
    return [{"fingerprint": fp, "detector": detector} for fp, detector in sorted(distinct)]


@step("update language model")
def update_lm(lineage: Lineage, plan: Plan, after: TextCorpus, method: str, options: dict | None = None,
              anchor: str | None = None):
    """Returns (new bundle, guarantee, stats, seconds). `anchor`: the run id of the chain's teacher
    (text_teacher.parent_teacher_run), which a method that takes the chain is anchored to."""
    with lineage.child(f"update model ({method})", method=method) as run_id:
        chain = chain_secrets(lineage.root, plan) if takes_the_chain(method) else None
        teacher, taught_by = chain_teacher(lineage.root, plan, anchor) if takes_the_chain(method) else (None, None)
        earlier = len(chain.secrets) if chain else 0
        if earlier:
            progress(f"  update: {earlier} earlier secret(s) of the chain since the last exact model kept down too")
        if teacher is not None:
            progress("  update: anchored to the chain's sealed teacher (its exact or last audited model), "
                     "not to the model before it")
        request, train_windows = window_request(plan, after, chain)
        del chain
        if method == "retrain" and not options:  # the same job as verification's reference
            bundle, stats, source = retrained(plan, after, "  retraining the language model on the redacted corpus ...",
                                              (request, train_windows))
            guarantee, seconds = "exact", stats["seconds"]
            tracking.log_params(run_id, {"reference": source})
        else:
            started = time.perf_counter()
            bundle, guarantee, stats = run_method(method, plan.bundle, request, train_windows, options, teacher)
            seconds = time.perf_counter() - started
        del teacher
        stats = {**stats, "affected_windows": len(request), "earlier_secrets": earlier}
        tracking.log_params(run_id, {"method": method, **(options or {}), "affected_windows": len(request),
                                     "earlier_secrets": earlier, **teacher_param(stats, taught_by)})
        tracking.log_metrics(run_id, {"update_seconds": seconds,
                                      **{k: v for k, v in stats.items() if isinstance(v, (int, float))}})
    return bundle, guarantee, stats, seconds


def teacher_param(stats: dict, taught_by: str | None) -> dict:
    """What `suppress` anchored the update to, as an MLflow param: the run id of the chain's sealed
    teacher, or "the model before" (none for a method without a teacher)."""
    if "teacher" not in stats:
        return {}
    return {"teacher": taught_by if stats["teacher"] == "given" and taught_by else stats["teacher"]}


@step("scan")
def scan_dataset(lineage: Lineage, dataset: str):
    """Findings of the detectors in a text corpus (masked, fingerprinted) as a child run."""
    with lineage.child("scan") as run_id:
        corpus = load_dataset(lineage.root, dataset)
        if not isinstance(corpus, TextCorpus):
            raise UnlearnError(f"dataset '{dataset}' is a table: the detect flow scans text corpora "
                               f"(use `unlearn scan {dataset}` for a table)")
        findings = scan.scan_corpus(corpus, scan.project_salt(lineage.root))
        tracking.log_metrics(run_id, {"findings": len(findings), **{f"findings_{k}": v for k, v in counts(findings).items()}})
        tracking.log_json(run_id, {"findings": findings}, "findings.json")
    return corpus, findings


@step("measure exposure")
def measure_exposure(lineage: Lineage, model: str, corpus: TextCorpus, findings: list[dict],
                     n_candidates: int = lm.TextVerifyConfig.n_candidates) -> list[dict]:
    """Exposure of every distinct finding in the production model (the model-level leak report)."""
    with lineage.child("exposure") as run_id:
        tracking.connect(lineage.root)
        production = tracking.require_production(model, lineage.root)
        bundle = tracking.load_version_bundle(model, production.version)
        secrets = lm.secrets_of(corpus, findings)
        measured = exposures_of(lineage.root, production.run_id, bundle, secrets, n_candidates)
        rows = [{"detector": s.detector, "masked": s.masked, "fingerprint": s.fingerprint,
                 "occurrences": len(s.occurrences), "exposure": measured[s.fingerprint]} for s in secrets]
        rows.sort(key=lambda r: -r["exposure"])
        tracking.log_metrics(run_id, {"exposure_max": rows[0]["exposure"] if rows else 0.0,
                                      "model_version": float(production.version)})
        tracking.log_json(run_id, {"model_version": production.version, "secrets": rows}, "exposure.json")
    return rows


class Text(Kind):
    format = formats.TEXT
    verify_modes = ("evidence", "reference")  # evidence: the default, no model trained per request

    def check_trainable(self, dataset, config) -> None:
        check_trainable_corpus(dataset)  # a corpus with no training or held-out window: one line, nothing recorded
        if getattr(config, "from_pretrained", None):
            check_pretrained(config.from_pretrained, config.lora, dataset)

    def train_params(self, dataset: str, config) -> dict:
        return {"dataset": dataset, "kind": "text", **config.model_dump()}

    def prepare(self, dataset, config):
        """A Hugging Face checkpoint, loaded: one that passes check_pretrained's look at its files
        may still not load (weights its config declares missing, a quantization package absent)."""
        return load_base(config) if config.from_pretrained else None

    def train(self, lineage: Lineage, dataset, config, data_version: str, prepared=None) -> Trained:
        bundle, seconds = fit_lm(lineage, dataset, config, prepared)
        return trained_lm(lineage, dataset, bundle, seconds)

    def train_quality(self, summary: dict) -> str:
        return f"held-out perplexity {summary['metrics']['held_out_perplexity']:.2f}"

    def check_request(self, root: Path, request, dataset, method: str):
        return plan_findings(root, request, dataset, method)

    def plan(self, root: Path, request, dataset, bundle, production, method: str, checked):
        resolved = resolve_method(method, dataset, checked, bundle)
        if resolved == "retrain":
            require_retrainable(bundle, request.model, "the retrain method")
        return resolved, checked  # the findings the request removes

    def check_verify_mode(self, plan: Plan, mode: str) -> None:
        super().check_verify_mode(plan, mode)
        if mode == "reference":
            require_retrainable(plan.bundle, plan.model_name, "--verify reference")

    def correct_data(self, lineage: Lineage, plan: Plan):
        return redact_data(lineage, plan)

    def update(self, lineage: Lineage, plan: Plan, after, method: str, options: dict | None) -> Update:
        # the chain's teacher, read once for the request: the update is anchored to it, the new
        # version's evidence state names it, keep_for_next_update seals production if it is its own
        anchor = parent_teacher_run(lineage.root, plan)
        bundle, guarantee, stats, seconds = update_lm(lineage, plan, after, method, options, anchor)
        return Update(bundle, method, guarantee, seconds, stats, carry=anchor)

    def verify(self, lineage: Lineage, plan: Plan, after, update: Update, config) -> Verification:
        metrics, checks, retrain_s, secrets, reference = verify_lm(lineage, plan, after, update.bundle, update.seconds,
                                                                   config_as(config, lm.TextVerifyConfig))
        if not trained_exactly(update.guarantee):  # the chain goes on: the next fast update keeps its secrets down too
            update.detail = reference_state(metrics, chain_after(lineage.root, plan, lineage.parent_run),
                                            update.carry)
        return Verification(metrics, checks, retrain_s, detail=(secrets, reference))

    # --- evidence ---
    def evidence(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        if mode != "evidence":  # planning refuses it first (Kind.check_verify_mode); never judge by nothing
            raise UnlearnError(f"--verify {mode} is not available for text models: use --verify evidence or reference")
        cfg = config_as(config, evidence.EvidenceConfig)
        metrics, checks, rows = verify_evidence(lineage, plan, after, update.bundle, cfg,
                                               trained_exactly(update.guarantee))
        update.detail = evidence_state(update, metrics, chain_after(lineage.root, plan, lineage.parent_run),
                                       update.carry)
        return Verification(metrics, checks, None, detail=(rows, None), mode="evidence", retrains=0)

    def fall_back(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification, config):
        """What replaces the failed update: in evidence mode, a failed `suppress` repaired (suppress steps
        that guard against relearning, unlearning.text.repair) if that passes the same evidence, else the
        model retrained on D' — the verification's reference in `reference` mode, else retrained now and
        judged by the same checks. A repaired version continues the update's chain; a retrained one is
        exact and starts a new one."""
        secrets, reference = verification.detail
        tried = None
        if reference is None and repairable(update.method):
            repaired, checked, tried = self.repaired(lineage, plan, after, update, verification,
                                                     config_as(config, evidence.EvidenceConfig))
            if checked.passed:
                return repaired, checked, tried
        if not retrainable(plan.bundle):  # an import without its base: the failed update is refused, not replaced
            return None
        stats = {"fallback_from": update.method, "affected_windows": update.stats["affected_windows"]}
        if reference is None:  # evidence mode trained no reference: train it now
            reference, trained, metrics, checks, secrets, attempt = fall_back_evidence(
                lineage, plan, after, update, verification.metrics, verification.checks,
                config_as(config, evidence.EvidenceConfig))
            repair_s = tried["repair"]["seconds"] if tried else 0.0
            attempt |= {"outcome": "retrained", **({"repair": tried["repair"]} if tried else {})}
            # the request cost the failed update, the failed repair if one was tried, and the retraining
            retrained_update = Update(reference, "retrain", "exact", update.seconds + repair_s,
                                      {**stats, "seconds": trained["seconds"]})
            retrained_update.detail = evidence_state(retrained_update, metrics)
            return (retrained_update,
                    Verification(metrics, checks, trained["seconds"], detail=(secrets, reference), mode="evidence",
                                 retrains=1), attempt)
        # The fast update missed a threshold: promote the reference verification already retrained.
        metrics, checks, secrets, attempt = fall_back_to_retrained(
            lineage, update.method, verification.metrics, verification.checks, secrets, update.seconds,
            config_as(config, lm.TextVerifyConfig))
        attempt["reference"] = "trained by the verification"
        return (Update(reference, "retrain", "exact", update.seconds, {**stats, "seconds": verification.retrain_s}),
                Verification(metrics, checks, verification.retrain_s, detail=(secrets, reference)), attempt)

    def repaired(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification,
                 cfg: evidence.EvidenceConfig) -> tuple[Update, Verification, dict]:
        """The failed update repaired (tasks.kinds.text_repair), judged by the same evidence: (the repaired
        update, its verification, the attempt with its `repair` block). It keeps the update's method,
        guarantee, teacher and chain."""
        bundle, repair_s, metrics, checks, rows, attempt = repair_after_failed_checks(
            lineage, plan, after, update, verification.metrics, verification.checks, cfg)
        fixed = Update(bundle, update.method, update.guarantee, update.seconds + repair_s,
                       {**update.stats, "repaired": True}, carry=update.carry)
        fixed.detail = evidence_state(fixed, metrics, chain_after(lineage.root, plan, lineage.parent_run), update.carry)
        attempt["outcome"] = "repaired"
        return fixed, Verification(metrics, checks, None, detail=(rows, None), mode="evidence", retrains=0), attempt

    def version_tags(self, update: Update) -> dict:
        return pretrained_tags(update.bundle)

    def keep_for_next_update(self, root: Path, plan: Plan, update: Update) -> list[dict]:
        return keep_teacher(root, plan, update.guarantee, update.carry)

    def after_audit(self, root: Path, plan, stays: bool) -> dict | None:
        return hand_over_teacher(root, plan, stays)

    def private_state(self, update: Update, after):
        if isinstance(update.detail, dict):  # evidence: its perplexities (evidence_state); both modes: its chain
            return lambda: {"evidence": update.detail}
        return None

    def reference_job(self, plan: Plan) -> references.ReferenceJob:
        require_retrainable(plan.bundle, plan.model_name, "the verification reference")
        return reference_job(plan, redacted_corpus(plan))

    def certificate_metrics(self, verification: Verification) -> dict:
        return {**verification.metrics, "secrets": verification.detail[0]}

    def certificate_config(self, plan: Plan, update: Update, attempt: dict | None, config) -> dict:
        return replaced_by(attempt)

    def summary_fields(self, plan: Plan, update: Update, verification: Verification, attempt: dict | None) -> dict:
        m = verification.metrics  # evidence mode: no retrained model (None), the control band instead
        return {**replaced_by(attempt), "findings": counts(plan.part), "redacted_findings": redacted_findings(plan.part),
                "exposure": {"before": m["exposure_before"], "after": m["exposure_after"],
                             "retrain": m.get("exposure_retrain"), "control_band": m.get("control_band")},
                "perplexity": {"before": m["perplexity_before"], "after": m["perplexity_after"],
                               "retrain": m.get("perplexity_retrain")},
                "affected_windows": update.stats["affected_windows"], "secrets": verification.detail[0]}

    def format_forget(self, s: dict) -> list[str]:
        e, p, m, t = s["exposure"], s["perplexity"], s["metrics"], s["timings"]
        if e["retrain"] is None:  # evidence: judged against controls in the same model
            return [
                f"  findings removed: {s['findings']}",
                f"  exposure (largest over the removed secrets): before {e['before']:.1f} bits, "
                f"after {e['after']:.1f}; control band {e['control_band']:.1f} (likeliest control); worst secret "
                f"{m['excess_bits']:+.1f} bits over its controls, {m['relearned_excess_bits']:+.1f} after relearning",
                f"  held-out perplexity: before {p['before']:.3f}, after {p['after']:.3f}; contexts regenerating a "
                f"secret: {m['regenerated']} of {m['contexts']} (before: {m['regenerated_before']})",
                f"  update {t['update_s']:.3f} s" + (f"; retraining {t['retrain_s']:.2f} s" if t["retrain_s"] else
                                                     "; no model trained to verify it"),
                *earlier_line(m),
                *([repaired_line(s["repaired"])] if s.get("repaired") else []),
                *([tried_line(s["fallback"])] if (s.get("fallback") or {}).get("repair") else []),
            ]
        return [
            f"  findings removed: {s['findings']}",
            f"  exposure (largest over the removed secrets): before {e['before']:.1f} bits, after {e['after']:.1f}, "
            f"retrained {e['retrain']:.1f}",
            f"  held-out perplexity: before {p['before']:.3f}, after {p['after']:.3f}, retrained {p['retrain']:.3f}; "
            f"secrets regenerated: {m['regenerated']} (before: {m['regenerated_before']})",
            f"  update {t['update_s']:.3f} s vs retraining {t['retrain_s']:.2f} s",
        ]


def repaired_line(attempt: dict) -> str:
    """The console's account of a failed update that a repair made pass (Text.repaired)."""
    r = attempt["repair"]
    return (f"  auto: the {attempt['method']} update failed {', '.join(attempt['failed_checks'])}; repaired by "
            f"{r['steps']} steps that guard against relearning ({r['seconds']:.1f} s), it passed the same evidence "
            "(guarantee empirical; no model retrained)")


def tried_line(attempt: dict) -> str:
    """The console's account of a repair that did not pass, before the retraining that replaced it."""
    r = attempt["repair"]
    return (f"  auto: the {attempt['method']} update failed {', '.join(attempt['failed_checks'])}; a repair was tried "
            f"first ({r['steps']} steps, {r['seconds']:.1f} s) and still failed {', '.join(r['failed_checks'])}; the "
            "model retrained on the redacted corpus was promoted (guarantee exact)")


KIND = Text()
