"""Hugging Face causal language models as text models of the pipeline (issue 15).

A checkpoint directory (`save_pretrained` files: config.json, weights, tokenizer) is loaded with
`AutoModelForCausalLM` and wrapped so that the rest of the text stack sees what it sees of the
character LSTM (charlm.CharLSTM):

- `HFCausalLM(model)`: forward(x, state=None) → (logits (B, T, V), state), `state` the model's KV
  cache; a JSON-able `config` dict; `parameter_groups()` ("all", "last" = last block + head, "head"
  = final norm + output embedding, and with LoRA "lora" = the adapters, where "all" = the adapters
  too: the base weights stay frozen and bit-for-bit those of the base checkpoint);
- `TokenizerVocab(tokenizer)`: encode(str) → (n,) LongTensor of token ids, decode(ids) → str,
  __len__, and `encode_with_offsets` (the character span of every token), which maps a secret's
  character span to the token windows that hold it.

Windows are windows of token ids (charlm.windows over the tokenized training text) and the loss is
the summed next-token cross-entropy, so charlm.train_lm, charlm.window_loss, deep_influence and the
registry's methods run unchanged. Held-out perplexity of such a model is per *token*
(exp of the mean next-token NLL), comparable only between models of the same tokenizer — which
before, after and the re-fine-tuned reference always share.

The exact reference of a fine-tuned model is the BASE checkpoint fine-tuned again on D′ with the
same schedule (`hf_finetune.refine_tune`), so a bundle records the base checkpoint's path and content
hash in `settings["base"]`; a base that moved or changed is refused, never silently replaced.

This module loads, wraps and saves; its neighbours: hf_checkpoint.py (the checks of a checkpoint
directory, its identity, the tiny test checkpoint), hf_finetune.py (fine-tuning and the exact
reference) and hf_tokens.py (token windows of a redaction, scoring, generation).

Attention runs in the "eager" implementation: PyTorch's fused CPU attention kernel has no double
backward, which every Hessian-vector product needs. `transformers` is imported inside functions
only (~4 s): importing this module costs nothing, and a char LM or a table never pays for it.

No network, ever: every load passes `local_files_only=True`; and no code of the checkpoint's:
every load passes `trust_remote_code=False`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from unlearning.errors import UnlearnError
from unlearning.text.bundle import LMBundle
from unlearning.text.hf_checkpoint import check_checkpoint, checkpoint_identity

FORMAT = "unlearnflow.hf/1"
PRESET = "hf"
ADAPTER_DIR = "adapter"  # a LoRA bundle: base weights in the bundle directory, adapters here
LORA_HINT = "pip install peft (or `pip install unlearnflow[lora]`)"
LORA_DEFAULTS = dict(r=8, lora_alpha=16, lora_dropout=0.0)
DEFAULT_SEQ_LEN = 64  # tokens per training window unless a schedule says otherwise
SMALL_MODEL = 20_000_000  # parameters: below it (tiny test/bench checkpoints) the default rate is higher


# --- the adapters -------------------------------------------------------------------------------

class TokenizerVocab:
    """A Hugging Face (fast) tokenizer behind the Vocab interface: ids in, text out, offsets kept."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)  # (n,)

    def encode_with_offsets(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (n,) and each token's [start, end) character span in `text` (n, 2)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = torch.tensor(enc["offset_mapping"], dtype=torch.long).reshape(-1, 2)
        return torch.tensor(enc["input_ids"], dtype=torch.long), offsets

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    @property
    def chars(self) -> tuple[str, ...]:
        """Each token's text; a token of several characters, or of none, reads as "" (suppress
        treats a single digit / letter token as a character of its class, any other as no class)."""
        if not hasattr(self, "_chars"):
            texts = (self.decode([i]) for i in range(len(self)))
            self._chars = tuple(t if len(t) == 1 else "" for t in texts)
        return self._chars


class HFCausalLM(nn.Module):
    """AutoModelForCausalLM (or a peft LoRA model around it) with the CharLSTM calling convention."""

    def __init__(self, model, lora: bool = False):
        super().__init__()
        self.hf = model
        base = model.get_base_model() if lora else model
        self.config = {"hf": True, "architecture": type(base).__name__, "vocab_size": int(base.config.vocab_size),
                       "n_positions": max_positions(base.config), "lora": bool(lora)}

    def forward(self, x: torch.Tensor, state=None):
        # The KV cache is built in eval mode (generation, exposure) and skipped in training.
        out = self.hf(input_ids=x, cache=state, use_cache=state is not None or not self.training)
        return out.logits, out.cache  # (B, T, V), the cache

    @property
    def base_model(self):
        return self.hf.get_base_model() if self.config["lora"] else self.hf

    def parameter_groups(self) -> dict[str, list[str]]:
        named = list(self.named_parameters())
        blocks = block_prefixes(self)
        in_block = [next((i for i, b in enumerate(blocks) if n.startswith(b)), None) for n, _ in named]
        if self.config["lora"]:
            lora = [n for n, p in named if p.requires_grad and "lora_" in n]
            last = [n for n, b in zip([n for n, _ in named], in_block) if n in set(lora) and b == len(blocks) - 1]
            return {"all": lora, "lora": lora, "last": last}
        last_block = max(i for i, b in enumerate(in_block) if b is not None) if blocks else -1
        out_emb = self.base_model.get_output_embeddings()
        out_ids = {id(p) for p in out_emb.parameters()} if out_emb is not None else set()
        head = [n for i, (n, p) in enumerate(named) if i > last_block or id(p) in out_ids]
        last = [n for (n, _), b in zip(named, in_block) if blocks and b == len(blocks) - 1]
        return {"all": [n for n, _ in named], "head": head, "last": last + [n for n in head if n not in last]}


def block_prefixes(module: nn.Module) -> list[str]:
    """Name prefixes ("hf.transformer.h.0.", …) of the transformer blocks: the ModuleList as long as
    the model has layers (GPT-2's transformer.h, Llama's model.layers)."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ModuleList) and len(sub) > 0 and name and all(
                type(m) is type(sub[0]) for m in sub) and _n_layers(module) in (None, len(sub)):
            return [f"{name}.{i}." for i in range(len(sub))]
    return []


def _n_layers(module: nn.Module) -> int | None:
    cfg = getattr(getattr(module, "base_model", None), "config", None)
    return getattr(cfg, "num_hidden_layers", None) if cfg is not None else None


def max_positions(config) -> int:
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def is_token_vocab(vocab) -> bool:
    return isinstance(vocab, TokenizerVocab)


# --- loading ------------------------------------------------------------------------------------

def require_peft():
    """The peft module, or the one-line install hint (peft is the `lora` extra)."""
    try:
        import peft
    except ImportError:  # also when sys.modules["peft"] is None (how the tests simulate its absence)
        raise UnlearnError(f"--lora needs the peft package, which is not installed: {LORA_HINT}") from None
    return peft


def _load_model(path: Path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its multi-line load report: what matters in it is said below, in one line
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                           attn_implementation="eager", dtype=torch.float32,
                                                           output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 — any loader failure (safetensors' own errors included) is the user's file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnlearnError(f"cannot load the model in {path} ({first[:200]}): pass a complete "
                           f"save_pretrained checkpoint") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers initialises them at random, from the unseeded global RNG: the model would be
        # partly untrained, and its base loaded again (the exact reference) another model
        raise UnlearnError(f"the checkpoint in {path} has no weights for {len(missing)} parameter(s) its config.json "
                           f"declares (first: {missing[0]}): pass the complete checkpoint, or the config.json "
                           f"saved with these weights")
    return model


def load_tokenizer(path: Path) -> TokenizerVocab:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnlearnError(f"cannot load the tokenizer in {path} ({first[:200]}): save it with "
                           f"tokenizer.save_pretrained(DIR)") from None
    if not getattr(tokenizer, "is_fast", True):
        raise UnlearnError(f"the tokenizer in {path} is a slow (Python) tokenizer without character offsets: "
                           f"save a fast one (tokenizer.json)")
    return TokenizerVocab(tokenizer)


def _with_lora(model, seed: int, peft=None):
    peft = peft or require_peft()
    with torch.random.fork_rng(devices=[]):  # the adapters' initialisation is part of the schedule
        torch.manual_seed(seed)
        return peft.get_peft_model(model, peft.LoraConfig(target_modules="all-linear", **LORA_DEFAULTS))


def default_lr(n_params: int, lora: bool) -> float:
    """Adam rate for fine-tuning: LoRA adapters 1e-3; a full model 1e-3 when small (the randomly
    initialised test/bench checkpoints must learn the corpus) and 5e-5 (the usual) otherwise."""
    return 1e-3 if lora or n_params < SMALL_MODEL else 5e-5


def load_pretrained(path, *, seq_len: int = DEFAULT_SEQ_LEN, lora: bool = False, seed: int = 0, lr: float | None = None,
                    batch: int = 16) -> LMBundle:
    """A base checkpoint as an LMBundle ready to fine-tune (settings["steps"] = 0 until it is)."""
    peft = require_peft() if lora else None  # before any slow load: the missing extra is the user's first problem
    check_checkpoint(path)
    path = Path(path)
    identity = checkpoint_identity(path)
    model = _load_model(path)
    positions = max_positions(model.config)
    if seq_len + 1 > positions:
        raise UnlearnError(f"windows of {seq_len + 1} tokens do not fit the model's {positions} positions: "
                           f"use a seq_len below {positions}")
    vocab = load_tokenizer(path)
    if len(vocab) > model.config.vocab_size:
        raise UnlearnError(f"the tokenizer in {path} has {len(vocab)} tokens but the model only "
                           f"{model.config.vocab_size}: save the tokenizer the model was trained with")
    n_params = sum(p.numel() for p in model.parameters())
    if lora:
        model = _with_lora(model, seed, peft)
    module = HFCausalLM(model, lora=lora)
    module.eval()
    settings = {"seq_len": int(seq_len), "lr": float(lr if lr is not None else default_lr(n_params, lora)),
                "batch": int(batch), "seed": int(seed), "steps": 0, "seconds": 0.0, "base": identity,
                "lora": bool(lora)}
    return LMBundle(module, vocab, PRESET, settings)


# --- persistence --------------------------------------------------------------------------------

def save(bundle: LMBundle, directory: Path) -> None:
    """save_pretrained files (a LoRA bundle: the untouched base weights + adapter/) and lm.json."""
    directory = Path(directory)
    module: HFCausalLM = bundle.model
    if module.config["lora"]:
        module.hf.save_pretrained(directory / ADAPTER_DIR)
        base = copy.deepcopy(module.hf).unload()  # the base model without the adapter layers
        base.save_pretrained(directory)
    else:
        module.hf.save_pretrained(directory)
    bundle.vocab.tokenizer.save_pretrained(directory)
    (directory / "lm.json").write_text(json.dumps({"format": FORMAT, "preset": PRESET, "settings": bundle.settings},
                                                  indent=1, sort_keys=True))


def load(directory: Path, meta: dict) -> LMBundle:
    directory = Path(directory)
    model = _load_model(directory)
    lora = bool(meta["settings"].get("lora"))
    if lora:
        peft = require_peft()
        model = peft.PeftModel.from_pretrained(model, directory / ADAPTER_DIR, is_trainable=True)
    module = HFCausalLM(model, lora=lora)
    module.eval()
    return LMBundle(module, load_tokenizer(directory), PRESET, meta["settings"])


def merged_model(bundle: LMBundle):
    """A plain transformers model of the bundle (LoRA adapters merged into a copy), e.g. to log."""
    module: HFCausalLM = bundle.model
    return copy.deepcopy(module.hf).merge_and_unload() if module.config["lora"] else module.hf
