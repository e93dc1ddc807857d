"""Canary exposure of a memorised secret (Carlini et al., "The Secret Sharer"; science.md §3).

    P(s)      = −Σ_i log₂ p(s_i | prefix, s_<i)                  log-perplexity, teacher-forced (bits)
    rank(s)   = 1 + #{r ∈ R : P(r) < P(s)}                        R: every secret of the same format
    exposure  = log₂|R| − log₂ rank(s)                            ∈ [0, log₂|R|]

A secret the model has never seen has expected exposure ≈ 1/ln 2 ≈ 1.44 bits; the maximum log₂|R|
means it is the model's first guess. Ties count in the secret's favour (strict "<"): a model that
cannot tell the candidates apart gives every one of them the maximal exposure, exactly as defined.

Estimators, from best to cheapest:
- exact: enumerate R (only when |R| is small);
- interpolation: rank ≈ 1 + |R|·(fraction of a uniform sample of R below P(s)); it can resolve no
  more than ≈ log₂(sample size) bits, so a secret below the whole sample is reported at log₂|R|;
- extrapolation: fit a skew-normal to the sample's log-perplexities, exposure ≈ −log₂ CDF(P(s)),
  capped at log₂|R| (uncapped it overshoots: 62 bits for a 53.2-bit card space, science.md §3).
"""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unlearning.devices import device_of
from unlearning.text import hf, hf_tokens
from unlearning.text.charlm import CharLSTM, Vocab

LN2 = math.log(2.0)


# --- log-perplexity -----------------------------------------------------------------------------

@torch.no_grad()
def log_perplexities(model: CharLSTM, vocab: Vocab, prefix: str, candidates: Sequence[str],
                     batch: int = 2048) -> torch.Tensor:
    """P(r) in bits for every candidate r after `prefix`, (n,) float64.

    The prefix is run once; its LSTM state is broadcast over a batch of candidates, which are then
    teacher-forced together (candidates of different lengths are grouped by length).
    """
    if hf.is_token_vocab(vocab):  # a tokenized model has no state to broadcast: prefix+candidate scored whole
        return hf_tokens.log_perplexities(model, vocab, prefix, candidates)
    if not prefix:
        raise ValueError("log-perplexity needs a non-empty prefix (the first character's context)")
    out = torch.zeros(len(candidates), dtype=torch.float64)
    if not len(candidates):
        return out
    model.eval()
    device = device_of(model)
    logits, (h, c) = model(vocab.encode(prefix)[None].to(device))  # (1, P, V); h, c: (layers, 1, H)
    first = F.log_softmax(logits[0, -1], dim=-1)  # (V,) distribution of the first secret char
    by_length: dict[int, list[int]] = {}
    for i, cand in enumerate(candidates):
        by_length.setdefault(len(cand), []).append(i)
    for length, rows in by_length.items():
        if length == 0:
            continue
        for lo in range(0, len(rows), batch):
            part = rows[lo:lo + batch]
            ids = torch.stack([vocab.encode(candidates[i]) for i in part]).to(device)  # (b, L)
            nats = -first[ids[:, 0]].double()  # (b,)
            if length > 1:
                b = len(part)
                state = (h.expand(-1, b, -1).contiguous(), c.expand(-1, b, -1).contiguous())
                step_logits, _ = model(ids[:, :-1], state)  # (b, L−1, V)
                logp = F.log_softmax(step_logits, dim=-1)
                nats = nats - logp.gather(2, ids[:, 1:, None]).squeeze(2).double().sum(dim=1)
            out[part] = (nats / LN2).cpu()
    return out


def log_perplexity(model: CharLSTM, vocab: Vocab, prefix: str, secret: str) -> float:
    """P(s) = −Σ_i log₂ p(s_i | prefix, s_<i) in bits."""
    return float(log_perplexities(model, vocab, prefix, [secret])[0])


# --- exposure from log-perplexities -------------------------------------------------------------

