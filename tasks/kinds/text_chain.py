"""The chain since a text model's last exactly trained version, as the pipeline keeps and reads it
(the rules: unlearning.text.chain): the forget runs of the fast updates made since, each version's
evidence state (its held-out perplexity, its drift anchor, its chain: tasks.state), and the earlier
secrets of those requests still held in their sealed audit escrow, which the next fast update takes
again (tasks.kinds.text: into `suppress`'s hinge; tasks.kinds.text_verify: into the evidence). Raw
values are opened in memory only, in the frame of the step that needs them."""

from __future__ import annotations

from dataclasses import dataclass

from tasks import state
from tasks.common import Plan, Update
from unlearning.text import chain as rules
from unlearning.text import evidence, lm
from unlearning.text.chain import fits, restored
from unlearning.text.data import Occurrence, TextCorpus

# Stacked fast updates could bring earlier secrets back while each request's check and each audit
# measures only the secrets of the requests it covers. The 4.8-bit gap a month of 10 suppress
# updates ended with (bench.stream) does not show it: it is confounded (measured on secrets neither
# the final model nor the retrain trained on, docs/text.md), so this is a guard. A fast update on a
# fast-updated model takes the earlier secrets of its chain again, while their escrow (the sealed
# copy an audit reads) is held: into the hinge, and into the evidence. Once an audit has deleted a
# request's escrow, that audit judged its secrets against a model retrained on the data; with
# `unlearn audit --rebase` the chain then restarts from that model.


@dataclass(frozen=True)
class Chain:
    """The earlier secrets of a fast-updated chain whose escrow is still held. Raw values: in memory
    only, in the frame of the step that opened them."""

    secrets: tuple  # lm.Secret each, with its occurrences in the corpus
    findings: list  # their occurrences as findings (record locations, fingerprints; no value)
    restored: TextCorpus  # the corpus before the request with their written values back in place
    owners: dict  # fingerprint → the earlier requests that removed it
    audited: int  # requests of the chain whose escrow an audit deleted (judged by it against a retrained model)
    unplaced: int  # escrowed secrets without their occurrences (sealed by older code): not measured
    moved: int = 0  # escrowed secrets none of whose places fits D any more (record deleted or changed): not measured


def chain_runs(root, run_id: str, guarantee: str | None = None) -> list[str] | None:
    """The forget runs of the fast updates version `run_id` descends from since the last exact model
    ([] for an exact one; None for a fast-updated version made before the chain was kept). A version
    with no evidence state is judged by its `guarantee` tag: older code saved none for a fast update
    verified by `--verify reference`, so a fast guarantee there is an unknown chain, not an empty one."""
    kept = state.load_evidence(root, run_id)
    return rules.kept_chain(kept.get(state.CHAIN_KEY), "anchor_perplexity" in kept, rules.trained_exactly(guarantee))


def known_chain(root, plan: Plan) -> list[str]:
    """chain_runs, where unknown every forget run whose escrow the model still holds (the safe side)."""
    from tasks import audit as audit_steps

    # the guarantee always: the version's evidence state may hold only its perplexity, written by this
    # very request's verification (a fast update verified by reference by older code kept no chain)
    runs = chain_runs(root, plan.parent_run, plan.parent_guarantee)
    return [p.stem for p in audit_steps.escrow_files(root, plan.model_name)] if runs is None else runs


def chain_after(root, plan: Plan, run_id: str) -> list[str] | None:
    """The chain of the version a fast update by forget run `run_id` makes; None where the chain it
    starts from is unknown: it stays unknown down the lineage until an exact model (a chain rebuilt
    from the escrows still held would forget a request whose escrow is gone, and the audit would
    then take that request for one removed exactly)."""
    return rules.chain_after(chain_runs(root, plan.parent_run, plan.parent_guarantee), run_id)


def chain_secrets(root, plan: Plan) -> Chain | None:
    """The earlier secrets of the model's chain still in escrow (None: none), opened from the escrow.
    A secret removed by several requests (again after new data brought it back, or twice in a batch)
    is taken once, at the places of every escrow that holds it."""
    from tasks import audit as audit_steps

    runs = known_chain(root, plan)
    if not runs:
        return None
    escrowed, gone = audit_steps.escrowed_secrets(root, plan.model_name, runs)
    current = {f["fingerprint"] for f in plan.part}
    texts = dict(plan.dataset.records)
    secrets, findings, owners, unplaced, moved, placed = [], [], {}, 0, 0, []
    for fingerprint, sealed in sealed_by_fingerprint(escrowed).items():
        if fingerprint in current:
            continue
        written = merged_places(sealed)
        places = [o for o in written if fits(texts, o)]
        if not places:  # no occurrence sealed (older code), or none left where it was (record deleted or changed)
            unplaced, moved = (unplaced + 1, moved) if not written else (unplaced, moved + 1)
            continue
        s = sealed[0]
        placed += places
        for o in places:
            findings.append({"fingerprint": fingerprint, "detector": s["detector"], "masked": s["masked"],
                             "location": {"record": o["record"], "start": o["start"], "end": o["end"]}})
        occurrences = tuple(Occurrence(o["record"], o["start"], o["end"], s["detector"], fingerprint) for o in places)
        secrets.append(lm.Secret(fingerprint, s["detector"], s["masked"], s["value"], s["prefix"], occurrences))
        owners[fingerprint] = list(dict.fromkeys(r for e in sealed for r in e["requests"]))
    if not secrets and not gone and not unplaced and not moved:
        return None
    return Chain(tuple(secrets), findings, restored(plan.dataset, placed), owners, len(gone), unplaced, moved)


