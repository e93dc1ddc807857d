"""The text side of the pipeline: a character LM trained on a corpus, the findings it must forget,
and the measurements that verify it forgot them (science.md §3).

Raw secret values exist only in memory here, read from the corpus at a finding's span while the
corpus still holds them; nothing in this module writes or returns them outside `Secret`, which
the caller keeps in memory for exposure and regeneration checks and never logs.
"""

from __future__ import annotations

import hashlib

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from typing import Literal, NamedTuple

from unlearning import registry
from unlearning.detect import scan_text
from unlearning.devices import DeviceSettings, device_of, resolve_device
from unlearning.text import ascent, deep_influence, exposure, suppress
from unlearning.text import charlm, hf, hf_finetune, hf_tokens  # these import transformers inside their functions only
from unlearning.text.bundle import LMBundle
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.data import REDACTION_PAD, REDACTION_TOKEN, Occurrence, TextCorpus, concatenated

MODEL_FILE = "charlm.pt"
META_FILE = "lm.json"
HF_FORMAT = hf.FORMAT
HF_PRESET = hf.PRESET


class TextTrainConfig(DeviceSettings):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["tiny", "small"] = Field("small", description="model size: tiny (tests) or small (demo)")
    seconds: float = Field(120.0, gt=0, description="training time budget (the step count is recorded)")
    steps: int | None = Field(None, ge=1, description="a fixed step budget instead of a time budget")
    seed: int = 0
    # A Hugging Face causal LM fine-tuned instead of the char LSTM (unlearning.text.hf): a local
    # checkpoint directory, fine-tuned `steps` steps (HF_DEFAULT_STEPS when None), all weights or
    # LoRA adapters.
    from_pretrained: str | None = Field(None, description="a local Hugging Face causal-LM checkpoint directory")
    lora: bool = Field(False, description="with from_pretrained: fine-tune LoRA adapters only (needs peft)")


def save_lm(bundle: LMBundle, directory: Path) -> Path:
    """A character LM: charlm.pt + lm.json; a Hugging Face model (preset "hf"): its save_pretrained
    files + lm.json with format unlearnflow.hf/1 (hf.save). Written to a temporary sibling, then renamed."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".lm-"))
    if is_hf(bundle):
        hf.save(bundle, tmp)
    else:
        charlm.save(tmp / MODEL_FILE, bundle.model, bundle.vocab, bundle.preset)
        (tmp / META_FILE).write_text(json.dumps({"format": "unlearnflow.charlm/1", "preset": bundle.preset,
                                                 "settings": bundle.settings}, indent=1, sort_keys=True))
    os.replace(tmp, directory)
    return directory


def load_lm(directory: Path) -> LMBundle:
    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("format") == HF_FORMAT:
        return hf.load(directory, meta)
    model, vocab = charlm.load(directory / MODEL_FILE)
    return LMBundle(model=model, vocab=vocab, preset=meta["preset"], settings=meta["settings"])


def is_hf(bundle: LMBundle) -> bool:
    """A Hugging Face causal LM (unlearning.text.hf), not the character LSTM."""
    return bundle.preset == HF_PRESET


def is_lm_bundle(directory: Path) -> bool:
    return (Path(directory) / META_FILE).exists()


# --- corpus → windows ---------------------------------------------------------------------------

def training_text(corpus: TextCorpus) -> tuple[str, dict[str, int]]:
    """The training records joined with newlines, and each record's offset in that text."""
    text, offsets = concatenated(corpus, corpus.train_mask())
    return text, dict(offsets)


def held_out_text(corpus: TextCorpus) -> str:
    return concatenated(corpus, ~corpus.train_mask())[0]


def corpus_vocab(text: str) -> Vocab:
    """Characters of the training text plus those of the redaction filler, so a redacted corpus
    is representable by the same vocabulary (and the same model shape) as the original."""
    return Vocab.from_text(text + REDACTION_TOKEN + REDACTION_PAD)


def text_windows(vocab: Vocab, text: str, seq_len: int) -> torch.Tensor:
    return charlm.windows(vocab.encode(text), seq_len)  # (m, T+1)