def rank_exposure(secret_lp: float, reference_lps, space_bits: float) -> float:
    """log₂|R| − log₂ rank, rank = 1 + #{r : P(r) < P(s)} (ties favour the secret).

    `reference_lps` is either R enumerated, with or without the secret itself (exact: recognised by
    its size ≥ |R| − 1, |R| = 2^space_bits), or a uniform sample of R (interpolation:
    rank ≈ 1 + |R|·fraction below P(s), which tends to the exact rank as the sample grows).
    """
    ref = np.asarray(reference_lps, dtype=np.float64).reshape(-1)
    if ref.size == 0:
        raise ValueError("rank_exposure needs at least one reference log-perplexity")
    below = int(np.count_nonzero(ref < secret_lp))
    if ref.size + 1 >= 2.0 ** space_bits * (1 - 1e-9):
        log2_rank = math.log2(1 + below)  # exact: R \ {s} (or all of R) enumerated
    else:
        # log₂(1 + |R|·k/n) without overflow for large |R|
        frac = below / ref.size
        log2_rank = 0.0 if below == 0 else float(np.logaddexp2(0.0, space_bits + math.log2(frac)))
    return float(min(space_bits, max(0.0, space_bits - log2_rank)))


@dataclass(frozen=True)
class SkewNormalFit:
    a: float
    loc: float
    scale: float


def fit_skewnormal(reference_lps) -> SkewNormalFit:
    from scipy import stats  # imported here: scipy's import costs ~0.5 s and only this needs it

    ref = np.asarray(reference_lps, dtype=np.float64).reshape(-1)
    a, loc, scale = stats.skewnorm.fit(ref)
    return SkewNormalFit(float(a), float(loc), float(scale))


def extrapolated_exposure(secret_lp: float, reference_lps, space_bits: float,
                          fit: SkewNormalFit | None = None) -> float:
    """−log₂ CDF_skewnormal(P(s)), the skew-normal fitted to the reference log-perplexities, capped
    to [0, log₂|R|] (falls back to the rank interpolation if the fitted CDF is not a number)."""
    from scipy import stats

    fit = fit or fit_skewnormal(reference_lps)
    log_cdf = float(stats.skewnorm.logcdf(secret_lp, fit.a, loc=fit.loc, scale=fit.scale))
    if math.isnan(log_cdf):
        return rank_exposure(secret_lp, reference_lps, space_bits)
    bits = math.inf if log_cdf == -math.inf else -log_cdf / LN2
    return float(min(space_bits, max(0.0, bits)))


# --- candidate spaces ---------------------------------------------------------------------------

CLASSES = {"#": string.digits, "a": string.ascii_lowercase, "A": string.ascii_uppercase}


@dataclass(frozen=True)
class FormatSpace:
    """R = every string matching `template`: `#` a digit, `a` a lowercase and `A` an uppercase
    letter, anything else literal. Callable as a sampler: space(n, rng) → n uniform members."""

    template: str

    @classmethod
    def of(cls, secret: str) -> "FormatSpace":
        """The format of a secret: digits → #, lowercase → a, uppercase → A, the rest literal."""
        def cls_of(ch):
            return "#" if ch in string.digits else "a" if ch in string.ascii_lowercase else (
                "A" if ch in string.ascii_uppercase else ch)
        return cls("".join(cls_of(ch) for ch in secret))

    @property
    def slots(self) -> list[str | None]:
        return [CLASSES.get(ch) for ch in self.template]

    @property
    def size(self) -> int:
        return math.prod(len(s) for s in self.slots if s)

    @property
    def bits(self) -> float:
        return math.log2(self.size)

    def __call__(self, n: int, rng: np.random.Generator) -> list[str]:
        cols = [np.array(list(s))[rng.integers(0, len(s), n)] if s else np.full(n, lit)
                for s, lit in zip(self.slots, self.template)]
        return ["".join(row) for row in zip(*cols)] if cols else [""] * n

    def enumerate(self) -> Iterable[str]:
        choices = [s if s else lit for s, lit in zip(self.slots, self.template)]
        return ("".join(t) for t in itertools.product(*choices))


