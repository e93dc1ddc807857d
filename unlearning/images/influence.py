"""Influence updates (Warnecke et al., science.md §1) on the last layers of the image CNN.

Objective, as trained (cnn.py): mean cross-entropy + (wd/2)‖θ‖², i.e. in the summed form
the influence equations use

    L(θ; D) = Σ_{z∈D} ℓ(z, θ) + (|D|·λ/2)·‖θ‖²,   λ = the weight decay (`l2`).

Only a subset S of the parameters moves (`params`: `head` = the linear classifier, `last` = the
last residual block + head); the rest, and so the activations entering S, stay fixed. With
D' = (D \\ Z) ∪ Z̃ the gradient of the new objective at θ* (where ∇L(θ*; D) ≈ 0) is

    G = ∇_S L(θ*; D') − ∇_S L(θ*; D) = Σ_Z̃ ∇ℓ − Σ_Z ∇ℓ − (|Z| − |Z̃|)·λ·θ*_S

(the last term: D' has fewer samples, so the same per-sample decay weighs less; it vanishes for
fix_labels, where |Z̃| = |Z|; for a deletion Z̃ = ∅ and G = −Σ_Z∇ℓ − |Z|·λ·θ*_S).

    first_order : θ_S ← θ*_S − τ·G
    second_order: θ_S ← θ*_S − (C + μI)⁻¹·G,   C = ∇²_S L(θ*; D') or its Gauss-Newton part,

C by products only (double backprop) and truncated CG (linalg.conjugate_gradient, which
stops on non-positive curvature). C is taken on a random subsample of the retain set (weight
|retain|/|S|) plus Z̃, so it estimates the full sum. Both updates can be applied in `steps`
re-linearised fractions (the iterative variant): θ ← θ − step(G(θ)/steps).

For `head` the logits are linear in the parameters, so the Hessian and the Gauss-Newton matrix
coincide and the problem is convex (tests/numerics compare against exact retraining of the head).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearning.images.cnn import CNN
from unlearning.images.common import ImageMethodConfig, ImageResult
from unlearning.images.request import ImageData, ImageRequest
from unlearning.linalg import conjugate_gradient

Subset = Literal["head", "last"]


# --- the differentiated part of the network -----------------------------------------------------

def tail_inputs(model: CNN, X: torch.Tensor, params: Subset, batch: int = 512) -> torch.Tensor:
    """The fixed activations entering the moved layers: features (n, d) for `head`, the last
    block's input (n, c, h, w) for `last`."""
    with torch.no_grad():
        parts = [model.features(X[i:i + batch]) if params == "head" else model.body(X[i:i + batch])
                 for i in range(0, len(X), batch)]
    return torch.cat(parts) if parts else torch.zeros(0)


def tail_logits(model: CNN, A: torch.Tensor, params: Subset) -> torch.Tensor:
    return model.head(A if params == "head" else model.pool_last(A))  # (n, C)


def selected(model: CNN, params: Subset) -> list[torch.Tensor]:
    named = dict(model.named_parameters())
    return [named[n] for n in model.parameter_groups()[params]]


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])  # (p_S,)


def unflat(v: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(torch.split(v, [t.numel() for t in like]), like)]


@torch.no_grad()
def move(params: Sequence[torch.Tensor], step: torch.Tensor) -> None:
    """θ_S ← θ_S − step (flat)."""
    for p, s in zip(params, unflat(step, params)):
        p.sub_(s)


# --- G --------------------------------------------------------------------------------------------

def summed_gradient(model: CNN, A: torch.Tensor, y: torch.Tensor, params: Subset) -> torch.Tensor:
    """Σ_i ∇_S ℓ(z_i, θ) over the rows of A, flat (p_S,)."""
    theta = selected(model, params)
    if len(y) == 0:
        return torch.zeros(sum(p.numel() for p in theta), dtype=theta[0].dtype)
    loss = F.cross_entropy(tail_logits(model, A, params), y, reduction="sum")
    return flat(torch.autograd.grad(loss, theta))


