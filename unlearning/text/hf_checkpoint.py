"""A Hugging Face checkpoint directory (`save_pretrained` files) as unlearnflow accepts it: the checks
that refuse, in one line and before anything is written, what is not a local causal-LM checkpoint
with a tokenizer (custom code, truncated weights, ...); its identity (a hash over its files), which a
fine-tuned bundle records of its base so that the exact reference re-fine-tunes that very base; and
a tiny randomly initialised GPT-2 with a BPE tokenizer, built without a download, for tests,
benchmarks and demos.

Split from unlearning.text.hf (which loads, wraps and saves checkpoints); like it, this module
imports `transformers` and `tokenizers` inside functions only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from unlearning.errors import UnlearnError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def check_checkpoint(path) -> None:
    """Raise the one-line UnlearnError if `path` is not a local causal-LM checkpoint with a tokenizer."""
    p = Path(path)
    fix = "pass a directory written by save_pretrained (config.json, weights and tokenizer files)"
    if not p.exists():
        raise UnlearnError(f"checkpoint {p} does not exist: {fix}")
    if not p.is_dir():
        raise UnlearnError(f"checkpoint {p} is not a directory: {fix}")
    if not (p / "config.json").is_file():
        raise UnlearnError(f"{p} is not a Hugging Face checkpoint (no config.json): {fix}")
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested in arrays
        raise UnlearnError(f"{p}/config.json is not valid JSON ({exc.__class__.__name__}): {fix}") from None
    if not isinstance(config, dict):
        raise UnlearnError(f"{p}/config.json is not a model configuration: {fix}")
    if not _is_causal_lm(config):
        kind = ", ".join(config.get("architectures") or []) or config.get("model_type") or "unknown"
        raise UnlearnError(f"{p} is not a causal language model ({kind}): pass a checkpoint of a "
                           f"*ForCausalLM / *LMHeadModel (e.g. GPT-2, Llama, Qwen)")
    check_no_custom_code(p, config)
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise UnlearnError(f"{p} has no model weights (model.safetensors or pytorch_model.bin): {fix}")
    check_weights_readable(p, fix)
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise UnlearnError(f"{p} has no tokenizer (tokenizer.json): save the tokenizer into the checkpoint "
                           f"too (tokenizer.save_pretrained(DIR))")


def check_no_custom_code(p: Path, config: dict) -> None:
    """A checkpoint of an architecture transformers does not ship loads only by importing the Python
    files it carries (config.json's auto_map): a checkpoint is data, and its code is never run, so it
    is refused here in one line. transformers would otherwise ask on a terminal whether to run it
    (and run it on a "y"). An auto_map beside a model type transformers knows is harmless: the
    shipped class is used (every load passes trust_remote_code=False)."""
    if not config.get("auto_map"):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = str(config.get("model_type") or "none")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UnlearnError(f"{p} loads only by running the Python code it carries (auto_map in config.json, "
                           f"model type {model_type[:40]!r}): unlearnflow never runs a checkpoint's code; save the "
                           f"model as an architecture transformers ships (e.g. GPT-2, Llama, Qwen)")


def check_weights_readable(p: Path, fix: str) -> None:
    """A safetensors file whose header or tensors end early (a copy cut short) is refused here, before
    anything is written, not by a traceback after the run was recorded: its header names every
    tensor's byte range, which must lie within the file."""
    path = p / "model.safetensors"
    if not path.is_file():
        return
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length)) if 8 + length <= size else None
        ends = [int(t["data_offsets"][1]) for k, t in (header or {}).items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        header, ends = None, []
    if header is None or 8 + length + max(ends, default=0) > size:
        raise UnlearnError(f"{path} is truncated or not a safetensors file ({size} bytes): {fix}")


def _is_causal_lm(config: dict) -> bool:
    architectures = config.get("architectures") or []
    if architectures:
        return any(str(a).endswith(CAUSAL_SUFFIXES) for a in architectures)
    model_type = config.get("model_type")
    if not model_type:
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def checkpoint_identity(path) -> dict:
    """{"path": the resolved directory, "sha256": a hash over every file's relative path and bytes}.
    Hidden files and our own lm.json are left out: the identity is the checkpoint's, not a bundle's."""
    root = Path(path).resolve()
    h = hashlib.sha256()
    for f in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "lm.json":
            continue
        h.update(f"\0{rel}\0".encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return {"path": str(root), "sha256": h.hexdigest()}


def check_base(base: dict) -> Path:
    """The base checkpoint a bundle was fine-tuned from, as it was: refuse one that is gone or changed."""
    path = Path(base["path"])
    if not path.is_dir():
        raise UnlearnError(f"the base checkpoint {path} this model was fine-tuned from is gone: restore it "
                           f"there (the exact reference re-fine-tunes it on D')")
    now = checkpoint_identity(path)["sha256"]
    if now != base["sha256"]:
        raise UnlearnError(f"the base checkpoint {path} changed since this model was fine-tuned from it "
                           f"(sha256 {now[:12]}… ≠ {base['sha256'][:12]}…): restore the original files")
    return path


# --- a tiny checkpoint for tests, benchmarks and demos (no download) ----------------------------

def build_tiny_checkpoint(texts: list[str], directory, *, vocab_size: int = 512, n_layer: int = 2,
                          n_embd: int = 64, n_head: int = 2, n_positions: int = 128, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer trained on `texts` (digits kept single) and a randomly initialised
    GPT-2 of the given size (dropout off), saved with save_pretrained into `directory`; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    # Digits one by one (as Llama's tokenizer): a number repeated in `texts` (a secret) must not
    # become a token of its own, or every same-format candidate would be scored in more tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=eos, unk_token=eos)
    eos_id = tok.token_to_id(eos)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=eos_id, eos_token_id=eos_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
