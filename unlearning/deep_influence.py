"""Influence updates that remove secrets from the character LM (Warnecke et al.; science.md §1).

A request replaces the affected training windows Z (every fixed window overlapping a secret
occurrence) by Z̃ (the same windows cut from the redacted text: inputs and next-char labels change
together). With ℓ the summed next-char cross-entropy of a window (charlm.window_loss):

    G      = Σ_{z̃∈Z̃} ∇ℓ(z̃, θ*) − Σ_{z∈Z} ∇ℓ(z, θ*)                       (only |Z| windows touched)
    first  : θ_new = θ* − τ·G
    second : θ_new = θ* − (H + μI)⁻¹·G,   H ≈ ∇²L(θ*; D')

H is never formed. Hessian-vector products come from double backprop on a fixed random subsample S
of the untouched training windows plus Z̃, scaled to the full sum:

    H ≈ (|D| − |Z|)/|S| · Σ_{w∈S} ∇²ℓ(w, θ*) + Σ_{z̃∈Z̃} ∇²ℓ(z̃, θ*)

(a full-data product costs about a training epoch: CG over those is slower than retraining).
The first backward pass is built once with create_graph and reused by every product, so each CG
iteration costs one double-backward only. The LM is not convex: μ > 0 makes H + μI positive
definite in practice, and CG stops (truncated) if it still meets a direction of non-positive
curvature. Updates may be restricted to a parameter subset (`head`, `last` = last LSTM layer +
head, or explicit names); the other parameters are left bit-for-bit untouched.

Iterative variant (`steps` > 1): the replacement is applied in `steps` equal fractions, each
re-linearised at the current θ (G and H recomputed there): θ ← θ − (H(θ) + μI)⁻¹·G(θ)/steps.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from unlearning.errors import UnlearnError
from unlearning.models.charlm import CharLSTM, Vocab, train_lm, window_loss, window_starts

Params = str | Sequence[str]


# --- the request: Z and Z̃ ---------------------------------------------------------------------

@dataclass(frozen=True)
class WindowRequest:
    index: torch.Tensor  # (k,) positions of the affected windows among the training windows
    Z: torch.Tensor  # (k, T+1) the windows as trained on
    Z_tilde: torch.Tensor  # (k, T+1) the same windows cut from the redacted text

    def __len__(self) -> int:
        return len(self.index)

    def apply(self, train_windows: torch.Tensor) -> torch.Tensor:
        """D' = (D \\ Z) ∪ Z̃ as a window tensor: Z replaced by Z̃ in place of order."""
        out = train_windows.clone()
        out[self.index] = self.Z_tilde
        return out


def affected_windows(vocab: Vocab, text: str, text_tilde: str, spans: Sequence[tuple[int, int]],
                     seq_len: int, stride: int | None = None) -> WindowRequest:
    """Z = every window (charlm.windows offsets) whose seq_len+1 chars overlap a span [start, end)
    of `text`; Z̃ = the same windows of `text_tilde` (the redacted text, same length)."""
    if len(text_tilde) != len(text):
        raise UnlearnError(f"the redacted text has {len(text_tilde)} characters but the training text "
                           f"{len(text)}: redaction must preserve length so windows line up")
    starts = window_starts(len(text), seq_len, stride)  # (m,)
    hit = torch.zeros(len(starts), dtype=torch.bool)
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise UnlearnError(f"span ({start}, {end}) is outside the text of {len(text)} characters")
        hit |= (starts < end) & (starts + seq_len + 1 > start)
    index = hit.nonzero().squeeze(1)  # (k,)
    offsets = starts[index, None] + torch.arange(seq_len + 1)  # (k, T+1)
    return WindowRequest(index=index, Z=vocab.encode(text)[offsets], Z_tilde=vocab.encode(text_tilde)[offsets])


# --- parameters ---------------------------------------------------------------------------------

def select_params(model: CharLSTM, params: Params = "all") -> list[str]:
    """Names of the parameters an update may move: a group of model.parameter_groups() or names."""
    groups = model.parameter_groups()
    if isinstance(params, str):
        if params not in groups:
            raise UnlearnError(f"unknown parameter subset {params!r}: choose one of {', '.join(groups)} "
                               f"or give parameter names")
        return groups[params]
    unknown = sorted(set(params) - set(groups["all"]))
    if unknown:
        raise UnlearnError(f"unknown parameters {unknown}: the model has {', '.join(groups['all'])}")
    return list(params)