def influence_gradient(model: CNN, A_forget: torch.Tensor, y_forget: torch.Tensor,
                       y_tilde: torch.Tensor | None, params: Subset, l2: float) -> torch.Tensor:
    """G = Σ_Z̃ ∇ℓ − Σ_Z ∇ℓ − (|Z| − |Z̃|)·λ·θ_S (module doc). Z̃ shares Z's images, so one set of
    activations serves both; two separate sums, so an unchanged label cancels exactly."""
    G = -summed_gradient(model, A_forget, y_forget, params)
    removed = len(y_forget)
    if y_tilde is not None:
        G = G + summed_gradient(model, A_forget, y_tilde, params)
        removed -= len(y_tilde)
    if removed:
        G = G - removed * l2 * flat([p.detach() for p in selected(model, params)])
    return G


# --- curvature-vector products ------------------------------------------------------------------

class ClassificationHessian:
    """v ↦ (H + (n'λ + μ)·I)·v, H = ∇²_S Σ_i w_i·ℓ_i: the exact Hessian of the weighted summed
    cross-entropy over the selected parameters, by double backprop (the gradient graph is built once)."""

    def __init__(self, model: CNN, A: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                 params: Subset, ridge: float, damping: float = 0.0):
        self.theta = selected(model, params)
        self.shift = ridge + damping
        ce = F.cross_entropy(tail_logits(model, A, params), y, reduction="none")  # (m,)
        self.grads = torch.autograd.grad((weights * ce).sum(), self.theta, create_graph=True)
        self.products = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        Hv = torch.autograd.grad(self.grads, self.theta, grad_outputs=unflat(v, self.theta), retain_graph=True)
        self.products += 1
        return flat(Hv).detach() + self.shift * v


class ClassificationGaussNewton:
    """v ↦ (Σ_i w_i·J_iᵀ(diag p_i − p_i p_iᵀ)J_i + (n'λ + μ)·I)·v, J_i = ∂logits_i/∂θ_S: the
    generalised Gauss-Newton matrix of the cross-entropy (positive semi-definite). J·v by the
    double-vjp trick on a vjp graph built once, then Jᵀ by one more vjp."""

    def __init__(self, model: CNN, A: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                 params: Subset, ridge: float, damping: float = 0.0):
        self.theta = selected(model, params)
        self.shift = ridge + damping
        self.logits = tail_logits(model, A, params)  # (m, C)
        self.p = torch.softmax(self.logits.detach(), dim=1)  # (m, C)
        self.w = weights.to(self.p.dtype)[:, None]  # (m, 1)
        self.u = torch.zeros_like(self.logits, requires_grad=True)  # (m, C) dummy cotangent
        self.Jt_u = torch.autograd.grad(self.logits, self.theta, grad_outputs=self.u, create_graph=True)
        self.products = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        Jv, = torch.autograd.grad(self.Jt_u, self.u, grad_outputs=unflat(v, self.theta), retain_graph=True)
        HJv = self.w * (self.p * Jv - self.p * (self.p * Jv).sum(dim=1, keepdim=True))  # (m, C)
        JtHJv = torch.autograd.grad(self.logits, self.theta, grad_outputs=HJv, retain_graph=True)
        self.products += 1
        return flat(JtHJv).detach() + self.shift * v


CURVATURES = {"gauss_newton": ClassificationGaussNewton, "hessian": ClassificationHessian}


def curvature_sample(data: ImageData, request: ImageRequest, subsample: int | None,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of D' the curvature is taken on: a uniform subsample S of the retain set (weight
    |retain|/|S|; all of it, weight 1, when `subsample` is None or larger) plus Z̃ (weight 1).
    Returns (X, y, weights); Σ weights = |D'|."""
    retain = request.retain
    if subsample is not None and subsample < len(retain):
        gen = torch.Generator().manual_seed(seed)
        retain = retain[torch.randperm(len(retain), generator=gen)[:subsample]]
    X_tilde, y_tilde = request.replacement(data)
    X = torch.cat([data.X[retain], X_tilde])
    y = torch.cat([data.y[retain], y_tilde])
    w = torch.cat([torch.full((len(retain),), len(request.retain) / max(len(retain), 1)),
                   torch.ones(len(y_tilde))])
    return X, y, w


