"""`python -m bench.checks_text`: check the text evidence checks against retraining (issue 13 §1).

On the demo's setting (bench.text's Setting: the `shakespeare` corpus, the `small` char-LSTM trained
for the demo's steps, token redaction) and three requests — every secret (the demo's), 8 secrets and
one card — the evidence checks of unlearning.text.evidence (no model trained) judge:
(a) the model retrained on the redacted corpus: must pass (a failure is a FALSE ALARM);
(b) the original model: must fail (a pass is a MISS);
(c) deliberately under-unlearned models: first_order with a step 1000× too small, second_order
    run on only half of the request's secrets, and (on the 20-secret request) suppress drawing its
    retained windows from a fixed pool of 96: must fail. The last is the one only the relearning
    check catches — it passes the audit's thresholds, and 20 fine-tuning steps on held-out text bring
    a secret back 30–58 bits above its controls (docs/benchmarks.md, "A cheaper suppress"), so it is
    what a cheaper relearning check must still fail;
(d) suppress (auto's method), second_order and finetune with their defaults, and the fixed-pool
    suppress on the smaller requests (where it was never shown to fall short): reported, beside the
    reference verdict (exposure ≤ retrained + 2 bits for every secret, perplexity ≤ +3 %, nothing
    regenerated).
The `secrets over band` column counts the removed secrets more than the margin above their controls;
`secrets left in: caught` counts them among the secrets a model still holds (all in the original,
the untouched half in the half update): a secret left in but inside its band is a per-secret miss.

The original and retrained models come from `--cache` (bench.text's names: train once, reuse).
Table to stdout and bench/results/checks_text.md, progress to stderr; only masked secrets appear.

    python -m bench.checks_text [--cache /tmp/textev-cache] [--scopes "all,8 secrets,one card"]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see environment notes: spin-waits on 2 shared cores

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import dataclasses

import torch

from bench.text import SALT, Setting, say
from flows.settings import DEMO_TEXT_STEPS
from unlearning.text import evidence, lm
from unlearning.text.data import redact

RESULTS = Path(__file__).parent / "results" / "checks_text.md"
SCOPES = ("all", "8 secrets", "one card")
CHECKS = ("exposure_above_control_band_bits", "perplexity_increase", "contexts_regenerating",
          "relearned_above_control_band_bits")


def half_request_update(setting: Setting) -> lm.LMBundle:
    """second_order run on the first half of the request's secrets only (the rest left in the model)."""
    keep = {s.fingerprint for s in setting.secrets[:len(setting.secrets) // 2]}
    findings = [f for f in setting.findings if f["fingerprint"] in keep]
    after = redact(setting.corpus, lm.occurrences_of(findings), policy="token")
    request, windows = lm.window_request(setting.bundle, setting.corpus, after, findings)
    return lm.run_lm_method("second_order", setting.bundle, request, windows)[0]


def fixed_pool_suppress(setting: Setting, pool: int = 96) -> lm.LMBundle:
    """suppress whose retained windows (cross-entropy and anchor) come from a fixed, seeded pool of
    `pool` untouched training windows instead of all of them: the cheaper setting dropped because it
    fails only the relearning check (docs/benchmarks.md, "A cheaper suppress")."""
    request, windows = setting.request, setting.windows
    untouched = torch.ones(len(windows), dtype=torch.bool)
    untouched[request.index] = False
    others = torch.nonzero(untouched).squeeze(1)
    chosen = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(1))[:pool]]
    subset = torch.cat([windows[request.index], windows[chosen]])  # Z's windows first, then the pool
    return lm.run_lm_method("suppress", setting.bundle, dataclasses.replace(request, index=torch.arange(len(request))),
                            subset)[0]


