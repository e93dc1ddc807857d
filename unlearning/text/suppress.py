"""Removing secrets from the character LM by a few targeted optimiser steps (science.md §3, §7).

A request replaces the affected training windows Z by Z̃ (deep_influence.WindowRequest). Exposure
(exposure.py) ranks a secret's log-perplexity among random strings of its format: digits replaced
by random digits, letters by random letters of the same case. A model that never saw the secret
ranks it like any of them; so the update asks for that, character by character, while keeping
what the model predicts everywhere else:

    loss = CE(Z̃ ∪ R) + β · KL(p_θ* ‖ p_θ on R) + α · mean_{i ∈ S} relu(ln p(s_i) − mean_{c ∈ class(s_i)} ln p(c) + m)

- S: the *secret characters* of the original windows Z — label positions where Z and Z̃ differ
  whose character is a digit, a lowercase or an uppercase letter (a literal like "@" or "-" is
  shared by every candidate of the format and says nothing about the secret);
- the hinge pushes each secret character down until it is no likelier than the average character of
  its class at that position (the class mean of log-probabilities, held fixed within a step) minus
  a margin m, and then stops: exposure ends near a never-seen secret's, not in a broken model;
- CE(Z̃ ∪ R): next-char cross-entropy on a sample of the redacted windows (the retrained model's own
  targets there) and a fresh sample R of untouched training windows;
- KL(p_θ* ‖ p_θ) on R: the *anchor* to the model before the update. It is what holds perplexity:
  without it the hinge lowers a whole class at once (every digit, every letter: the class mean
  moves with the label from one step to the next), measured +490 % held-out perplexity on the demo
  request; the cross-entropy alone does not resist that drift (its gradient at the trained
  optimum is only noise).

`target="within"` replaces the hinge by one on ln p(s_i | class) + ln|class| (the label against the
other members of its class only, the class's total mass untouched) — gentler, measured weaker.

Adam (the optimiser the model was trained with) on seeded samples: deterministic on CPU. The cost is
`steps` steps on `batch` + `tilde_batch` + `retain_batch` windows, plus a forward pass of the model
before the update on the `retain_batch` windows.
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.errors import UnlearnError
from unlearning.text.charlm import CharLSTM
from unlearning.text.deep_influence import DeepUpdate, WindowRequest

CLASSES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def char_classes(chars: Sequence[str]) -> torch.Tensor:
    """(V,) the class of each vocabulary character (an index into CLASSES), −1 for any other."""
    return torch.tensor([next((k for k, members in enumerate(CLASSES) if ch in members), -1) for ch in chars])


def secret_positions(request: WindowRequest, classes: torch.Tensor) -> torch.Tensor:
    """(k, T) bool: label positions of Z the redaction changed whose character has a class."""
    labels = request.Z[:, 1:]
    return (labels != request.Z_tilde[:, 1:]) & (classes[labels] >= 0)


def _masked(model: CharLSTM, windows_: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor):
    logits, _ = model(windows_[:, :-1])  # (b, T, V)
    labels = windows_[:, 1:][mask]  # (n,)
    members = classes[None, :] == classes[labels][:, None]  # (n, V)
    return logits[mask], labels, members  # (n, V), (n,), (n, V)


def class_hinge(model: CharLSTM, windows_: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor,
                margin: float = 0.0) -> torch.Tensor:
    """Mean over the masked label positions of relu(ln p(label) − mean ln p(its class) + margin)."""
    if not bool(mask.any()):
        return torch.zeros(())
    logits, labels, members = _masked(model, windows_, mask, classes)
    logp = F.log_softmax(logits, dim=-1)
    weights = members.to(logp.dtype)
    class_mean = ((logp * weights).sum(dim=1) / weights.sum(dim=1)).detach()  # (n,)
    return torch.relu(logp.gather(1, labels[:, None]).squeeze(1) - class_mean + margin).mean()


def class_within(model: CharLSTM, windows_: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor,
                 margin: float = 0.0) -> torch.Tensor:
    """Mean over the masked label positions of relu(ln p(label | its class) + ln |class| + margin):
    the label pushed to uniform *within* its class; the class's total mass is not a direction this
    loss can move."""
    if not bool(mask.any()):
        return torch.zeros(())
    logits, labels, members = _masked(model, windows_, mask, classes)
    within = logits.gather(1, labels[:, None]).squeeze(1) - torch.logsumexp(
        logits.masked_fill(~members, float("-inf")), dim=1)  # (n,) ln p(label | class)
    return torch.relu(within + torch.log(members.sum(dim=1).to(logits.dtype)) + margin).mean()


TARGETS = {"hinge": class_hinge, "within": class_within}


def _sample(n: int, k: int | None, gen: torch.Generator) -> torch.Tensor:
    """k indices of range(n) without replacement (all of them, in order, when k is None or ≥ n)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:k]


