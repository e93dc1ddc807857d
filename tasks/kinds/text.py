"""Text: a language model over a corpus, corrected by redacting findings (secrets the detectors
found); updated by the methods of unlearning.text.lm; verified by default with reference-free
evidence (`verify_evidence`: exposure against controls in the same model, regeneration, held-out
perplexity, relearning; unlearning.text.evidence), or by exposure, perplexity and regeneration against
a retrained reference (`verify_lm`, `--verify reference`). Raw secret values live only in memory inside
the verification steps (read from the superseded corpus before it is purged) and are never logged."""

from __future__ import annotations

import math
import time
from pathlib import Path

from prefect import task

from tasks import dvc, formats, scan, state, tracking
from tasks import references as prefetch
from tasks.common import STEP, Lineage, Plan, Trained, Update, Verification, progress, pyplot
from tasks.data import load_dataset, save_dataset
from tasks.kinds.base import Kind
from tasks.kinds.text_chain import Chain, chain_after, chain_secrets
from tasks.kinds.hf import (check_pretrained, fine_tune_pretrained, import_lm, lineage_params, pretrained_tags,
                             require_retrainable, retrainable, warn_secret_tokens)
from unlearning import references, registry
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError
from unlearning.text import evidence, lm
from unlearning.text.chain import drift_anchor, held_to_its_chain, takes_the_chain, trained_exactly
from unlearning.text.data import TextCorpus, check_trainable_corpus, redact


# --- methods: the one place this kind looks them up -----------------------------------------------

def check_method_name(method: str) -> None:
    if method != "auto":
        registry.get("text", method)  # one line listing the text methods, e.g. for `certified`


def resolve_method(requested: str, corpus: TextCorpus, findings: list[dict], bundle: lm.LMBundle) -> str:
    """The text method to run (`auto`: registry.choose, on the number of affected windows)."""
    return registry.choose("text", requested, hf=lm.is_hf(bundle),
                           windows=lambda: lm.affected_window_count(corpus, findings, bundle.seq_len, bundle.vocab))


def run_method(method: str, bundle: lm.LMBundle, request, train_windows, options: dict | None):
    result = registry.run("text", method, lm.TextContext(bundle, request, train_windows), options)
    return result.bundle, result.guarantee, result.stats


# --- train --------------------------------------------------------------------------------------

def fit_progress(s) -> None:
    progress(f"  fit: epoch {s.epochs:.1f}, step {s.steps}, {s.seconds:.0f} s, loss {s.loss:.3f}")


@task(name="fit language model", **STEP)
def fit_lm(lineage: Lineage, corpus, cfg):
    with lineage.child("fit") as run_id:
        tracking.log_params(run_id, cfg.model_dump())
        if cfg.from_pretrained:
            bundle, stats = fine_tune_pretrained(corpus, cfg, fit_progress)
            tracking.log_params(run_id, lineage_params(bundle))
        else:
            bundle, stats = lm.train_text_model(corpus, cfg.preset, cfg.seconds, cfg.steps, cfg.seed,
                                                device=cfg.device, precision=cfg.precision, progress=fit_progress)
        tracking.log_metrics(run_id, {"steps": stats.steps, "epochs": stats.epochs, "fit_seconds": stats.seconds,
                                      "train_loss": stats.loss})
    return bundle, stats.seconds


@task(name="evaluate language model", **STEP)
def evaluate_lm(lineage: Lineage, corpus, bundle) -> dict:
    with lineage.child("evaluate") as run_id:
        metrics = {"held_out_perplexity": lm.held_out_perplexity(bundle, corpus)}
        tracking.log_metrics(run_id, metrics)
    return metrics


