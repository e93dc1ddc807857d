"""Influence updates that remove secrets from the character LM (Warnecke et al.; science.md §1).

A request replaces the affected training windows Z (every fixed window overlapping a secret
occurrence) by Z̃ (the same windows cut from the redacted text: inputs and next-char labels change
together). With ℓ the summed next-char cross-entropy of a window (charlm.window_loss):

    G      = Σ_{z̃∈Z̃} ∇ℓ(z̃, θ*) − Σ_{z∈Z} ∇ℓ(z, θ*)                       (only |Z| windows touched)
    first  : θ_new = θ* − τ·G
    second : θ_new = θ* − (C + μI)⁻¹·G,   C ≈ ∇²L(θ*; D') or its Gauss-Newton part

C is never formed. Its products come from double backprop on a fixed random subsample S of the
untouched training windows plus Z̃, scaled to the full sum:

    C ≈ (|D| − |Z|)/|S| · Σ_{w∈S} C_w + Σ_{z̃∈Z̃} C_z̃

(a full-data product costs about a training epoch: CG over those is slower than retraining). The
first backward pass is built once with create_graph and reused by every product.

`curvature`: `hessian` (∇²ℓ, products by autograd.grad twice) or `gauss_newton` (Jᵀ·H_out·J, the
Fisher of the cross-entropy, products by the double-vjp trick). Measured on the demo model
(bench/text_probe.py), the LM's Hessian is indefinite (Ritz values −4·10⁴ … 10⁶ on 32 windows):
μ large enough to make H + μI definite leaves steps too small to forget, and with smaller μ CG
meets negative curvature and the update costs ~10 % perplexity; its products also cost 2–4× more.
The Gauss-Newton matrix is positive semi-definite and is the default.

What makes a few products enough (measured, see second_order): the solution of (C + μI)x = G is
dominated by directions of near-zero curvature — exactly where memorisation lives — which CG from
x = 0 resolves last. So CG is Jacobi-preconditioned by M = diag(C) + μ (a Monte-Carlo Fisher
diagonal) and *started* at the diagonal solution x₀ = M⁻¹G: the directions CG never reaches keep
their damped step, and the few iterations correct the high-curvature directions that carry
general text (which is what protects perplexity). The LM is not convex: CG stops (truncated) if it
meets a direction of non-positive curvature.

Iterative variant (`steps` > 1): the replacement is applied in `steps` equal fractions, each
re-linearised at the current θ (G, C and M recomputed there): θ ← θ − (C(θ) + μI)⁻¹·G(θ)/steps.
As the secret becomes less likely its gradient in Σ_Z grows, so later steps aim at it better.

Updates may be restricted to a parameter subset (`head`, `last` = last LSTM layer + head, or
explicit names); the other parameters are left bit-for-bit untouched.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from unlearning.devices import device_of, double_backward_safe, seeded_rng
from unlearning.errors import UnlearnError
from unlearning.linalg import conjugate_gradient
from unlearning.text.charlm import CharLSTM, Vocab, train_lm, window_loss, window_starts

Params = str | Sequence[str]


# --- the request: Z and Z̃ ---------------------------------------------------------------------

@dataclass(frozen=True)
class WindowRequest:
    index: torch.Tensor  # (k,) positions of the affected windows among the training windows
    Z: torch.Tensor  # (k, T+1) the windows as trained on
    Z_tilde: torch.Tensor  # (k, T+1) the same windows cut from the redacted text (k' ≠ k for a tokenized model)
    d_prime: torch.Tensor | None = None  # the windows of D' when Z̃ does not pair up with Z (hf_tokens.affected_token_windows)
    secret_mask: torch.Tensor | None = None  # (k, T) labels of Z inside a secret, where Z̃ cannot tell (hf)

    def __len__(self) -> int:
        return len(self.index)

    def apply(self, train_windows: torch.Tensor) -> torch.Tensor:
        """D' = (D \\ Z) ∪ Z̃ as a window tensor: Z replaced by Z̃ in place of order (a tokenized
        model's request: the windows of the tokenized D', which it carries)."""
        if self.d_prime is not None:
            return self.d_prime
        out = train_windows.clone()
        out[self.index] = self.Z_tilde
        return out


def overlapping_windows(n_chars: int, spans: Sequence[tuple[int, int]], seq_len: int,
                        stride: int | None = None) -> torch.Tensor:
    """(m,) bool: which windows (charlm.windows offsets) of a text of n_chars overlap a span."""
    starts = window_starts(n_chars, seq_len, stride)
    hit = torch.zeros(len(starts), dtype=torch.bool)
    for start, end in spans:
        if not 0 <= start < end <= n_chars:
            raise UnlearnError(f"span ({start}, {end}) is outside the text of {n_chars} characters")
        hit |= (starts < end) & (starts + seq_len + 1 > start)
    return hit


def affected_windows(vocab: Vocab, text: str, text_tilde: str, spans: Sequence[tuple[int, int]],
                     seq_len: int, stride: int | None = None) -> WindowRequest:
    """Z = every window (charlm.windows offsets) whose seq_len+1 chars overlap a span [start, end)
    of `text`; Z̃ = the same windows of `text_tilde` (the redacted text, same length)."""
    if len(text_tilde) != len(text):
        raise UnlearnError(f"the redacted text has {len(text_tilde)} characters but the training text "
                           f"{len(text)}: redaction must preserve length so windows line up")
    starts = window_starts(len(text), seq_len, stride)  # (m,)
    index = overlapping_windows(len(text), spans, seq_len, stride).nonzero().squeeze(1)  # (k,)
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
    total = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    for lo in range(0, len(batch), chunk):
        losses = window_loss(model, batch[lo:lo + chunk])  # (c,)
        if weights is not None:
            losses = losses * weights[lo:lo + chunk].to(losses.device)
        total += _flat(torch.autograd.grad(losses.sum(), params))
    return total


def influence_gradient(model: CharLSTM, request: WindowRequest, names: Sequence[str]) -> torch.Tensor:
    """G = Σ_Z̃ ∇ℓ − Σ_Z ∇ℓ at the model's θ, flat over the selected parameters (p_S,)."""
    # Two separate sums (not one signed batch): an unchanged window then cancels exactly.
    return summed_gradient(model, names, request.Z_tilde) - summed_gradient(model, names, request.Z)


