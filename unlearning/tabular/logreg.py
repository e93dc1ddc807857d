"""L2-regularised logistic regression in float64, binary and multinomial.

Objective (Guo et al. 2020, with objective perturbation b; science.md §2):

    L_b(θ; D) = Σ_i ℓ(z_i, θ) + (Λ/2)·‖θ‖² + bᵀθ

Λ = λ·n₀ is fixed when a model lineage is first trained (n₀ its training size) and kept for every
unlearning step and for the retrained reference: all of them minimise the same objective on
different data, and a deletion changes the Hessian by a low-rank term only (science.md §1).

θ is (d,) for a binary model (labels {0, 1}, sigmoid) and (d, K) for K ≥ 3 classes (softmax).
Every derivative here has a closed form, so the Hessian, its products and per-sample gradients
cost a few matrix products; autograd is used only by the tests as the independent reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPE = torch.float64
NEWTON_MAX_PARAMS = 5000  # fit polishes with dense Newton steps up to this many parameters


@dataclass(frozen=True)
class Objective:
    """The data-independent part of L_b: the L2 weight Λ and the perturbation b (or None)."""

    l2: float
    b: torch.Tensor | None = None


def is_binary(theta: torch.Tensor) -> bool:
    return theta.dim() == 1


def init_theta(d: int, n_classes: int) -> torch.Tensor:
    return torch.zeros(d, dtype=DTYPE) if n_classes == 2 else torch.zeros(d, n_classes, dtype=DTYPE)


def logits(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return X @ theta  # (n,) or (n, K)


def probabilities(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """P(y=1|x) (n,) for binary, softmax (n, K) for multinomial."""
    z = logits(theta, X)
    return torch.sigmoid(z) if is_binary(theta) else torch.softmax(z, dim=1)


def predict(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    z = logits(theta, X)
    return (z > 0).long() if is_binary(theta) else z.argmax(dim=1)


def sample_losses(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ(z_i, θ) for each row (n,)."""
    z = logits(theta, X)
    if is_binary(theta):
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y.to(DTYPE), reduction="none")
    return torch.nn.functional.cross_entropy(z, y, reduction="none")