def kept_loss(model: CharLSTM, before: CharLSTM, tilde: torch.Tensor, retained: torch.Tensor,
              anchor: float) -> torch.Tensor:
    """Mean per-char CE over Z̃ ∪ R plus anchor·mean per-char KL(p_before ‖ p_model) over R (one
    forward pass of the model for both)."""
    kept = torch.cat([tilde, retained])  # (t + r, T+1)
    logp = F.log_softmax(model(kept[:, :-1])[0], dim=-1)  # (t + r, T, V)
    loss = -logp.gather(2, kept[:, 1:, None]).mean()
    if anchor:
        with torch.no_grad():
            ref = F.log_softmax(before(retained[:, :-1])[0], dim=-1)  # (r, T, V)
        loss = loss + anchor * (ref.exp() * (ref - logp[len(tilde):])).sum(dim=-1).mean()
    return loss


def suppress(model: CharLSTM, request: WindowRequest, train_windows: torch.Tensor, classes: torch.Tensor, *,
             steps: int = 25, lr: float = 3e-3, alpha: float = 1.0, margin: float = 1.0, anchor: float = 60.0,
             target: str = "hinge", batch: int | None = 32, tilde_batch: int = 16, retain_batch: int = 48,
             clip: float = 5.0, seed: int = 0) -> DeepUpdate:
    """`steps` Adam steps at `lr` on the module doc's loss, each on a seeded sample of `batch`
    affected windows for the secret term (all when None), `tilde_batch` of Z̃ and `retain_batch`
    untouched windows. `classes`: char_classes of the model's vocabulary."""
    if target not in TARGETS:
        raise UnlearnError(f"unknown suppress target {target!r}: choose one of {', '.join(TARGETS)}")
    started = time.perf_counter()
    new = copy.deepcopy(model)
    keep = torch.ones(len(train_windows), dtype=torch.bool)
    keep[request.index] = False
    pool = train_windows[keep]
    mask = secret_positions(request, classes)  # (k, T)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    new.train()
    first = last = float("nan")
    for step in range(steps):
        pick = _sample(len(request), batch, gen)
        tilde = request.Z_tilde[_sample(len(request), tilde_batch, gen)]
        retained = pool[torch.randint(len(pool), (retain_batch,), generator=gen)]
        secret = TARGETS[target](new, request.Z[pick], mask[pick], classes, margin)
        loss = kept_loss(new, model, tilde, retained, anchor) + alpha * secret
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(new.parameters(), clip)
        opt.step()
        last = float(secret.detach())
        first = last if step == 0 else first
    new.eval()
    return DeepUpdate(new, "suppress", {
        "seconds": time.perf_counter() - started, "hvps": 0, "steps": steps, "lr": lr, "alpha": alpha,
        "margin": margin, "anchor": anchor, "target": target, "windows": len(request),
        "secret_chars": int(mask.sum()), "secret_loss_first": first, "secret_loss_last": last})
