"""A small ResNet-style CNN for grey-scale images in one file: model, presets, training, save/load.

    x (n, 1, H, W) in [0, 1]
      → (x − mean)/std            normalisation inside the model (constants in the config), so every
                                  caller feeds raw [0, 1] pixels and a saved model carries its own
      → stem: conv3×3 → GN → ReLU
      → residual blocks           conv3×3 → GN → ReLU → conv3×3 → GN, + shortcut (1×1 conv + GN
                                  when the shape changes), ReLU
      → global average pool       features(x): (n, d), d = the last block's width
      → head: nn.Linear(d, C)     forward(x) = head(features(x)): (n, C) logits

GroupNorm (8 groups), not BatchNorm: a sample's features depend on that sample only, and train
and eval mode compute the same function. What the later steps need:
- influence updates differentiate the summed loss Σ_i ℓ(z_i, θ) (science.md §1): a sum of
  per-sample terms, so G and Hessian products do not depend on how batches are cut;
- the DA loss on a batch of forget images measures those images' features, and a step on a
  forget-only batch cannot rewrite running statistics;
- unlearning fine-tunes the function that was trained, on the loss landscape training converged
  in. Measured with BatchNorm (Fashion-MNIST, 3k images, 4 epochs): frozen in eval mode, the
  largest Hessian eigenvalue of the retain loss was 101 against 5 in train mode (digits: 3.5 vs
  0.7) — a network with frozen BN statistics behaves like an unnormalised one — and CE plus
  self-distillation at lr 0.01 diverged within 30 steps, collapsing every feature to zero; with
  GroupNorm the same alignment run was stable. The price: GN learns more slowly here (4 epochs
  on 10k Fashion-MNIST images: 85.4 % test accuracy with BN, 80.9 % with GN).

Training objective (what influence updates linearise): the mean cross-entropy over a batch plus
(wd/2)·‖θ‖² through SGD's weight decay, i.e. over the data set
    L(θ; D) = (1/n)·Σ_i ℓ(z_i, θ) + (wd/2)·‖θ‖²  ⇔ (×n)  Σ_i ℓ(z_i, θ) + (n·wd/2)·‖θ‖².
Optimiser: SGD with momentum 0.9 and weight decay 5e-4 (science.md §4 typical settings), cosine
learning-rate decay over the planned steps (constant when only a time budget is given).

Shapes: n samples, C classes, d feature width.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.devices import autocast, device_of, loss_scaler, seeded_rng

# tiny: sklearn load_digits 8×8 (tests): 8 epochs on 1437 images, 2–2.5 s on one thread, test
# accuracy 97.8 %. small: Fashion-MNIST 28×28 (demo, benchmark): 4 epochs on a 10k-image subset,
# 54 s on one thread of the shared 2-core machine (load ≈ 2.5), test accuracy 80.9 % on the full
# test set (train 81.9 %: under-fitted; time grows linearly with images × epochs).
# mean/std: the pixel statistics of each data set.
PRESETS: dict[str, dict] = {
    "tiny": dict(stem=8, widths=(16, 32), strides=(2, 2), mean=0.305, std=0.376,
                 epochs=8, lr=0.1, batch=64),
    "small": dict(stem=16, widths=(16, 32, 64), strides=(2, 2, 1), mean=0.286, std=0.353,
                  epochs=4, lr=0.05, batch=64),
}
ARCH_KEYS = ("stem", "widths", "strides", "mean", "std")


def _norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, groups), channels)  # the most groups ≤ 8 that divide the channels


class ResidualBlock(nn.Module):
    """conv3×3(stride) → GN → ReLU → conv3×3 → GN, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(h)))  # (n, c_out, H/s, W/s)
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(h))


