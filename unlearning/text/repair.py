"""Repairing a fast text update whose evidence failed, before retraining (issue 13 §4).

On a model trained long enough to memorise its secrets deeply (bench.stream's text month on the
`small` LM trained 1,600 steps), `suppress` stops at its step budget with the hinge still 0.5–3.6
nats above its target on the longer chains, and the evidence's relearning check (20 fine-tuning
steps on held-out text) brings a removed secret back 3.5–78 bits above its control band: in session
17's run a quarter of the month's requests fell back to a retraining, each 150 s of CPU against a
3-s update.

The repair goes on from the failed update with the same loss (same request and chain, same teacher),
and makes each step guard against relearning: the hinge is also measured in a copy of the model
fine-tuned a few Adam steps, at the model's own training rate, on a sample of the *retained training
windows*, and that gradient is added to the step's (first order, as in meta-learning: taken at the
copy's weights, applied to the model's; suppress.Relearn). Held-out text, which the evidence's check
fine-tunes on, is never used: the check stays an independent test. The repaired model is judged by
the same evidence as the update (its relearning check the worst of `EvidenceConfig.relearn_draws`
draws: a repair is a second try at a random check, and judged on one draw, 6 of the 9 repaired models
that passed came back 2.1–21.5 bits above their band in one of three other draws). A repair that
does not pass is replaced by the retraining, as before.

Measured (docs/benchmarks.md, "Text: repair before the fall-back"): on that month, seed 0, 6
fall-backs became 2 (10 requests repaired, 15.5 s of CPU each against a 307-s retraining) and the
share of retrain per request went from 26.5 % to 16.4 %; seed 1: 3 fall-backs, 11 repaired, 16.9 %.
Every audit passed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from unlearning.text.bundle import LMBundle
from unlearning.text.deep_influence import DeepUpdate, WindowRequest
from unlearning.text import suppress


class RepairConfig(BaseModel):
    """At most `steps` suppress steps from the failed update (suppress's early stop applies, with the
    relearned copy's hinge quiet too), each with `relearn_steps` simulated relearning steps on
    `relearn_batch` retained windows, that hinge's gradient × `weight`. `weight` 0 still fine-tunes
    the copy, for the early stop: the ablation of the guard's gradient alone, at the same steps."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(30, ge=1)
    relearn_steps: int = Field(10, ge=1)
    relearn_batch: int = Field(8, ge=1)
    weight: float = Field(1.0, ge=0)
    seed: int = 1  # not the update's 0: other samples of the same windows


def repairable(method: str) -> bool:
    """A failed `suppress` update can be repaired; any other method's failure is retrained."""
    return method == "suppress"


def repair(failed: LMBundle, request: WindowRequest, train_windows, teacher: LMBundle,
           cfg: RepairConfig = RepairConfig()) -> DeepUpdate:
    """The failed update's model (`failed`) taken further by suppress steps that guard against
    relearning, on the request (with its chain's earlier windows) the update ran on, anchored to the
    update's `teacher` (the chain's, else the model before the update)."""
    from unlearning.text.lm import suppress_classes, suppress_lr
    relearn = suppress.Relearn(cfg.relearn_steps, cfg.relearn_batch, float(failed.settings["lr"]), cfg.weight)
    update = suppress.suppress(failed.model, request, train_windows, suppress_classes(failed), steps=cfg.steps,
                               passes=0, lr=suppress_lr(failed), seed=cfg.seed, relearn=relearn,
                               teacher=teacher.model)
    update.stats["repair_steps"] = update.stats["steps"]
    return update
