"""Forgetting by pushing the removed tokens down: gradient difference and NPO (issue 15), for the
character LM and for Hugging Face causal LMs alike.

The forget set is the affected windows Z, and within them the label positions that belong to a
removed secret (`forget_positions`): for the character LM the labels the redaction changed (Z and
Z̃ line up), for a tokenized model the tokens overlapping a secret's span (WindowRequest.secret_mask,
hf_tokens.affected_token_windows). Ascending on whole windows would unlearn the ordinary text around the
secret too, which D′ keeps. The retain term is the mean next-token cross-entropy on Z̃ plus a
fresh sample of D \\ Z per step (what deep_influence.train_on_retained trains on).

- Gradient difference (Liu et al. 2022; the OpenUnlearning baseline): minimise
      retain CE − α · mean_{secret positions} min(NLL, ceiling)
  The ceiling (default ln V, the NLL of a uniform guess) bounds the otherwise unbounded ascent: a
  token already as unlikely as chance is pushed no further.
- NPO (Zhang et al. 2024, "Negative Preference Optimization"): per forget window w with secret
  tokens y, r_w = log π_θ(y | x) − log π_ref(y | x) (summed over its secret positions, π_ref the
  model before the update), and minimise
      retain CE + α · mean_w −(2/β)·log σ(−β·r_w) + κ · KL(π_ref ‖ π_θ on the retained windows)
  which behaves like gradient ascent while r_w ≈ 0 and fades once the secret is far less likely
  than it was (the weight σ(β·r_w) goes to 0): the ascent stops by itself. The KL term (the NPO
  paper's "+KL" retain loss; suppress.kept_loss, the anchor `suppress` uses) holds what the model
  predicts on text the request keeps, which the cross-entropy alone does not: it only fits the
  retained windows further.

Defaults measured on bench.text --transformer (a 2-layer GPT-2 fine-tuned on the demo's leak; 30
steps at the model's rate, batches of 8 forget + 8 Z̃ + 16 retained windows): r_w sums over a
window's secret tokens (tens of nats), so NPO's usual β = 0.1 stopped the push after a few nats per
token and left 65 bits of 8 secrets (re-fine-tuned: 26) and 79 of 20 (21); β = 0.03 passed 8
secrets but left +2.4 bits on 20; β = 0.01 passed 8 (−0.4 bits) and 20 (+1.7 bits) at 16–28× the
speed of re-fine-tuning, and took one card to 0 bits at +6.4 % per-token perplexity (that model's
own re-fine-tuned references vary by 3–4 %; 20 steps: +0.9 %). 60 steps or α = 3 at β = 0.1 did
not help. Session 10 (same benchmark, load ≈ 11): without the KL term the one-card perplexity is
noise-driven — 10, 15, 20 and 30 steps gave +9.6, +12.8, +0.9 and +6.4 % — and lower rates, larger
retained batches or α = 0.5 did not bring 30 steps under +3 %; κ = 3 with 20 steps gave −8.9 % on
one card, −9.8 % on 8 secrets (−0.1 bits) and −26.7 % on 20 (+1.5 bits), κ = 1 with 20 steps
+2.8 % on 8 secrets, and 20 steps cost two thirds of 30 (docs/benchmarks.md has the run).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.devices import device_of, seeded_rng
from unlearning.text.deep_influence import DeepUpdate, WindowRequest, select_params
from unlearning.text.suppress import kept_loss

Params = str | Sequence[str]


def forget_positions(request: WindowRequest) -> torch.Tensor:
    """(k, T) bool: the label positions of Z that hold a removed secret."""
    if request.secret_mask is not None:
        return request.secret_mask
    return request.Z[:, 1:] != request.Z_tilde[:, 1:]


def label_logprobs(model: nn.Module, windows_: torch.Tensor) -> torch.Tensor:
    """(b, T) ln p(label_t | window_<t) for every label of the windows (on the model's device)."""
    windows_ = windows_.to(device_of(model))
    logits, _ = model(windows_[:, :-1])  # (b, T, V)
    return torch.log_softmax(logits.float(), dim=-1).gather(2, windows_[:, 1:, None]).squeeze(2)


def retain_batch_loss(model: nn.Module, tilde: torch.Tensor, retained: torch.Tensor) -> torch.Tensor:
    kept = torch.cat([tilde, retained])
    return -label_logprobs(model, kept).mean()


def _retain_pool(request: WindowRequest, train_windows: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    return train_windows[keep]


def _batches(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=gen)[:k] if k < n else torch.arange(n)


def ascend(model: nn.Module, request: WindowRequest, train_windows: torch.Tensor, forget_loss, *, steps: int,
           lr: float, forget_batch: int, retain_batch: int, tilde_batch: int, params: Params, clip: float,
           seed: int, name: str, kl: float = 0.0) -> DeepUpdate:
    """Adam steps on retain CE + forget_loss(new, windows, mask) on a copy of `model` (only the
    parameters `params` move). The shared loop of grad_diff and npo."""
    started = time.perf_counter()
    new = copy.deepcopy(model)
    names = set(select_params(new, params))
    moving = [p for n, p in new.named_parameters() if n in names]
    mask = forget_positions(request)
    rows = mask.any(dim=1).nonzero().squeeze(1)  # windows holding a secret label
    pool = _retain_pool(request, train_windows)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(moving, lr=lr)
    new.train()
    first = last = float("nan")
    device = device_of(new)  # sampling stays on the CPU generator; masks go where the model computes
    with seeded_rng(seed, device):  # dropout of a real checkpoint: the same seed, the same model
        for step in range(steps):
            pick = rows[_batches(len(rows), forget_batch, gen)]
            loss = torch.zeros((), device=device)
            if len(pick):
                forget = forget_loss(new, request.Z[pick], mask[pick].to(device), pick)
                loss = loss + forget
                last = float(forget.detach())
                first = last if step == 0 else first
            tilde = request.Z_tilde[_batches(len(request.Z_tilde), tilde_batch, gen)]
            retained = pool[torch.randint(len(pool), (retain_batch,), generator=gen)] if len(pool) else pool
            if kl and len(retained):  # CE on Z̃ ∪ R and the KL anchor on R in one forward pass
                loss = loss + kept_loss(new, model, tilde.to(device), retained.to(device), kl)
            elif len(tilde) + len(retained):
                loss = loss + retain_batch_loss(new, tilde, retained)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(moving, clip)
            opt.step()
    new.eval()
    return DeepUpdate(new, name, {"seconds": time.perf_counter() - started, "hvps": 0, "steps": steps, "lr": lr,
                                  "windows": len(request), "forget_windows": len(rows),
                                  "secret_labels": int(mask.sum()), "forget_loss_first": first,
                                  "forget_loss_last": last,
                                  "params": params if isinstance(params, str) else list(params)})


def grad_diff(model: nn.Module, request: WindowRequest, train_windows: torch.Tensor, *, steps: int = 30,
              lr: float = 1e-3, alpha: float = 1.0, ceiling: float | None = None, forget_batch: int = 8,
              retain_batch: int = 16, tilde_batch: int = 8, params: Params = "all", clip: float = 1.0,
              seed: int = 0) -> DeepUpdate:
    """Gradient difference: Adam on retain CE − α·mean over secret labels of min(NLL, ceiling)."""
    def forget_loss(new, windows_, mask, _rows):
        nll = -label_logprobs(new, windows_)[mask]  # (n,)
        cap = math.log(new_vocab_size(new)) if ceiling is None else ceiling
        return -alpha * torch.clamp(nll, max=cap).mean()

    update = ascend(model, request, train_windows, forget_loss, steps=steps, lr=lr, forget_batch=forget_batch,
                    retain_batch=retain_batch, tilde_batch=tilde_batch, params=params, clip=clip, seed=seed,
                    name="grad_diff")
    update.stats.update(alpha=alpha, ceiling=ceiling)
    return update


def npo(model: nn.Module, request: WindowRequest, train_windows: torch.Tensor, *, steps: int = 20,
        lr: float = 1e-3, beta: float = 0.01, alpha: float = 1.0, forget_batch: int = 8, retain_batch: int = 16,
        tilde_batch: int = 8, params: Params = "all", clip: float = 1.0, seed: int = 0, kl: float = 3.0) -> DeepUpdate:
    """NPO: Adam on retain CE + α·mean over forget windows of −(2/β)·log σ(−β·(log π_θ − log π_ref))
    of the window's secret labels; π_ref = `model` (unchanged)."""
    mask_all = forget_positions(request)
    with torch.no_grad():
        model.eval()
        on = device_of(model)
        ref = torch.cat([(label_logprobs(model, request.Z[lo:lo + 64]) * mask_all[lo:lo + 64].to(on)).sum(dim=1)
                         for lo in range(0, len(request.Z), 64)]) if len(request.Z) else torch.zeros(0)  # (k,)

    def forget_loss(new, windows_, mask, rows):
        log_pi = (label_logprobs(new, windows_) * mask).sum(dim=1)  # (b,)
        return alpha * (-2.0 / beta) * F.logsigmoid(-beta * (log_pi - ref[rows])).mean()

    update = ascend(model, request, train_windows, forget_loss, steps=steps, lr=lr, forget_batch=forget_batch,
                    retain_batch=retain_batch, tilde_batch=tilde_batch, params=params, clip=clip, seed=seed,
                    name="npo", kl=kl)
    update.stats.update(alpha=alpha, beta=beta)
    return update


def new_vocab_size(model: nn.Module) -> int:
    return int(model.config["vocab_size"])