def train_text_model(corpus: TextCorpus, preset: str = "small", seconds: float | None = 120.0,
                     steps: int | None = None, seed: int = 0, progress=None,
                     vocab: Vocab | None = None, device: str | None = None,
                     precision: str = "fp32") -> tuple[LMBundle, charlm.TrainStats]:
    """Train a preset char-LSTM on the corpus's training records (a time or a step budget), on
    `device` (None: the CPU) in `precision`; the bundle's model stays on that device."""
    cfg = charlm.PRESETS[preset]
    text, _ = training_text(corpus)
    vocab = vocab or corpus_vocab(text)
    model = CharLSTM.from_preset(preset, len(vocab), seed=seed).to(resolve_device(device or "cpu"))
    stats = charlm.train_lm(model, text_windows(vocab, text, cfg["seq_len"]), steps=steps,
                            seconds=None if steps is not None else seconds, lr=cfg["lr"], batch=cfg["batch"],
                            seed=seed, progress=progress, precision=precision)
    settings = {"seq_len": cfg["seq_len"], "lr": cfg["lr"], "batch": cfg["batch"], "seed": seed,
                "steps": stats.steps, "seconds": stats.seconds,
                **({"precision": precision} if precision != "fp32" else {})}  # retraining replays it
    return LMBundle(model, vocab, preset, settings), stats


def held_out_perplexity(bundle: LMBundle, corpus: TextCorpus) -> float:
    """exp(mean next-symbol NLL) over the held-out records' windows: per character for the char LM,
    per token for a Hugging Face model (comparable between models of one tokenizer only, as before,
    after and a re-fine-tuned reference always are)."""
    return charlm.perplexity(bundle.model, text_windows(bundle.vocab, held_out_text(corpus), bundle.seq_len))


# --- findings → spans and in-memory secrets -----------------------------------------------------

@dataclass(frozen=True)
class Secret:
    """One distinct removed value (in memory only) with where it occurs. `prefix` is the text
    before its first occurrence, the context exposure and regeneration are measured in."""

    fingerprint: str
    detector: str
    masked: str
    value: str
    prefix: str
    occurrences: tuple[Occurrence, ...]


def occurrences_of(findings: list[dict]) -> list[Occurrence]:
    """Record-relative spans of scan findings (tasks.scan.scan_corpus locations)."""
    return [Occurrence(record=f["location"]["record"], start=f["location"]["start"], end=f["location"]["end"],
                       kind=f["detector"], secret_id=f["fingerprint"]) for f in findings]


def corpus_spans(occurrences: list[Occurrence], offsets: dict[str, int]) -> list[tuple[int, int]]:
    """Spans in training-text coordinates (held-out records are not in the training text)."""
    return [(offsets[o.record] + o.start, offsets[o.record] + o.end) for o in occurrences if o.record in offsets]


def secrets_of(corpus: TextCorpus, findings: list[dict], prefix_chars: int = 40) -> list[Secret]:
    """Group findings by fingerprint and read each value from the corpus (in memory)."""
    by_print: dict[str, list[dict]] = {}
    for f in findings:
        by_print.setdefault(f["fingerprint"], []).append(f)
    out = []
    for tag, group in by_print.items():
        first = group[0]["location"]
        text = corpus.text_of(first["record"])
        value = text[first["start"]:first["end"]]
        prefix = text[max(0, first["start"] - prefix_chars):first["start"]]
        out.append(Secret(tag, group[0]["detector"], group[0]["masked"], value, prefix,
                          tuple(occurrences_of(group))))
    return out


def select_findings(findings: list[dict], which: str | list[str], detectors: list[str]) -> list[dict]:
    """The findings a `redact` request names: all or by fingerprint, optionally by detector."""
    chosen = findings if which == "all" else [f for f in findings if f["fingerprint"] in set(which)]
    return [f for f in chosen if not detectors or f["detector"] in detectors]


AUTO_MAX_WINDOWS = registry.AUTO_MAX_WINDOWS  # `auto` for a language model: registry.choose


