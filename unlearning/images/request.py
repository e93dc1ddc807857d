"""An image unlearning request as indices into the training set (science.md §1, requests as
replacements): Z = the forget samples, Z̃ = their corrected versions (fix_labels only).

| kind             | Z (`forget`)                         | Z̃                                  |
|------------------|--------------------------------------|-------------------------------------|
| delete_records   | the named training samples           | ∅                                   |
| forget_class     | every training sample of one class   | ∅                                   |
| fix_labels       | the mislabelled samples              | the same images, corrected labels   |

D' = (D \\ Z) ∪ Z̃ is what retraining trains on. The pipeline's request schema (ids, validation
against a dataset version) maps onto these constructors; this module only knows positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.errors import UnlearnError
from unlearning.images.cnn import TrainSchedule

IMAGE_KINDS = ("delete_records", "forget_class", "fix_labels")


@dataclass(frozen=True)
class ImageData:
    """The training set a model was trained on, and how (retraining replays `schedule` on D')."""

    X: torch.Tensor  # (n, 1, H, W) float in [0, 1]
    y: torch.Tensor  # (n,) long class labels
    schedule: TrainSchedule | None = None

    def __post_init__(self):
        if self.X.ndim != 4 or self.y.ndim != 1 or len(self.X) != len(self.y):
            raise UnlearnError(f"image data needs X of shape (n, channels, H, W) and y of shape (n,), "
                               f"got {tuple(self.X.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class ImageRequest:
    kind: str  # one of IMAGE_KINDS
    n: int  # size of the training set the indices refer to
    forget: torch.Tensor  # (m,) sorted positions of Z
    retain: torch.Tensor  # (n − m,) sorted positions of D \ Z
    corrected: torch.Tensor | None = None  # (m,) fix_labels: corrected label of forget[i] (Z̃)
    forget_class: int | None = None

    def check(self, data: ImageData) -> None:
        if len(data) != self.n:
            raise UnlearnError(f"the request refers to a training set of {self.n} samples but the data "
                               f"has {len(data)}: build the request from the data the model was trained on")

    def replacement(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        """Z̃ as (X̃, ỹ): the forget images with corrected labels, or empty for a deletion."""
        if self.corrected is None:
            return data.X[:0], data.y[:0]
        return data.X[self.forget], self.corrected

    def d_prime(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        """D' = (D \\ Z) ∪ Z̃ as (X', y'): the retain samples in order, then Z̃. (n', ...), (n',)."""
        X_tilde, y_tilde = self.replacement(data)
        return torch.cat([data.X[self.retain], X_tilde]), torch.cat([data.y[self.retain], y_tilde])


def _positions(n: int, indices) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise UnlearnError("the request names no training samples: give at least one index")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.numel():
        raise UnlearnError(f"indices {bad[:5].tolist()} are outside the training set of {n} samples")
    if torch.unique(idx).numel() != idx.numel():
        raise UnlearnError("the request names a training sample twice: give each index once")
    if idx.numel() == n:
        raise UnlearnError("the request would forget every training sample: nothing would be left to retain")
    return idx


def _split(n: int, forget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones(n, dtype=torch.bool)
    keep[forget] = False
    return torch.sort(forget).values, keep.nonzero().squeeze(1)


def delete_records(n: int, indices) -> ImageRequest:
    """Random-subset (or any subset) forgetting: Z = the given positions, Z̃ = ∅."""
    forget, retain = _split(n, _positions(n, indices))
    return ImageRequest("delete_records", n, forget, retain)


def forget_class(y: torch.Tensor, label: int) -> ImageRequest:
    """Class forgetting: Z = every training sample labelled `label`, Z̃ = ∅."""
    y = torch.as_tensor(y)
    if not (y == label).any():
        raise UnlearnError(f"no training sample has class {label}: choose one of {torch.unique(y).tolist()}")
    forget, retain = _split(len(y), (y == label).nonzero().squeeze(1))
    if retain.numel() == 0:
        raise UnlearnError(f"class {label} is the only class: nothing would be left to retain")
    return ImageRequest("forget_class", len(y), forget, retain, forget_class=int(label))


def fix_labels(y: torch.Tensor, indices, labels, n_classes: int | None = None) -> ImageRequest:
    """Label repair: Z = the mislabelled samples, Z̃ = the same images with `labels` (aligned with
    `indices`). Retraining trains on the corrected labels; see the methods for what each does."""
    y = torch.as_tensor(y)
    idx = _positions(len(y), indices)
    new = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if new.numel() != idx.numel():
        raise UnlearnError(f"fix_labels got {idx.numel()} indices but {new.numel()} corrected labels: "
                           f"give one label per index")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    bad = new[(new < 0) | (new >= n_classes)]
    if bad.numel():
        raise UnlearnError(f"corrected labels {bad[:5].tolist()} are not classes 0..{n_classes - 1}")
    order = torch.argsort(idx)
    forget, retain = _split(len(y), idx)
    return ImageRequest("fix_labels", len(y), forget, retain, corrected=new[order])
