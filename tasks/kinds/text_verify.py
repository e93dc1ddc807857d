"""Verification of a text update: by the evidence (the default: each removed secret against
controls in the same model, regeneration, held-out perplexity since the model before and since the
last exact model, relearning; unlearning.text.evidence; no model trained) or against a reference
retrained on the redacted corpus (`--verify reference`: exposure, perplexity and regeneration), and
each mode's fall-back to retraining. A fast update on a fast-updated model is also judged on the
earlier secrets of its chain (tasks.kinds.text_chain). Raw secret values live only in memory inside
these steps (read from the superseded corpus before it is purged) and are never logged."""

from __future__ import annotations

import math


from tasks import scan, state, tracking
from tasks import references as prefetch
from tasks.common import step, Lineage, Plan, Update, progress, pyplot
from tasks.kinds.text_chain import (chain_checks, chain_secrets, earlier_maxima, exact_model_perplexity,
                                    model_perplexity, window_request)
from unlearning import references
from unlearning.text import evidence, lm
from unlearning.text.chain import held_to_its_chain
from unlearning.text.data import TextCorpus


# --- the reference: the model retrained on D' -------------------------------------------------

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


# --- by the reference -------------------------------------------------------------------------

@step("verify")
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


@step("fall back to retraining")
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


# --- by the evidence ---------------------------------------------------------------------------

SHARED_THRESHOLDS = ("max_perplexity_increase", "n_candidates", "samples")


def config_as(config, wanted: type):
    """`config` as a `wanted` (evidence.EvidenceConfig or lm.TextVerifyConfig): itself, the
    thresholds the two configs share carried over from the other, or the defaults."""
    if isinstance(config, wanted):
        return config
    if isinstance(config, (evidence.EvidenceConfig, lm.TextVerifyConfig)):
        return wanted(**{name: getattr(config, name) for name in SHARED_THRESHOLDS})
    return wanted()


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
             f"{cfg.relearn_steps} relearning steps{f' × {cfg.relearn_draws} draws' if cfg.relearn_draws > 1 else ''} ...")
    before = exposures_of(lineage.root, plan.parent_run, plan.bundle, secrets, cfg.n_candidates)
    # the earlier secrets' verdict is their excess over their controls: no exposure figure (evidence.judge)
    rows = evidence.judge(bundle_after, items, cfg, salt, evidence.relearning_windows(bundle_after, after),
                          figures=len(secrets))
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


def log_evidence(run_id: str, metrics: dict, checks: list[dict], rows: list[dict], cfg: evidence.EvidenceConfig,
                 name: str = "verification.json", retrains: int = 0) -> None:
    tracking.log_params(run_id, {"verify_mode": "evidence", **{f"evidence_{k}": v for k, v in vars(cfg).items()}})
    tracking.log_metrics(run_id, {**metrics, "passed": float(all(c["passed"] for c in checks))})
    tracking.log_json(run_id, {"mode": "evidence", "retrains": retrains, "checks": checks, "metrics": metrics,
                               "secrets": rows, "config": vars(cfg)}, name)
    # an earlier secret of the chain: no "before" (its request measured that), no exposure figure
    plotted = [{**r, **{k: math.nan for k in ("before", "after", "band") if r.get(k) is None}} for r in rows]
    log_plots(run_id, plotted, {"before": metrics["perplexity_before"], "after": metrics["perplexity_after"]}, "band")


@step("verify")
def verify_evidence(lineage: Lineage, plan: Plan, after: TextCorpus, bundle_after: lm.LMBundle,
                    cfg: evidence.EvidenceConfig = evidence.EvidenceConfig(), exact: bool = False):
    """The evidence checks (unlearning.text.evidence), no model trained. Returns (metrics, checks,
    per-secret rows with masked values only)."""
    with lineage.child("verify") as run_id:
        metrics, checks, rows = judge_evidence(lineage, plan, after, bundle_after, cfg, exact)
        log_evidence(run_id, metrics, checks, rows, cfg)
    return metrics, checks, rows


def failed_attempt(update: Update, metrics: dict, checks: list[dict]) -> dict:
    """What the certificate and the summary say of a fast update the evidence failed."""
    return {"method": update.method, "update_s": update.seconds, "exposure_after": metrics["exposure_after"],
            "perplexity_after": metrics["perplexity_after"],
            "failed_checks": [c["name"] for c in checks if not c["passed"]]}


@step("fall back to retraining")
def fall_back_evidence(lineage: Lineage, plan: Plan, after: TextCorpus, update: Update, metrics: dict,
                       checks: list[dict], cfg: evidence.EvidenceConfig):
    """`auto` and the fast update failed the evidence checks, which trained no reference: retrain
    now (or take the prefetched one) and judge the retrained model by the same checks. Returns
    (the reference bundle, its stats, metrics, checks, rows, the failed attempt's summary)."""
    with lineage.child("fall back to retraining") as run_id:
        attempt = failed_attempt(update, metrics, checks)
        reference, stats, source = retrained(plan, after, "  fall back: retraining the language model on the "
                                                          "redacted corpus (the evidence checks trained none) ...")
        attempt["reference"] = f"{source} by the fall-back (evidence mode trains no reference)"
        metrics, checks, rows = judge_evidence(lineage, plan, after, reference, cfg, exact=True)
        tracking.log_params(run_id, {"failed_method": update.method, "reference": source,
                                     "failed_checks": ",".join(attempt["failed_checks"])})
        log_evidence(run_id, {**metrics, "retrain_seconds": stats["seconds"]}, checks, rows, cfg, "fallback.json", 1)
    return reference, stats, metrics, checks, rows, attempt