def _tensors(model: CharLSTM, names: Sequence[str]) -> list[torch.Tensor]:
    named = dict(model.named_parameters())
    return [named[n] for n in names]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])  # (p_S,)


def _split(v: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(torch.split(v, [t.numel() for t in like]), like)]


@torch.no_grad()
def _move(model: CharLSTM, names: Sequence[str], step: torch.Tensor) -> None:
    """θ_S ← θ_S − step (flat over the selected parameters)."""
    params = _tensors(model, names)
    for p, s in zip(params, _split(step, params)):
        p.sub_(s)


# --- G ------------------------------------------------------------------------------------------

def summed_gradient(model: CharLSTM, names: Sequence[str], batch: torch.Tensor,
                    weights: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """Σ_w weight_w·∇_θS ℓ(w, θ), flat (p_S,)."""
    params = _tensors(model, names)
    total = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype)
    for lo in range(0, len(batch), chunk):
        losses = window_loss(model, batch[lo:lo + chunk])  # (c,)
        if weights is not None:
            losses = losses * weights[lo:lo + chunk]
        total += _flat(torch.autograd.grad(losses.sum(), params))
    return total


def influence_gradient(model: CharLSTM, request: WindowRequest, names: Sequence[str]) -> torch.Tensor:
    """G = Σ_Z̃ ∇ℓ − Σ_Z ∇ℓ at the model's θ, flat over the selected parameters (p_S,)."""
    both = torch.cat([request.Z_tilde, request.Z])  # (2k, T+1)
    signs = torch.cat([torch.ones(len(request)), -torch.ones(len(request))])
    return summed_gradient(model, names, both, signs)


# --- Hessian-vector products and conjugate gradient ---------------------------------------------

def curvature_windows(train_windows: torch.Tensor, request: WindowRequest, subsample: int,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """S ∪ Z̃ and their weights: S uniform without replacement from D \\ Z, weight (|D|−|Z|)/|S|;
    Z̃ weight 1. So Σ weight·∇²ℓ estimates H(θ; D') without bias. (s+k, T+1), (s+k,)."""
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    pool = keep.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    s = min(subsample, len(pool))
    chosen = pool[torch.randperm(len(pool), generator=gen)[:s]]
    windows_ = torch.cat([train_windows[chosen], request.Z_tilde])
    weights = torch.cat([torch.full((s,), len(pool) / max(s, 1)), torch.ones(len(request))])
    return windows_, weights


class HessianOperator:
    """v ↦ (H_S + μI)·v over the selected parameters, H_S = ∇²_θS Σ_w weight_w·ℓ(w, θ).

    The gradient graph is built once (create_graph) and every product is one double-backward
    through it (torch.autograd.grad twice). `hvps` counts the products.
    """

    def __init__(self, model: CharLSTM, names: Sequence[str], windows_: torch.Tensor,
                 weights: torch.Tensor, damping: float = 0.0):
        self.params = _tensors(model, names)
        self.damping = damping
        loss = (weights * window_loss(model, windows_)).sum()
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.hvps = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        Hv = torch.autograd.grad(self.grads, self.params, grad_outputs=_split(v, self.params),
                                 retain_graph=True)
        self.hvps += 1
        return _flat(Hv).detach() + self.damping * v


@dataclass(frozen=True)
class CGResult:
    x: torch.Tensor
    iterations: int
    relative_residual: float  # ‖g − A·x‖/‖g‖ by the CG recursion
    negative_curvature: bool  # stopped on dᵀAd ≤ 0 (A not positive definite there)


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor,
                       max_iter: int = 20, tol: float = 1e-3) -> CGResult:
    """Truncated CG for A·x = g from x = 0; A given by products only.

    As influence.conjugate_gradient, plus the non-convex guard: if a search direction has
    dᵀAd ≤ 0, stop and keep the iterate so far (Steihaug), rather than step along it.
    """
    x = torch.zeros_like(g)
    r = g.clone()
    d = r.clone()
    rr = float(r @ r)
    g_norm = math.sqrt(rr) or 1.0
    it, negative = 0, False
    while it < max_iter and math.sqrt(rr) > tol * g_norm:
        Ad = hvp(d)
        it += 1
        dAd = float(d @ Ad)
        if dAd <= 0:
            negative = True
            break
        alpha = rr / dAd
        x += alpha * d
        r -= alpha * Ad
        rr_next = float(r @ r)
        d = r + (rr_next / rr) * d
        rr = rr_next
    return CGResult(x=x, iterations=it, relative_residual=math.sqrt(rr) / g_norm, negative_curvature=negative)


