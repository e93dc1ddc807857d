"""bench.stream's text scenario: requests redacting 1–3 secrets each from the demo corpus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.stream.measured import check, passed, say


AGAIN_SEEDS = (10, 11, 12)  # evidence seeds a repaired model is judged again with, outside the measured CPU

# bench.text's setting: the demo corpus, the `small` char-LSTM, every occurrence of a secret
# redacted with the token policy. A model is an lm.LMBundle; D_k is the corpus after requests 1..k.

class Text:
    name = "text"

    def __init__(self, n_requests: int, seed: int, steps: int, cache: Path | None, candidates: int,
                 people: int = 4):
        from bench import text as bench_text
        from tasks.scan import scan_corpus
        from unlearning.text import chain as rules
        from unlearning.text import lm
        from unlearning.text.data import redact
        from unlearning.text.shakespeare import build_shakespeare

        self.lm, self.rules, self.candidates, self.salt, self.people = lm, rules, candidates, bench_text.SALT, people
        # id(updated model) → (it, the exact model it is held to — None: trained exactly, it is one —,
        # the requests of its chain since that model whose escrow no audit has deleted), by the rules
        # of unlearning.text.chain, as tasks/kinds/text_chain.py keeps and reads them (chain_secrets)
        self._since: dict[int, tuple] = {}
        self._ppl: dict[int, tuple] = {}  # id(model) → (it, its held-out perplexity)
        # id(fast-updated model) → (it, the model its fast updates are anchored to: unlearning.text.chain.teacher_of;
        # None: itself, once an audit passed it), as tasks/kinds/text_teacher.py keeps it
        self._teachers: dict[int, tuple] = {}
        self.retrained: dict[int, object] = {}  # j → the model retrained on D_j
        self._judged: dict[int, tuple] = {}  # id(model) → (it, fingerprint → (request, its evidence row))
        self.exposure_misses: list[str] = []  # audits failed on exposure: the secret and what its evidence saw
        self._updated_by: dict[int, tuple] = {}  # id(the last update's model) → (it, its method, context, teacher)
        self._repaired: dict[int, object] = {}  # id(repaired model) → it
        self._passed_fast: list[tuple] = []  # (fast model whose evidence passed, request, chain, repaired?)
        corpus = self.original_corpus = build_shakespeare(n_people=people)  # 5 secrets a person
        findings = scan_corpus(corpus, bench_text.SALT)

        def train():
            say(f"  [text] training the original `small` model ({steps} steps; not charged) ...")
            bundle, st = lm.train_text_model(corpus, "small", steps=steps)
            return bundle, {"seconds": st.seconds, "steps": st.steps, "epochs": st.epochs}

        key = f"small-{steps}steps" + ("" if people == 4 else f"-{people}people")  # 4: the demo corpus
        self.original, _ = bench_text.cached_model(cache, key, train)
        prints = list(dict.fromkeys(f["fingerprint"] for f in findings))
        rng = np.random.default_rng([seed, 2])
        groups = secret_groups([prints[i] for i in rng.permutation(len(prints))], n_requests, rng)
        self.requests = [[f for f in findings if f["fingerprint"] in set(g)] for g in groups]
        self.data = [corpus]
        for part in self.requests:
            self.data.append(redact(self.data[-1], lm.occurrences_of(part), policy="token"))
        self.secrets = [lm.secrets_of(corpus, part) for part in self.requests]  # raw values: in memory only

    def describe(self) -> str:
        sizes = [len(s) for s in self.secrets]
        corpus = "demo corpus" if self.people == 4 else f"demo corpus with {self.people} people ({5 * self.people} secrets)"
        return (f"{corpus}, `small` char-LSTM ({self.original.settings['steps']} steps), {len(sizes)} requests of "
                f"{min(sizes)}–{max(sizes)} secrets ({sum(sizes)} secrets, "
                f"{sum(len(r) for r in self.requests)} occurrences), exposure over {self.candidates} candidates")

    def _context(self, model, k_from: int, k_to: int):
        lm = self.lm
        part = [f for r in self.requests[k_from:k_to] for f in r]
        request, windows = lm.window_request(model, self.data[k_from], self.data[k_to], part)
        return lm.TextContext(model, request, windows)

    def retrain(self, j: int):
        from unlearning import registry
        self.retrained[j] = registry.run("text", "retrain", self._context(self.original, 0, j)).bundle
        return self.retrained[j]

    def notes(self) -> list[str]:
        """How far a retraining's held-out perplexity lies from the original model's: what the
        evidence's `max_drift` must leave below the audit's threshold (measured outside the CPU)."""
        misses = ([f"Audits failed on exposure (the worst secret): {'; '.join(self.exposure_misses)}.", ""]
                  if self.exposure_misses else [])
        misses = [*self.judged_again(), *misses]
        if not self.retrained:
            return misses
        base = self.perplexity(self.original, 0)
        rel = {j: self.perplexity(m, j) / base - 1 for j, m in sorted(self.retrained.items())}
        return [f"Held-out perplexity of the retrained models against the original's ({base:.4f}), per data "
                f"version: " + ", ".join(f"D{j} {r:+.2%}" for j, r in rel.items()) + f" (range {min(rel.values()):+.2%} "
                f"to {max(rel.values()):+.2%}). A fast update's drift since its exact model is held to "
                f"≤ {self.evidence_cfg().max_drift:.1%}, the audit to ≤ "
                f"{self.lm.TextVerifyConfig().max_perplexity_increase:.0%} over the retrained model.", "", *misses]

    def judged_again(self) -> list[str]:
        """Each fast model whose evidence passed (its first try, or a repair) judged again with evidence
        seeds AGAIN_SEEDS, one relearning draw each: other controls and other relearning draws than its
        own (seeds 0–2). The repair guarded against relearning on retained training windows and was judged on
        held-out text; this says whether a verdict holds for other draws (outside the measured CPU).
        Each request is labelled with its chain's length (the earlier requests it also kept down)."""
        from unlearning.text import evidence
        lines = {False: [], True: []}
        for model, k, chain, repaired in self._passed_fast:
            secrets = [*self.secrets[k - 1], *(s for j in chain for s in self.secrets[j - 1])]
            relearned = []
            for seed in AGAIN_SEEDS:
                cfg = evidence.EvidenceConfig(seed=seed, relearn_draws=1)
                items = evidence.prepare(secrets, self._restored(k, chain), self.data[k], cfg)
                rows = evidence.judge(model, items, cfg, self.salt, evidence.relearning_windows(model, self.data[k]),
                                      figures=0)
                relearned.append(max(r["relearned_excess_bits"] for r in rows))
            lines[repaired].append((f"{k} [chain of {len(chain)}]", relearned))
        margin = self.evidence_cfg().margin_bits
        out = []
        for repaired, seen in lines.items():
            if seen:
                held = sum(all(v <= margin for v in values) for _, values in seen)
                out += [f"{'Repaired models' if repaired else 'Fast updates that passed at their first try'}, judged "
                        f"again at evidence seeds {', '.join(map(str, AGAIN_SEEDS))}: {held} of {len(seen)} within "
                        f"{margin:g} bits after relearning at all three (worst secret's relearned excess, bits: "
                        + "; ".join(f"request {k}: " + ", ".join(f"{v:+.1f}" for v in values) for k, values in seen)
                        + ").", ""]
        return out

    @staticmethod
    def evidence_cfg():
        from unlearning.text import evidence
        return evidence.EvidenceConfig()

    def update(self, model, k: int):
        """`auto` decided on the request's own windows, as the pipeline's plan does; a suppress update
        also keeps the earlier secrets of the chain still in escrow down (unlearning.text.chain.takes_the_chain)."""
        from unlearning import registry
        rules = self.rules
        context = self._context(model, k - 1, k)
        method = registry.choose("text", "auto", windows=len(context.request), hf=False)
        chain = self.chain_of(model)
        if rules.takes_the_chain(method) and chain:
            context = self._chain_context(model, k, chain)
        teacher = rules.teacher_of(model, self._teachers.get(id(model), (None, None))[1])
        result = registry.run("text", method, context._replace(teacher=teacher))
        # what a repair goes on from: only the last update's (a repair follows its update's evidence)
        self._updated_by = {id(result.bundle): (result.bundle, method, context, teacher)}
        exact = rules.trained_exactly(result.guarantee)
        anchor = self.anchor_of(model) if rules.held_to_its_chain(exact) else None
        self._since[id(result.bundle)] = (result.bundle, anchor, rules.chain_after(chain, k, exact))
        if not exact:
            self._teachers[id(result.bundle)] = (result.bundle, teacher)
        return result.bundle

    def repair(self, model, before, k: int):
        """auto's repair (tasks/kinds/text.py `fall_back`): a failed suppress update taken further by
        suppress steps that guard against relearning (unlearning.text.repair), on the request and
        chain it ran on, anchored to its teacher; the repaired model continues its chain. None for
        another method's failure (a retraining: nothing to repair)."""
        from unlearning.text.repair import repair, repairable
        method, context, teacher = self._updated_by[id(model)][1:]
        if not repairable(method):
            return None
        fixed = dataclasses.replace(model, model=repair(model, context.request, context.train_windows, teacher).model)
        self._since[id(fixed)] = (fixed, *self._since[id(model)][1:])
        self._teachers[id(fixed)] = (fixed, teacher)
        self._repaired[id(fixed)] = fixed
        return fixed

    def _kept(self, model) -> tuple:
        """(the exact model `model` is held to, its chain): none and an empty chain for a model
        trained or retrained."""
        return self._since[id(model)][1:] if id(model) in self._since else (None, [])

    def trained_exactly(self, model) -> bool:
        """Trained, retrained or updated exactly: it is held to no earlier model (it kept no anchor)."""
        return self._kept(model)[0] is None

    def chain_of(self, model) -> list[int]:
        """The requests since the last exact model `model` descends from whose escrow is held."""
        return self._kept(model)[1]

    def _restored(self, k: int, chain: list[int]):
        """D_{k-1} with the chain's secrets written back where they were (unlearning.text.chain.restored)."""
        if not chain:
            return self.data[k - 1]
        places = [{"record": o.record, "start": o.start, "end": o.end,
                   "written": self.original_corpus.text_of(o.record)[o.start:o.end]}
                  for j in chain for s in self.secrets[j - 1] for o in s.occurrences]
        return self.rules.restored(self.data[k - 1], places)

    def _chain_context(self, model, k: int, chain: list[int]):
        lm = self.lm
        part = [*self.requests[k - 1], *(f for j in chain for f in self.requests[j - 1])]
        request, windows = lm.window_request(model, self._restored(k, chain), self.data[k], part)
        return lm.TextContext(model, request, windows)

    def anchor_of(self, model):
        """The last model trained exactly that `model` descends from by fast updates (itself if it
        was trained or retrained), as the pipeline keeps it with each version (tasks/kinds/text_chain.py)."""
        return self.rules.drift_anchor(model, self._kept(model)[0])

    def perplexity(self, model, k: int) -> float:
        """Held-out perplexity, measured once per model, as the pipeline keeps it with each version
        (the next request's "before" is the number the update's evidence measured)."""
        if id(model) not in self._ppl:
            self._ppl[id(model)] = (model, self.lm.held_out_perplexity(model, self.data[k]))
        return self._ppl[id(model)][1]

    def _measure(self, model, secrets, k: int, regenerate: bool = True) -> dict:
        lm = self.lm
        return {"exposures": [lm.secret_exposure(model, s, self.candidates) for s in secrets],
                "regenerated": sum(lm.regenerates(model, s, self.salt, lm.TextVerifyConfig().samples)
                                   for s in secrets) if regenerate else 0,
                "perplexity": lm.held_out_perplexity(model, self.data[k])}

    def _checks(self, after: dict, ppl_base: float, ref: dict, judged: list[bool] | None = None) -> list[dict]:
        """Today's reference checks (tasks/kinds/text_verify.py): every secret's exposure ≤ retrained + 2
        bits, held-out perplexity ≤ +3 % over `ppl_base`, nothing regenerated. `judged`: which
        secrets the exposure check takes (the audit's: those of the model's chain, tasks.audit_checks)."""
        cfg = self.lm.TextVerifyConfig()
        gaps = [a - r for a, r, j in zip(after["exposures"], ref["exposures"], judged or [True] * len(ref["exposures"]))
                if j]
        increase = after["perplexity"] / ppl_base - 1
        return [*([check("exposure_vs_retrain_bits", max(gaps), f"<= {cfg.exposure_margin_bits}",
                         max(gaps) <= cfg.exposure_margin_bits)] if gaps else []),
                check("perplexity_increase", increase, f"<= {cfg.max_perplexity_increase}",
                      increase <= cfg.max_perplexity_increase),
                check("secrets_regenerated", after["regenerated"], "== 0", after["regenerated"] == 0)]

    def reference_checks(self, model, before, ks: list[int], retrained) -> list[dict]:
        secrets = [s for k in ks for s in self.secrets[k - 1]]
        after = self._measure(model, secrets, ks[-1])
        ppl_before = self.lm.held_out_perplexity(before, self.data[ks[0] - 1])
        return self._checks(after, ppl_before, self._measure(retrained, secrets, ks[-1], regenerate=False))

    def evidence_checks(self, model, before, k: int) -> list[dict]:
        """The evidence mode (unlearning.text.evidence): each removed secret against controls of its
        format in the same model, regeneration from every occurrence's context, held-out perplexity
        against the model before and against the last model trained exactly, relearning on held-out
        text; no model trained."""
        from unlearning.text import evidence
        cfg = evidence.EvidenceConfig()
        # a fast update is also judged on the earlier secrets of its chain still in escrow (a
        # fall-back's retrained model starts a new chain: the request's own secrets only)
        held = self.rules.held_to_its_chain(self.trained_exactly(model))
        chain = self.chain_of(before) if held else []
        secrets = [*self.secrets[k - 1], *(s for j in chain for s in self.secrets[j - 1])]
        items = evidence.prepare(secrets, self._restored(k, chain), self.data[k], cfg)
        rows = evidence.judge(model, items, cfg, self.salt, evidence.relearning_windows(model, self.data[k]),
                              figures=len(self.secrets[k - 1]))  # the chain's earlier secrets: no exposure figure
        self._judged[id(model)] = (model, {r["fingerprint"]: (k, r) for r in rows})
        ppl = {"before": self.perplexity(before, k - 1), "after": self.perplexity(model, k)}
        if held:  # a fast update; a fall-back's retrained model is held to no earlier one
            ppl["anchor"] = self.perplexity(self.anchor_of(before), k - 1)
        checks = evidence.evidence_checks(rows, ppl, cfg)
        if held and all(c["passed"] for c in checks):
            self._passed_fast.append((model, k, chain, id(model) in self._repaired))
        return checks

    def audit_checks(self, model, ks: list[int], retrained) -> list[dict]:
        """The audit: the reference checks for every covered secret (exposure: those of the model's
        chain, as tasks.audit_checks judges them), perplexity against the retrained model's. It
        deletes the covered requests' escrow: later fast updates no longer see their secrets."""
        chain = self.chain_of(model)
        if id(model) in self._since:
            self._since[id(model)] = (model, self._kept(model)[0], [j for j in chain if j not in ks])
        secrets = [s for k in ks for s in self.secrets[k - 1]]
        judged = [not self.rules.removed_exactly(k, chain) for k in ks for _ in self.secrets[k - 1]]
        ref = self._measure(retrained, secrets, ks[-1], regenerate=False)
        after = self._measure(model, secrets, ks[-1])
        checks = self._checks(after, ref["perplexity"], ref, judged)
        if any(c["name"] == "exposure_vs_retrain_bits" and not c["passed"] for c in checks):
            self.exposure_misses.append(self._miss(model, ks, secrets, after["exposures"], ref["exposures"], judged))
        if id(model) in self._teachers and passed(checks):  # if it stays (no --rebase), it teaches its chain
            self._teachers[id(model)] = (model, self.rules.teacher_after_audit(self._teachers[id(model)][1]))
        return checks

    def _miss(self, model, ks: list[int], secrets, after: list[float], retrained: list[float], judged: list[bool]) -> str:
        """The secret an audit's exposure check failed on: its numbers, and those the evidence of the
        request that last judged it saw (masked form only)."""
        i = max((n for n in range(len(secrets)) if judged[n]), key=lambda n: after[n] - retrained[n])
        s = secrets[i]
        judged = self._judged.get(id(model), (None, {}))[1].get(s.fingerprint)
        seen = ("not judged by the evidence of the model's last update" if judged is None else
                f"its evidence at request {judged[0]}: {figure(judged[1])}({judged[1]['controls']} controls), "
                f"excess {judged[1]['excess_bits']:+.2f} "
                f"bits, after relearning {judged[1]['relearned_excess_bits']:+.2f}, free characters "
                f"{judged[1].get('free_chars', '?')}")
        return (f"audit of requests {ks[0]}–{ks[-1]}: {s.masked} exposure {after[i]:.2f} bits, retrained "
                f"{retrained[i]:.2f}; {seen}")

    def fidelity(self, model, final) -> dict:
        secrets = [s for group in self.secrets for s in group]
        k = len(self.requests)
        m, r = self._measure(model, secrets, k, regenerate=False), self._measure(final, secrets, k, regenerate=False)
        return {"worst exposure gap (bits)": max(a - b for a, b in zip(m["exposures"], r["exposures"])),
                "perplexity ratio": m["perplexity"] / r["perplexity"]}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        return f"worst exposure gap {f['worst exposure gap (bits)']:+.1f} bits, perplexity ×{f['perplexity ratio']:.3f}"


