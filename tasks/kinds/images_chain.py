"""The chain an image model's unrolled record deletions form, as the pipeline keeps it (the rules:
unlearning.images.chain; the step: unlearning.images.alignment.unroll's `chain`): each deletion is unrolled from the chain's first model
over every image the chain deleted, as one deletion of them all would be, instead of from the model
before it, where each step's overshoot stacked on the last (measured: docs/benchmarks.md, "image
chains").

What the next deletion needs is the chain's first model — trained exactly, the last model an audit
passed, or a version made otherwise (class forgetting, a relabelling: its own first model) — and the
summed gradient of the images the chain deleted, at that model (unlearning.images.common.ImageChain).
Both are of removed data (the first model learnt the images, the gradient is of them), so they are
kept as the audit escrow is: sealed (AES-GCM, tasks.state.teacher_file), beyond use, read by nothing
but the chain's next deletion, rewritten by every chained one (pending until the release names it:
tasks.state.settle_escrow). The audit that covers the chain's requests deletes it; a fast-updated
production that the audit passes and leaves in place starts the next chain.

Identity: a version made by a chained deletion keeps its chain's first model's run id and the random
id of the seal written with it in its evidence state (tasks.state.TEACHER_RUN_KEY, CHAIN_SEAL_KEY); a
sealed file that names other ids (another chain, a version whose promotion was rolled back), or none
at all, is not used: the deletion is then unrolled from the model before, which starts a new chain —
what every deletion did before chains were kept."""

from __future__ import annotations

import copy
import secrets as random_ids
from dataclasses import dataclass
from pathlib import Path

from tasks import state
from tasks.common import Plan, Update
from tasks.kinds.sealed_chain import open_chain_file
from unlearning.images import chain as rules
from unlearning.images.common import ImageChain


@dataclass(frozen=True)
class Carried:
    """What a chained deletion leaves for the next one: the chain, and the ids the version keeps."""

    chain: ImageChain
    start_run: str  # the MLflow run id of the chain's first model
    start_version: str | None  # its model version
    seal: str  # a random id, in the sealed file and the new version's evidence state


def kept_ids(root: Path, run_id: str) -> tuple[str | None, str | None]:
    """(the first model's run id, the seal id) a version keeps; (None, None): it starts a chain."""
    kept = state.load_evidence(root, run_id)
    return kept.get(state.TEACHER_RUN_KEY), kept.get(state.CHAIN_SEAL_KEY)


def chain_of(root: Path, plan: Plan) -> tuple[ImageChain, tuple[str, str | None]]:
    """(the chain a deletion from production continues, (its first model's run id, version)): the
    sealed chain where production keeps one that the file names, else a new chain from production."""
    return rules.continued(kept_chain(root, plan), plan.bundle.model, (plan.parent_run, plan.parent_version))


def kept_chain(root: Path, plan: Plan) -> tuple[ImageChain, tuple[str, str | None]] | None:
    """(the sealed chain production keeps, (its first model's run id, version)); None where production
    keeps none, or the sealed file is not the one it names (one warning then)."""
    start, seal = kept_ids(root, plan.parent_run)
    if start is None or seal is None:
        return None

    def build(sealed: dict) -> tuple[ImageChain, tuple[str, str | None]]:
        first = copy.deepcopy(plan.bundle.model)
        first.load_state_dict(sealed["state"])
        names = dict(first.named_parameters())
        grad = {n: g for n, g in sealed["grad"].items()}
        if not all(n in names and g.shape == names[n].shape for n, g in grad.items()):
            raise KeyError("the gradient does not fit the model")
        first.eval()
        return ImageChain(first, grad), (start, sealed.get("version"))

    return open_chain_file(root, plan.model_name, "start",
                           lambda sealed: sealed.get("anchor") == start and sealed.get("seal") == seal,
                           "the sealed chain is another version's", build,
                           "the deletion is unrolled from the model before it")


def carried(chain: ImageChain | None, start_run: str, start_version: str | None) -> Carried | None:
    """What the update leaves for the next deletion: the chain its result continues (None: the
    method took another path; the new version starts a chain of its own)."""
    return None if chain is None else Carried(chain, start_run, start_version, random_ids.token_hex(16))


def evidence_ids(update: Update) -> dict:
    """The new version's evidence-state entries naming the chain it continues (none: it starts one)."""
    kept = update.carry
    if not isinstance(kept, Carried):
        return {}
    return {state.TEACHER_RUN_KEY: kept.start_run, state.CHAIN_SEAL_KEY: kept.seal}


def keep_chain(root: Path, plan: Plan, update: Update) -> list[dict]:
    """Seal the chain a deletion continues, pending until the release names it (deleted if production
    does not move); the certificate's entry for it (none where the update continues no chain)."""
    kept = update.carry
    if not isinstance(kept, Carried):
        return []
    path = state.teacher_file(root, plan.model_name)
    content = {"anchor": kept.start_run, "seal": kept.seal, "version": kept.start_version,
               "state": {k: v.detach().cpu() for k, v in kept.chain.model.state_dict().items()},
               "grad": {n: g.detach().cpu() for n, g in kept.chain.grad.items()}}
    state.seal_teacher(root, plan.model_name, content, pending=True)
    return [{"artifact": f"model {plan.model_name} v{kept.start_version} as its chain's first model, with the gradient "
                         f"of the images the chain deleted {state.sealed_name(path)}",
             "kind": "chain_teacher",
             "action": "beyond use until the model's next audit (sealed: AES-GCM, key under .unlearn/), read only by "
                       "the chain's next deletion, then replaced or deleted"}]


def hand_over_chain(root: Path, plan, stays: bool) -> dict:
    """The sealed chain after an audit of `plan` (tasks.audit.AuditPlan; Images.after_audit): the
    gradient is of the requests the audit covers and the first model learnt them, so it goes,
    whatever the verdict, when the audit completes (tasks.state.teacher_to_drop); a fast-updated
    production the audit passed and leaves in place (`stays`) starts the next chain. Run before the
    record, which states it."""
    restarts = stays and not plan.exact and plan.production.tags.get("guarantee") != "exact"
    if restarts:  # first: a kill before the record leaves production starting a chain, never a stale one
        state.save_evidence(root, plan.production.run_id, {state.TEACHER_RUN_KEY: None, state.CHAIN_SEAL_KEY: None})
    return {**state.teacher_to_drop(root, plan.model), "production_teaches": restarts}