# --- Hessian-vector products and conjugate gradient ---------------------------------------------

def curvature_windows(train_windows: torch.Tensor, request: WindowRequest, subsample: int,
                      seed: int = 0, tilde_subsample: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """S ∪ Z̃ and their weights: S uniform without replacement from D \\ Z, weight (|D|−|Z|)/|S|;
    Z̃ (or, beyond `tilde_subsample` windows, a uniform sample of it) weight |Z̃|/|sample|. So
    Σ weight·∇²ℓ estimates H(θ; D') without bias. (s+k, T+1), (s+k,)."""
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    pool = keep.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    s = min(subsample, len(pool))
    chosen = pool[torch.randperm(len(pool), generator=gen)[:s]]
    n_tilde = len(request.Z_tilde)
    k = n_tilde if tilde_subsample is None else min(tilde_subsample, n_tilde)
    tilde = torch.randperm(n_tilde, generator=gen)[:k] if k < n_tilde else torch.arange(n_tilde)
    windows_ = torch.cat([train_windows[chosen], request.Z_tilde[tilde]])
    weights = torch.cat([torch.full((s,), len(pool) / max(s, 1)), torch.full((k,), n_tilde / max(k, 1))])
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
        device = device_of(model)
        with double_backward_safe(device):  # cuDNN's LSTM has no double backward
            loss = (weights.to(device) * window_loss(model, windows_)).sum()
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.hvps = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        Hv = torch.autograd.grad(self.grads, self.params, grad_outputs=_split(v, self.params),
                                 retain_graph=True)
        self.hvps += 1
        return _flat(Hv).detach() + self.damping * v


class GaussNewtonOperator:
    """v ↦ (Jᵀ·H_out·J + μI)·v, the generalised Gauss-Newton matrix (= the Fisher for
    cross-entropy): J = ∂logits/∂θ_S, H_out = diag(p) − ppᵀ per predicted character, weighted like
    the Hessian. Positive semi-definite even where the LM's Hessian is not.

    Products by double backprop too: the vjp u ↦ Jᵀu is built once with create_graph; its
    derivative with respect to u gives J·v (double-vjp trick), then one more vjp gives Jᵀ(H_out J v).
    """

    def __init__(self, model: CharLSTM, names: Sequence[str], windows_: torch.Tensor,
                 weights: torch.Tensor, damping: float = 0.0):
        self.params = _tensors(model, names)
        self.damping = damping
        device = device_of(model)
        with double_backward_safe(device):  # cuDNN's LSTM has no double backward
            self.logits, _ = model(windows_[:, :-1].to(device))  # (m, T, V)
        self.p = torch.softmax(self.logits.detach(), dim=-1)  # (m, T, V)
        self.w = weights.to(device, self.p.dtype)[:, None, None]  # (m, 1, 1)
        self.u = torch.zeros_like(self.logits, requires_grad=True)  # (m, T, V) dummy cotangent
        self.Jt_u = torch.autograd.grad(self.logits, self.params, grad_outputs=self.u, create_graph=True)
        self.hvps = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        Jv, = torch.autograd.grad(self.Jt_u, self.u, grad_outputs=_split(v, self.params), retain_graph=True)
        HJv = self.w * (self.p * Jv - self.p * (self.p * Jv).sum(dim=-1, keepdim=True))  # (m, T, V)
        JtHJv = torch.autograd.grad(self.logits, self.params, grad_outputs=HJv, retain_graph=True)
        self.hvps += 1
        return _flat(JtHJv).detach() + self.damping * v


def fisher_diagonal(model: CharLSTM, names: Sequence[str], windows_: torch.Tensor,
                    weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """diag of the Fisher Σ_w weight_w·E_{y~p_θ}[∇ℓ_w ∇ℓ_wᵀ], one sampled label sequence per
    window (Monte Carlo; per-window, not per-character, outer products), flat (p_S,).
    In expectation it matches the Gauss-Newton diagonal up to within-window cross terms: a cheap
    scale for each parameter, used as the Jacobi preconditioner and the first-order start."""
    params = _tensors(model, names)
    gen = torch.Generator().manual_seed(seed)  # CPU: the same labels are drawn on every device
    device = params[0].device
    diag = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=device)
    for w, weight in zip(windows_, weights):
        logits, _ = model(w[None, :-1].to(device))  # (1, T, V)
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(logits[0], dim=-1).cpu(), 1, generator=gen).squeeze(1).to(device)  # (T,)
        loss = torch.nn.functional.cross_entropy(logits[0], y, reduction="sum")
        diag += float(weight) * _flat(torch.autograd.grad(loss, params)) ** 2
    return diag


