"""Hugging Face causal language models in the text kind (issue 15): the checks of a checkpoint
before anything is written, fine-tuning (`train --from-pretrained`) and importing (`model import`),
the lineage a version of such a model carries (base checkpoint, import, LoRA, the tokenizer's
secret pieces) and whether it can be retrained. The text kind (tasks.kinds.text) calls these;
the library side is unlearning.text.hf (and its hf_* neighbours), which import transformers inside
functions only."""

from __future__ import annotations

import math
import time
from pathlib import Path


from tasks import scan, tracking
from tasks.common import NOT_RETRAINABLE, Lineage, progress, step, whole_number_option
from unlearning.devices import resolve_device
from unlearning.errors import UnlearnError
from unlearning.text import hf, hf_checkpoint, hf_finetune, hf_tokens, lm
from unlearning.text.data import TextCorpus, redact

HF_DEFAULT_STEPS = 200  # fine-tuning steps of `train --from-pretrained` without --steps


def check_pretrained(checkpoint: str, lora: bool = False, corpus: TextCorpus | None = None,
                     seq_len: int | None = None) -> None:
    """A checkpoint `train --from-pretrained` or `model import` can load, and `corpus` long enough in
    its tokens, before anything is written: one line naming what is missing and how to fix it
    (unlearning.text.hf)."""
    if lora:  # the missing extra first, as load_pretrained does
        hf.require_peft()
    hf_checkpoint.check_checkpoint(checkpoint)
    if corpus is not None:
        hf_finetune.check_windows_fit(checkpoint, corpus, seq_len or hf.DEFAULT_SEQ_LEN)


def check_base_is_not_the_model(checkpoint: str, base: str) -> None:
    """`model import --base` naming the checkpoint itself (or a copy of it): a model fine-tuned
    --steps > 0 steps at a positive rate from a base differs from it, so the declared fine-tune never
    happened, and the model's "exact reference" (the base fine-tuned again on D′) would be a model it
    never was. Files are hashed only when their names and sizes all agree."""
    def files(root: str) -> set[tuple[str, int]]:  # what checkpoint_identity hashes (no hidden files, lm.json)
        top = Path(root)
        named = ((q.relative_to(top).as_posix(), q) for q in top.rglob("*") if q.is_file())
        return {(rel, q.stat().st_size) for rel, q in named
                if not (rel.startswith(".") or "/." in rel or rel == "lm.json")}

    if Path(checkpoint).resolve() == Path(base).resolve() or (
            files(checkpoint) == files(base)
            and hf_checkpoint.checkpoint_identity(checkpoint)["sha256"]
            == hf_checkpoint.checkpoint_identity(base)["sha256"]):
        raise UnlearnError(f"--base {base} holds the same files as the model imported from {checkpoint}: a model "
                           f"fine-tuned from its base differs from it; give the base checkpoint it was fine-tuned "
                           f"from, or leave out --base and the schedule (the model is then verified by evidence)")


# The fine-tuning schedule of an imported model: what its retraining replays (hf_finetune.refine_tune).
SCHEDULE = {"steps": "--steps N", "lr": "--lr RATE", "batch": "--batch N", "seq_len": "--seq-len N"}


def declared_schedule(base: str | None, steps=None, lr=None, batch=None, seq_len=None) -> dict:
    """The schedule `model import` records, as the user declares it. With a base checkpoint all of
    it is required: retraining fine-tunes the base again with it, and only the same fine-tune on D′
    is the exact reference of the model; without a base nothing retrains the model and only the
    window length (what every check reads) may be given. UnlearnError (one line) otherwise."""
    given = {"steps": steps, "lr": lr, "batch": batch, "seq_len": seq_len}
    if base is None:
        stray = [SCHEDULE[k].split()[0] for k in ("steps", "lr", "batch") if given[k] is not None]
        if stray:
            raise UnlearnError(f"{', '.join(stray)} describe how the model was fine-tuned from its base: give "
                               f"that checkpoint with --base DIR too, or leave {'it' if len(stray) == 1 else 'them'} out")
    else:
        missing = [flag for k, flag in SCHEDULE.items() if given[k] is None]
        if missing:
            raise UnlearnError(f"--base needs the schedule the model was fine-tuned with, which retraining replays "
                               f"to make its exact reference: add {' '.join(missing)}")
    for name in ("steps", "batch", "seq_len"):
        if given[name] is not None:
            whole_number_option(given[name], SCHEDULE[name].split()[0])
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UnlearnError(f"--lr must be a positive Adam rate (e.g. 5e-05), got {lr!r}")
    return {k: v for k, v in given.items() if v is not None}


def load_base(cfg):
    """The checkpoint `--from-pretrained` names, as a bundle to fine-tune (with LoRA adapters if asked)."""
    return hf.load_pretrained(cfg.from_pretrained, lora=cfg.lora, seed=cfg.seed)


def fine_tune_pretrained(corpus: TextCorpus, cfg, on_step=None, base=None):
    """Fine-tune `base` (load_base(cfg), loaded now when not given) on the corpus."""
    progress(f"  fit: fine-tuning {cfg.from_pretrained}" + (" (LoRA adapters)" if cfg.lora else ""))
    bundle = base if base is not None else load_base(cfg)
    bundle.model.to(resolve_device(cfg.device))
    return hf_finetune.fine_tune(bundle, corpus, steps=cfg.steps or HF_DEFAULT_STEPS, seed=cfg.seed, progress=on_step,
                        precision=cfg.precision)


@step("import language model")
def import_lm(lineage: Lineage, loaded: tuple):
    """`loaded` (load_import's), its lineage logged as the child run `import`."""
    with lineage.child("import") as run_id:
        tracking.log_params(run_id, lineage_params(loaded[0]))
    return loaded