def sealed_by_fingerprint(escrowed: list[dict]) -> dict[str, list[dict]]:
    """The escrowed secrets grouped by fingerprint, oldest escrow first."""
    grouped: dict[str, list[dict]] = {}
    for s in escrowed:
        grouped.setdefault(s["fingerprint"], []).append(s)
    return grouped


def merged_places(sealed: list[dict]) -> list[dict]:
    """Every sealed occurrence of one secret over all its escrows, each place once."""
    places = {}
    for s in sealed:
        for o in s.get("occurrences") or ():
            places.setdefault((o.get("record"), o.get("start"), o.get("end")), o)
    return list(places.values())


def window_request(plan: Plan, after: TextCorpus, chain: Chain | None = None):
    """Z, Z̃ of the request and the training windows; with `chain`, Z also holds the windows of the
    earlier secrets of the chain as the model was trained on them (their Z̃: the same windows of D′)."""
    if chain is None:
        return lm.window_request(plan.bundle, plan.dataset, after, plan.part)
    return lm.window_request(plan.bundle, chain.restored, after, [*plan.part, *chain.findings])


# --- what a version keeps: its evidence state (tasks.state) -----------------------------------

def model_perplexity(root, run_id: str, bundle: lm.LMBundle, corpus: TextCorpus) -> float:
    """Held-out perplexity of the model version `run_id`, measured once per version (tasks.state)."""
    known = state.load_evidence(root, run_id).get("held_out_perplexity")
    if known is None:
        known = lm.held_out_perplexity(bundle, corpus)
        state.save_evidence(root, run_id, {"held_out_perplexity": known})
    return known


def exact_model_perplexity(root, run_id: str, own: float) -> float:
    """Held-out perplexity of the last model trained exactly that version `run_id` descends from by
    fast updates (kept with each fast-updated version: `evidence_state`); a version without it is
    such a model itself (trained, retrained, promoted by an audit), so its own perplexity `own`."""
    return rules.drift_anchor(own, state.load_evidence(root, run_id).get("anchor_perplexity"))


def evidence_state(update: Update, metrics: dict, chain: list[str] | None = None, teacher: str | None = None) -> dict:
    """What the new version keeps of its evidence (tasks.state, numbers and run ids only): its
    held-out perplexity (the next request's "before", measured now rather than again then) and, for a
    fast update, the anchor it inherits, `chain` (chain_after: the forget runs since the exact model)
    and `teacher`, the run id of the model its update was anchored to (tasks.kinds.text_teacher);
    retraining makes a new anchor, itself, and a new, empty chain."""
    kept = {"held_out_perplexity": metrics["perplexity_after"]}
    if not rules.trained_exactly(update.guarantee):
        kept["anchor_perplexity"] = metrics["perplexity_anchor"]
        if chain is not None:
            kept[state.CHAIN_KEY] = chain
        if teacher is not None:
            kept[state.TEACHER_RUN_KEY] = teacher
    return kept


def reference_state(metrics: dict, chain: list[str] | None, teacher: str | None = None) -> dict:
    """What a fast-updated version verified by `--verify reference` keeps (evidence_state's keys): its
    held-out perplexity, its chain, its `teacher` (as evidence_state) and, as its anchor, the
    reference's perplexity (a model trained exactly on this very data), so the next evidence request
    checks the drift since it."""
    return {"held_out_perplexity": metrics["perplexity_after"], "anchor_perplexity": metrics["perplexity_retrain"],
            **({} if chain is None else {state.CHAIN_KEY: chain}),
            **({} if teacher is None else {state.TEACHER_RUN_KEY: teacher})}


# --- the chain in the evidence and the summary -------------------------------------------------

def earlier_maxima(earlier: list[dict]) -> dict:
    return {"earlier_excess_bits": max(r["excess_bits"] for r in earlier),
            "earlier_relearned_excess_bits": max(r["relearned_excess_bits"] for r in earlier)}


def chain_checks(rows: list[dict], ppl: dict, cfg: evidence.EvidenceConfig) -> list[dict]:
    """The evidence checks over every row, the earlier secrets of the chain included (one that came
    back fails the request), each failing per-secret check naming the earlier secrets that failed it
    (masked, with the requests that removed them): the failure may be another request's secret."""
    failing = {"exposure_above_control_band_bits": lambda r: r["excess_bits"] > cfg.margin_bits,
               "relearned_above_control_band_bits": lambda r: r["relearned_excess_bits"] > cfg.margin_bits,
               "contexts_regenerating": lambda r: r["regenerated"] > 0}
    checks = evidence.evidence_checks(rows, ppl, cfg)
    for check in checks:
        if check["passed"] or check["name"] not in failing:
            continue
        earlier = [{"masked": r["masked"], "requests": list(r["earlier_requests"])}
                   for r in rows if "earlier_requests" in r and failing[check["name"]](r)]
        if earlier:
            check["earlier_secrets"] = earlier
    return checks


def earlier_line(m: dict) -> list[str]:
    """The earlier secrets of the chain the evidence measured again (none: no line)."""
    if not m.get("earlier_secrets") and not m.get("chain_requests_audited"):
        return []
    line = f"  earlier secrets of the chain since the last exact model: {m.get('earlier_secrets', 0)} measured again"
    if m.get("earlier_secrets"):
        line += f" (worst {m['earlier_excess_bits']:+.1f} bits over its controls)"
    if m.get("chain_requests_audited"):
        line += f"; {m['chain_requests_audited']} request(s) judged by an audit, no longer in escrow"
    return [line]