CURVATURES = {"hessian": HessianOperator, "gauss_newton": GaussNewtonOperator}
HF_SECOND_ORDER = {"damping": 300.0, "params": "last"}  # second_order's defaults for a Hugging Face model


# --- updates ------------------------------------------------------------------------------------

@dataclass
class DeepUpdate:
    model: CharLSTM  # the updated copy (the input model is never modified)
    method: str
    stats: dict = field(default_factory=dict)  # seconds, hvps, cg residual, ...
    settings: dict = field(default_factory=dict)  # training settings the new model now carries (retrain: steps)


def first_order(model: CharLSTM, request: WindowRequest, tau: float = 5e-3, params: Params = "all",
                steps: int = 10) -> DeepUpdate:
    """θ* − τ·G (Warnecke et al. first-order update), in `steps` re-linearised fractions.

    Defaults measured on the demo model (bench/text_probe.py): τ = 5e-3 in 10 steps removes the
    card on one seed (exposure 53 → 0.2–0.3 bits) at +9–13 % held-out perplexity, and leaves
    15.8 bits (+1.7 %) on a more strongly memorised one; τ = 2e-3 keeps perplexity (+0.9 %) but
    leaves 35 bits; one step of τ = 1e-2 leaves 19 bits at +149 %. No τ met both targets.
    """
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
                 damping: float | None = None, cg_iters: int = 3, cg_tol: float = 1e-3, subsample: int = 16,
                 params: Params | None = None, steps: int = 4, curvature: str = "gauss_newton",
                 start: str = "first_order", precondition: bool = True, seed: int = 0,
                 max_step: float | None = 3.0, tilde_subsample: int | None = 16, repair_steps: int = 10,
                 repair_lr: float = 5e-4) -> DeepUpdate:
    """θ* − (C + μI)⁻¹·G by truncated CG on curvature-vector products (double backprop) of a fixed
    subsample of `subsample` training windows plus Z̃, scaled to the full sum, in `steps`
    re-linearised fractions. `start`: `zero` (plain CG) or `first_order` (from x₀ = M⁻¹G, M the
    preconditioner when `precondition`, else μI). Products per step: cg_iters (+1 for the start).

    Defaults tuned on the demo model (`small`, 300k chars, card ×8, random same-format filler;
    bench/text_probe.py) over five models — trained 5, 7, 8.8, 14.2 and 16 epochs, the secret's
    log-perplexity 28, 13, 9.7, 3.3 and 1.7 bits — μ = 30, 4 steps × (3 + 1) Gauss-Newton
    products on 16 windows: exposure 53 → 0.0 / 0.0 / 0.0 / 0.2 / 0.1 bits (retrained models
    0.3–1.6), perplexity +0.3 / −0.0 / +1.8 / +0.1 / +0.8 %, 5–8 s on the shared 2 cores vs
    85–380 s retraining. Measured alternatives on the same models: μ = 40 (same steps) left 4.9
    bits on the 14.2-epoch model (its retrained reference: 0.3); 3 × (3 + 1) at μ = 30 cost up to
    +2.3 % perplexity, 2 × (4 + 1) +2.4 % (overshoot: the secret ends far *less* likely than a
    random card); one step needs 10–20 products to do what these do with 16; CG from x = 0 barely
    moves (53 bits left); the Hessian instead of Gauss-Newton costs +9.5 % perplexity (negative
    curvature) at 2× the time per product; 32 windows instead of 16 change little but cost ~60 %
    more time. The largest step on those models was below 3 (sum over the 4 steps: 7.2).

    Many secrets at once (the demo request: 20 secrets × 8 occurrences, |Z| = 190 windows;
    bench/text.py): G is 20–40× larger (learning the redaction token dominates it) and the same
    settings leave non-finite parameters. Hence `max_step`, a trust radius on each step (3 keeps
    every single-secret step above intact), and `tilde_subsample` (Z̃ windows in the curvature
    sample, unbiasedly reweighted; 16 keeps small requests exact and large ones cheap). With both,
    the demo request ends at 41 bits (from 172; retrained 22) and +7 % perplexity — a failed
    verification, on which `auto` falls back to retraining. Measured on the way, none meeting
    exposure ≤ retrained + 2 bits at ≤ +3 % perplexity: μ from 1 to 1000, CG from x = 0 (well
    behaved: 117 bits at +0.5 %, 15 bits at +4.4 %), 8 re-linearised steps, updating the LSTM
    only, masking the replacement's labels, a hinge that stops pushing a window once its secret is
    no likelier than its filler, a 128-window curvature sample, a frozen (anchored) removal
    gradient with a line search on the implied surrogate (unbounded below).

    `damping` and `params` None: 30 over all parameters, the values above. A Hugging Face model gets
    HF_SECOND_ORDER from the registry instead. Measured on tiny GPT-2s fine-tuned to memorise a card
    (tests/numerics/test_hf_unlearning.py's setting, 2 × 32): μ = 30 on the last block + head took it
    to 0 bits at 12× the per-token perplexity, μ = 100 over all parameters to 0 bits at 4×, μ = 300
    on the last block + head to 0.2 bits at −4 % (+23 % without the repair steps); on bench.text
    --transformer (2 × 128, one card): 0.0 bits (re-fine-tuned 1.8), −0.7 %, 10× faster.

    Repair (`repair_steps` Adam steps at `repair_lr` on Z̃ plus retain windows, after the Newton
    steps): the update removes secrets but, beyond one, costs perplexity (bench.text, K secrets:
    |Z| = 18 → +9.4 %, 37 → +7.5 %, 75 → +17 %) — a few steps on the data that stays win it back
    without bringing the secrets back, because they are in none of it. Measured on those requests:
    10 steps at 5e-4 → +0.24 % (|Z| = 18) and +1.7 % (75) with exposure unchanged; 10 at 1e-3 on
    |Z| = 37: +0.70 %, exposure gap −0.1 bits (passes); more or faster steps (25–50, 3e-3) drift:
    +1.4–4.3 % perplexity and exposure up by 3–28 bits. 0 turns it off.
    """
    damping = 30.0 if damping is None else damping
    params = "all" if params is None else params
    if curvature not in CURVATURES:
        raise UnlearnError(f"unknown curvature {curvature!r}: choose one of {', '.join(CURVATURES)}")
    if start not in ("zero", "first_order"):
        raise UnlearnError(f"unknown CG start {start!r}: choose zero or first_order")
    started = time.perf_counter()
    new = copy.deepcopy(model)
    names = select_params(new, params)
    windows_, weights = curvature_windows(train_windows, request, subsample, seed, tilde_subsample)
    n_tilde = len(request.Z_tilde) if tilde_subsample is None else min(tilde_subsample, len(request.Z_tilde))
    hvps, residuals, negative, g_norm, step_norm, clipped = 0, [], False, 0.0, 0.0, 0
    for _ in range(steps):
        G = influence_gradient(new, request, names) / steps
        g_norm = g_norm or float(G.norm()) * steps
        H = CURVATURES[curvature](new, names, windows_, weights, damping)
        M = fisher_diagonal(new, names, windows_, weights, seed) + damping if precondition else None
        x0 = None if start == "zero" else G / (M if M is not None else damping)
        out = conjugate_gradient(H, G, max_iter=cg_iters, tol=cg_tol, x0=x0, diag=M)
        del H  # frees the gradient graph
        hvps += out.iterations
        residuals.append(out.relative_residual)
        negative |= out.negative_curvature
        x = out.x
        if max_step is not None and float(x.norm()) > max_step:
            x = x * (max_step / float(x.norm()))  # trust radius: see the docstring
            clipped += 1
        step_norm += float(x.norm())
        _move(new, names, x)
    if repair_steps:
        train_on_retained(new, request, train_windows, repair_steps, repair_lr, retain_batch=32, seed=seed, names=names)
    new.eval()
    return DeepUpdate(new, "second_order", {
        "seconds": time.perf_counter() - started, "hvps": hvps, "cg_residual": max(residuals),
        "negative_curvature": negative, "damping": damping, "subsample": len(windows_) - n_tilde,
        "tilde_subsample": n_tilde,
        "params": params if isinstance(params, str) else list(params), "steps": steps,
        "cg_iters": cg_iters, "curvature": curvature, "start": start,
        "precondition": precondition, "G_norm": g_norm, "step_norm": step_norm, "windows": len(request),
        "steps_shortened": clipped, "max_step": max_step, "repair_steps": repair_steps, "repair_lr": repair_lr})