class CNN(nn.Module):
    """Stem → residual blocks → global average pool (features) → linear head."""

    def __init__(self, n_classes: int = 10, in_channels: int = 1, stem: int = 16,
                 widths: tuple[int, ...] = (16, 32), strides: tuple[int, ...] = (1, 2),
                 mean: float = 0.5, std: float = 0.5):
        super().__init__()
        if len(widths) != len(strides) or not widths:
            raise ValueError("widths and strides need one entry per residual block")
        self.config = dict(n_classes=n_classes, in_channels=in_channels, stem=stem, widths=tuple(widths),
                           strides=tuple(strides), mean=mean, std=std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), _norm(stem),
                                  nn.ReLU())
        c_in, blocks = stem, []
        for width, stride in zip(widths, strides):
            blocks.append(ResidualBlock(c_in, width, stride))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_classes)

    @classmethod
    def from_config(cls, config: dict, seed: int = 0) -> "CNN":
        """A freshly initialised model, deterministic given `seed` (the global RNG is untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(**config)

    @classmethod
    def from_preset(cls, preset: str, n_classes: int = 10, seed: int = 0) -> "CNN":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        return cls.from_config(dict(n_classes=n_classes, **{k: PRESETS[preset][k] for k in ARCH_KEYS}), seed)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The activations entering the last residual block, (n, c, h, w)."""
        h = self.stem((x - self.config["mean"]) / self.config["std"])
        return self.blocks[:-1](h)

    def pool_last(self, h: torch.Tensor) -> torch.Tensor:
        """Last block and global average pool: body activations → features, (n, d)."""
        return self.blocks[-1](h).mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_last(self.body(x))  # (n, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (n, C)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named parameter subsets an update may be restricted to: all, head, last (last block + head)."""
        names = [n for n, _ in self.named_parameters()]
        last_block = f"blocks.{len(self.blocks) - 1}."
        head = [n for n in names if n.startswith("head.")]
        return {"all": names, "head": head, "last": [n for n in names if n.startswith(last_block)] + head}


# --- evaluation helpers -------------------------------------------------------------------------

# Batches go to the model's device and the results come back to X's: callers keep their data where it is.

@torch.no_grad()
def logits_of(model: CNN, X: torch.Tensor, batch: int = 512) -> torch.Tensor:
    on = device_of(model)
    return torch.cat([model(X[i:i + batch].to(on)).to(X.device) for i in range(0, len(X), batch)]) if len(X) \
        else torch.zeros(0, model.config["n_classes"])  # (n, C)


@torch.no_grad()
def features_of(model: CNN, X: torch.Tensor, batch: int = 512) -> torch.Tensor:
    on = device_of(model)
    return torch.cat([model.features(X[i:i + batch].to(on)).to(X.device) for i in range(0, len(X), batch)]) \
        if len(X) else torch.zeros(0, model.feature_dim)  # (n, d)