# --- exposure of a secret in a model ------------------------------------------------------------

@dataclass(frozen=True)
class ExposureReport:
    exposure: float  # bits, the estimate chosen by `method`
    method: str  # "exact" or "extrapolation"
    space_bits: float  # log₂|R|
    secret_lp: float  # P(s), bits
    reference_mean: float  # mean P(r) over the references, bits
    reference_std: float
    interpolated: float  # rank-interpolation estimate from the same references (≤ ~log₂ n resolution)
    n_references: int
    reference_lps: tuple[float, ...] = field(default=(), repr=False)  # P(r) of every reference, bits
    fit: SkewNormalFit | None = field(default=None, repr=False)  # the extrapolation's fit (None: exact)
    extra_lps: tuple[float, ...] = field(default=(), repr=False)  # P(x) of `extra`, in its order, bits


def exposure(model: CharLSTM, vocab: Vocab, prefix: str, secret: str,
             candidates_sampler: Callable[[int, np.random.Generator], list[str]] | None = None,
             n_candidates: int = 2_000, space_bits: float | None = None, seed: int = 0,
             exact_up_to: int = 20_000, batch: int = 2048, extra: Sequence[str] = ()) -> ExposureReport:
    """Exposure of `secret` after `prefix`: exact rank when |R| ≤ max(n_candidates, exact_up_to)
    (needs a sampler with an `enumerate()` method, e.g. FormatSpace), else skew-normal
    extrapolation from `n_candidates` uniform samples of R. The sampler defaults to the secret's
    own FormatSpace. `extra`: more strings after the same prefix scored in the same pass (their
    log-perplexities in `extra_lps`; they take no part in the rank), e.g. the evidence's controls.

    Cost on the demo model (`small`, 19-char card, 2 cores): 0.65 s for 2,000 candidates and
    2.6 s for 10,000 on an idle machine, 2–3× that under load (teacher-forcing dominates; the
    skew-normal MLE fit is ~10–25 % of it). Verification uses 1,000 (lm.TextVerifyConfig).
    1,000–2,000 references pin the body of the distribution well; the far tail (large exposures) is
    extrapolated either way and capped at log₂|R|.
    """
    sampler = candidates_sampler if candidates_sampler is not None else FormatSpace.of(secret)
    bits = space_bits if space_bits is not None else getattr(sampler, "bits", None)
    if bits is None:
        raise ValueError("exposure needs space_bits = log₂|R| (or a sampler with a `bits` attribute)")
    enumerate_all = getattr(sampler, "enumerate", None)
    size = getattr(sampler, "size", None) or 2.0 ** bits * (1 - 1e-9)
    exact = enumerate_all is not None and size <= max(n_candidates, exact_up_to)
    if exact:
        refs = [r for r in enumerate_all() if r != secret]
    else:
        refs = [r for r in sampler(n_candidates, np.random.default_rng(seed)) if r != secret]
    lps = log_perplexities(model, vocab, prefix, [secret] + refs + list(extra), batch=batch).numpy()
    secret_lp, ref, extra_lps = float(lps[0]), lps[1:1 + len(refs)], lps[1 + len(refs):]
    if exact and len(ref) + 1 != round(2.0 ** bits):
        raise ValueError(f"enumerated {len(ref) + 1} candidates (with the secret) but space_bits "
                         f"says {2.0 ** bits:.0f}: is the secret of the sampler's format?")
    interpolated = rank_exposure(secret_lp, ref, bits)
    fit = None if exact else fit_skewnormal(ref)
    value = interpolated if exact else extrapolated_exposure(secret_lp, ref, bits, fit)
    return ExposureReport(exposure=value, method="exact" if exact else "extrapolation", space_bits=bits,
                          secret_lp=secret_lp, reference_mean=float(ref.mean()),
                          reference_std=float(ref.std()), interpolated=interpolated,
                          n_references=len(ref), reference_lps=tuple(float(x) for x in ref), fit=fit,
                          extra_lps=tuple(float(x) for x in extra_lps))
