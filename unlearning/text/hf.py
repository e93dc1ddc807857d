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
same schedule (`refine_tune`), so a bundle records the base checkpoint's path and content hash in
`settings["base"]`; a base that moved or changed is refused, never silently replaced.

Attention runs in the "eager" implementation: PyTorch's fused CPU attention kernel has no double
backward, which every Hessian-vector product needs. `transformers` is imported inside functions
only (~4 s): importing this module costs nothing, and a char LM or a table never pays for it.

No network, ever: every load passes `local_files_only=True`; and no code of the checkpoint's:
every load passes `trust_remote_code=False`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from unlearning.errors import UnlearnError

from unlearning.text.bundle import LMBundle

if TYPE_CHECKING:
    from unlearning.text import charlm
    from unlearning.text.data import TextCorpus

FORMAT = "unlearnflow.hf/1"
PRESET = "hf"
ADAPTER_DIR = "adapter"  # a LoRA bundle: base weights in the bundle directory, adapters here
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
LORA_HINT = "pip install peft (or `pip install unlearnflow[lora]`)"
LORA_DEFAULTS = dict(r=8, lora_alpha=16, lora_dropout=0.0)
DEFAULT_SEQ_LEN = 64  # tokens per training window unless a schedule says otherwise
SMALL_MODEL = 20_000_000  # parameters: below it (tiny test/bench checkpoints) the default rate is higher


# --- checkpoints --------------------------------------------------------------------------------

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


def check_windows_fit(path, corpus: "TextCorpus", seq_len: int = DEFAULT_SEQ_LEN) -> None:
    """Refuse, before anything is written, windows of `seq_len` + 1 tokens that the checkpoint's
    positions cannot hold, and a corpus whose training or held-out records tokenize (with the
    checkpoint's tokenizer) to less than one such window: a fine-tune would have nothing to train on,
    held-out perplexity nothing to measure. The character count of data.check_trainable_corpus
    cannot tell: a tokenizer trained on the text packs several characters into a token."""
    from types import SimpleNamespace

    from unlearning.text.data import concatenated

    path = Path(path)
    positions = max_positions(SimpleNamespace(**json.loads((path / "config.json").read_text())))
    if seq_len + 1 > positions:
        raise UnlearnError(f"windows of {seq_len + 1} tokens do not fit the {positions} positions of the model in "
                           f"{path}: use a --seq-len below {positions}")
    vocab = _load_tokenizer(path)
    mask = corpus.train_mask()
    for share, chosen in (("training", mask), ("held-out", ~mask)):
        n_tokens = len(vocab.encode(concatenated(corpus, chosen)[0]))
        if n_tokens < seq_len + 1:
            raise UnlearnError(f"corpus '{corpus.name}' is too short for this model: its {share} records tokenize "
                               f"to {n_tokens} tokens, less than one window of {seq_len + 1}; add more text")


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


def _load_tokenizer(path: Path) -> TokenizerVocab:
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
    vocab = _load_tokenizer(path)
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


# --- training -----------------------------------------------------------------------------------

def corpus_windows(vocab: TokenizerVocab, corpus: "TextCorpus", seq_len: int) -> torch.Tensor:
    """The training records of `corpus`, tokenized as one text, cut into (m, seq_len+1) token windows."""
    from unlearning.text import charlm
    from unlearning.text.data import concatenated

    return charlm.windows(vocab.encode(concatenated(corpus, corpus.train_mask())[0]), seq_len)


def train_windows(bundle: LMBundle, windows: torch.Tensor, *, steps: int, seed: int = 0,
                  progress=None, precision: str = "fp32") -> "charlm.TrainStats":
    """charlm.train_lm with the bundle's rate and batch, dropout seeded (in place), where the model is."""
    from unlearning.text import charlm

    s = bundle.settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return charlm.train_lm(bundle.model, windows, steps=steps, lr=float(s["lr"]), batch=int(s["batch"]),
                               seed=seed, progress=progress, precision=precision)


def fine_tune(bundle: LMBundle, corpus: "TextCorpus", *, steps: int, seed: int = 0,
              progress=None, precision: str = "fp32") -> tuple[LMBundle, "charlm.TrainStats"]:
    """Fine-tune the bundle's model (in place) `steps` Adam steps on the corpus's training windows;
    returns the bundle with the schedule recorded (steps, seed, seconds) and the training stats."""
    windows = corpus_windows(bundle.vocab, corpus, bundle.seq_len)
    if not len(windows):
        raise UnlearnError(f"the training text is shorter than one window of {bundle.seq_len + 1} tokens: "
                           f"add records or lower seq_len")
    stats = train_windows(bundle, windows, steps=steps, seed=seed, progress=progress, precision=precision)
    settings = {**bundle.settings, "steps": stats.steps, "seed": int(seed), "seconds": stats.seconds,
                **({"precision": precision} if precision != "fp32" else {})}  # the reference replays it
    return LMBundle(bundle.model, bundle.vocab, bundle.preset, settings), stats


def refine_tune(settings: dict, windows: torch.Tensor, progress=None, device: str = "cpu"):
    """The exact reference: the BASE checkpoint (unchanged, else UnlearnError) fine-tuned again on
    `windows` (D′) with the recorded schedule (and precision), on `device`. A deep_influence.DeepUpdate."""
    from unlearning.devices import resolve_device

    import time

    from unlearning.text.deep_influence import DeepUpdate

    if not int(settings.get("steps") or 0) or not settings.get("base"):
        raise UnlearnError("this model records no fine-tuning of a base checkpoint (it was imported as is): "
                           "there is no exact reference to re-fine-tune; verify by evidence instead")
    base = check_base(settings["base"])
    started = time.perf_counter()
    fresh = load_pretrained(base, seq_len=int(settings["seq_len"]), lora=bool(settings.get("lora")),
                            seed=int(settings["seed"]), lr=float(settings["lr"]), batch=int(settings["batch"]))
    fresh.model.to(resolve_device(device))
    stats = train_windows(fresh, windows, steps=int(settings["steps"]), seed=int(settings["seed"]),
                          progress=progress, precision=settings.get("precision", "fp32"))
    return DeepUpdate(fresh.model, "retrain", {"seconds": time.perf_counter() - started, "hvps": 0,
                                               "steps": stats.steps, "loss": stats.loss})


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
    return LMBundle(module, _load_tokenizer(directory), PRESET, meta["settings"])


def merged_model(bundle: LMBundle):
    """A plain transformers model of the bundle (LoRA adapters merged into a copy), e.g. to log."""
    module: HFCausalLM = bundle.model
    return copy.deepcopy(module.hf).merge_and_unload() if module.config["lora"] else module.hf


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
