"""A character-level LSTM language model in one file (nanoGPT style): vocabulary, model, windows,
training, held-out perplexity, generation, save/load.

The objective unlearning works with (science.md §1) is the *summed* next-character cross-entropy

    L(θ; D) = Σ_w ℓ(w, θ),   ℓ(w, θ) = −Σ_{t=1..T} ln p_θ(w_t | w_<t)

over fixed training windows w of T+1 characters (T inputs, T next-char labels; the LSTM state starts
at zero in every window). Windows are cut at fixed offsets (non-overlapping by default), so "every
training window that overlaps a secret" is well defined and the same for training, unlearning and
retraining. Training minimises the mean of ℓ/T with Adam; the influence code uses the sum.

Shapes: B windows per batch, T = seq_len, V = vocabulary size, E = embedding size, H = hidden size.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.devices import autocast, device_of, loss_scaler

UNK = "\ufffd"  # index 0: any character the training text did not contain

# tiny: trains in seconds, for tests. small: the demo model (science.md §3 calibration: 1×256 LSTM,
# embedding 32, sequences of 100, Adam 3e-3, batch 64 memorises a card number inserted 8×).
PRESETS: dict[str, dict] = {
    "tiny": dict(embed=16, hidden=48, layers=1, seq_len=32, batch=16, lr=1e-2),
    "small": dict(embed=32, hidden=256, layers=1, seq_len=100, batch=64, lr=6e-3),
}
ARCH_KEYS = ("embed", "hidden", "layers")


# --- vocabulary ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]  # chars[0] == UNK

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls((UNK,) + tuple(sorted(set(text) - {UNK})))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        if not hasattr(self, "_index"):
            object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})
        return self._index  # type: ignore[attr-defined]

    def encode(self, text: str) -> torch.Tensor:
        index = self.index
        return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)  # (n,)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars[1:])}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls((UNK,) + tuple(d["chars"]))


# --- model --------------------------------------------------------------------------------------

class CharLSTM(nn.Module):
    """Embedding → LSTM (layers × hidden) → linear head over the vocabulary."""

    def __init__(self, vocab_size: int, embed: int = 32, hidden: int = 256, layers: int = 1):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers)
        self.embedding = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    @classmethod
    def from_config(cls, config: dict, seed: int = 0) -> "CharLSTM":
        """A freshly initialised model, deterministic given `seed` (the global RNG is untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(**config)

    @classmethod
    def from_preset(cls, preset: str, vocab_size: int, seed: int = 0) -> "CharLSTM":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        arch = {k: PRESETS[preset][k] for k in ARCH_KEYS}
        return cls.from_config(dict(vocab_size=vocab_size, **arch), seed)

    def forward(self, x: torch.Tensor, state=None):
        e = self.embedding(x)  # (B, T, E)
        h, state = self.lstm(e, state)  # (B, T, H); state = (h_n, c_n), each (layers, B, H)
        return self.head(h), state  # (B, T, V)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named parameter subsets an update may be restricted to (deep_influence `params`)."""
        names = [n for n, _ in self.named_parameters()]
        last = self.config["layers"] - 1
        head = [n for n in names if n.startswith("head.")]
        last_lstm = [n for n in names if n.startswith("lstm.") and n.endswith(f"_l{last}")]
        return {"all": names, "head": head, "last": last_lstm + head}


# --- windows and losses -------------------------------------------------------------------------

def window_starts(n_chars: int, seq_len: int, stride: int | None = None) -> torch.Tensor:
    """Start offsets of every full window of seq_len+1 chars; stride = seq_len by default, so each
    character is predicted exactly once (consecutive windows share only their boundary char)."""
    stride = seq_len if stride is None else stride
    if n_chars < seq_len + 1:
        return torch.zeros(0, dtype=torch.long)
    return torch.arange(0, n_chars - seq_len, stride)  # (m,)


def windows(text_ids: torch.Tensor, seq_len: int, stride: int | None = None) -> torch.Tensor:
    """(m, seq_len+1) windows of `text_ids` at window_starts offsets: inputs w[:, :-1], labels w[:, 1:]."""
    starts = window_starts(len(text_ids), seq_len, stride)
    return text_ids[starts[:, None] + torch.arange(seq_len + 1)]  # (m, T+1)


def window_loss(model: CharLSTM, batch: torch.Tensor) -> torch.Tensor:
    """ℓ(w, θ) for each window: summed next-char cross-entropy in nats, (m,), on the model's device."""
    batch = batch.to(device_of(model))
    logits, _ = model(batch[:, :-1])  # (m, T, V)
    ce = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (m, T)
    return ce.sum(dim=1)


@torch.no_grad()
def perplexity(model: CharLSTM, windows_: torch.Tensor, batch: int = 256) -> float:
    """Per-character perplexity exp(Σ ℓ / #chars) on (held-out) windows."""
    total, count = 0.0, 0
    for i in range(0, len(windows_), batch):
        w = windows_[i:i + batch]
        total += float(window_loss(model, w).sum())
        count += w.shape[0] * (w.shape[1] - 1)
    return math.exp(total / max(count, 1))


# --- training -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainStats:
    steps: int
    epochs: float
    seconds: float
    loss: float  # mean per-char CE (nats) over the last epoch's batches


def train_lm(model: CharLSTM, windows_: torch.Tensor, *, epochs: float | None = None,
             steps: int | None = None, seconds: float | None = None, lr: float = 3e-3,
             batch: int = 64, seed: int = 0, clip: float = 5.0, progress=None,
             precision: str = "fp32") -> TrainStats:
    """Adam on the mean per-char CE, in place, until the first of `epochs`, `steps`, `seconds`,
    on the model's device (batches are moved there), in `precision` (unlearning.devices).

    Deterministic given `seed` and a step budget (batches are shuffled by a seeded generator). A
    `seconds` budget makes the step count machine-dependent: the returned `steps` lets a retrained
    reference replay exactly the same schedule. `progress(stats)` is called once per epoch (its
    own time counts against a `seconds` budget).
    """
    if epochs is None and steps is None and seconds is None:
        raise ValueError("train_lm needs a budget: epochs, steps or seconds")
    m = len(windows_)
    if m == 0:
        raise ValueError("train_lm got no windows: the text is shorter than seq_len + 1 characters")
    per_epoch = math.ceil(m / batch)
    max_steps = min(s for s in (steps, None if epochs is None else math.ceil(epochs * per_epoch),
                                 None if seconds is None else 10**12) if s is not None)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    device = device_of(model)
    scaler = loss_scaler(device, precision)  # fp32: a pass-through, the CPU run stays bit for bit
    model.train()
    started, step, last_loss = time.perf_counter(), 0, float("nan")
    done = False
    while not done:
        order = torch.randperm(m, generator=gen)
        epoch_loss, epoch_windows = 0.0, 0
        for i in range(0, m, batch):
            w = windows_[order[i:i + batch]]  # (B, T+1)
            with autocast(device, precision):
                loss = window_loss(model, w).sum() / (w.shape[0] * (w.shape[1] - 1))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # clip the true gradients
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            epoch_loss += float(loss.detach()) * w.shape[0]
            epoch_windows += w.shape[0]
            if step >= max_steps or (seconds is not None and time.perf_counter() - started >= seconds):
                done = True
                break
        last_loss = epoch_loss / max(epoch_windows, 1)
        if progress is not None:
            progress(TrainStats(step, step / per_epoch, time.perf_counter() - started, last_loss))
    model.eval()
    return TrainStats(step, step / per_epoch, time.perf_counter() - started, last_loss)


# --- generation ---------------------------------------------------------------------------------

@torch.no_grad()
def generate(model: CharLSTM, vocab: Vocab, prefix: str, n: int, greedy: bool = True,
             temperature: float = 1.0, seed: int = 0) -> str:
    """The n characters the model continues `prefix` with (greedy argmax, or sampled at `temperature`)."""
    gen = torch.Generator().manual_seed(seed)  # CPU: the same samples on every device
    device = device_of(model)
    ids = vocab.encode(prefix)[None].to(device)  # (1, P)
    logits, state = model(ids) if ids.shape[1] else model(torch.zeros(1, 1, dtype=torch.long, device=device))
    out = []
    for _ in range(n):
        last = logits[0, -1]  # (V,)
        if greedy:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, dim=0).cpu(), 1, generator=gen))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    return vocab.decode(out)


# --- persistence --------------------------------------------------------------------------------

def save(path: str | Path, model: CharLSTM, vocab: Vocab, preset: str | None = None) -> None:
    """One file: architecture, vocabulary and weights (loadable with weights_only=True)."""
    torch.save({"format": "charlm/1", "preset": preset, "config": dict(model.config),
                "vocab": vocab.to_dict(), "state": cpu_state(model)}, Path(path))


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights as CPU tensors, so a stored model loads on any machine (a GPU-trained one too)."""
    return {k: v.cpu() for k, v in model.state_dict().items()}


def load(path: str | Path) -> tuple[CharLSTM, Vocab]:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = CharLSTM(**blob["config"])
    model.load_state_dict(blob["state"])
    model.eval()
    return model, Vocab.from_dict(blob["vocab"])


def clone(model: CharLSTM) -> CharLSTM:
    return copy.deepcopy(model)