def import_pretrained(lineage: Lineage, corpus: TextCorpus, checkpoint: str, base: str | None, schedule: dict,
                      seed: int = 0) -> Trained:
    """A Hugging Face model fine-tuned elsewhere, as is, evaluated on the corpus's held-out records
    (`schedule`: tasks.kinds.hf.declared_schedule)."""
    bundle, seconds = import_lm(lineage, checkpoint, base, schedule, seed)
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
    findings = scan.scan_corpus(corpus, scan.project_salt(root))
    chosen = lm.select_findings(findings, request.redact.findings, request.redact.detectors)
    if not chosen:
        raise UnlearnError(f"the request selects no finding in dataset '{corpus.name}' "
                           f"(run `unlearn scan {corpus.name}` to list fingerprints and detectors)")
    return chosen


@task(name="redact data", **STEP)
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


def reference_job(plan: Plan, after: TextCorpus, windows=None) -> references.ReferenceJob:
    """The language model retrained on D' (its windows only) with the original schedule
    (`windows`: window_request(plan, after) when the caller has it already)."""
    request, train_windows = windows or window_request(plan, after)
    return references.text_job(plan.bundle.model.config, plan.bundle.settings, request.apply(train_windows),
                               plan.device)


def retrained(plan: Plan, after: TextCorpus, announce: str, windows=None) -> tuple[lm.LMBundle, dict, str]:
    """(the reference bundle, its stats, "prefetched" | "trained"): what run_lm_method("retrain")
    returns, from the prefetched pool when a task runner trained it ahead of time."""
    update, source = prefetch.obtain(reference_job(plan, after, windows), announce)
    settings = {**plan.bundle.settings, "steps": update.stats["steps"]}
    return lm.LMBundle(update.model, plan.bundle.vocab, plan.bundle.preset, settings), update.stats, source


def counts(findings: list[dict]) -> dict[str, int]:
    return scan.counts_by_detector(findings)


def window_request(plan: Plan, after: TextCorpus, chain: Chain | None = None):
    """Z, Z̃ of the request and the training windows; with `chain`, Z also holds the windows of the
    earlier secrets of the chain as the model was trained on them (their Z̃: the same windows of D′)."""
    if chain is None:
        return lm.window_request(plan.bundle, plan.dataset, after, plan.part)
    return lm.window_request(plan.bundle, chain.restored, after, [*plan.part, *chain.findings])


@task(name="update language model", **STEP)
def update_lm(lineage: Lineage, plan: Plan, after: TextCorpus, method: str, options: dict | None = None):
    """Returns (new bundle, guarantee, stats, seconds)."""
    with lineage.child(f"update model ({method})", method=method) as run_id:
        chain = chain_secrets(lineage.root, plan) if takes_the_chain(method) else None
        earlier = len(chain.secrets) if chain else 0
        if earlier:
            progress(f"  update: {earlier} earlier secret(s) of the chain since the last exact model kept down too")
        request, train_windows = window_request(plan, after, chain)
        del chain
        if method == "retrain" and not options:  # the same job as verification's reference
            bundle, stats, source = retrained(plan, after, "  retraining the language model on the redacted corpus ...",
                                              (request, train_windows))
            guarantee, seconds = "exact", stats["seconds"]
            tracking.log_params(run_id, {"reference": source})
        else:
            started = time.perf_counter()
            bundle, guarantee, stats = run_method(method, plan.bundle, request, train_windows, options)
            seconds = time.perf_counter() - started
        stats = {**stats, "affected_windows": len(request), "earlier_secrets": earlier}
        tracking.log_params(run_id, {"method": method, **(options or {}), "affected_windows": len(request),
                                     "earlier_secrets": earlier})
        tracking.log_metrics(run_id, {"update_seconds": seconds,
                                      **{k: v for k, v in stats.items() if isinstance(v, (int, float))}})
    return bundle, guarantee, stats, seconds