def train_on_retained(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, steps: int, lr: float,
                      retain_batch: int, seed: int, names: list[str] | None = None) -> None:
    """Adam steps (in place, on the parameters `names`, default all) on mean per-char CE over Z̃ plus
    a fresh sample of D \\ Z per step: data the request keeps, so nothing removed is learnt back."""
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    pool = train_windows[keep]
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam([params[n] for n in (names or params)], lr=lr)
    with seeded_rng(seed, device_of(model)):  # dropout: the same seed, the same model
        model.train()
        for _ in range(steps):
            batch = torch.cat([request.Z_tilde, pool[torch.randint(len(pool), (retain_batch,), generator=gen)]])
            loss = window_loss(model, batch).sum() / (batch.shape[0] * (batch.shape[1] - 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def finetune(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, *, steps: int = 100,
             lr: float | None = None, retain_batch: int = 32, seed: int = 0) -> DeepUpdate:
    """Baseline: Adam steps on mean per-char CE over Z̃ plus a fresh retain sample of D \\ Z per step
    (`lr` None: 3e-3; the registry passes a Hugging Face model's own fine-tuning rate instead).

    Measured on the demo model: 100 steps at 3e-3 (~22–25 s) leave 8.6–14.6 bits of exposure at
    +2.3–4.0 % perplexity: fine-tuning on the corrected data forgets slowly.
    """
    started = time.perf_counter()
    lr = 3e-3 if lr is None else lr
    new = copy.deepcopy(model)
    train_on_retained(new, request, train_windows, steps, lr, retain_batch, seed)
    new.eval()
    return DeepUpdate(new, "finetune", {"seconds": time.perf_counter() - started, "hvps": 0,
                                       "steps": steps, "lr": lr, "retain_batch": retain_batch})


def retrain(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, *, steps: int,
            lr: float, batch: int, seed: int = 0, init_seed: int = 0, progress=None,
            precision: str = "fp32") -> DeepUpdate:
    """Reference: the same architecture trained from scratch on D' = (D \\ Z) ∪ Z̃ with the same
    schedule (pass the original run's TrainStats.steps, lr, batch and seeds)."""
    return retrain_on(model.config, request.apply(train_windows), steps=steps, lr=lr, batch=batch, seed=seed,
                      init_seed=init_seed, progress=progress, device=device_of(model), precision=precision)


def retrain_on(config: dict, windows: torch.Tensor, *, steps: int, lr: float, batch: int, seed: int = 0,
               init_seed: int = 0, progress=None, device: str | torch.device = "cpu",
               precision: str = "fp32") -> DeepUpdate:
    """A fresh CharLSTM of `config` trained on the windows of D' alone (what `retrain` runs once it
    has applied the request: the removed windows are not needed, so a job can carry D' only), on
    `device` in `precision`."""
    started = time.perf_counter()
    new = CharLSTM.from_config(config, seed=init_seed).to(device)
    stats = train_lm(new, windows, steps=steps, lr=lr, batch=batch, seed=seed, progress=progress, precision=precision)
    return DeepUpdate(new, "retrain", {"seconds": time.perf_counter() - started, "hvps": 0,
                                      "steps": stats.steps, "loss": stats.loss})
