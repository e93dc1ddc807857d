"""The text model bundle: its own module so that the character LM (lm) and the Hugging Face adapter
(hf) can both build one without importing each other. Import LMBundle from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class LMBundle:
    """A trained language model with what is needed to retrain it the same way: a CharLSTM and its
    Vocab (preset tiny/small), or an hf.HFCausalLM and its hf.TokenizerVocab (preset "hf")."""

    model: nn.Module
    vocab: object
    preset: str
    settings: dict = field(default_factory=dict)  # seq_len, lr, batch, seed, steps, seconds (hf: base, lora)

    @property
    def seq_len(self) -> int:
        return int(self.settings["seq_len"])
