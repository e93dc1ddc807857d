"""`python -m bench.text`: removing leaked secrets from the demo's character LM, method by method.

The demo's own setting: the built-in `shakespeare` corpus (300k characters, 4 fictional people ×
5 secrets × 8 pastes), every finding of the built-in detectors redacted with the token policy, the
`small` char-LSTM trained for the demo's budget. Three requests: every finding (the demo's), the first
8 secrets, and the eight occurrences of one card number. Each method (first_order, second_order,
finetune, suppress) is compared with retraining on the redacted corpus — the same schedule, measured in the same run:
update time and speed-up (wall clock, and process CPU time where retraining ran in the same process),
the largest exposure over the removed secrets and the largest per-secret gap to the retrained model,
held-out perplexity, secrets regenerated, Hessian-vector products, the verification verdict of the
pipeline (exposure ≤ retrained + 2 bits, perplexity ≤ +3 %, nothing regenerated) and, with
`--evidence`, the request-time evidence checks (unlearning.text.evidence, no model trained).

Tables go to stdout and bench/results/text.md, progress to stderr. Only masked secrets are printed.
`--cache DIR` reuses the models found there: a DIR holding only the trained model (`small-400steps`)
retrains every request in the run, so that times compare within one process.

    python -m bench.text [--steps 400] [--candidates 1000] [--policy token] [--cache DIR]
                         [--scopes "all,8 secrets,one card"] [--methods first_order,second_order,finetune,suppress]
                         [--results PATH] [--evidence]

`--transformer`: the same requests on a GPT-style model (issue 15) instead — a 2-layer GPT-2
(n_embd 128, 4 heads, a 512-token byte-level BPE with single digits, built by
`hf_checkpoint.build_tiny_checkpoint`, randomly initialised: the "base checkpoint"), fine-tuned `--steps`
(default 600) on a 60k-character `shakespeare` corpus with the same leak (4 people × 5 secrets × 8
pastes); the reference re-fine-tunes the base on D′ with the same schedule. Requests remove 1, 8 and
20 secrets; methods second_order (last block), npo, grad_diff, finetune, suppress. Perplexity is per
token. Tables go to bench/results/text_transformer.md.

    python -m bench.text --transformer [--steps 600] [--candidates 300] [--cache DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see environment notes: spin-waits on 2 shared cores

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from flows.settings import DEMO_TEXT_STEPS
from unlearning.text import evidence, lm
from unlearning.text.data import redact
from unlearning.text.shakespeare import build_shakespeare
from tasks.scan import scan_corpus

SALT = b"unlearnflow/bench/text"
RESULTS = Path(__file__).parent / "results" / "text.md"
VERIFY = lm.TextVerifyConfig()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cached_model(cache: Path | None, name: str, build):
    """(bundle, stats dict) from the cache directory, or built and stored there."""
    if cache is not None and (cache / name / lm.META_FILE).exists():
        bundle = lm.load_lm(cache / name)
        return bundle, json.loads((cache / name / "stats.json").read_text())
    bundle, stats = build()
    if cache is not None:
        lm.save_lm(bundle, cache / name)
        (cache / name / "stats.json").write_text(json.dumps(stats))
    return bundle, stats


class Setting:
    """The corpus, the trained model and one redaction request on it: the findings it removes (their
    values in memory only), the redacted corpus, Z and Z̃, and the retrained reference."""

    def __init__(self, steps: int, cache: Path | None, candidates: int, policy: str = "token",
                 scope: str = "all", trained=None):
        self.corpus = build_shakespeare()
        findings = scan_corpus(self.corpus, SALT)
        findings = findings_in_scope(findings, scope)
        self.scope, self.findings = scope, findings
        self.secrets = lm.secrets_of(self.corpus, self.findings)
        self.after = redact(self.corpus, lm.occurrences_of(self.findings), policy=policy)
        self.candidates = candidates
        key = f"small-{steps}steps"

        def train():
            bundle, st = lm.train_text_model(self.corpus, "small", steps=steps)
            return bundle, {"seconds": st.seconds, "steps": st.steps, "epochs": st.epochs}

        self.bundle, self.train_stats = trained or cached_model(cache, key, train)
        self.request, self.windows = lm.window_request(self.bundle, self.corpus, self.after, self.findings)

        suffix = "" if scope == "all" else "-" + scope.replace(" ", "-")
        self.reference, self.retrain_stats = cached_model(cache, f"{key}-retrain-{policy}{suffix}", self.retrain)

    def retrain(self) -> tuple[lm.LMBundle, dict]:
        """The exact reference (the model's own `retrain`: trained from scratch on D', or a Hugging
        Face model's base fine-tuned again on it) and its time and steps."""
        started = time.process_time()
        bundle, _, st = lm.run_lm_method("retrain", self.bundle, self.request, self.windows)
        return bundle, {"seconds": st["seconds"], "steps": st["steps"], "cpu_s": time.process_time() - started}

    def measure(self, bundle: lm.LMBundle, corpus) -> dict:
        started = time.perf_counter()
        exposures = [lm.secret_exposure(bundle, s, self.candidates) for s in self.secrets]
        regenerated = sum(lm.regenerates(bundle, s, SALT, VERIFY.samples) for s in self.secrets)
        return {"exposures": exposures, "max_exposure": max(exposures), "regenerated": regenerated,
                "perplexity": lm.held_out_perplexity(bundle, corpus), "measure_s": time.perf_counter() - started}


def findings_in_scope(findings: list[dict], scope: str) -> list[dict]:
    """`all`; `one card` (every occurrence of the first card number found); `K secrets` (every
    occurrence of the first K distinct secrets in corpus order, whatever their kind)."""
    if scope == "all":
        return findings
    if scope == "one card":
        chosen = {next(f["fingerprint"] for f in findings if f["detector"] == "card")}
    elif scope.endswith(" secrets") and scope.split()[0].isdigit():
        chosen = set(list(dict.fromkeys(f["fingerprint"] for f in findings))[:int(scope.split()[0])])
    else:
        raise SystemExit(f"bench.text: unknown scope {scope!r} (all, one card, or 'K secrets')")
    return [f for f in findings if f["fingerprint"] in chosen]


def evidence_verdict(setting: Setting, bundle: lm.LMBundle, ppl_before: float) -> str:
    """The request-time evidence checks (unlearning.text.evidence, as tasks/kinds/text_verify.py runs them,
    no model trained) on `bundle`: each check's pass/fail, e.g. "4/4" or "3/4 (no: perplexity_increase)"."""
    cfg = evidence.EvidenceConfig(n_candidates=setting.candidates)
    items = evidence.prepare(setting.secrets, setting.corpus, setting.after, cfg)
    rows = evidence.judge(bundle, items, cfg, SALT, evidence.relearning_windows(bundle, setting.after))
    checks = evidence.evidence_checks(rows, {"before": ppl_before, "after": lm.held_out_perplexity(bundle, setting.after)},
                                      cfg)
    failed = [c["name"] for c in checks if not c["passed"]]
    return f"{len(checks) - len(failed)}/{len(checks)}" + (f" (no: {', '.join(failed)})" if failed else "")


def verdict(m: dict, before: dict, ref: dict) -> tuple[float, float, bool]:
    gap = max(a - r for a, r in zip(m["exposures"], ref["exposures"]))
    increase = m["perplexity"] / before["perplexity"] - 1
    passed = (gap <= VERIFY.exposure_margin_bits and increase <= VERIFY.max_perplexity_increase
              and m["regenerated"] == 0)
    return gap, increase, passed


HEADER = ("| method | time s | speed-up | CPU s | CPU speed-up | max exposure (bits) | worst gap to retrain (bits) | "
          "held-out ppl | ppl Δ | regenerated | HVPs | verified | evidence checks |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, seconds: float | None, retrain_s: float, m: dict, before: dict, ref: dict, hvps="",
        cpu: tuple[float | None, float | None] = (None, None), evidence_: str = "") -> str:
    """One table row; `cpu`: (the method's process CPU seconds, retraining's), when measured in this process."""
    gap, increase, passed = verdict(m, before, ref)
    time_s = f"{seconds:.1f}" if seconds is not None else "—"
    speedup = f"{retrain_s / seconds:.1f}×" if seconds else "—"
    cpu_s = f"{cpu[0]:.1f}" if cpu[0] is not None else "—"
    cpu_speedup = f"{cpu[1] / cpu[0]:.1f}×" if cpu[0] and cpu[1] else "—"
    return (f"| {name} | {time_s} | {speedup} | {cpu_s} | {cpu_speedup} | {m['max_exposure']:.1f} | {gap:+.1f} | "
            f"{m['perplexity']:.4g} | {100 * increase:+.3g} % | {m['regenerated']}/{len(m['exposures'])} | {hvps} | "
            f"{'yes' if passed else 'no'} | {evidence_} |")


def run_method(setting: Setting, name: str, options: dict) -> tuple[dict, dict, lm.LMBundle]:
    torch.manual_seed(0)
    started = time.process_time()
    bundle, _, stats = lm.run_lm_method(name, setting.bundle, setting.request, setting.windows, options)
    stats = {**stats, "cpu_s": time.process_time() - started}
    return setting.measure(bundle, setting.after), stats, bundle


METHODS = ("first_order", "second_order", "finetune", "suppress")


SCOPES = ("all", "8 secrets", "one card")


def scope_table(setting: Setting, runs: list[dict], sweep: bool, with_evidence: bool = False) -> list[str]:
    retrain_s, retrain_cpu = setting.retrain_stats["seconds"], setting.retrain_stats.get("cpu_s")
    say(f"  request '{setting.scope}': {len(setting.findings)} findings of {len(setting.secrets)} secrets, "
        f"|Z| = {len(setting.request)} of {len(setting.windows)} windows; retrained in {retrain_s:.0f} s")
    before = setting.measure(setting.bundle, setting.corpus)
    ref = setting.measure(setting.reference, setting.after)
    lines = [HEADER, row("original", None, retrain_s, before, before, ref).replace("| no |", "| — |")]
    print(f"\n### request: {setting.scope} ({len(setting.secrets)} secrets, {len(setting.findings)} occurrences, "
          f"|Z| = {len(setting.request)} windows)\n", flush=True)
    print("\n".join(lines), flush=True)
    for run in runs:
        m, stats, bundle = run_method(setting, run["method"], run["options"])
        label = run["method"] + (f" {json.dumps(run['options'])}" if sweep and run["options"] else "")
        checks = evidence_verdict(setting, bundle, before["perplexity"]) if with_evidence else ""
        lines.append(row(label, stats["seconds"], retrain_s, m, before, ref, stats.get("hvps", ""),
                         (stats["cpu_s"], retrain_cpu), checks))
        print(lines[-1], flush=True)
    lines.append(row("retrain (reference)", retrain_s, retrain_s, ref, before, ref, 0, (retrain_cpu, retrain_cpu)))
    print(lines[-1], flush=True)
    return [f"### request: {setting.scope} ({len(setting.secrets)} secrets, {len(setting.findings)} occurrences, "
            f"|Z| = {len(setting.request)} windows)", "", *lines, ""]


# --- the transformer section (issue 15) ------------------------------------------------------------

TRANSFORMER_RESULTS = Path(__file__).parent / "results" / "text_transformer.md"
TRANSFORMER = dict(max_chars=60_000, vocab_size=512, n_layer=2, n_embd=128, n_head=4, n_positions=128,
                   seq_len=64, lr=2e-3, steps=600)
TRANSFORMER_SCOPES = ("one card", "8 secrets", "all")
# npo with no KL term and 30 steps: the default until session 10, kept for comparison (one card +6.4 %)
TRANSFORMER_METHODS = (("second_order", {}), ("npo", {}), ("npo", {"kl": 0.0, "steps": 30}), ("grad_diff", {}),
                       ("finetune", {"steps": 30}), ("suppress", {}))


class TransformerSetting(Setting):
    """Setting's attributes for a GPT-style model: the base checkpoint built (once, in the cache)
    from the *redacted* corpus's text — its tokenizer never saw a secret, as a real base model's —
    fine-tuned on the leaking corpus; the reference is the base fine-tuned again on D′."""

    def __init__(self, steps: int, cache: Path, candidates: int, scope: str, trained=None):
        from unlearning.text import hf, hf_checkpoint, hf_finetune

        cfg = TRANSFORMER
        self.corpus = build_shakespeare(max_chars=cfg["max_chars"])
        every = scan_corpus(self.corpus, SALT)
        self.scope, self.findings = scope, findings_in_scope(every, scope)
        self.secrets = lm.secrets_of(self.corpus, self.findings)
        self.after = redact(self.corpus, lm.occurrences_of(self.findings))
        self.candidates = candidates
        base = cache / "gpt-base"
        if not (base / "config.json").exists():
            clean = redact(self.corpus, lm.occurrences_of(every))
            hf_checkpoint.build_tiny_checkpoint([t for _, t in clean.records], base, vocab_size=cfg["vocab_size"],
                                                n_layer=cfg["n_layer"], n_embd=cfg["n_embd"], n_head=cfg["n_head"],
                                                n_positions=cfg["n_positions"])
        key = f"gpt-{steps}steps"

        def fine_tune():
            bundle = hf.load_pretrained(base, seq_len=cfg["seq_len"], lr=cfg["lr"])
            bundle, st = hf_finetune.fine_tune(bundle, self.corpus, steps=steps)
            return bundle, {"seconds": st.seconds, "steps": st.steps, "epochs": st.epochs}

        self.bundle, self.train_stats = trained or cached_model(cache, key, fine_tune)
        self.request, self.windows = lm.window_request(self.bundle, self.corpus, self.after, self.findings)

        self.reference, self.retrain_stats = cached_model(cache, f"{key}-retrain-{scope.replace(' ', '-')}", self.retrain)


def transformer_main(args) -> None:
    import tempfile

    steps = args.steps if args.steps != DEMO_TEXT_STEPS else TRANSFORMER["steps"]
    candidates = args.candidates if args.candidates != VERIFY.n_candidates else 300
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench-text-gpt-"))
    say(f"bench.text --transformer: a GPT-2 of {TRANSFORMER['n_layer']} layers × {TRANSFORMER['n_embd']}, "
        f"fine-tuned {steps} steps, re-fine-tuned per request (cache {cache})")
    runs = [{"method": m, "options": o} for m, o in TRANSFORMER_METHODS]
    out, trained = [], None
    for scope in args.scopes.split(",") if args.scopes != ",".join(SCOPES) else TRANSFORMER_SCOPES:
        setting = TransformerSetting(steps, cache, candidates, scope, trained)
        trained = (setting.bundle, setting.train_stats)
        if not out:
            n_params = sum(p.numel() for p in setting.bundle.model.parameters())
            out.append(f"Model: GPT-2 ({TRANSFORMER['n_layer']} layers, n_embd {TRANSFORMER['n_embd']}, "
                       f"{n_params / 1e6:.2f}M parameters, {TRANSFORMER['vocab_size']}-token BPE), fine-tuned "
                       f"{setting.train_stats['steps']} steps ({setting.train_stats['epochs']:.1f} epochs, "
                       f"{len(setting.windows)} windows of {TRANSFORMER['seq_len']} tokens) in "
                       f"{setting.train_stats['seconds']:.0f} s on a {TRANSFORMER['max_chars'] // 1000}k-character "
                       f"corpus; token redaction; exposure over {candidates} same-format candidates; "
                       f"perplexity per token; {torch.get_num_threads()} threads.\n")
        out += scope_table(setting, runs, sweep=True)
    results = args.results if args.results != RESULTS else TRANSFORMER_RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.write_text(f"# bench.text --transformer — {stamp}, {platform.node()}, {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {torch.get_num_threads()} threads, load "
                       f"{os.getloadavg()[0]:.1f}\n\n" + "\n".join(out) + "\n")
    say(f"  tables written to {results}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transformer", action="store_true", help="the GPT-style model's section (issue 15) instead")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=DEMO_TEXT_STEPS, help=f"training steps (demo: {DEMO_TEXT_STEPS})")
    ap.add_argument("--candidates", type=int, default=VERIFY.n_candidates, help="same-format references per exposure")
    ap.add_argument("--cache", type=Path, default=None, help="keep/reuse the trained and retrained models here")
    ap.add_argument("--policy", choices=("token", "same_format"), default="token", help="redaction (demo: token)")
    ap.add_argument("--scopes", default=",".join(SCOPES), help="requests: all, one card, K secrets (comma-separated)")
    ap.add_argument("--methods", default=",".join(METHODS))
    for name in METHODS:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default="{}", help=f"JSON options for {name}")
    ap.add_argument("--sweep", type=Path, default=None, help="JSON lines of {method, options} to run instead")
    ap.add_argument("--results", type=Path, default=RESULTS, help=f"where the tables go (default {RESULTS})")
    ap.add_argument("--evidence", action="store_true", help="also run the request-time evidence checks on each update "
                    "(bench.checks_text judges the retrained models)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.transformer:
        return transformer_main(args)

    say(f"bench.text: building the corpus, training `small` for {args.steps} steps, retraining references")
    runs = ([json.loads(line) for line in args.sweep.read_text().splitlines() if line.strip()] if args.sweep else
            [{"method": m, "options": json.loads(getattr(args, m))} for m in args.methods.split(",")])
    out, trained = [], None
    for scope in args.scopes.split(","):
        setting = Setting(args.steps, args.cache, args.candidates, args.policy, scope, trained)
        trained = (setting.bundle, setting.train_stats)
        if not out:
            out.append(f"Model: `small` char-LSTM trained {setting.train_stats['steps']} steps "
                       f"({setting.train_stats['epochs']:.1f} epochs) in {setting.train_stats['seconds']:.0f} s; "
                       f"redaction policy {args.policy}; exposure over {args.candidates} same-format candidates.\n")
        out += scope_table(setting, runs, bool(args.sweep), args.evidence)
    if not args.sweep:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        args.results.write_text(f"# bench.text — {stamp}, {platform.node()}, {os.cpu_count()} cores, torch "
                           f"{torch.__version__}, {torch.get_num_threads()} threads, load "
                           f"{os.getloadavg()[0]:.1f}\n\n" + "\n".join(out) + "\n")
        say(f"  tables written to {args.results}")


if __name__ == "__main__":
    main()
