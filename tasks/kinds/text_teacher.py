"""The teacher of a text model's chain of fast updates, as the pipeline keeps it (the rule:
unlearning.text.chain.teacher_of): the model `suppress` anchors each update of the chain to instead
of the model before it — the last model trained exactly that production descends from, or the last
fast-updated production an audit passed and left in place (measured: docs/benchmarks.md, "the
chain's teacher").

The first fast update on such a model supersedes it (its version is purged, or kept beyond use until
its purge date), and it memorised the data of every request of the chain. So it is kept as the
audit escrow is: sealed (AES-GCM, tasks.state.teacher_file), beyond use, read by nothing but the
chain's next fast updates, one per model. That first fast update seals it, pending until the
release names it (tasks.state.settle_escrow); a fast update on a fast-updated model opens it.
The audit that covers the chain's requests deletes their escrow and the teacher with it (it
memorised them; the text kind's after_audit hook, `hand_over_teacher`, names it for the audit's
record, and the audit's completion deletes it); a fast-updated production that the audit leaves in
place becomes the teacher of the updates after it (it keeps itself as its teacher, and the next
fast update seals it as for an exact model).

Identity: a fast-updated version keeps the MLflow run id of its teacher (tasks.state.TEACHER_RUN_KEY);
the sealed teacher names its own, and one that does not match (a version from before teachers were
kept, another chain, a file that does not open) is not used: the update is then anchored to the
model before it, as it was before."""

from __future__ import annotations

import copy
from pathlib import Path

from tasks import state
from tasks.common import Plan
from tasks.kinds.sealed_chain import open_chain_file
from unlearning.text import lm
from unlearning.text.chain import trained_exactly

def teacher_run(root: Path, run_id: str, guarantee: str | None) -> str | None:
    """The run id of the model a fast update of version `run_id` (its `guarantee` tag) is anchored
    to: the version itself where it is trained exactly (no anchor kept) or keeps itself (audited),
    the teacher it kept where it is fast-updated, None where it kept none (a fast update from before
    teachers were kept, or one whose state is lost: its successors are anchored to their parent, as
    before)."""
    kept = state.load_evidence(root, run_id)
    if "anchor_perplexity" in kept:
        return kept.get(state.TEACHER_RUN_KEY)
    return run_id if trained_exactly(guarantee) else None


def parent_teacher_run(root: Path, plan: Plan) -> str | None:
    """teacher_run of the version a request starts from (its guarantee as the plan read it). Read
    once per request, by the text kind's update, which carries it on its Update (`carry`) to the
    steps after it: the evidence state the new version keeps and keep_teacher."""
    return teacher_run(root, plan.parent_run, plan.parent_guarantee)


def has_teacher(bundle: lm.LMBundle) -> bool:
    """Is a chain of this model anchored to a sealed teacher? The character LM's; a Hugging Face
    model's chain keeps today's anchor (its parent), not measured with a teacher."""
    return not lm.is_hf(bundle)


def chain_teacher(root: Path, plan: Plan, anchor: str | None) -> tuple[lm.LMBundle | None, str | None]:
    """(the model a fast update of production is anchored to, its run id): the sealed teacher when
    production keeps one (`anchor`: parent_teacher_run's) and the sealed file names it; (None, None)
    — production itself — otherwise."""
    if anchor is None or anchor == plan.parent_run or not has_teacher(plan.bundle):
        return None, None

    def build(sealed: dict) -> tuple[lm.LMBundle, str]:
        teacher = copy.deepcopy(plan.bundle)
        teacher.model.load_state_dict(sealed["state"])
        teacher.model.eval()
        return teacher, anchor

    found = open_chain_file(root, plan.model_name, "teacher", lambda sealed: sealed.get("anchor") == anchor,
                            "the sealed teacher is another chain's", build,
                            "the update is anchored to the model before it")
    return (None, None) if found is None else found


def keep_teacher(root: Path, plan: Plan, guarantee: str, anchor: str | None) -> list[dict]:
    """A fast update on a model that is its own teacher (trained exactly, or audited: its `anchor`,
    parent_teacher_run's, is itself) seals that model as the teacher of the updates after it, pending
    until the release names it (deleted if production does not move). Returns the certificate's entry
    for it (none when nothing was sealed)."""
    if trained_exactly(guarantee) or not has_teacher(plan.bundle) or anchor != plan.parent_run:
        return []
    seal(root, plan.model_name, plan.parent_run, plan.bundle, pending=True)
    return [{"artifact": f"model {plan.model_name} v{plan.parent_version} as the chain's teacher "
                         f"{state.sealed_name(state.teacher_file(root, plan.model_name))}",
             "kind": "chain_teacher",
             "action": "beyond use until the model's next audit (sealed: AES-GCM, key under .unlearn/), read only by "
                       "the next fast updates of its chain, then deleted"}]


def hand_over_teacher(root: Path, plan, stays: bool) -> dict:
    """The chain's teacher after an audit of `plan` (tasks.audit.AuditPlan; Text.after_audit): it
    memorised the requests the audit covers, so it goes, whatever the verdict, when the audit
    completes (tasks.state.teacher_to_drop: its record names the file, its completion deletes it); a
    fast-updated production the audit passed and leaves in place (`stays`) teaches the updates after
    it. Run before the record, which states it. Production is made its own teacher here, first: a
    kill before the record leaves the old file, which names another model, never opened again and
    deleted by the next audit (or replaced by the next update's seal); its drift anchor stays the
    exact model it descends from. A promotion rolled back leaves the chain its teacher."""
    teaches = stays and not plan.exact and not trained_exactly(plan.production.tags.get("guarantee"))
    if teaches:
        state.save_evidence(root, plan.production.run_id, {state.TEACHER_RUN_KEY: plan.production.run_id})
    return {**state.teacher_to_drop(root, plan.model), "production_teaches": teaches}


def seal(root: Path, model: str, anchor: str, bundle: lm.LMBundle, pending: bool = False) -> None:
    content = {"anchor": anchor, "state": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()}}
    state.seal_teacher(root, model, content, pending)

