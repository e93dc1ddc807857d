"""What every image unlearning method shares: the config base, the result, batch samplers, the
optimiser, the frozen teacher and the distillation loss.

Conventions (all methods):
- The input model is never modified: a method works on a deep copy (the student).
- The network is GroupNorm-normalised (cnn.py explains why): train and eval mode compute
  the same per-sample function, so a batch of forget images only affects those images' outputs.
  Copies are kept in eval mode anyway (nothing in the model depends on it today).
- Optimiser: SGD, momentum 0.9, weight decay 5e-4 unless a config says otherwise (science.md §4).
- An "epoch" is one pass over the set a method iterates on (named in each config).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from unlearning.images.cnn import CNN
from unlearning.images.request import ImageData, ImageRequest


class ImageMethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SGDConfig(ImageMethodConfig):
    """Fields shared by the methods that take SGD steps."""

    lr: float = Field(0.01, gt=0)
    epochs: float = Field(5.0, gt=0)
    batch: int = Field(64, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    seed: int = 0


@dataclass(frozen=True)
class ImageChain:
    """Where a chain of record deletions is unrolled from (alignment.unroll): `model`, the model the
    chain starts from (trained exactly, or the last one an audit passed), and `grad`, the summed
    gradient Σ ∇ℓ(z; θ_model) of every image the chain's requests deleted, at that model (parameter
    name → tensor). Raw gradients of removed images: kept sealed, as their escrow is."""

    model: CNN
    grad: dict[str, torch.Tensor] = field(default_factory=dict)
    images: int = 0  # how many images the chain deleted


@dataclass
class ImageResult:
    model: CNN  # the unlearned copy
    method: str
    guarantee: str  # exact (retrain) or empirical
    stats: dict = field(default_factory=dict)  # seconds (run_image_method), steps, ...
    chain: ImageChain | None = None  # an unrolled deletion: the chain the next deletion continues


def _copy(model: CNN, trainable: bool) -> CNN:
    """A copy in eval mode (GroupNorm: eval and train compute the same function)."""
    twin = copy.deepcopy(model)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(trainable)
    return twin


def student_of(model: CNN) -> CNN:
    """A trainable copy (eval mode)."""
    return _copy(model, trainable=True)


def teacher_of(model: CNN) -> CNN:
    """A frozen copy of the original model."""
    return _copy(model, trainable=False)


def sgd(params, cfg: SGDConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def steps_for(epochs: float, n: int, batch: int) -> int:
    return max(1, math.ceil(epochs * n / batch))


def batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless mini-batches of positions 0..n−1, reshuffled at every pass."""
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            yield order[i:i + batch]


def distillation_kl(z_student: torch.Tensor, z_teacher: torch.Tensor, T: float) -> torch.Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), mean over the batch (science.md §4 L_SD)."""
    log_p_s = F.log_softmax(z_student / T, dim=1)  # (b, C)
    log_p_t = F.log_softmax(z_teacher / T, dim=1)
    return T * T * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


@dataclass(frozen=True)
class Pool:
    """A labelled training view: images, labels and which rows are retain samples (for methods
    that treat the two differently, e.g. distillation only on retain rows)."""

    X: torch.Tensor  # (m, 1, H, W)
    y: torch.Tensor  # (m,)
    is_retain: torch.Tensor  # (m,) bool

    def __len__(self) -> int:
        return len(self.y)


def d_prime_pool(data: ImageData, request: ImageRequest) -> Pool:
    """D' = retain ∪ Z̃ (Z̃ empty for deletions)."""
    X, y = request.d_prime(data)
    is_retain = torch.zeros(len(y), dtype=torch.bool)
    is_retain[:len(request.retain)] = True
    return Pool(X, y, is_retain)


def forget_pool(data: ImageData, request: ImageRequest) -> Pool:
    """Z with the labels the model was trained on."""
    idx = request.forget
    return Pool(data.X[idx], data.y[idx], torch.zeros(len(idx), dtype=torch.bool))