def models(setting: Setting) -> list[tuple[str, str, object, set | None]]:
    """(label, expected verdict, build, the secrets left in it) per model to judge: build() →
    (bundle, update seconds); the secrets left in (None: unknown) are those a per-secret verdict
    should flag."""
    def method(name, options=None):
        def build():
            torch.manual_seed(0)
            started = time.perf_counter()
            bundle = lm.run_lm_method(name, setting.bundle, setting.request, setting.windows, options)[0]
            return bundle, time.perf_counter() - started
        return build

    everything = {s.fingerprint for s in setting.secrets}
    out = [("retrained", "pass", lambda: (setting.reference, setting.retrain_stats["seconds"]), set()),
           ("original", "fail", lambda: (setting.bundle, None), everything),
           ("first_order τ = 5e-6 (1000× too small)", "fail", method("first_order", {"tau": 5e-6}), everything)]
    if len(setting.secrets) >= 2:
        def half():
            started = time.perf_counter()
            return half_request_update(setting), time.perf_counter() - started
        left = {s.fingerprint for s in setting.secrets[len(setting.secrets) // 2:]}
        out.append((f"second_order on {len(setting.secrets) // 2} of {len(setting.secrets)} secrets", "fail", half,
                    left))
    def pool():
        started = time.perf_counter()
        return fixed_pool_suppress(setting), time.perf_counter() - started
    out += [("suppress, retained windows from a fixed pool of 96", "fail" if setting.scope == "all" else "report",
             pool, None),
            ("suppress (default)", "report", method("suppress"), None),
            ("second_order (default)", "report", method("second_order"), None),
            ("finetune (default)", "report", method("finetune"), None)]
    return out


def judged(setting: Setting, items, bundle: lm.LMBundle, cfg: evidence.EvidenceConfig, ppl_before: float):
    rows = evidence.judge(bundle, items, cfg, SALT, evidence.relearning_windows(bundle, setting.after))
    ppl = {"before": ppl_before, "after": lm.held_out_perplexity(bundle, setting.after)}
    return rows, ppl, evidence.evidence_checks(rows, ppl, cfg)


def outcome(expected: str, passed: bool) -> str:
    if expected == "pass":
        return "ok" if passed else "FALSE ALARM"
    if expected == "fail":
        return "ok" if not passed else "MISS"
    return "—"


HEADER = ("| request | model | update s | expected | worst excess over controls (bits) | after relearning (bits) | "
          "ppl Δ | contexts regenerating | secrets over band | secrets left in: caught | evidence verdict | "
          "reference verdict | outcome | judge s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def scope_rows(setting: Setting, cfg: evidence.EvidenceConfig) -> tuple[list[str], dict]:
    items = evidence.prepare(setting.secrets, setting.corpus, setting.after, cfg)
    ppl_before = lm.held_out_perplexity(setting.bundle, setting.corpus)
    reference_rows = None
    lines, tally = [], {"false_alarms": 0, "misses": 0, "judged": 0, "secrets_left": 0, "secrets_missed": 0}
    for label, expected, build, left in models(setting):
        say(f"  {setting.scope}: {label} ...")
        bundle, update_s = build()
        started = time.perf_counter()
        rows, ppl, checks = judged(setting, items, bundle, cfg, ppl_before)
        judge_s = time.perf_counter() - started
        if reference_rows is None:
            reference_rows = rows  # the retrained model comes first
        passed = all(c["passed"] for c in checks)
        by = {c["name"]: c for c in checks}
        gap = max(r["after"] - ref["after"] for r, ref in zip(rows, reference_rows))
        reference = (gap <= lm.TextVerifyConfig.exposure_margin_bits and by["perplexity_increase"]["passed"]
                     and by["contexts_regenerating"]["passed"])
        over = sum(r["excess_bits"] > cfg.margin_bits for r in rows)
        caught = ("—" if left is None else
                  f"{sum(r['excess_bits'] > cfg.margin_bits for r in rows if r['fingerprint'] in left)}/{len(left)}")
        tally["secrets_left"] += len(left or ())
        tally["secrets_missed"] += sum(r["excess_bits"] <= cfg.margin_bits for r in rows
                                       if r["fingerprint"] in (left or ()))
        contexts = sum(r["occurrences"] for r in rows)
        verdict = outcome(expected, passed)
        tally["judged"] += expected != "report"
        tally["false_alarms"] += verdict == "FALSE ALARM"
        tally["misses"] += verdict == "MISS"

        def cell(name, fmt):
            c = by[name]
            return f"{fmt(c['value'])}{'' if c['passed'] else ' ✗'}"
        lines.append(
            f"| {setting.scope} ({len(setting.secrets)} secrets) | {label} | "
            f"{'—' if update_s is None else f'{update_s:.1f}'} | {expected} | "
            f"{cell('exposure_above_control_band_bits', lambda v: f'{v:+.1f}')} | "
            f"{cell('relearned_above_control_band_bits', lambda v: f'{v:+.1f}')} | "
            f"{cell('perplexity_increase', lambda v: f'{100 * v:+.2f} %')} | "
            f"{cell('contexts_regenerating', lambda v: f'{v}/{contexts}')} | "
            f"{over}/{len(rows)} | {caught} | {'PASS' if passed else 'FAIL'} | "
            f"{'pass' if reference else 'fail'} ({gap:+.1f} bits) | {verdict} | {judge_s:.0f} |")
        print(lines[-1], flush=True)
    return lines, tally


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=DEMO_TEXT_STEPS, help=f"training steps (demo: {DEMO_TEXT_STEPS})")
    ap.add_argument("--cache", type=Path, default=None, help="keep/reuse the trained and retrained models here")
    ap.add_argument("--scopes", default=",".join(SCOPES), help="requests: all, one card, K secrets (comma-separated)")
    ap.add_argument("--candidates", type=int, default=evidence.EvidenceConfig.n_candidates)
    args = ap.parse_args(argv)
    cfg = evidence.EvidenceConfig(n_candidates=args.candidates)
    started = time.perf_counter()
    say(f"bench.checks_text: the `small` model ({args.steps} steps) and its retrained references (cache: {args.cache})")
    print(HEADER, flush=True)
    lines, trained = [HEADER], None
    totals = {"false_alarms": 0, "misses": 0, "judged": 0, "secrets_left": 0, "secrets_missed": 0}
    for scope in args.scopes.split(","):
        setting = Setting(args.steps, args.cache, args.candidates, "token", scope, trained)
        trained = (setting.bundle, setting.train_stats)
        rows, tally = scope_rows(setting, cfg)
        lines += rows
        totals = {k: totals[k] + tally[k] for k in totals}
    summary = (f"False alarms: {totals['false_alarms']}; misses: {totals['misses']} (of {totals['judged']} models "
               f"with an expected verdict); per secret, {totals['secrets_missed']} of the {totals['secrets_left']} "
               f"secrets left in a model within the band (a per-secret miss). Margin {cfg.margin_bits} bits, "
               f"{cfg.n_controls} controls per secret, {cfg.relearn_steps} relearning steps of "
               f"{getattr(cfg, 'relearn_batch', None) or 'the training batch of'} windows, the worst of "
               f"{cfg.relearn_draws} draws; ✗ = the check failed. "
               f"Total {time.perf_counter() - started:.0f} s.")
    print("\n" + summary, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.write_text(f"# bench.checks_text — {stamp}, {platform.node()}, {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}\n\n"
                       + "\n".join(lines) + "\n\n" + summary + "\n")
    say(f"  table written to {RESULTS}")


if __name__ == "__main__":
    main()
