"""Linear algebra shared by every kind of model: the one conjugate gradient, and the single-thread
context every unlearning method and retraining is run and timed in."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CGResult:
    x: torch.Tensor
    iterations: int  # products A·v computed (one more when started from x0)
    relative_residual: float  # ‖g − A·x‖/‖g‖ by the CG recursion
    negative_curvature: bool = False  # stopped on dᵀAd ≤ 0 (A not positive definite there)

    @property
    def hvps(self) -> int:
        return self.iterations


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, *,
                       tol: float = 1e-10, max_iter: int = 500, x0: torch.Tensor | None = None,
                       diag: torch.Tensor | None = None, guard_negative_curvature: bool = True) -> CGResult:
    """Solve A·x = g (A symmetric, given by products x ↦ A·x only) from x0 (default 0), Jacobi-
    preconditioned when `diag` ≈ diag(A) > 0 is given. Stops when ‖g − A·x‖ ≤ tol·‖g‖ or after
    `max_iter` products (truncated CG: the deep models' updates take only a few).

    Non-convex guard (`guard_negative_curvature`): if a search direction has dᵀAd ≤ 0, A is not
    positive definite there; stop and keep the iterate so far (Steihaug) rather than step along
    it. For a positive-definite A (the convex models) it never fires.
    Starting from x0 costs one extra product (r₀ = g − A·x0), counted in `iterations`.
    """
    g_norm = float(g.norm()) or 1.0
    if x0 is None:
        x, r, extra = torch.zeros_like(g), g.clone(), 0
    else:
        x, r, extra = x0.clone(), g - hvp(x0), 1
    z = r / diag if diag is not None else r
    d = z.clone()
    rz = float(r @ z)
    it, negative = 0, False
    while it < max_iter and float(r.norm()) > tol * g_norm:
        Ad = hvp(d)
        it += 1
        dAd = float(d @ Ad)
        if dAd <= 0 and guard_negative_curvature:
            negative = True
            break
        alpha = rz / dAd
        x = x + alpha * d
        r = r - alpha * Ad
        z = r / diag if diag is not None else r
        rz_next = float(r @ z)
        d = z + (rz_next / rz) * d
        rz = rz_next
    return CGResult(x=x, iterations=it + extra, relative_residual=float(r.norm()) / g_norm,
                    negative_curvature=negative)


@contextmanager
def single_threaded():
    """Run torch on one thread. The updates are sequences of small dense operations and memory-
    bound passes over X; with two OpenMP threads on a busy 2-core machine each small operation can
    stall ~30 ms waiting for a descheduled thread (measured: a 10×92 matmul 31 ms vs 14 µs). All
    methods, retraining included, are run and timed the same way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
