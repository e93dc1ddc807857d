"""Users' own image models, as a user would write them: factories for `--model-factory`
(tests.custom_models:build), and broken ones the bad-input tests name."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """conv → GN → ReLU → conv → GN → ReLU → global average pool → `fc`: the classifier layer is named by
    `unlearn_head`, the features are what enters it (no features() method)."""

    unlearn_head = "fc"

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(4, width), nn.GroupNorm(4, 2 * width)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1((x - 0.5) / 0.5)))  # (n, w, H, W)
        h = torch.relu(self.norm2(self.conv2(h))).mean(dim=(2, 3))  # (n, 2w)
        return self.fc(h)  # (n, C)


class WithFeatures(nn.Module):
    """A `features(x)` method and a `head` layer: the other documented way."""

    def __init__(self, n_classes: int, in_channels: int, image_size: tuple[int, int]):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], 24), nn.Tanh())
        self.head = nn.Linear(24, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (n, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(n_classes: int, in_channels: int) -> nn.Module:
    return SmallNet(n_classes, in_channels)


def build_with_features(n_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    return WithFeatures(n_classes, in_channels, image_size)


class WithDropout(WithFeatures):
    """Dropout in the body: each training step draws from torch's global RNG."""

    def __init__(self, n_classes: int, in_channels: int, image_size: tuple[int, int]):
        super().__init__(n_classes, in_channels, image_size)
        self.body.append(nn.Dropout(0.5))


def build_with_dropout(n_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    return WithDropout(n_classes, in_channels, image_size)


# --- broken factories (bad input) ------------------------------------------------------------------

NOT_A_FUNCTION = 3


def returns_a_list(n_classes: int) -> list:
    return [nn.Linear(4, n_classes)]


def without_head(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))


def wrong_classes(n_classes: int, in_channels: int) -> nn.Module:
    return SmallNet(n_classes + 1, in_channels)


def softmax_after_head(n_classes: int, in_channels: int) -> nn.Module:
    class Softmaxed(SmallNet):
        def forward(self, x):
            return super().forward(x).softmax(1)
    return Softmaxed(n_classes, in_channels)


def raises(n_classes: int) -> nn.Module:
    raise RuntimeError("out of coffee")