# --- the scale of the curvature ------------------------------------------------------------------

def mean_eigenvalue(C, p: int, probes: int = 20, seed: int = 0) -> float:
    """tr(C)/p by Hutchinson's estimator E[vᵀCv] = tr(C) with Rademacher v (`probes` products):
    the curvature's scale, which sets the default τ and μ below."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        v = (torch.randint(0, 2, (p,), generator=gen) * 2 - 1).to(C.theta[0].dtype)
        total += float(v @ C(v))
    return total / (probes * p)


# --- the methods ----------------------------------------------------------------------------------

class InfluenceConfig(ImageMethodConfig):
    l2: float | None = Field(None, ge=0, description="λ of the objective; None = the training weight decay")
    steps: int = Field(1, ge=1, description="re-linearised fractions of the update (iterative variant)")
    curvature: Literal["gauss_newton", "hessian"] = "gauss_newton"
    subsample: int | None = Field(2048, ge=1, description="retain samples the curvature is taken on (None: all)")
    probes: int = Field(20, ge=1, description="Hutchinson products for the curvature scale (defaults only)")
    scale_rows: int = Field(256, ge=1, description="curvature-sample rows the scale is estimated on")
    seed: int = 0


# Defaults are relative to the curvature's scale, m = tr(C)/p (C on D', selected parameters): the
# summed gradient and curvature grow with the data and with how confidently it is fitted, so an
# absolute τ or μ tuned on one model is wrong by orders of magnitude on another (digits: m ≈ 3;
# the Fashion-MNIST model: m ≈ 120). τ = 1/m is the convex methods' default (influence.default_tau).
# Measured on digits (tiny preset; classes 3/8/0, 144 random records, 20 % flips 1↔7):
# - first_order, τ = 1/m (≈ 0.34): classes forgotten (UA 100 %, RA 99.4–100 %); random records
#   untouched (as retraining nearly is); the flips get *worse* at every τ tried (forget accuracy
#   91 → 61 % at 0.01, 84 % at 0.001): a first-order step cannot repair labels here. On a 3k-image
#   Fashion-MNIST model (m ≈ 120) τ = 1/m forgot the class but lost 30 points of RA, the tuned
#   digits value 0.3 would have lost all of it (RA 10 %).
# - second_order, μ relative to m: a class needs little damping (its forget gradient is tiny and
#   must be amplified: μ = 0.1·m forgets classes 3/8/0, UA 100 %, RA 97.5–99.8 %; μ ≈ 3·m only
#   18 %), flips and random records need more (μ ≈ 0.1·m pushed the flips 86 → 54 %, μ = 3·m
#   repaired them: 100 %, as retraining).
RELATIVE_DAMPING = {"forget_class": 0.1, "delete_records": 3.0, "fix_labels": 3.0}


class FirstOrderConfig(InfluenceConfig):
    params: Subset = Field("head", description="head, or last = last residual block + head")
    tau: float | None = Field(None, gt=0, description="unlearning rate τ on the summed gradient; "
                                                       "None = 1/mean eigenvalue of the curvature")


class SecondOrderConfig(InfluenceConfig):
    params: Subset = Field("last", description="head, or last = last residual block + head")
    damping: float | None = Field(None, ge=0, description="μ added to the curvature; None = RELATIVE_DAMPING "
                                                          "of the request kind × mean eigenvalue")
    cg_iters: int = Field(10, ge=1)
    cg_tol: float = Field(1e-4, gt=0)


def _l2(cfg: InfluenceConfig, data: ImageData) -> float:
    if cfg.l2 is not None:
        return cfg.l2
    return data.schedule.weight_decay if data.schedule is not None else 5e-4


class _Setting:
    """What both updates share: the affected activations, the curvature sample and its operator."""

    def __init__(self, model: CNN, data: ImageData, request: ImageRequest, cfg: InfluenceConfig):
        self.model, self.request, self.cfg = model, request, cfg
        self.l2 = _l2(cfg, data)
        self.theta = selected(model, cfg.params)
        self.A_f = tail_inputs(model, data.X[request.forget], cfg.params)  # fixed: only later layers move
        self.y_f = data.y[request.forget]
        X_c, self.y_c, self.w_c = curvature_sample(data, request, cfg.subsample, cfg.seed)
        self.A_c = tail_inputs(model, X_c, cfg.params)
        self.ridge = float(self.w_c.sum()) * self.l2  # |D'|·λ

    def G(self) -> torch.Tensor:
        return influence_gradient(self.model, self.A_f, self.y_f, self.request.corrected, self.cfg.params, self.l2)

    def curvature(self, damping: float = 0.0):
        return CURVATURES[self.cfg.curvature](self.model, self.A_c, self.y_c, self.w_c, self.cfg.params,
                                              self.ridge, damping)

    def scale(self) -> float:
        """tr(C)/p on a random `scale_rows` of the curvature sample, reweighted to the same total
        (the trace is a weighted sum over rows): 20 products on 256 rows instead of all of them."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        rows = torch.randperm(len(self.y_c), generator=gen)[:self.cfg.scale_rows]
        w = self.w_c[rows] * (self.w_c.sum() / self.w_c[rows].sum())
        C = CURVATURES[self.cfg.curvature](self.model, self.A_c[rows], self.y_c[rows], w, self.cfg.params, self.ridge)
        return mean_eigenvalue(C, sum(t.numel() for t in self.theta), self.cfg.probes, self.cfg.seed)


