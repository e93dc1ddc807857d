"""Fine-tuning a Hugging Face causal LM (unlearning.text.hf) on a corpus: the check that the corpus
and the checkpoint hold training windows at all, the corpus as token windows, the seeded training
(charlm.train_lm with the bundle's schedule), and the exact reference — the base checkpoint fine-tuned
again on D′ with the recorded schedule (`refine_tune`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from unlearning.errors import UnlearnError
from unlearning.text.bundle import LMBundle
from unlearning.text.hf import DEFAULT_SEQ_LEN, TokenizerVocab, load_pretrained, load_tokenizer, max_positions
from unlearning.text.hf_checkpoint import check_base

if TYPE_CHECKING:
    from unlearning.text import charlm
    from unlearning.text.data import TextCorpus


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
    vocab = load_tokenizer(path)
    mask = corpus.train_mask()
    for share, chosen in (("training", mask), ("held-out", ~mask)):
        n_tokens = len(vocab.encode(concatenated(corpus, chosen)[0]))
        if n_tokens < seq_len + 1:
            raise UnlearnError(f"corpus '{corpus.name}' is too short for this model: its {share} records tokenize "
                               f"to {n_tokens} tokens, less than one window of {seq_len + 1}; add more text")


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