def residual_of_link(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ℓ/∂logits: σ(z) − y (n,) or softmax(z) − onehot(y) (n, K)."""
    p = probabilities(theta, X)
    if is_binary(theta):
        return p - y.to(DTYPE)
    return p - torch.nn.functional.one_hot(y, p.shape[1]).to(DTYPE)


def data_gradient(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_i ∇ℓ(z_i, θ) over the given rows, shaped like θ. Cost O(n·d·K)."""
    return X.T @ residual_of_link(theta, X, y)


def objective(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, obj: Objective) -> torch.Tensor:
    """L_b(θ; D) with n = len(X)."""
    value = sample_losses(theta, X, y).sum() + 0.5 * obj.l2 * (theta * theta).sum()
    return value + (obj.b * theta).sum() if obj.b is not None else value


def gradient(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, obj: Objective) -> torch.Tensor:
    """∇L_b(θ; D) — the gradient residual of a model on data D is the norm of this."""
    g = data_gradient(theta, X, y) + obj.l2 * theta
    return g + obj.b if obj.b is not None else g


def data_hessian(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Σ_i ∇²ℓ(z_i, θ), without the regulariser.

    Binary: Xᵀ W X with W = σ(1−σ)  → (d, d).
    Multinomial: Σ_i (diag(π_i) − π_i π_iᵀ) ⊗ x_i x_iᵀ, flattened in θ's row-major order
    (index j·K + a for θ[j, a])  → (d·K, d·K).
    The logistic Hessian does not depend on y, which makes label fixes cheap.
    """
    p = probabilities(theta, X)
    if is_binary(theta):
        w = p * (1 - p)  # (n,)
        return X.T @ (w[:, None] * X)
    n, d = X.shape
    K = p.shape[1]
    H = torch.empty(d, K, d, K, dtype=DTYPE)
    for a in range(K):
        for c in range(a, K):
            w = p[:, a] * ((1.0 if a == c else 0.0) - p[:, c])  # (n,)
            block = X.T @ (w[:, None] * X)  # (d, d)
            H[:, a, :, c] = block
            H[:, c, :, a] = block
    return H.reshape(d * K, d * K)


def hessian(theta: torch.Tensor, X: torch.Tensor, obj: Objective) -> torch.Tensor:
    """∇²L_b(θ; D) = data Hessian + λ·n·I (b is linear and drops out)."""
    H = data_hessian(theta, X)
    return H + obj.l2 * torch.eye(H.shape[0], dtype=DTYPE)


def data_hvp(theta: torch.Tensor, X: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(Σ_i ∇²ℓ(z_i, θ))·v without forming the Hessian; v shaped like θ. Cost O(n·d·K)."""
    p = probabilities(theta, X)
    Xv = X @ v  # (n,) or (n, K)
    if is_binary(theta):
        return X.T @ (p * (1 - p) * Xv)
    return X.T @ (p * Xv - p * (p * Xv).sum(dim=1, keepdim=True))


def hvp(theta: torch.Tensor, X: torch.Tensor, obj: Objective, v: torch.Tensor) -> torch.Tensor:
    """∇²L_b(θ; D)·v, Hessian-free."""
    return data_hvp(theta, X, v) + obj.l2 * v


@dataclass(frozen=True)
class FitReport:
    theta: torch.Tensor
    grad_norm: float
    iterations: int


def fit(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    obj: Objective,
    theta0: torch.Tensor | None = None,
    tol: float = 1e-9,
    max_iter: int = 500,
    progress=None,
) -> FitReport:
    """argmin_θ L_b(θ; D) by L-BFGS with strong-Wolfe line search, to ‖∇L_b‖ ≤ tol·max(1, n),
    finished by Newton steps (up to NEWTON_MAX_PARAMS parameters) where L-BFGS stalls.

    `theta0` warm-starts (retraining from the current model); `progress(iteration, grad_norm)` is
    called once per outer step so long fits can report on the console.
    """
    theta = (theta0.clone() if theta0 is not None else init_theta(X.shape[1], n_classes)).requires_grad_(True)
    target = tol * max(1, len(X))
    opt = torch.optim.LBFGS(
        [theta], lr=1, max_iter=50, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=target / 10, tolerance_change=1e-14,
    )

    def closure():
        opt.zero_grad()
        value = objective(theta, X, y, obj)
        value.backward()
        return value

    iterations = 0
    for step in range(max(1, max_iter // 50)):
        opt.step(closure)
        iterations = opt.state[opt._params[0]]["n_iter"]
        with torch.no_grad():
            g = float(gradient(theta, X, y, obj).norm())
        if progress is not None:
            progress(iterations, g)
        if g <= target:
            break
    with torch.no_grad():
        theta = theta.detach()
        # L-BFGS's line search compares objective values, which float64 resolves only to about
        # 1e-16·|L|: it stalls at ‖∇L_b‖ ≈ 1e-7..1e-5 whatever the tolerance. Newton steps on the
        # closed-form Hessian need only gradients and converge quadratically from there.
        g = gradient(theta, X, y, obj)
        while float(g.norm()) > target and theta.numel() <= NEWTON_MAX_PARAMS and iterations < max_iter:
            step = torch.linalg.solve(hessian(theta, X, obj), g.reshape(-1)).reshape(theta.shape)
            g_next = gradient(theta - step, X, y, obj)
            if float(g_next.norm()) >= float(g.norm()):
                break  # at the float64 floor of the gradient
            theta, g, iterations = theta - step, g_next, iterations + 1
        return FitReport(theta=theta, grad_norm=float(g.norm()), iterations=iterations)