def accuracy(model: CNN, X: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Share of correct argmax predictions in [0, 1] (nan for an empty set)."""
    if len(X) == 0:
        return float("nan")
    return float((logits_of(model, X, batch).argmax(dim=1) == y).double().mean())


# --- training -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSchedule:
    """How a model was (or is to be) trained; retraining replays it on D'. Budgets: the first of
    `epochs`, `steps` and `seconds` to run out stops training (at least one must be given)."""

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    lr: float = 0.05
    batch: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0  # batch order
    init_seed: int = 0  # initial weights (used by from_config when retraining)
    precision: str = "fp32"  # fp32, or bf16/fp16 mixed precision (unlearning.devices): retraining replays it

    @classmethod
    def from_preset(cls, preset: str, **changes) -> "TrainSchedule":
        p = PRESETS[preset]
        return replace(cls(epochs=p["epochs"], lr=p["lr"], batch=p["batch"]), **changes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainStats:
    steps: int
    epochs: float
    seconds: float
    loss: float  # mean cross-entropy over the last epoch's batches
    planned_steps: int | None  # the cosine schedule's length (None: constant lr, time budget only)
    samples: int = 0  # images passed forward and back (a step's batch, summed): the work done


def planned_steps(n: int, schedule: TrainSchedule) -> int | None:
    per_epoch = math.ceil(n / schedule.batch)
    budgets = [s for s in (schedule.steps, None if schedule.epochs is None else math.ceil(schedule.epochs * per_epoch))
               if s is not None]
    return min(budgets) if budgets else None


def train(model: CNN, X: torch.Tensor, y: torch.Tensor, schedule: TrainSchedule, progress=None) -> TrainStats:
    """`train_seeded` with the global RNG seeded by the schedule (and restored after): a user's model
    with dropout (or any layer that draws) is then retrained to the same weights, as the exact
    reference and the audit assume; the built-in CNN draws nothing and is unchanged."""
    with seeded_rng(schedule.seed, device_of(model)):
        return train_seeded(model, X, y, schedule, progress)


def train_seeded(model: CNN, X: torch.Tensor, y: torch.Tensor, schedule: TrainSchedule, progress=None) -> TrainStats:
    """SGD (momentum, weight decay) on the mean cross-entropy, in place, until a budget runs out, on
    the model's device (batches are moved there) in the schedule's precision (unlearning.devices).

    Deterministic given the schedule's seed and a step or epoch budget (batches from a seeded
    generator; run single-threaded for bit-equality). The lr follows a cosine from `lr` to 0 over
    the planned steps, or stays constant under a time budget only. `progress(stats)` is called
    once per epoch.
    """
    if schedule.epochs is None and schedule.steps is None and schedule.seconds is None:
        raise ValueError("train needs a budget: epochs, steps or seconds")
    n = len(X)
    if n == 0:
        raise ValueError("train got no samples")
    per_epoch = math.ceil(n / schedule.batch)
    planned = planned_steps(n, schedule)
    max_steps = planned if planned is not None else 10**12
    gen = torch.Generator().manual_seed(schedule.seed)
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                          weight_decay=schedule.weight_decay)
    device = device_of(model)
    precision = schedule.precision
    scaler = loss_scaler(device, precision)  # fp32: a pass-through
    model.train()
    started, step, last_loss, done = time.perf_counter(), 0, float("nan"), max_steps == 0
    samples = 0
    while not done:
        order = torch.randperm(n, generator=gen)
        epoch_loss, seen = 0.0, 0
        for i in range(0, n, schedule.batch):
            idx = order[i:i + schedule.batch]
            if planned is not None:  # cosine decay: lr_t = lr·(1 + cos(π t / T))/2
                for group in opt.param_groups:
                    group["lr"] = schedule.lr * 0.5 * (1 + math.cos(math.pi * step / planned))
            with autocast(device, precision):
                loss = F.cross_entropy(model(X[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            samples += len(idx)
            epoch_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            if step >= max_steps or (schedule.seconds is not None
                                     and time.perf_counter() - started >= schedule.seconds):
                done = True
                break
        last_loss = epoch_loss / max(seen, 1)
        if progress is not None:
            progress(TrainStats(step, step / per_epoch, time.perf_counter() - started, last_loss, planned, samples))
    model.eval()
    return TrainStats(step, step / per_epoch, time.perf_counter() - started, last_loss, planned, samples)


# --- persistence --------------------------------------------------------------------------------

def save(path: str | Path, model: CNN, preset: str | None = None, schedule: TrainSchedule | None = None) -> None:
    """One file: architecture, weights and (optionally) the training schedule (weights_only-loadable)."""
    config = {**model.config, "widths": list(model.config["widths"]), "strides": list(model.config["strides"])}
    torch.save({"format": "cnn/1", "preset": preset, "config": config,
                "schedule": None if schedule is None else schedule.to_dict(),
                "state": {k: v.cpu() for k, v in model.state_dict().items()}},  # loads on any machine
               Path(path))


def load(path: str | Path) -> tuple[CNN, TrainSchedule | None]:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    config = {**blob["config"], "widths": tuple(blob["config"]["widths"]), "strides": tuple(blob["config"]["strides"])}
    model = CNN(**config)
    model.load_state_dict(blob["state"])
    model.eval()
    schedule = None if blob["schedule"] is None else TrainSchedule(**blob["schedule"])
    return model, schedule


def clone(model: CNN) -> CNN:
    return copy.deepcopy(model)
