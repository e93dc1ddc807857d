"""The rules of a text model's lineage since its last exactly trained version, in one copy: the
pipeline (tasks.kinds.text, text_chain and text_verify; tasks.audit_checks) and bench.stream's text
scenario follow them. Plain data in, plain data out: a model, a forget run or a request is whatever
its caller names it by (run ids and perplexities in the pipeline, models and request numbers in the
bench); where they are kept (tasks.state, MLflow tags, the audit's escrow) is the caller's business.

- The drift anchor: a fast update's held-out perplexity is held to that of the last model trained
  exactly it descends from (unlearning.text.evidence's `max_drift`), not only to its parent's, so
  that stacked updates cannot each drift a little. A model trained exactly is held to no earlier one.
- The teacher: the model `suppress`'s KL anchor holds a fast update's predictions to (lm.TextContext's
  `teacher`): that same exact model, not the parent — anchored to its parent, each update of a chain
  keeps the drift of the ones before and adds its own (docs/benchmarks.md, "the chain's teacher") —
  until an audit passes a fast-updated production model and leaves it in place: from then on the
  teacher is that audited model (`teacher_of`, `teacher_after_audit`). It memorised no request the
  audit covered (their escrow goes with the audit, and so does the old teacher, which memorised
  them all), and its weights are the chain's own: anchored instead to the audit's retrained model,
  a network trained apart, the next updates drifted 3 % from it. The drift anchor stays the exact model.
- The chain: the fast updates made since that model. A fast update extends its parent's; a model
  trained exactly (trained, retrained, a fall-back, an audit's promotion) starts an empty one; an
  unknown chain (a version made before chains were kept) stays unknown down the lineage until an
  exact model. The earlier secrets of the chain whose escrow is still held are kept down again by
  the next `suppress` update and measured again by its evidence.
- The audit's judged secrets: only the secrets of the requests on production's chain are judged on
  exposure; a request not on that chain was removed by a retraining in production's lineage
  (exactly), and two models trained without a secret differ by training noise, not memorisation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from unlearning.text.data import TextCorpus

M = TypeVar("M")  # what stands for a model: the model itself, or its held-out perplexity
R = TypeVar("R")  # what names an update: its forget run, or its request

# a version so tagged was trained exactly on its data (trained, retrained, an audit's promotion); any
# other (a fast update's "empirical", an imported checkpoint's "declared", none) may have seen anything
EXACT_GUARANTEES = ("exact",)
# the methods that take the chain's earlier secrets again: suppress's hinge is zero on a secret at or
# below its target, so taking a secret again is idempotent
HINGE_METHODS = ("suppress",)


def trained_exactly(guarantee: str | None) -> bool:
    return guarantee in EXACT_GUARANTEES


def takes_the_chain(method: str) -> bool:
    return method in HINGE_METHODS


def held_to_its_chain(exact: bool) -> bool:
    """Is an updated model held to its lineage since the last exact model: its drift to the anchor
    checked, the earlier secrets of its chain measured again? A fast update's is; a model trained
    exactly (a retraining, a fall-back's) is held to no earlier model (the corpus has changed since):
    it starts a new chain, judged on its own request's secrets and against the model before only."""
    return not exact


def drift_anchor(parent: M, parent_anchor: M | None = None) -> M:
    """The exact model whose held-out perplexity a fast update of `parent` is held to: the anchor
    the parent was held to, or the parent itself where it was trained exactly (it kept no anchor:
    `parent_anchor` None)."""
    return parent if parent_anchor is None else parent_anchor


def teacher_of(parent: M, parent_teacher: M | None = None) -> M:
    """The model a fast update of `parent` is anchored to (`suppress`'s teacher): the teacher the
    parent kept, or the parent itself where it kept none (trained exactly, or audited)."""
    return parent if parent_teacher is None else parent_teacher


def teacher_after_audit(teacher: M | None) -> None:
    """The teacher a fast-updated model keeps once an audit has passed it and left it in production:
    none, it is its own (`teacher_of`)."""
    return None


def chain_after(parent_chain: list[R] | None, update: R, exact: bool = False) -> list[R] | None:
    """The chain of the version `update` makes: empty after an `exact` update; after a fast one,
    its parent's chain and the update (None, an unknown chain, stays unknown: rebuilt from the
    escrows still held, it would forget a request whose escrow is gone, and the audit would then
    take that request for one removed exactly)."""
    if exact:
        return []
    return None if parent_chain is None else [*parent_chain, update]


def kept_chain(kept: list[R] | None, kept_anchor: bool, exact: bool) -> list[R] | None:
    """The chain of a version from what it kept: its chain where it kept one; else empty for a
    version trained exactly, and unknown (None) for any other — a fast update from before the chain
    was kept (an anchor but no chain, or, verified by reference, nothing) or an import."""
    if kept is not None:
        return list(kept)
    if kept_anchor:
        return None
    return [] if exact else None


def removed_exactly(update: R, production_chain: list[R] | None) -> bool:
    """Was the request of `update` removed by a retraining in production's own lineage? Yes when
    production's chain is known and `update` is not on it: the exact model the chain starts from
    was trained without the request's data, and every update since trained on data without it.
    The audit judges exposure on the other requests' secrets only."""
    return production_chain is not None and update not in production_chain


def restored(corpus: TextCorpus, places: list[dict]) -> TextCorpus:
    """`corpus` with each place's written value back ({"record", "start", "end", "written"}, places
    that fit): the text the model was trained on there (redaction keeps every length), where a
    fast update of the chain takes an earlier secret again."""
    texts = dict(corpus.records)
    for o in places:
        if fits(texts, o):
            text = texts[o["record"]]
            texts[o["record"]] = text[:o["start"]] + o["written"] + text[o["end"]:]
    return replace(corpus, records=tuple((rid, texts[rid]) for rid, _ in corpus.records))


def fits(texts: dict[str, str], place: dict) -> bool:
    """Does an escrowed occurrence still fit its record (redaction keeps every length)?"""
    text = texts.get(place.get("record"))
    return (text is not None and 0 <= place["start"] < place["end"] <= len(text)
            and len(place["written"]) == place["end"] - place["start"])