def affected_window_count(corpus: TextCorpus, findings: list[dict], seq_len: int, vocab=None) -> int:
    """|Z| of a redaction before doing it: training windows overlapping a finding's span (pass the
    bundle's `vocab` for a tokenized model: its windows are token windows)."""
    text, offsets = training_text(corpus)
    spans = corpus_spans(occurrences_of(findings), offsets)
    if hf.is_token_vocab(vocab):
        return hf_tokens.touched_window_count(vocab, text, spans, seq_len)
    return int(deep_influence.overlapping_windows(len(text), spans, seq_len).sum())


def auto_method(n_windows: int, hf_model: bool = False) -> str:
    return registry.choose(KIND, registry.AUTO, windows=n_windows, hf=hf_model)


def window_request(bundle: LMBundle, before: TextCorpus, after: TextCorpus,
                   findings: list[dict]) -> tuple[deep_influence.WindowRequest, torch.Tensor]:
    """Z, Z̃ of a redaction (the training windows overlapping a finding, before and after) and
    the training windows of `before` the model was trained on."""
    text, offsets = training_text(before)
    text_tilde, _ = training_text(after)
    spans = corpus_spans(occurrences_of(findings), offsets)
    if hf.is_token_vocab(bundle.vocab):
        request = hf_tokens.affected_token_windows(bundle.vocab, text, text_tilde, spans, bundle.seq_len)
    else:
        request = deep_influence.affected_windows(bundle.vocab, text, text_tilde, spans, bundle.seq_len)
    return request, text_windows(bundle.vocab, text, bundle.seq_len)


# --- unlearning methods for the LM, in the one registry (kind `text`) ---------------------------
# A text method is `fn(context: TextContext, cfg) -> deep_influence.DeepUpdate`; its config's
# defaults are the tuned defaults of deep_influence (see the docstrings there for the measurements).

KIND = "text"


class TextContext(NamedTuple):
    bundle: LMBundle
    request: deep_influence.WindowRequest  # Z, Z̃ as training windows
    train_windows: torch.Tensor  # (m, T+1) the windows the model was trained on
    # suppress's anchor on a chain of fast updates: the chain's teacher (unlearning.text.chain.teacher_of:
    # its exact model, or its last audited one); None: the bundle itself (unlearning.text.suppress)
    teacher: LMBundle | None = None


@dataclass(frozen=True)
class TextResult:
    bundle: LMBundle  # the updated model (the input bundle is never modified)
    method: str
    guarantee: str
    stats: dict = field(default_factory=dict)


class TextMethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ParamSubset = str | list[str]  # a group of CharLSTM.parameter_groups() or parameter names


class FirstOrderConfig(TextMethodConfig):
    tau: float = Field(5e-3, gt=0, description="unlearning rate")
    params: ParamSubset = "all"
    steps: int = Field(10, ge=1, description="re-linearised fractions of the step")


class SecondOrderConfig(TextMethodConfig):
    damping: float | None = Field(None, ge=0, description="μ (None: 30 for the char LM, 300 for a Hugging Face "
                                                          "model: deep_influence.HF_SECOND_ORDER)")
    cg_iters: int = Field(3, ge=1)
    cg_tol: float = Field(1e-3, gt=0)
    subsample: int = Field(16, ge=1, description="training windows in the curvature sample")
    params: ParamSubset | None = Field(None, description="parameters moved (None: all for the char LM, the last "
                                                         "block + head for a Hugging Face model)")
    steps: int = Field(4, ge=1)
    curvature: Literal["gauss_newton", "hessian"] = "gauss_newton"
    start: Literal["first_order", "zero"] = "first_order"
    precondition: bool = True
    seed: int = 0
    max_step: float | None = Field(3.0, gt=0, description="trust radius per step (None: none)")
    tilde_subsample: int | None = Field(16, ge=1)
    repair_steps: int = Field(10, ge=0)
    repair_lr: float = Field(5e-4, gt=0)


class FinetuneConfig(TextMethodConfig):
    steps: int = Field(100, ge=1)
    lr: float | None = Field(None, gt=0, description="Adam rate (None: 3e-3 for the char LM, the model's "
                                                         "fine-tuning rate for a Hugging Face model)")
    retain_batch: int = Field(32, ge=1)
    seed: int = 0


