"""Reference-free evidence that a character LM no longer holds removed secrets (issue 13 §1,
science.md §6): no model is trained to judge an update.

Exposure alone needs a null: a secret that can be guessed from its context (an e-mail built from the
person's name in the line, a phone number of a fictional range other lines use) has a high exposure
even in a model that never saw it (23.7 bits measured in a retrained tiny model). So each removed
secret is judged against CONTROLS measured in the same model:

- The controls of a secret s are strings of s's format (`exposure.FormatSpace`) that keep what the
  redacted corpus D′ explains and redraw the rest: a character of s is kept when it is a literal of
  the format (`@`, `.`, spaces) or lies in a run of ≥ `min_run` characters of s that also occurs in
  D′'s training text, case-folded (the person's name in the prefix, `example.com` of other e-mails,
  `7946` of other phone numbers); every other character is drawn uniformly from its class (digit,
  lower, upper). Each control is put after s's own prefix. A model trained on D′ knows the kept
  parts from D′ (both in s and in the controls) and nothing of the redrawn ones, so under the null
  "this model never trained on s" s is exchangeable with its controls; memorisation makes s an
  outlier.
- Why not other people's values or random canaries: in Maud's context the model (rightly) prefers
  `maud.…` to `edwin.…`, so other people's values or fully random strings sit below a merely
  guessable secret and raise false alarms; redrawing only what D′ cannot explain keeps the guessable
  part. The kept runs err on the side of similarity (a chance 3-digit match keeps 3 digits), which
  can only narrow the gap between s and its controls (a miss, never a false alarm); a secret that
  D′ explains entirely has no redrawn character and no evidence either way (`free_chars` = 0).
- The statistic is in log-perplexity, not in exposure: excess = min over the controls of P(c) − P(s)
  (bits by which the model prefers the secret to its likeliest control). Exposure is capped at
  log₂|R| and extrapolated in the tail, so a memorised secret and its memorised-looking controls can
  both read the cap; log-perplexities are exact. The control band shown to people is the exposure of
  the likeliest control against the same same-format candidates as the secret.
- The controls depend on s and D′, not on the model: the same strings judge the model before, after,
  a relearned copy and (in bench.checks_text) the retrained one.

Beside it: regeneration from the context of every occurrence (greedy and sampled), held-out
perplexity against the model before, and relearning (Deeb & Roger 2024): a few fine-tuning steps on
unrelated held-out text, on a copy, must not bring a removed secret back above its control band.

Raw secret values and controls exist in memory only; what this module returns for logging (rows,
checks) holds numbers and the caller's masked forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from unlearning.detect import scan_text
from unlearning.devices import device_of
from unlearning.text import charlm, exposure, hf, hf_tokens
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.data import TextCorpus
from unlearning.text.lm import Secret, secret_seed, text_windows, held_out_text, training_text
from unlearning.text.bundle import LMBundle


@dataclass(frozen=True)
class EvidenceConfig:
    """Thresholds and sizes of the evidence checks (tasks.kinds.text.Text.evidence)."""

    margin_bits: float = 2.0  # a removed secret may be at most this many bits likelier than its likeliest control
    max_perplexity_increase: float = 0.03  # held-out perplexity after ≤ (1 + this) × before (as the reference mode)
    # a fast update's held-out perplexity ≤ (1 + this) × that of the last model trained exactly it descends
    # from. Below the audit's 3 % because the audit holds it to a model retrained on the current data, which
    # is not that model: retrained on the demo's data versions it measured −0.4 to +0.5 % from the original
    # (bench.stream's notes), and the request must not pass what the audit then fails. The exact model is
    # itself often a retraining (a fall-back, an audit's promotion), so two retrainings may differ by 0.9 %:
    # 3 % less that, rounded down (2.5 % saved a month two fall-backs at +2.4 % but could fail an audit)
    max_drift: float = 0.02
    n_candidates: int = 1000  # same-format candidates of the exposure figure (as the reference mode)
    n_controls: int = 256  # controls drawn per secret (duplicates and the secret itself dropped)
    min_run: int = 3  # characters of a secret D′ explains: runs of at least this many found in D′
    samples: int = 3  # sampled continuations per occurrence context (plus one greedy)
    prefix_chars: int = 40  # context of an occurrence, as lm.secrets_of
    relearn_steps: int = 20  # fine-tuning steps on held-out text before the relearning check
    # held-out windows per relearning step for the char LM (None: its training batch, 64 on the demo). 8 is a
    # seventh of the cost and measured the stronger attack (docs/benchmarks.md, bench.checks_text); a
    # Hugging Face model keeps its training batch (not measured there)
    relearn_batch: int | None = 8
    relearn_lr: float | None = None  # None: the model's own training rate
    # relearned copies, each fine-tuned on its own shuffle of the held-out windows (seeds seed, seed + 1, …): a
    # secret's relearned excess is its largest. Which 8-window batches the 20 steps see is a random draw, and
    # one draw was a weak check: on bench.stream's 1,600-step month, of the updates that passed it at their
    # first try, 6 of 18 (seed 0) and 10 of 16 (seed 1) came back 2.6–39.7 bits above their band on one of
    # three other draws; of the repaired models that passed one draw, 6 of 9 (docs/benchmarks.md, "Text:
    # repair before the fall-back"). Each draw is one more relearned copy (20 steps of 8 windows) and one
    # more scoring of the controls
    relearn_draws: int = 3
    seed: int = 0


# --- controls -----------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Lower case, one character for one (positions of the folded string are those of `text`)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def explained_positions(value: str, corpus_folded: str, min_run: int) -> list[bool]:
    """Per character of `value`: is it a literal of its format, or inside a run of ≥ min_run
    characters of `value` that occurs (case-folded) in `corpus_folded` (D′'s training text, folded)?"""
    slots = exposure.FormatSpace.of(value).slots
    keep = [slot is None for slot in slots]
    folded = fold(value)
    for a in range(len(value) - min_run + 1):
        b = a + min_run
        if folded[a:b] not in corpus_folded:
            continue
        while b < len(value) and folded[a:b + 1] in corpus_folded:
            b += 1
        keep[a:b] = [True] * (b - a)
    return keep


def control_values(value: str, keep: list[bool], n: int, seed: int) -> list[str]:
    """Up to n distinct strings of `value`'s format: kept characters copied, the others drawn
    uniformly from their class; the value itself is never one of them."""
    slots = exposure.FormatSpace.of(value).slots
    free = [i for i, (slot, k) in enumerate(zip(slots, keep)) if slot and not k]
    if not free:
        return []
    rng = np.random.default_rng(seed)
    columns = {i: np.array(list(slots[i]))[rng.integers(0, len(slots[i]), n)] for i in free}
    chars = [list(value) for _ in range(n)]
    for i, column in columns.items():
        for row, ch in zip(chars, column):
            row[i] = ch
    return [c for c in dict.fromkeys("".join(row) for row in chars) if c != value]


# --- measurement --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlMeasure:
    """A secret against its controls in one model (bits)."""

    secret_lp: float  # P(s)
    control_lp_min: float  # P of the likeliest control
    n_controls: int
    exposure: float | None = None  # the secret's exposure against same-format candidates
    band: float | None = None  # the likeliest control's exposure against the same candidates

    @property
    def excess_bits(self) -> float:
        """How many bits likelier than its likeliest control the model finds the secret (≤ 0: inside)."""
        return 0.0 if self.n_controls == 0 else self.control_lp_min - self.secret_lp


def against_controls(model: CharLSTM, vocab: Vocab, prefix: str, value: str, controls: list[str]) -> ControlMeasure:
    """P(s) and the likeliest control's P after `prefix` (no exposure figure)."""
    lps = exposure.log_perplexities(model, vocab, prefix, [value] + controls).numpy()
    return ControlMeasure(float(lps[0]), float(lps[1:].min()) if controls else math.inf, len(controls))


def with_exposure(model: CharLSTM, vocab: Vocab, prefix: str, value: str, controls: list[str],
                  n_candidates: int, seed: int) -> ControlMeasure:
    """`against_controls` plus the secret's exposure and the control band (the likeliest control's
    exposure) against the same draw of same-format candidates (lm.secret_exposure's draw). The
    controls are scored in the candidates' pass (one prefix, one batch) and the band reuses the
    exposure's skew-normal fit: the same numbers as separate calls, up to float rounding."""
    report = exposure.exposure(model, vocab, prefix, value, n_candidates=n_candidates, seed=seed, extra=controls)
    control_lp_min = min(report.extra_lps) if controls else math.inf
    if not controls:
        band = 0.0
    elif report.method == "exact":
        band = exposure.rank_exposure(control_lp_min, report.reference_lps, report.space_bits)
    else:
        band = exposure.extrapolated_exposure(control_lp_min, report.reference_lps, report.space_bits, report.fit)
    return ControlMeasure(report.secret_lp, control_lp_min, len(controls), report.exposure, band)


# --- regeneration from every occurrence's context -----------------------------------------------

@torch.no_grad()
def continuations(model: CharLSTM, vocab: Vocab, prefixes: list[str], n: int, samples: int,
                  seed: int) -> list[list[str]]:
    """Per prefix: its greedy continuation then `samples` sampled ones (temperature 1), n characters
    each; every prefix of one length is run as one batch. A tokenized model: n tokens (hf_tokens.continuations)."""
    if hf.is_token_vocab(vocab):
        return hf_tokens.continuations(model, vocab, prefixes, n, samples, seed)
    model.eval()
    draws = 1 + samples
    out: list[list[str]] = [[] for _ in prefixes]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        by_length.setdefault(len(p or "\n"), []).append(i)
    gen = torch.Generator().manual_seed(seed)  # CPU: the same samples on every device
    device = device_of(model)
    for rows in by_length.values():
        ids = torch.stack([vocab.encode(prefixes[i] or "\n") for i in rows]).repeat_interleave(draws, 0).to(device)  # (b·D, P)
        greedy = torch.arange(len(ids), device=device) % draws == 0  # row r: prefix r // D, draw r % D
        logits, state = model(ids)
        chosen = []
        for _ in range(n):
            last = logits[:, -1]  # (b·D, V)
            sampled = torch.multinomial(torch.softmax(last, dim=-1).cpu(), 1, generator=gen).squeeze(1).to(device)
            nxt = torch.where(greedy, last.argmax(dim=-1), sampled)  # (b·D,)
            chosen.append(nxt)
            logits, state = model(nxt[:, None], state)
        text = torch.stack(chosen, dim=1)  # (b·D, n)
        for r, row in enumerate(text):
            out[rows[r // draws]].append(vocab.decode(row.tolist()))
    return out


def regenerated_contexts(model: CharLSTM, vocab: Vocab, contexts: list[tuple[str, str]], fingerprint: str,
                         salt: bytes, samples: int, seed: int) -> int:
    """How many of the (prefix, written value) contexts of one secret make the model write it back:
    a continuation holding the value as text, or a finding with the secret's salted fingerprint
    (a card written with other separators)."""
    n = max(len(v) for _, v in contexts) + 16
    texts = continuations(model, vocab, [p for p, _ in contexts], n, samples, seed)
    return sum(any(value in t or any(f.fingerprint == fingerprint for f in scan_text(t, salt)) for t in outs)
               for (_, value), outs in zip(contexts, texts))


# --- relearning ---------------------------------------------------------------------------------

def relearned_copy(model: CharLSTM, windows: torch.Tensor, steps: int, lr: float, batch: int, seed: int) -> CharLSTM:
    """A copy of `model` fine-tuned `steps` Adam steps on `windows` (unrelated held-out text): the
    relearning attack of Deeb & Roger (2024). The model itself is not modified."""
    copy = charlm.clone(model)
    charlm.train_lm(copy, windows, steps=steps, lr=lr, batch=batch, seed=seed)
    return copy


# --- one model judged on the secrets of one request ----------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """What judges one removed secret, in memory only: its value and prefix (lm.Secret), its
    controls, and the (prefix, written value) of every occurrence."""

    secret: Secret
    controls: tuple[str, ...]
    free_chars: int  # characters redrawn in the controls (0: D′ explains the whole secret)
    contexts: tuple[tuple[str, str], ...]


def prepare(secrets: list[Secret], before: TextCorpus, after: TextCorpus, cfg: EvidenceConfig) -> list[Evidence]:
    """The controls of every removed secret (against D′ = `after`) and the contexts of every
    occurrence (read from D = `before`, in memory)."""
    corpus_folded = fold(training_text(after)[0])
    out = []
    for s in secrets:
        keep = explained_positions(s.value, corpus_folded, cfg.min_run)
        free = sum(1 for slot, k in zip(exposure.FormatSpace.of(s.value).slots, keep) if slot and not k)
        contexts = []
        for o in s.occurrences:
            text = before.text_of(o.record)
            contexts.append((text[max(0, o.start - cfg.prefix_chars):o.start], text[o.start:o.end]))
        out.append(Evidence(s, tuple(control_values(s.value, keep, cfg.n_controls, secret_seed(s) + cfg.seed)),
                            free, tuple(contexts)))
    return out


def relearning_windows(bundle: LMBundle, after: TextCorpus) -> torch.Tensor:
    """The held-out text of D′ as training windows: text unrelated to the removed secrets."""
    return text_windows(bundle.vocab, held_out_text(after), bundle.seq_len)


def judge(bundle: LMBundle, items: list[Evidence], cfg: EvidenceConfig, salt: bytes,
          relearn_windows: torch.Tensor | None, figures: int | None = None) -> list[dict]:
    """Per removed secret (no raw value): exposure and control band, excess over the controls,
    occurrence contexts that regenerate it, and the excess again in relearned copies of the model (the
    largest over `cfg.relearn_draws` of them; `relearn_windows` None: the relearning check is skipped
    and reads as NaN).

    `figures`: only the first `figures` items (the request's own secrets) get the exposure figure and
    its control band; the others (earlier secrets of a chain, measured again) get `after` and `band`
    None. The verdict reads the excess over the controls, in log-perplexity, which needs the controls
    only; the figure scores `n_candidates` more strings, 10× the cost of the controls (0.155 against
    0.016 s a secret on the demo model), and a chain's earlier secrets outnumber the request's own.
    None: every item gets it."""
    model, vocab = bundle.model, bundle.vocab
    rows = []
    for i, item in enumerate(items):
        s = item.secret
        if figures is None or i < figures:
            m = with_exposure(model, vocab, s.prefix, s.value, list(item.controls), cfg.n_candidates, secret_seed(s))
        else:
            m = against_controls(model, vocab, s.prefix, s.value, list(item.controls))
        rows.append({"detector": s.detector, "masked": s.masked, "fingerprint": s.fingerprint,
                     "occurrences": len(s.occurrences), "free_chars": item.free_chars,
                     "controls": m.n_controls, "after": m.exposure, "band": m.band, "excess_bits": m.excess_bits,
                     "regenerated": regenerated_contexts(model, vocab, list(item.contexts), s.fingerprint, salt,
                                                         cfg.samples, cfg.seed)})
    relearned = []
    if relearn_windows is not None and len(relearn_windows):
        s = bundle.settings
        batch = int(s["batch"]) if cfg.relearn_batch is None or hf.is_token_vocab(vocab) else cfg.relearn_batch
        relearned = [relearned_copy(model, relearn_windows, cfg.relearn_steps, cfg.relearn_lr or float(s["lr"]), batch,
                                    cfg.seed + draw) for draw in range(cfg.relearn_draws)]
    for row, item in zip(rows, items):
        row["relearned_excess_bits"] = max((against_controls(copy, vocab, item.secret.prefix, item.secret.value,
                                                             list(item.controls)).excess_bits for copy in relearned),
                                           default=math.nan)
    return rows


# --- verdict ------------------------------------------------------------------------------------

def evidence_checks(rows: list[dict], ppl: dict, cfg: EvidenceConfig) -> list[dict]:
    """Issue 13's evidence thresholds, in the {name, value, threshold, passed} form of the reference
    checks. `rows`: per secret `excess_bits`, `relearned_excess_bits`, `regenerated`; `ppl`: before/after,
    and `anchor`, the perplexity of the last model trained exactly (trained, retrained) that the
    model before descends from by fast updates only.

    The anchor check is what stops fast updates from drifting: each one may cost up to the allowed
    increase against the model before, and measured on a month of 10 requests the stacked updates
    ended +4.3 % from the retrained model although each passed (bench.stream). It is added for
    every fast update (`anchor` given: the model before itself where that was trained exactly), with
    the tighter `max_drift`, because the audit will hold the chain's end to a retrained model."""
    excess = max(r["excess_bits"] for r in rows)
    relearned = max(r["relearned_excess_bits"] for r in rows)
    increase = ppl["after"] / ppl["before"] - 1
    regenerated = sum(r["regenerated"] for r in rows)
    checks = [
        {"name": "exposure_above_control_band_bits", "value": excess, "threshold": f"<= {cfg.margin_bits}",
         "passed": excess <= cfg.margin_bits},
        {"name": "perplexity_increase", "value": increase, "threshold": f"<= {cfg.max_perplexity_increase}",
         "passed": increase <= cfg.max_perplexity_increase},
        {"name": "contexts_regenerating", "value": regenerated, "threshold": "== 0", "passed": regenerated == 0},
        {"name": "relearned_above_control_band_bits", "value": relearned, "threshold": f"<= {cfg.margin_bits}",
         "passed": relearned <= cfg.margin_bits},
    ]
    if "anchor" in ppl:
        drift = ppl["after"] / ppl["anchor"] - 1
        checks.insert(2, {"name": "perplexity_increase_since_exact_model", "value": drift,
                          "threshold": f"<= {cfg.max_drift}", "passed": drift <= cfg.max_drift})
    return checks