def load_import(checkpoint: str, base: str | None, schedule: dict, seed: int = 0):
    """(the bundle, seconds to load it), loaded before any run is recorded. Its settings name the
    checkpoint it is (`imported`) and the one it was fine-tuned from (`base`, None when not declared:
    nothing can retrain it then) with the schedule retraining replays (declared_schedule)."""
    started = time.perf_counter()
    bundle = hf.load_pretrained(checkpoint, seed=seed, **{k: v for k, v in schedule.items() if k != "steps"})
    bundle.settings.update(imported=hf_checkpoint.checkpoint_identity(checkpoint),
                           base=hf_checkpoint.checkpoint_identity(base) if base else None,
                           steps=schedule.get("steps", HF_DEFAULT_STEPS), seconds=0.0,
                           schedule="declared" if base else "none")
    return bundle, time.perf_counter() - started


def secret_tokens(bundle, corpus: TextCorpus, findings: list[dict]) -> tuple[int, int]:
    """(tokens, secrets): the tokenizer's multi-character tokens that hold a character of a secret
    found in the corpus — as the corpus tokenizes (a secret after a space can be one learnt token
    " value", which the value tokenized alone never shows) or as the value alone tokenizes — and
    that occur nowhere in the corpus with the secrets redacted: pieces a tokenizer trained on this
    corpus may have learned from the secrets. Unlearning changes the weights, never the tokenizer,
    so such a piece stays in every logged version. Counts only: the pieces are never returned."""
    if not lm.is_hf(bundle) or not findings:
        return 0, 0
    occurrences = lm.occurrences_of(findings)
    clean = redact(corpus, occurrences)
    elsewhere = set(bundle.vocab.encode("\n".join(text for _, text in clean.records)).tolist())
    texts = dict(corpus.records)
    touched: dict[str, set[int]] = {}  # secret fingerprint → token ids holding one of its characters
    for record in sorted({o.record for o in occurrences}):
        ids, offsets = bundle.vocab.encode_with_offsets(texts[record])
        for o in (o for o in occurrences if o.record == record):
            touched.setdefault(o.secret_id, set()).update(ids[hf_tokens.token_spans(offsets, [(o.start, o.end)])].tolist())
    for secret in lm.secrets_of(corpus, findings):  # raw values: in memory only
        touched.setdefault(secret.fingerprint, set()).update(bundle.vocab.encode(secret.value).tolist())
    owned = {fingerprint: {i for i in ids if i not in elsewhere and len(bundle.vocab.decode([i]).strip()) >= 2}
             for fingerprint, ids in touched.items()}
    return len(set().union(*owned.values())), sum(bool(ids) for ids in owned.values())


def warn_secret_tokens(root: Path, model: str, corpus: TextCorpus, bundle) -> dict:
    """A warning (stderr) and a version tag when the tokenizer holds pieces of the corpus's findings."""
    if not lm.is_hf(bundle):
        return {}
    tokens, holders = secret_tokens(bundle, corpus, scan.scan_corpus(corpus, scan.project_salt(root)))
    if tokens:
        progress(f"warning: the tokenizer of model {model} has {tokens} token(s) that occur in dataset "
                 f"'{corpus.name}' only inside {holders} secret(s) it holds: it may have been trained on them, and "
                 f"unlearning leaves the tokenizer as it is, so they stay in every version logged to MLflow; use "
                 f"a tokenizer trained without them (e.g. the base model's own)")
    return {"tokenizer_secret_tokens": tokens}


def retrainable(bundle) -> bool:
    """Whether the model can be retrained on corrected data: a char LM always; a Hugging Face model
    when the checkpoint it was fine-tuned from is known (an import may not declare it)."""
    return not lm.is_hf(bundle) or bool(bundle.settings.get("base"))


def require_retrainable(bundle, model: str, what: str) -> None:
    if not retrainable(bundle):
        raise UnlearnError(f"model {model} was imported without the checkpoint it was fine-tuned from, so {what} "
                           f"cannot retrain it: import it again with `unlearn model import {model} --from-pretrained "
                           f"DIR --dataset D --base BASE_DIR`, or use a method that does not retrain")


def pretrained_tags(bundle) -> dict:
    """The model version's tags of a Hugging Face model: its lineage and whether it is LoRA-tuned."""
    if not lm.is_hf(bundle):
        return {}
    tags = {**lineage_params(bundle), "lora": str(bool(bundle.settings.get("lora"))).lower()}
    if not retrainable(bundle):
        tags[NOT_RETRAINABLE[0]] = NOT_RETRAINABLE[1]  # what the audit reads (tasks.audit.retrainable)
    elif bundle.settings.get("imported"):
        # The schedule an import's retraining replays, as declared (declared_schedule). A version
        # imported before the schedule was required declared its steps at most: its rate, batch and
        # window length were this pipeline's defaults, and the tag says so.
        s = bundle.settings
        schedule = f"steps {s['steps']}, lr {s['lr']:g}, batch {s['batch']}, seq_len {s['seq_len']}"
        tags["reference_schedule"] = f"{'declared' if s.get('schedule') == 'declared' else 'assumed'} {schedule}"
    return tags


def lineage_params(bundle) -> dict:
    """The base checkpoint a Hugging Face model was fine-tuned from (path and content hash), as the
    params and version tags of its lineage; nothing for the char LM."""
    if not lm.is_hf(bundle):
        return {}
    base = bundle.settings.get("base") or {}
    found = {"base_checkpoint": base.get("path"), "base_checkpoint_sha256": base.get("sha256")}
    imported = bundle.settings.get("imported")
    if imported:
        found.update(imported_checkpoint=imported["path"], imported_checkpoint_sha256=imported["sha256"])
    return {k: v for k, v in found.items() if v is not None}