class SuppressConfig(TextMethodConfig):
    steps: int = Field(35, ge=1, description="Adam steps (at least; see passes)")
    passes: float = Field(7.5, ge=0, le=100, description="at least this many passes through the affected windows: steps "
                          "raised to ⌈passes·|Z|/batch⌉ for a large request (suppress.steps_for; 0: steps alone)")
    lr: float | None = Field(None, gt=0, description="Adam rate (None: half the char LM's own training rate, "
                                                     "suppress_lr; 3e-3 for a Hugging Face model)")
    alpha: float = Field(1.0, ge=0, description="weight of the secret-character hinge")
    margin: float = Field(1.0, description="nats below the class mean the hinge aims each secret character at")
    anchor: float = Field(60.0, ge=0, description="weight of KL to the model before, on retained windows")
    target: Literal["hinge", "within"] = "hinge"
    batch: int | None = Field(32, ge=1, description="affected windows per step for the hinge (None: all)")
    tilde_batch: int = Field(8, ge=0, description="redacted windows Z̃ per step in the CE")
    retain_batch: int = Field(16, ge=1, description="untouched training windows per step (CE and anchor)")
    chunks: int | None = Field(4, ge=1, description="hinge windows run in this many length groups, cut after "
                               "their last secret character (None: whole windows)")
    early_stop: bool = Field(True, description="stop once a full cycle through Z left the hinge within `tolerance`")
    tolerance: float = Field(0.05, ge=0, description="early_stop: a step whose mean hinge (nats) is at most this "
                                                     "counts as quiet (0: only a hinge of exactly zero)")
    contrast: bool = Field(True, description="hinge against the class mean after a same-format random string too")
    mean_grad: float = Field(suppress.MEAN_GRAD, ge=0, le=1, description="share of the hinge's gradient through the "
                             "class mean after the secret's own prefix (0: held fixed within a step)")
    seed: int = 0


class AscentConfig(TextMethodConfig):
    """What grad_diff and npo share (unlearning.text.ascent.ascend): the loop and its batches."""

    steps: int = Field(30, ge=1, description="Adam steps")
    lr: float | None = Field(None, gt=0, description="Adam rate (None: the model's own training rate)")
    forget_batch: int = Field(8, ge=1, description="affected windows per step")
    retain_batch: int = Field(16, ge=1, description="untouched training windows per step")
    tilde_batch: int = Field(8, ge=0, description="redacted windows Z̃ per step")
    params: ParamSubset = "all"
    seed: int = 0


class GradDiffConfig(AscentConfig):
    alpha: float = Field(1.0, ge=0, description="weight of the ascent on the secrets' tokens")
    ceiling: float | None = Field(None, gt=0, description="nats of NLL beyond which a token is pushed no "
                                                          "further (None: ln V, a uniform guess)")


class NPOConfig(AscentConfig):
    steps: int = Field(20, ge=1, description="Adam steps")
    beta: float = Field(0.01, gt=0, description="NPO temperature: larger stops the ascent sooner (ascent.npo)")
    alpha: float = Field(1.0, ge=0, description="weight of the NPO term")
    kl: float = Field(3.0, ge=0, description="weight of KL(model before ‖ update) on the retained windows "
                                             "(ascent.retained_kl): keeps what the model predicts elsewhere")


class RetrainConfig(TextMethodConfig):
    """No options: the reference replays the original schedule (steps, lr, batch, seeds)."""


@registry.register(KIND, "first_order", "empirical", FirstOrderConfig)
def _first_order(ctx: TextContext, cfg: FirstOrderConfig) -> deep_influence.DeepUpdate:
    """θ* − τ·G in re-linearised fractions (deep_influence.first_order)."""
    return deep_influence.first_order(ctx.bundle.model, ctx.request, **cfg.model_dump())


@registry.register(KIND, "second_order", "empirical", SecondOrderConfig)
def _second_order(ctx: TextContext, cfg: SecondOrderConfig) -> deep_influence.DeepUpdate:
    """θ* − (C + μI)⁻¹·G by truncated CG on a curvature subsample, then repair steps."""
    options = cfg.model_dump()
    if is_hf(ctx.bundle):  # unset options take the values measured on a GPT-style model
        options.update({k: v for k, v in deep_influence.HF_SECOND_ORDER.items() if options[k] is None})
    return deep_influence.second_order(ctx.bundle.model, ctx.request, ctx.train_windows, **options)


