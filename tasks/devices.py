"""Where a run's deep-model work computes (`--device`; unlearning.devices).

A language model is placed on the device: its update, its verification (exposure, perplexity,
regeneration) and its retrained reference run there. An image model's retrained reference (the
costly part: a full training run) trains there too; the image update methods and metrics stay on
the CPU, where they are tested. A table model stays on the CPU in float64 whatever is asked: the
certified maths depends on those numbers."""

from __future__ import annotations

from dataclasses import replace

from unlearning.devices import resolve_device

PLACED_KINDS = ("text",)  # kinds whose model itself moves to the device
RETRAINED_KINDS = ("text", "images")  # kinds whose retrained reference trains on the device


def place(plan, device: str | None):
    """`plan` (a forget Plan or an AuditPlan) set to compute on `device` (None: the CPU, where
    everything was loaded)."""
    kind = getattr(plan.kind, "name", None)
    if device is None or kind not in RETRAINED_KINDS:
        return plan
    resolved = resolve_device(device)
    plan.device = str(resolved)
    if kind in PLACED_KINDS:
        plan.bundle.model.to(resolved)
    if getattr(plan, "job", None) is not None:
        plan.job = replace(plan.job, device=plan.device)
    return plan