@task(name="verify", **STEP)
def verify_lm(lineage: Lineage, plan: Plan, after: TextCorpus, bundle_after: lm.LMBundle, update_s: float,
              cfg: lm.TextVerifyConfig = lm.TextVerifyConfig()):
    """Exposure of every removed secret before/after/retrained, held-out perplexity, regeneration.

    Returns (metrics, checks, retrain seconds, per-secret rows with masked values only, the
    retrained reference bundle)."""
    with lineage.child("verify") as run_id:
        secrets = lm.secrets_of(plan.dataset, plan.part)  # raw values: in memory only
        if plan.method == "retrain":  # the update is the reference: the same schedule on D'
            reference, retrain_s, source = bundle_after, update_s, "the update"
        else:
            reference, stats, source = retrained(
                plan, after, "  verify: retraining a reference language model on the redacted corpus ...")
            retrain_s = stats["seconds"]
        tracking.log_params(run_id, {"reference": source})
        progress(f"  verify: exposure of {len(secrets)} removed secret(s) before, after and in the reference ...")
        salt = scan.project_salt(lineage.root)
        rows = []
        same = reference is bundle_after
        before = exposures_of(lineage.root, plan.parent_run, plan.bundle, secrets, cfg.n_candidates)
        for secret in secrets:
            after_exposure = lm.secret_exposure(bundle_after, secret, cfg.n_candidates)
            regenerated = lm.regenerates(bundle_after, secret, salt, cfg.samples)
            rows.append({
                "detector": secret.detector, "masked": secret.masked, "fingerprint": secret.fingerprint,
                "occurrences": len(secret.occurrences),
                "before": before[secret.fingerprint],
                "after": after_exposure,
                "retrain": after_exposure if same else lm.secret_exposure(reference, secret, cfg.n_candidates),
                "regenerated": regenerated,
                "regenerated_before": lm.regenerates(plan.bundle, secret, salt, cfg.samples),
                "regenerated_retrain": regenerated if same else lm.regenerates(reference, secret, salt, cfg.samples),
            })
        top = max(secrets, key=lambda secret: before[secret.fingerprint])
        distributions = {label: lm.candidate_log_perplexities(model, top, cfg.n_candidates) for label, model in
                         (("before", plan.bundle), ("after", bundle_after), ("retrain", reference))}
        del secrets, top
        ppl = {"before": lm.held_out_perplexity(plan.bundle, plan.dataset),
               "after": lm.held_out_perplexity(bundle_after, after)}
        ppl["retrain"] = ppl["after"] if same else lm.held_out_perplexity(reference, after)
        metrics = text_metrics(rows, ppl)
        checks = text_checks(rows, ppl, cfg)
        tracking.log_metrics(run_id, {**metrics, "retrain_seconds": retrain_s,
                                      "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"checks": checks, "metrics": metrics, "secrets": rows}, "verification.json")
        log_plots(run_id, rows, ppl)
        top_row = max(rows, key=lambda r: r["before"])
        log_distribution_plot(run_id, f"{top_row['detector']} {top_row['masked']}", distributions, top_row)
    return metrics, checks, retrain_s, rows, reference


@task(name="fall back to retraining", **STEP)
def fall_back_to_retrained(lineage: Lineage, method: str, metrics: dict, checks: list[dict], rows: list[dict],
                           update_s: float, cfg: lm.TextVerifyConfig = lm.TextVerifyConfig()):
    """`auto` and the fast update failed verification: the retrained reference (already trained on
    the redacted corpus by `verify`) becomes the new model. Its checks are re-derived from the same
    measurements. Returns (metrics, checks, rows, the failed attempt's summary)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = {"method": method, "update_s": update_s, "exposure_after": metrics["exposure_after"],
                   "perplexity_after": metrics["perplexity_after"],
                   "failed_checks": [c["name"] for c in checks if not c["passed"]]}
        rows = [{**r, "after": r["retrain"], "regenerated": r["regenerated_retrain"]} for r in rows]
        ppl = {"before": metrics["perplexity_before"], "after": metrics["perplexity_retrain"],
               "retrain": metrics["perplexity_retrain"]}
        metrics, checks = text_metrics(rows, ppl), text_checks(rows, ppl, cfg)
        tracking.log_params(run_id, {"failed_method": method, "failed_checks": ",".join(attempt["failed_checks"])})
        tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
        tracking.log_json(run_id, {"attempt": attempt, "checks": checks, "metrics": metrics}, "fallback.json")
    return metrics, checks, rows, attempt


def exposures_of(root, run_id: str, bundle: lm.LMBundle, secrets: list[lm.Secret], n_candidates: int) -> dict:
    """fingerprint → exposure in the model version `run_id`, measuring only what no earlier step
    (detect, scan --model) measured on that version with the same number of candidates."""
    known = state.load_exposures(root, run_id)
    out, new = {}, {}
    for secret in secrets:
        key = state.exposure_key(secret.fingerprint, n_candidates)
        if key not in known:
            new[key] = lm.secret_exposure(bundle, secret, n_candidates)
        out[secret.fingerprint] = known.get(key, new.get(key))
    if new:
        state.save_exposures(root, run_id, new)
    return out


def text_metrics(rows: list[dict], ppl: dict) -> dict:
    return {"exposure_before": max(r["before"] for r in rows), "exposure_after": max(r["after"] for r in rows),
            "exposure_retrain": max(r["retrain"] for r in rows), "perplexity_before": ppl["before"],
            "perplexity_after": ppl["after"], "perplexity_retrain": ppl["retrain"],
            "secrets": len(rows), "regenerated": sum(r["regenerated"] for r in rows),
            "regenerated_before": sum(r["regenerated_before"] for r in rows)}


def text_checks(rows: list[dict], ppl: dict, cfg: lm.TextVerifyConfig) -> list[dict]:
    """The pass thresholds of issue 3: per secret exposure after ≤ retrained + margin; held-out
    perplexity increase ≤ 3 %; no secret regenerated."""
    worst_gap = max(r["after"] - r["retrain"] for r in rows)
    increase = ppl["after"] / ppl["before"] - 1
    regenerated = sum(r["regenerated"] for r in rows)
    return [
        {"name": "exposure_vs_retrain_bits", "value": worst_gap, "threshold": f"<= {cfg.exposure_margin_bits}",
         "passed": worst_gap <= cfg.exposure_margin_bits},
        {"name": "perplexity_increase", "value": increase, "threshold": f"<= {cfg.max_perplexity_increase}",
         "passed": increase <= cfg.max_perplexity_increase},
        {"name": "secrets_regenerated", "value": regenerated, "threshold": "== 0", "passed": regenerated == 0},
    ]


def log_plots(run_id: str, rows: list[dict], ppl: dict, third: str = "retrain") -> None:
    """Exposure before/after/retrained (or the control band: `third` = "band") per removed secret
    (masked labels) and perplexity."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [4, 1]})
    x = range(len(rows))
    for offset, key, color in ((-0.27, "before", "tab:red"), (0.0, "after", "tab:blue"), (0.27, third, "tab:gray")):
        ax1.bar([i + offset for i in x], [r[key] for r in rows], width=0.27,
                label="control band" if key == "band" else key, color=color)
    ax1.set_xticks(list(x), [f"{r['detector']} {r['masked']}" for r in rows], rotation=70, fontsize=7)
    ax1.set_ylabel("exposure (bits)")
    ax1.legend()
    ax2.bar(list(ppl), list(ppl.values()), color=["tab:red", "tab:blue", "tab:gray"][:len(ppl)])
    ax2.set_ylim(min(ppl.values()) * 0.95, max(ppl.values()) * 1.02)
    ax2.set_ylabel("held-out perplexity")
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "exposure.png")
    plt.close(fig)


def log_distribution_plot(run_id: str, label: str, distributions: dict[str, tuple[float, list[float]]],
                          exposures: dict[str, float]) -> None:
    """Exposure against the reference distribution, for the secret the original model exposed most:
    per model, the log-perplexities of the same-format candidates and where the secret falls."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(distributions), figsize=(4 * len(distributions), 3.2), sharey=True)
    for ax, (name, (secret_lp, refs)), color in zip(axes, distributions.items(), ("tab:red", "tab:blue", "tab:gray")):
        ax.hist(refs, bins=40, color=color, alpha=0.6, label="same-format candidates")
        ax.axvline(secret_lp, color="black", linestyle="--", label="the secret")
        ax.set_title(f"{name}: exposure {exposures[name]:.1f} bits", fontsize=9)
        ax.set_xlabel("log-perplexity (bits)")
    axes[0].set_ylabel("candidates")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{label}: lower log-perplexity = more likely than random strings of its format", fontsize=9)
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "exposure_distribution.png")
    plt.close(fig)


@task(name="scan", **STEP)
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


@task(name="measure exposure", **STEP)
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


# --- evidence ---------------------------------------------------------------------------------

SHARED_THRESHOLDS = ("max_perplexity_increase", "n_candidates", "samples")


def config_as(config, wanted: type):
    """`config` as a `wanted` (evidence.EvidenceConfig or lm.TextVerifyConfig): itself, the
    thresholds the two configs share carried over from the other, or the defaults."""
    if isinstance(config, wanted):
        return config
    if isinstance(config, (evidence.EvidenceConfig, lm.TextVerifyConfig)):
        return wanted(**{name: getattr(config, name) for name in SHARED_THRESHOLDS})
    return wanted()


def model_perplexity(root, run_id: str, bundle: lm.LMBundle, corpus: TextCorpus) -> float:
    """Held-out perplexity of the model version `run_id`, measured once per version (tasks.state)."""
    known = state.load_evidence(root, run_id).get("held_out_perplexity")
    if known is None:
        known = lm.held_out_perplexity(bundle, corpus)
        state.save_evidence(root, run_id, {"held_out_perplexity": known})
    return known


def judge_evidence(lineage: Lineage, plan: Plan, after: TextCorpus, bundle_after: lm.LMBundle,
                   cfg: evidence.EvidenceConfig, exact: bool = False) -> tuple[dict, list[dict], list[dict]]:
    """(metrics, checks, per-secret rows with masked values only) of the evidence checks on
    `bundle_after`. The secrets, their controls and contexts stay in this frame. `exact`: the model
    was retrained, so it is held to no earlier exact model (whose corpus has changed since) and starts
    a new chain (unlearning.text.chain.held_to_its_chain)."""
    salt = scan.project_salt(lineage.root)
    secrets = lm.secrets_of(plan.dataset, plan.part, cfg.prefix_chars)  # raw values: in memory only
    held = held_to_its_chain(exact)
    chain = chain_secrets(lineage.root, plan) if held else None
    earlier = list(chain.secrets) if chain else []
    items = evidence.prepare(secrets + earlier, chain.restored if chain else plan.dataset, after, cfg)
    progress(f"  verify: {len(secrets)} removed secret(s)" + (f" and {len(earlier)} earlier one(s) of the chain"
                                                              if earlier else "") +
             f" against their controls, regeneration from {sum(len(i.contexts) for i in items)} context(s), "
             f"{cfg.relearn_steps} relearning steps ...")
    before = exposures_of(lineage.root, plan.parent_run, plan.bundle, secrets, cfg.n_candidates)
    rows = evidence.judge(bundle_after, items, cfg, salt, evidence.relearning_windows(bundle_after, after))
    regenerated_before = sum(evidence.regenerated_contexts(plan.bundle.model, plan.bundle.vocab, list(i.contexts),
                                                           i.secret.fingerprint, salt, cfg.samples, cfg.seed)
                             for i in items[:len(secrets)])
    owners = chain.owners if chain else {}
    kept_out = {"audited": chain.audited, "unplaced": chain.unplaced, "moved": chain.moved} if chain else None
    del secrets, earlier, items, chain
    for row in rows:  # an earlier secret: which requests removed it, no "before" (its request measured that)
        row["before"] = before.get(row["fingerprint"])
        if row["fingerprint"] in owners:
            row["earlier_requests"] = owners[row["fingerprint"]]
    ppl = {"before": model_perplexity(lineage.root, plan.parent_run, plan.bundle, plan.dataset),
           "after": lm.held_out_perplexity(bundle_after, after)}
    if held:
        ppl["anchor"] = exact_model_perplexity(lineage.root, plan.parent_run, ppl["before"])
    return evidence_metrics(rows, ppl, regenerated_before, kept_out), chain_checks(rows, ppl, cfg), rows


def exact_model_perplexity(root, run_id: str, own: float) -> float:
    """Held-out perplexity of the last model trained exactly that version `run_id` descends from by
    fast updates (kept with each fast-updated version: `evidence_state`); a version without it is
    such a model itself (trained, retrained, promoted by an audit), so its own perplexity `own`."""
    return drift_anchor(own, state.load_evidence(root, run_id).get("anchor_perplexity"))


def evidence_state(update: Update, metrics: dict, chain: list[str] | None = None) -> dict:
    """What the new version keeps of its evidence (tasks.state, numbers and run ids only): its
    held-out perplexity (the next request's "before", measured now rather than again then) and, for a
    fast update, the anchor it inherits and `chain` (chain_after: the forget runs since the exact
    model); retraining makes a new anchor, itself, and a new, empty chain."""
    kept = {"held_out_perplexity": metrics["perplexity_after"]}
    if not trained_exactly(update.guarantee):
        kept["anchor_perplexity"] = metrics["perplexity_anchor"]
        if chain is not None:
            kept[state.CHAIN_KEY] = chain
    return kept


def reference_state(metrics: dict, chain: list[str] | None) -> dict:
    """What a fast-updated version verified by `--verify reference` keeps (evidence_state's keys): its
    held-out perplexity, its chain and, as its anchor, the reference's perplexity (a model trained
    exactly on this very data), so the next evidence request checks the drift since it."""
    return {"held_out_perplexity": metrics["perplexity_after"], "anchor_perplexity": metrics["perplexity_retrain"],
            **({} if chain is None else {state.CHAIN_KEY: chain})}


def evidence_metrics(rows: list[dict], ppl: dict, regenerated_before: int, kept_out: dict | None = None) -> dict:
    """The evidence's numbers. The headline (exposure, band, excess, relearned) is over the request's
    own secrets only: its certificate must not report another request's secret; the earlier ones of
    its chain (`earlier_requests` in a row) have their own `earlier_*` maxima. `kept_out`: the chain's
    requests an audit judged ("audited"), escrowed secrets sealed without occurrences ("unplaced") and
    those none of whose places fits the data any more ("moved"), measured no more."""
    own = [r for r in rows if "earlier_requests" not in r]
    earlier = [r for r in rows if "earlier_requests" in r]
    kept_out = {"audited": 0, "unplaced": 0, "moved": 0, **(kept_out or {})}
    return {"exposure_before": max(r["before"] for r in own if r["before"] is not None),
            "exposure_after": max(r["after"] for r in own),
            "control_band": max(r["band"] for r in own), "excess_bits": max(r["excess_bits"] for r in own),
            "relearned_excess_bits": max(r["relearned_excess_bits"] for r in own),
            "perplexity_before": ppl["before"], "perplexity_after": ppl["after"],
            "perplexity_anchor": ppl.get("anchor", ppl["before"]), "secrets": len(own),
            "contexts": sum(r["occurrences"] for r in rows), "regenerated": sum(r["regenerated"] for r in rows),
            "regenerated_before": regenerated_before, "earlier_secrets": len(earlier),
            **(earlier_maxima(earlier) if earlier else {}),
            "chain_requests_audited": kept_out["audited"], "earlier_secrets_unplaced": kept_out["unplaced"],
            "earlier_secrets_moved": kept_out["moved"]}


def earlier_maxima(earlier: list[dict]) -> dict:
    return {"earlier_exposure_after": max(r["after"] for r in earlier),
            "earlier_excess_bits": max(r["excess_bits"] for r in earlier),
            "earlier_relearned_excess_bits": max(r["relearned_excess_bits"] for r in earlier)}


def chain_checks(rows: list[dict], ppl: dict, cfg: evidence.EvidenceConfig) -> list[dict]:
    """The evidence checks over every row, the earlier secrets of the chain included (one that came
    back fails the request), each failing per-secret check naming the earlier secrets that failed it
    (masked, with the requests that removed them): the failure may be another request's secret."""
    failing = {"exposure_above_control_band_bits": lambda r: r["excess_bits"] > cfg.margin_bits,
               "relearned_above_control_band_bits": lambda r: r["relearned_excess_bits"] > cfg.margin_bits,
               "contexts_regenerating": lambda r: r["regenerated"] > 0}
    checks = evidence.evidence_checks(rows, ppl, cfg)
    for check in checks:
        if check["passed"] or check["name"] not in failing:
            continue
        earlier = [{"masked": r["masked"], "requests": list(r["earlier_requests"])}
                   for r in rows if "earlier_requests" in r and failing[check["name"]](r)]
        if earlier:
            check["earlier_secrets"] = earlier
    return checks


def log_evidence(run_id: str, metrics: dict, checks: list[dict], rows: list[dict], cfg: evidence.EvidenceConfig,
                 name: str = "verification.json", retrains: int = 0) -> None:
    tracking.log_params(run_id, {"verify_mode": "evidence", **{f"evidence_{k}": v for k, v in vars(cfg).items()}})
    tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
    tracking.log_json(run_id, {"mode": "evidence", "retrains": retrains, "checks": checks, "metrics": metrics,
                               "secrets": rows, "config": vars(cfg)}, name)
    plotted = [{**r, "before": math.nan if r["before"] is None else r["before"]} for r in rows]  # earlier: no bar
    log_plots(run_id, plotted, {"before": metrics["perplexity_before"], "after": metrics["perplexity_after"]}, "band")


@task(name="verify", **STEP)
def verify_evidence(lineage: Lineage, plan: Plan, after: TextCorpus, bundle_after: lm.LMBundle,
                    cfg: evidence.EvidenceConfig = evidence.EvidenceConfig(), exact: bool = False):
    """The evidence checks (unlearning.text.evidence), no model trained. Returns (metrics, checks,
    per-secret rows with masked values only)."""
    with lineage.child("verify") as run_id:
        metrics, checks, rows = judge_evidence(lineage, plan, after, bundle_after, cfg, exact)
        log_evidence(run_id, metrics, checks, rows, cfg)
    return metrics, checks, rows


@task(name="fall back to retraining", **STEP)
def fall_back_evidence(lineage: Lineage, plan: Plan, after: TextCorpus, update: Update, metrics: dict,
                       checks: list[dict], cfg: evidence.EvidenceConfig):
    """`auto` and the fast update failed the evidence checks, which trained no reference: retrain
    now (or take the prefetched one) and judge the retrained model by the same checks. Returns
    (the reference bundle, its stats, metrics, checks, rows, the failed attempt's summary)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = {"method": update.method, "update_s": update.seconds, "exposure_after": metrics["exposure_after"],
                   "perplexity_after": metrics["perplexity_after"],
                   "failed_checks": [c["name"] for c in checks if not c["passed"]]}
        reference, stats, source = retrained(plan, after, "  fall back: retraining the language model on the "
                                                          "redacted corpus (the evidence checks trained none) ...")
        attempt["reference"] = f"{source} by the fall-back (evidence mode trains no reference)"
        metrics, checks, rows = judge_evidence(lineage, plan, after, reference, cfg, exact=True)
        tracking.log_params(run_id, {"failed_method": update.method, "reference": source,
                                     "failed_checks": ",".join(attempt["failed_checks"])})
        log_evidence(run_id, {**metrics, "retrain_seconds": stats["seconds"]}, checks, rows, cfg, "fallback.json", 1)
    return reference, stats, metrics, checks, rows, attempt


class Text(Kind):
    format = formats.TEXT
    verify_modes = ("evidence", "reference")  # evidence: the default, no model trained per request

    def check_trainable(self, dataset, config) -> None:
        check_trainable_corpus(dataset)  # a corpus with no training or held-out window: one line, nothing recorded
        if getattr(config, "from_pretrained", None):
            check_pretrained(config.from_pretrained, config.lora, dataset)

    def train_params(self, dataset: str, config) -> dict:
        return {"dataset": dataset, "kind": "text", **config.model_dump()}

    def train(self, lineage: Lineage, dataset, config, data_version: str) -> Trained:
        bundle, seconds = fit_lm(lineage, dataset, config)
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
        bundle, guarantee, stats, seconds = update_lm(lineage, plan, after, method, options)
        return Update(bundle, method, guarantee, seconds, stats)

    def verify(self, lineage: Lineage, plan: Plan, after, update: Update, config) -> Verification:
        metrics, checks, retrain_s, secrets, reference = verify_lm(lineage, plan, after, update.bundle, update.seconds,
                                                                   config_as(config, lm.TextVerifyConfig))
        if not trained_exactly(update.guarantee):  # the chain goes on: the next fast update keeps its secrets down too
            update.detail = reference_state(metrics, chain_after(lineage.root, plan, lineage.parent_run))
        return Verification(metrics, checks, retrain_s, detail=(secrets, reference))

    # --- evidence ---
    def evidence(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        if mode != "evidence":  # planning refuses it first (Kind.check_verify_mode); never judge by nothing
            raise UnlearnError(f"--verify {mode} is not available for text models: use --verify evidence or reference")
        cfg = config_as(config, evidence.EvidenceConfig)
        metrics, checks, rows = verify_evidence(lineage, plan, after, update.bundle, cfg,
                                               trained_exactly(update.guarantee))
        update.detail = evidence_state(update, metrics, chain_after(lineage.root, plan, lineage.parent_run))
        return Verification(metrics, checks, None, detail=(rows, None), mode="evidence", retrains=0)

    def fall_back(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification, config):
        if not retrainable(plan.bundle):  # an import without its base: the failed update is refused, not replaced
            return None
        secrets, reference = verification.detail
        stats = {"fallback_from": update.method, "affected_windows": update.stats["affected_windows"]}
        if reference is None:  # evidence mode trained no reference: train it now
            reference, trained, metrics, checks, secrets, attempt = fall_back_evidence(
                lineage, plan, after, update, verification.metrics, verification.checks,
                config_as(config, evidence.EvidenceConfig))
            retrained_update = Update(reference, "retrain", "exact", update.seconds,
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

    def version_tags(self, update: Update) -> dict:
        return pretrained_tags(update.bundle)

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
        return {"fallback": attempt}

    def summary_fields(self, plan: Plan, update: Update, verification: Verification, attempt: dict | None) -> dict:
        m = verification.metrics  # evidence mode: no retrained model (None), the control band instead
        return {"fallback": attempt, "findings": counts(plan.part),
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
            ]
        return [
            f"  findings removed: {s['findings']}",
            f"  exposure (largest over the removed secrets): before {e['before']:.1f} bits, after {e['after']:.1f}, "
            f"retrained {e['retrain']:.1f}",
            f"  held-out perplexity: before {p['before']:.3f}, after {p['after']:.3f}, retrained {p['retrain']:.3f}; "
            f"secrets regenerated: {m['regenerated']} (before: {m['regenerated_before']})",
            f"  update {t['update_s']:.3f} s vs retraining {t['retrain_s']:.2f} s",
        ]


def earlier_line(m: dict) -> list[str]:
    """The earlier secrets of the chain the evidence measured again (none: no line)."""
    if not m.get("earlier_secrets") and not m.get("chain_requests_audited"):
        return []
    line = f"  earlier secrets of the chain since the last exact model: {m.get('earlier_secrets', 0)} measured again"
    if m.get("earlier_secrets"):
        line += f" (worst {m['earlier_excess_bits']:+.1f} bits over its controls)"
    if m.get("chain_requests_audited"):
        line += f"; {m['chain_requests_audited']} request(s) judged by an audit, no longer in escrow"
    return [line]


KIND = Text()