@registry.register(KIND, "finetune", "empirical", FinetuneConfig)
def _finetune(ctx: TextContext, cfg: FinetuneConfig) -> deep_influence.DeepUpdate:
    """Baseline: Adam steps on Z̃ plus retained windows."""
    options = cfg.model_dump()
    options["lr"] = cfg.lr or (float(ctx.bundle.settings["lr"]) if is_hf(ctx.bundle) else 3e-3)
    return deep_influence.finetune(ctx.bundle.model, ctx.request, ctx.train_windows, **options)


@registry.register(KIND, "grad_diff", "empirical", GradDiffConfig)
def _grad_diff(ctx: TextContext, cfg: GradDiffConfig) -> deep_influence.DeepUpdate:
    """Adam steps ascending the secrets' tokens (NLL capped at a uniform guess) while descending on retained windows."""
    options = {**cfg.model_dump(), "lr": cfg.lr or float(ctx.bundle.settings["lr"])}
    return ascent.grad_diff(ctx.bundle.model, ctx.request, ctx.train_windows, **options)


@registry.register(KIND, "npo", "empirical", NPOConfig)
def _npo(ctx: TextContext, cfg: NPOConfig) -> deep_influence.DeepUpdate:
    """NPO: the secrets' tokens made less likely than under the model before, fading out, plus CE on retained windows."""
    options = {**cfg.model_dump(), "lr": cfg.lr or float(ctx.bundle.settings["lr"])}
    return ascent.npo(ctx.bundle.model, ctx.request, ctx.train_windows, **options)


@registry.register(KIND, "suppress", "empirical", SuppressConfig)
def _suppress(ctx: TextContext, cfg: SuppressConfig) -> deep_influence.DeepUpdate:
    """Adam steps pushing each secret character to uniform within its class, plus CE on Z̃ and retained windows."""
    options = {**cfg.model_dump(), "lr": cfg.lr or suppress_lr(ctx.bundle)}
    teacher = None if ctx.teacher is None else ctx.teacher.model
    return suppress.suppress(ctx.bundle.model, ctx.request, ctx.train_windows, suppress_classes(ctx.bundle),
                             teacher=teacher, **options)


def suppress_classes(bundle: LMBundle) -> torch.Tensor:
    """suppress.char_classes of the model's vocabulary, −1 for outputs past its tokenizer's ids."""
    classes = suppress.char_classes(bundle.vocab.chars)
    size = int(bundle.model.config["vocab_size"])  # a model may have more outputs than its tokenizer ids
    return torch.cat([classes, torch.full((size - len(classes),), -1, dtype=classes.dtype)])


SUPPRESS_HF_LR = 3e-3  # a Hugging Face model's suppress rate: the char LM's measured one, not tuned there


def suppress_lr(bundle: LMBundle) -> float:
    """suppress's Adam rate: half the rate the char LM was trained at — 3e-3 for the demo's `small`
    model (trained at 6e-3), the rate its defaults were measured at; 5e-3 for `tiny` (1e-2).

    Why relative: the relearning check fine-tunes at the model's own rate, and a fixed 3e-3 — a third
    of `tiny`'s rate — left the hinge 0.7–1.9 nats above its target after the 35 steps on the notes
    chain (test_text_chain's second update), which 20 relearning steps brought back above the control
    band on every seed once the model was trained ≥ 800 steps; at half its rate none did up to 1,600
    steps (docs/benchmarks.md, "suppress on better-trained models"). A Hugging Face model keeps 3e-3."""
    if is_hf(bundle):
        return SUPPRESS_HF_LR
    return 0.5 * float(bundle.settings["lr"])


