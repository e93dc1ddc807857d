"""An unlearning request in tensors: D, the affected points Z ⊂ D and their replacements Z̃.

science.md §1: D' = (D \\ Z) ∪ Z̃. Deleted records have no replacement; revoked features and fixed
labels replace a row by its corrected version. Only Z and Z̃ are touched by the influence updates,
so everything here is built to make the corrected data D' cheap to get at when a method needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from unlearning.tabular.logreg import DTYPE, Objective
from unlearning.tabular.noise import residual_budget


@dataclass(frozen=True)
class Certification:
    """Objective-perturbation settings of a certifiably trained model (Guo et al.; science.md §2).

    The model was trained with b ~ N(0, σ²I). A removal whose accumulated gradient-residual bound
    is ε′ is (ε, δ)-certified for ε = c·ε′/σ, c = √(2 ln(1.5/δ)). `budget` is the residual total
    the model may accumulate before the promised ε is exceeded: budget = σ·ε/c.
    """

    epsilon: float
    delta: float
    sigma: float
    spent: float = 0.0  # accumulated residual bounds of earlier requests on this model lineage

    @property
    def budget(self) -> float:
        return residual_budget(self.sigma, self.epsilon, self.delta)


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything an unlearning method needs, as float64 tensors.

    theta:    θ* trained on D                                   (d,) or (d, K)
    X, y:     the training data D                               (n, d), (n,)
    z_index:  rows of D that are affected (Z), deletions first  (m,)
    X_tilde, y_tilde: corrected versions of the rows that stay  (m̃, d), (m̃,)   (m̃ ≤ m);
              X_tilde[i] replaces row z_index[m − m̃ + i]
    revoked:  columns of X that are constant 0 in D' (revoked features) — their optimum is known
              in closed form, so methods solve only for the surviving coordinates.
    """

    theta: torch.Tensor
    obj: Objective
    X: torch.Tensor
    y: torch.Tensor
    n_classes: int
    z_index: torch.Tensor
    X_tilde: torch.Tensor
    y_tilde: torch.Tensor
    revoked: tuple[int, ...] = ()
    certification: Certification | None = None
    cache: dict = field(default_factory=dict)  # per model version: H(θ*; D), its factor, ‖X‖₂

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def n_new(self) -> int:
        return self.n - len(self.z_index) + len(self.X_tilde)

    @cached_property
    def keep_mask(self) -> torch.Tensor:
        mask = torch.ones(self.n, dtype=torch.bool)
        mask[self.z_index] = False
        return mask

    @cached_property
    def keeps_rows(self) -> bool:
        """Whether any row of D is untouched (a revocation touches them all)."""
        return len(self.z_index) < self.n

    @cached_property
    def keep_weight(self) -> torch.Tensor:
        """1.0 on untouched rows of D, 0.0 on Z (n,): sums over D' read X in place with these
        weights instead of copying the untouched rows out (see `new_blocks`)."""
        return self.keep_mask.to(DTYPE)

    def new_blocks(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """D' as (X_block, y_block, row weights or None) without copying X: all of D weighted by
        `keep_weight` (left out when every row is touched), then Z̃. A sum over D' is the weighted
        sum over the blocks; X_new is the same rows materialised (an n×p copy: 4–15 ms on Adult)."""
        blocks = [(self.X, self.y, self.keep_weight)] if self.keeps_rows else []
        if len(self.X_tilde):
            blocks.append((self.X_tilde, self.y_tilde, None))
        return blocks

    @cached_property
    def X_new(self) -> torch.Tensor:
        """D' inputs (n', d): untouched rows then Z̃. A copy of X: the updates use `new_blocks`;
        this is for retraining and for callers that need D' as one matrix."""
        return torch.cat([self.X[self.keep_mask], self.X_tilde])

    @cached_property
    def y_new(self) -> torch.Tensor:
        return torch.cat([self.y[self.keep_mask], self.y_tilde])

    @property
    def X_z(self) -> torch.Tensor:
        return self.X[self.z_index]

    @property
    def y_z(self) -> torch.Tensor:
        return self.y[self.z_index]

    def replacement_of_z(self) -> torch.Tensor:
        """For each entry of z_index, the row of X_tilde replacing it, or −1 for a deletion."""
        n_deleted = len(self.z_index) - len(self.X_tilde)
        return torch.cat([torch.full((n_deleted,), -1, dtype=torch.long), torch.arange(len(self.X_tilde))])

    @property
    def touched(self) -> int:
        """|Z| + |Z̃|: how many rows an influence update has to look at."""
        return len(self.z_index) + len(self.X_tilde)


def make_problem(
    theta: torch.Tensor,
    obj: Objective,
    X,
    y,
    n_classes: int,
    z_index,
    X_tilde,
    y_tilde,
    revoked=(),
    certification: Certification | None = None,
    cache: dict | None = None,
) -> Problem:
    """Build a Problem from array-likes (numpy or torch), converting to float64/int64 tensors."""
    X = torch.as_tensor(X, dtype=DTYPE)
    X_tilde = torch.as_tensor(X_tilde, dtype=DTYPE).reshape(-1, X.shape[1])
    return Problem(
        theta=torch.as_tensor(theta, dtype=DTYPE),
        obj=obj,
        X=X,
        y=torch.as_tensor(y, dtype=torch.long),
        n_classes=n_classes,
        z_index=torch.as_tensor(z_index, dtype=torch.long).reshape(-1),
        X_tilde=X_tilde,
        y_tilde=torch.as_tensor(y_tilde, dtype=torch.long).reshape(-1),
        revoked=tuple(int(j) for j in revoked),
        certification=certification,
        cache=cache if cache is not None else {},
    )