def first_order(model: CNN, data: ImageData, request: ImageRequest, cfg: FirstOrderConfig) -> ImageResult:
    """θ*_S − τ·G on the last layers, in `steps` re-linearised fractions."""
    new = copy.deepcopy(model).eval()
    s = _Setting(new, data, request, cfg)
    tau = cfg.tau if cfg.tau is not None else 1.0 / s.scale()
    g_norm = None
    for _ in range(cfg.steps):
        G = s.G()
        g_norm = float(G.norm()) if g_norm is None else g_norm
        move(s.theta, tau * G / cfg.steps)
    return ImageResult(new, "first_order", "empirical", {"tau": tau, "steps": cfg.steps, "params": cfg.params,
                                                         "G_norm": g_norm, "l2": s.l2})


def second_order(model: CNN, data: ImageData, request: ImageRequest, cfg: SecondOrderConfig) -> ImageResult:
    """θ*_S − (C + μI)⁻¹·G on the last layers by truncated CG, in `steps` re-linearised fractions."""
    new = copy.deepcopy(model).eval()
    s = _Setting(new, data, request, cfg)
    damping = cfg.damping if cfg.damping is not None else RELATIVE_DAMPING[request.kind] * s.scale()
    products, residuals, negative, g_norm, step_norm = 0, [], False, None, 0.0
    for _ in range(cfg.steps):
        G = s.G() / cfg.steps
        g_norm = float(G.norm()) * cfg.steps if g_norm is None else g_norm
        C = s.curvature(damping)
        out = conjugate_gradient(C, G, max_iter=cfg.cg_iters, tol=cfg.cg_tol)
        del C  # frees the gradient graph
        products += out.iterations
        residuals.append(out.relative_residual)
        negative |= out.negative_curvature
        step_norm += float(out.x.norm())
        move(s.theta, out.x)
    return ImageResult(new, "second_order", "empirical", {
        "damping": damping, "curvature": cfg.curvature, "params": cfg.params, "steps": cfg.steps,
        "products": products, "cg_residual": max(residuals), "negative_curvature": negative,
        "G_norm": g_norm, "step_norm": step_norm, "curvature_samples": len(s.y_c), "l2": s.l2})