# --- updates ------------------------------------------------------------------------------------

@dataclass
class DeepUpdate:
    model: CharLSTM  # the updated copy (the input model is never modified)
    method: str
    stats: dict = field(default_factory=dict)  # seconds, hvps, cg residual, ...


def first_order(model: CharLSTM, request: WindowRequest, tau: float = 2e-4, params: Params = "all",
                steps: int = 1) -> DeepUpdate:
    """θ* − τ·G (Warnecke et al. first-order update), in `steps` re-linearised fractions."""
    started = time.perf_counter()
    new = copy.deepcopy(model)
    names = select_params(new, params)
    g_norm = 0.0
    for _ in range(steps):
        G = influence_gradient(new, request, names)
        g_norm = g_norm or float(G.norm())
        _move(new, names, tau * G / steps)
    new.eval()
    return DeepUpdate(new, "first_order", {"seconds": time.perf_counter() - started, "hvps": 0,
                                          "tau": tau, "steps": steps, "G_norm": g_norm,
                                          "windows": len(request)})


def second_order(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, *,
                 damping: float = 1e3, cg_iters: int = 10, cg_tol: float = 1e-3, subsample: int = 64,
                 params: Params = "all", steps: int = 1, seed: int = 0) -> DeepUpdate:
    """θ* − (H + μI)⁻¹·G by truncated CG on Hessian-vector products (double backprop) of a fixed
    subsample of `subsample` training windows plus Z̃, scaled to the full sum."""
    started = time.perf_counter()
    new = copy.deepcopy(model)
    names = select_params(new, params)
    windows_, weights = curvature_windows(train_windows, request, subsample, seed)
    hvps, residuals, negative, g_norm, step_norm = 0, [], False, 0.0, 0.0
    for _ in range(steps):
        G = influence_gradient(new, request, names) / steps
        g_norm = g_norm or float(G.norm()) * steps
        H = HessianOperator(new, names, windows_, weights, damping)
        out = conjugate_gradient(H, G, max_iter=cg_iters, tol=cg_tol)
        del H  # frees the gradient graph
        hvps += out.iterations
        residuals.append(out.relative_residual)
        negative |= out.negative_curvature
        step_norm += float(out.x.norm())
        _move(new, names, out.x)
    new.eval()
    return DeepUpdate(new, "second_order", {
        "seconds": time.perf_counter() - started, "hvps": hvps, "cg_residual": max(residuals),
        "negative_curvature": negative, "damping": damping, "subsample": len(windows_) - len(request),
        "params": params if isinstance(params, str) else list(params), "steps": steps,
        "cg_iters": cg_iters, "G_norm": g_norm, "step_norm": step_norm, "windows": len(request)})


def finetune(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, *, steps: int = 30,
             lr: float = 1e-3, retain_batch: int = 32, seed: int = 0) -> DeepUpdate:
    """Baseline: Adam steps on mean per-char CE over Z̃ plus a fresh retain sample of D \\ Z per step."""
    started = time.perf_counter()
    new = copy.deepcopy(model)
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    pool = train_windows[keep]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    new.train()
    for _ in range(steps):
        batch = torch.cat([request.Z_tilde, pool[torch.randint(len(pool), (retain_batch,), generator=gen)]])
        loss = window_loss(new, batch).sum() / (batch.shape[0] * (batch.shape[1] - 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    new.eval()
    return DeepUpdate(new, "finetune", {"seconds": time.perf_counter() - started, "hvps": 0,
                                       "steps": steps, "lr": lr, "retain_batch": retain_batch})


def retrain(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, *, steps: int,
            lr: float, batch: int, seed: int = 0, init_seed: int = 0, progress=None) -> DeepUpdate:
    """Reference: the same architecture trained from scratch on D' = (D \\ Z) ∪ Z̃ with the same
    schedule (pass the original run's TrainStats.steps, lr, batch and seeds)."""
    started = time.perf_counter()
    new = CharLSTM.from_config(model.config, seed=init_seed)
    stats = train_lm(new, request.apply(train_windows), steps=steps, lr=lr, batch=batch, seed=seed,
                     progress=progress)
    return DeepUpdate(new, "retrain", {"seconds": time.perf_counter() - started, "hvps": 0,
                                      "steps": stats.steps, "loss": stats.loss})
