"""The rules of a text model's lineage since its last exact version (unlearning.text.chain), the one
copy that the pipeline (tasks.kinds.text_chain, tasks.kinds.text_verify, tasks.audit_checks) and
bench.stream follow: walked over a lineage of versions, as each of them uses them."""

from __future__ import annotations

from unlearning.text import chain as rules
from unlearning.text.data import TextCorpus


def lineage(steps: list[tuple[str, str]]) -> dict[str, tuple]:
    """Versions made one after another from "v0" (trained): (name, guarantee of its update) each →
    name → (the anchor kept: None when exact, its chain), the way bench.stream's Text keeps them."""
    kept, parent = {"v0": (None, [])}, "v0"
    for name, guarantee in steps:
        exact = rules.trained_exactly(guarantee)
        anchor, chain = kept[parent]
        held = rules.held_to_its_chain(exact)
        kept[name] = (rules.drift_anchor(parent, anchor) if held else None, rules.chain_after(chain, name, exact))
        parent = name
    return kept


def test_fast_updates_are_held_to_the_last_exact_model_and_extend_its_chain_until_a_retraining():
    kept = lineage([("v1", "empirical"), ("v2", "empirical"), ("v3", "exact"), ("v4", "empirical")])
    assert kept["v1"] == ("v0", ["v1"])  # held to the trained model, not only to its parent
    assert kept["v2"] == ("v0", ["v1", "v2"])  # still v0: stacked updates cannot each drift a little
    assert kept["v3"] == (None, [])  # retrained: held to no earlier model, a new empty chain
    assert kept["v4"] == ("v3", ["v4"])  # the retraining is the next updates' anchor


def test_an_unknown_chain_stays_unknown_until_an_exact_model():
    assert rules.chain_after(None, "run-2") is None  # not rebuilt from the escrows still held
    assert rules.chain_after(None, "run-2", exact=True) == []
    assert rules.chain_after(["run-1"], "run-2") == ["run-1", "run-2"]


def test_a_version_that_kept_no_chain_has_an_empty_one_only_when_trained_exactly():
    assert rules.kept_chain(["run-1"], kept_anchor=True, exact=False) == ["run-1"]
    assert rules.kept_chain(None, kept_anchor=False, exact=True) == []  # trained, retrained, promoted
    assert rules.kept_chain(None, kept_anchor=True, exact=False) is None  # fast, from before chains were kept
    assert rules.kept_chain(None, kept_anchor=False, exact=False) is None  # verified by reference by older code
    assert [rules.trained_exactly(g) for g in ("exact", "empirical", "declared", None)] == [True, False, False, False]


def test_only_the_requests_on_productions_chain_are_judged_on_exposure_by_the_audit():
    assert not rules.removed_exactly("run-2", ["run-1", "run-2"])  # a fast update production descends from
    assert rules.removed_exactly("run-0", ["run-1", "run-2"])  # before its exact model: retrained without it
    assert rules.removed_exactly("run-0", [])  # production is itself exact
    assert not rules.removed_exactly("run-0", None)  # chain unknown: judged, to be safe


def test_of_the_registered_text_methods_only_the_suppress_hinge_takes_the_chain_again():
    from unlearning import registry

    assert [m for m in registry.names("text") if rules.takes_the_chain(m)] == ["suppress"]
    assert all(rules.trained_exactly(registry.get("text", m).guarantee) == (m == "retrain")
               for m in registry.names("text"))  # the one exact method starts a new chain


def test_the_places_of_the_chain_are_written_back_only_where_they_still_fit():
    corpus = TextCorpus(name="c", records=(("r1", "card ****-**** ok"), ("r2", "short")), source="test")
    places = [{"record": "r1", "start": 5, "end": 14, "written": "1111-2222"},
              {"record": "r2", "start": 0, "end": 9, "written": "1111-2222"},  # the record is shorter now
              {"record": "gone", "start": 0, "end": 4, "written": "1111"},  # the record was deleted
              {"record": "r1", "start": 0, "end": 4, "written": "abc"}]  # not the length it replaced
    back = rules.restored(corpus, places)
    assert back.records == (("r1", "card 1111-2222 ok"), ("r2", "short"))
    assert corpus.records[0][1] == "card ****-**** ok"  # the corpus itself is left alone
