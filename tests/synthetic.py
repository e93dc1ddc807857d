"""Seeded synthetic logistic-regression data shared by the unit, contract and numerics tests."""

from __future__ import annotations

import torch

from unlearning.tabular.logreg import DTYPE


def logistic_data(n: int, d: int, K: int, seed: int, weight_scale: float = 3.0, spread_radius: bool = True):
    """Rows with ‖x‖ ≤ 1 (last column a bias of 0.5), labels drawn from a random logistic model.

    Returns (X, y, g) with g the generator in its state after drawing, for callers that draw more.
    `spread_radius` draws row norms as √U (uniform over the ball) rather than U."""
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(n, d - 1, generator=g, dtype=DTYPE)
    radius = torch.rand(n, 1, generator=g, dtype=DTYPE)
    F = 0.85 * F / F.norm(dim=1, keepdim=True) * (radius.sqrt() if spread_radius else radius)
    X = torch.cat([F, torch.full((n, 1), 0.5, dtype=DTYPE)], dim=1)  # (n, d)
    W = weight_scale * torch.randn(d, 1 if K == 2 else K, generator=g, dtype=DTYPE)
    if K == 2:
        y = (torch.rand(n, generator=g, dtype=DTYPE) < torch.sigmoid(X @ W[:, 0])).long()
    else:
        y = torch.multinomial(torch.softmax(X @ W, dim=1), 1, generator=g).squeeze(1)
    assert float(X.norm(dim=1).max()) <= 1.0
    return X, y, g