def figure(row: dict) -> str:
    """A judged secret's exposure and control band, when its evidence measured them (not for an
    earlier secret of a chain: unlearning.text.evidence.judge's `figures`)."""
    return "" if row["after"] is None else f"exposure {row['after']:.2f}, control band {row['band']:.2f} "


def secret_groups(prints: list[str], n_requests: int, rng: np.random.Generator) -> list[list[str]]:
    """`prints` cut into n_requests consecutive groups of 1–3 secrets, as many secrets as that allows
    (sizes as even as possible, then varied at random); with more requests than secrets, the extra
    requests are dropped."""
    n = min(n_requests, len(prints))
    sizes = [max(1, min(3, len(prints) // n))] * n
    spare = min(len(prints), 3 * n) - sum(sizes)
    for i in rng.permutation(n):
        if spare <= 0:
            break
        grow = min(3 - sizes[i], spare)
        sizes[i] += grow
        spare -= grow
    for _ in range(n):  # vary the sizes, keeping their sum: move one secret between two requests
        i, j = (int(x) for x in rng.integers(n, size=2))
        if sizes[i] > 1 and sizes[j] < 3 and i != j:
            sizes[i], sizes[j] = sizes[i] - 1, sizes[j] + 1
    out, start = [], 0
    for size in sizes:
        out.append(prints[start:start + size])
        start += size
    return out