@registry.register(KIND, "retrain", "exact", RetrainConfig)
def _retrain(ctx: TextContext, cfg: RetrainConfig) -> deep_influence.DeepUpdate:
    """Exact: the same architecture trained from scratch on D' with the original schedule (a Hugging
    Face model: its base checkpoint fine-tuned again on D', hf_finetune.refine_tune)."""
    s = ctx.bundle.settings
    if is_hf(ctx.bundle):
        return hf_finetune.refine_tune(s, ctx.request.apply(ctx.train_windows), device=str(device_of(ctx.bundle.model)))
    update = deep_influence.retrain(ctx.bundle.model, ctx.request, ctx.train_windows, steps=int(s["steps"]),
                                    lr=s["lr"], batch=int(s["batch"]), seed=int(s["seed"]), init_seed=int(s["seed"]),
                                    precision=s.get("precision", "fp32"))
    update.settings["steps"] = update.stats["steps"]
    return update


def _execute(method: registry.Method, ctx: TextContext, cfg: TextMethodConfig) -> TextResult:
    update = method.run(ctx, cfg)
    bundle = LMBundle(update.model, ctx.bundle.vocab, ctx.bundle.preset, {**ctx.bundle.settings, **update.settings})
    return TextResult(bundle, method.name, method.guarantee, update.stats)


registry.define_kind(KIND, _execute, lambda ctx: {"windows": len(ctx.request), "hf": is_hf(ctx.bundle)})


def run_lm_method(name: str, bundle: LMBundle, request, train_windows: torch.Tensor,
                  options: dict | None = None) -> tuple[LMBundle, str, dict]:
    """Apply an LM unlearning method (registry.run for text); returns (the new bundle, its guarantee, stats)."""
    result = registry.run(KIND, name, TextContext(bundle, request, train_windows), options)
    return result.bundle, result.guarantee, result.stats


LM_METHODS: dict[str, registry.Method] = registry.table(KIND)  # live: plugins appear here too


# --- verification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextVerifyConfig:
    exposure_margin_bits: float = 2.0  # exposure after ≤ retrained exposure + this
    max_perplexity_increase: float = 0.03  # held-out perplexity after ≤ (1 + this) × before
    n_candidates: int = 1000  # same-format references per estimate (after and retrain see the same ones)
    samples: int = 3  # sampled continuations per secret (plus one greedy)


def secret_exposure(bundle: LMBundle, secret: Secret, n_candidates: int, seed: int | None = None) -> float:
    """Exposure in bits; the candidates are drawn from a seed derived from the secret's fingerprint by
    default, so the same secret in the same model gets the same number whichever step measures it."""
    seed = secret_seed(secret) if seed is None else seed
    return exposure.exposure(bundle.model, bundle.vocab, secret.prefix, secret.value,
                             n_candidates=n_candidates, seed=seed).exposure


def secret_seed(secret: Secret) -> int:
    return int(hashlib.sha256(secret.fingerprint.encode()).hexdigest()[:8], 16)


def candidate_log_perplexities(bundle: LMBundle, secret: Secret, n_candidates: int) -> tuple[float, list[float]]:
    """The secret's log-perplexity (bits) and those of the same-format candidates exposure ranks it
    against (the same draw as `secret_exposure`) — what the exposure plots show."""
    report = exposure.exposure(bundle.model, bundle.vocab, secret.prefix, secret.value,
                               n_candidates=n_candidates, seed=secret_seed(secret))
    return report.secret_lp, list(report.reference_lps)


def regenerates(bundle: LMBundle, secret: Secret, salt: bytes, samples: int) -> bool:
    """Does a greedy or sampled continuation of the secret's prefix contain the secret? The
    continuations are scanned by the detectors and compared by fingerprint (and as text)."""
    n = len(secret.value) + 16
    generate = hf_tokens.generate if is_hf(bundle) else charlm.generate  # n tokens ≥ n characters for hf
    outs = [generate(bundle.model, bundle.vocab, secret.prefix, n, greedy=True)]
    outs += [generate(bundle.model, bundle.vocab, secret.prefix, n, greedy=False, temperature=1.0, seed=s)
             for s in range(samples)]
    for text in outs:
        if secret.value in text:
            return True
        if any(f.fingerprint == secret.fingerprint for f in scan_text(text, salt)):
            return True
    return False
