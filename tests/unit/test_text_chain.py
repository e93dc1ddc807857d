"""The chain of fast text updates since the last exact model (tasks.kinds.text_chain, by the rules of
unlearning.text.chain): an earlier request's secret, still in escrow, joins the next suppress
update's hinge set at the places the model was trained on it, and the chain a version keeps is
inherited by fast updates and restarted by retraining."""

from __future__ import annotations

import pytest
import torch

from tasks import audit, state
from tasks.common import Plan, Update
from tasks.kinds import text as kind
from tasks.kinds import text_chain as chains
from tasks.kinds import text_verify as verify
from unlearning.compliance import escrow, signing
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.bundle import LMBundle
from unlearning.text.data import Occurrence, TextCorpus, in_train_split, redact
from unlearning.text.suppress import char_classes, secret_positions

CARD, PASSWORD = "4556 7375 8689 9855", "hunter2xyzzy"


def corpus() -> TextCorpus:
    ids = [f"r{i}" for i in range(40) if in_train_split(f"r{i}")][:6]
    lines = [f"Line {i}: nothing to see here, the weather is mild today." for i in range(len(ids))]
    lines[1] = f"Maud Oakes: my card is {CARD}, keep it safe."
    lines[4] = f"Edwin Quill: password: {PASSWORD} and more text."
    return TextCorpus(name="notes", records=tuple(zip(ids, lines)), source="test")


def occurrence(c: TextCorpus, value: str, tag: str) -> Occurrence:
    record, text = next((r, t) for r, t in c.records if value in t)
    start = text.index(value)
    return Occurrence(record, start, start + len(value), "card" if tag == "fc" else "secret", tag)


def finding(o: Occurrence) -> dict:
    return {"fingerprint": o.secret_id, "detector": o.kind, "masked": "****",
            "location": {"record": o.record, "start": o.start, "end": o.end}}


def seal_earlier_request(root, original: TextCorpus, card: Occurrence, run: str) -> None:
    """What escrow_request seals for a request that removed the card (tasks.audit.escrow_content)."""
    text = original.text_of(card.record)
    secret = {"fingerprint": "fc", "detector": "card", "masked": "**** **** **** 9855", "value": CARD,
              "prefix": text[max(0, card.start - 40):card.start], "requests": ["REQ-1"],
              "occurrences": [{"record": card.record, "start": card.start, "end": card.end, "written": CARD}]}
    path = audit.escrow_file(root, "notes", run)
    content = {"model": "notes", "kind": "text", "requests": ["REQ-1"], "request": "REQ-1", "secrets": [secret]}
    audit.write_private(path, escrow.seal(content, signing.signing_key(root), audit.escrow_name(path)))


@pytest.fixture
def chain_case(tmp_path):
    original = corpus()
    card, password = occurrence(original, CARD, "fc"), occurrence(original, PASSWORD, "fp")
    before = redact(original, [card])  # the first (fast) request removed the card: D1
    after = redact(before, [password])  # the second request removes the password: D2
    vocab = Vocab.from_text("".join(t for _, t in original.records) + "<REDACTED>*")
    bundle = LMBundle(CharLSTM(len(vocab), embed=4, hidden=8), vocab, "tiny", {"seq_len": 16})
    seal_earlier_request(tmp_path, original, card, "forget-run-1")
    state.save_evidence(tmp_path, "model-run-1", {"held_out_perplexity": 5.0, "anchor_perplexity": 5.0,
                                                  state.CHAIN_KEY: ["forget-run-1"]})
    plan = Plan(request=None, model_name="notes", parent_run="model-run-1", dataset=before, bundle=bundle,
                part=[finding(password)])
    return tmp_path, plan, after, vocab


def hinged_text(request, vocab) -> str:
    """The characters of Z the hinge pushes down, in window order (a card's separators are none)."""
    mask = secret_positions(request, char_classes(vocab.chars))
    return "".join(vocab.chars[int(c)] for row, held in zip(request.Z, mask) for c, m in zip(row[1:], held) if m)


def test_an_earlier_secret_still_in_escrow_joins_the_hinge_set(chain_case):
    root, plan, after, vocab = chain_case
    alone, _ = chains.window_request(plan, after)
    assert hinged_text(alone, vocab) == "hunter2xyzzy"  # the request's own windows only

    chain = chains.chain_secrets(root, plan)
    assert [s.fingerprint for s in chain.secrets] == ["fc"] and chain.owners == {"fc": ["REQ-1"]}
    request, windows = chains.window_request(plan, after, chain)
    hinged = hinged_text(request, vocab)
    assert hinged == CARD.replace(" ", "") + PASSWORD  # both secrets' characters, at their trained places
    assert len(request) > len(alone)
    assert torch.equal(request.apply(windows), chains.window_request(plan, after)[0].apply(
        chains.window_request(plan, after)[1]))  # D' unchanged: the earlier windows' Z̃ are what D1 holds

    # once an audit deleted its escrow, the card is no longer taken (the audit judged it)
    audit.escrow_file(root, "notes", "forget-run-1").unlink()
    gone = chains.chain_secrets(root, plan)
    assert gone.secrets == () and gone.audited == 1


def test_the_chain_is_inherited_by_fast_updates_and_restarted_by_retraining(chain_case):
    root, plan, _, _ = chain_case
    assert chains.chain_after(root, plan, "forget-run-2") == ["forget-run-1", "forget-run-2"]
    fast = chains.evidence_state(Update(None, "suppress", "empirical", 1.0),
                                 {"perplexity_after": 5.1, "perplexity_anchor": 5.0}, ["forget-run-1", "forget-run-2"])
    state.save_cache(root, "model-run-2", kind.KIND.private_state(Update(None, "suppress", "empirical", 1.0,
                                                                        detail=fast), None)())
    assert chains.chain_runs(root, "model-run-2") == ["forget-run-1", "forget-run-2"]
    exact = chains.evidence_state(Update(None, "retrain", "exact", 9.0), {"perplexity_after": 5.0}, ["x"])
    assert state.CHAIN_KEY not in exact and chains.chain_runs(root, "no-such-run", "exact") == []
    assert chains.chain_runs(root, "no-such-run") is None  # no state, no guarantee: unknown, not empty
    # a fast-updated version from before the chain was kept: every escrow the model holds, to be safe
    state.save_evidence(root, "model-old", {"held_out_perplexity": 5.1, "anchor_perplexity": 5.0})
    assert chains.chain_runs(root, "model-old") is None
    plan.parent_run = "model-old"
    assert chains.known_chain(root, plan) == ["forget-run-1"]


def test_a_forget_on_a_chain_says_how_many_earlier_secrets_it_measured_again():
    metrics = {"excess_bits": -6.2, "relearned_excess_bits": -5.0, "regenerated": 0, "contexts": 8,
               "regenerated_before": 3}
    summary = {"findings": {"card": 8}, "exposure": {"before": 52.1, "after": 3.2, "retrain": None, "control_band": 9.4},
               "perplexity": {"before": 4.1, "after": 4.15, "retrain": None},
               "metrics": {**metrics, "earlier_secrets": 3, "earlier_excess_bits": -4.5, "chain_requests_audited": 1},
               "timings": {"update_s": 4.2, "retrain_s": None, "speedup": None}}
    line = kind.KIND.format_forget(summary)[-1]
    assert "3 measured again (worst -4.5 bits over its controls)" in line and "1 request(s) judged by an audit" in line
    first = {**summary, "metrics": {**metrics, "earlier_secrets": 0, "chain_requests_audited": 0}}
    assert not any("earlier" in line for line in kind.KIND.format_forget(first))


def seal(root, run: str, request: str, secret: dict) -> None:
    """An escrow sealed by forget run `run` for `request` holding `secret` (tasks.audit.escrow_content)."""
    path = audit.escrow_file(root, "notes", run)
    content = {"model": "notes", "kind": "text", "requests": [request], "request": request,
               "secrets": [{**secret, "requests": [request]}]}
    audit.write_private(path, escrow.seal(content, signing.signing_key(root), audit.escrow_name(path)))


def test_a_secret_removed_again_is_taken_at_the_places_of_every_escrow_and_lost_places_are_told_apart(chain_case):
    root, plan, _, _ = chain_case
    # new data brought the card back in another record; request REQ-2 redacted it there again
    again_record = plan.dataset.records[2][0]
    again = {"record": again_record, "start": 0, "end": len(CARD), "written": CARD}
    card = {"fingerprint": "fc", "detector": "card", "masked": "**** **** **** 9855", "value": CARD,
            "prefix": "", "occurrences": [again]}
    seal(root, "forget-run-2", "REQ-2", card)
    # a secret sealed with its places, whose record was deleted since; one sealed by older code without places
    seal(root, "forget-run-3", "REQ-3", {**card, "fingerprint": "fd", "value": "4556 0000 0000 1111",
                                         "occurrences": [{**again, "record": "deleted-record"}]})
    seal(root, "forget-run-4", "REQ-4", {**card, "fingerprint": "fe", "occurrences": []})
    state.save_evidence(root, "model-run-1", {state.CHAIN_KEY: [f"forget-run-{i}" for i in range(1, 5)]})

    chain = chains.chain_secrets(root, plan)
    [secret] = chain.secrets
    assert secret.fingerprint == "fc" and chain.owners == {"fc": ["REQ-1", "REQ-2"]}
    card_record = next(r for r, t in plan.dataset.records if "Maud" in t)
    assert sorted(o.record for o in secret.occurrences) == sorted([card_record, again_record])
    assert chain.restored.text_of(again_record).startswith(CARD)  # REQ-2's place is back in the windows too
    assert (chain.unplaced, chain.moved) == (1, 1)  # no places sealed vs places no longer in the data


def test_a_fast_version_without_evidence_state_is_an_unknown_chain_and_a_reference_verified_one_keeps_an_anchor(
        chain_case):
    root, _, _, _ = chain_case
    # older code saved nothing for a fast update verified by --verify reference: its guarantee says fast
    assert chains.chain_runs(root, "model-ref-old", "empirical") is None
    assert chains.chain_runs(root, "model-ref-old", "exact") == []
    # an imported checkpoint ("declared") may have been fine-tuned on anything: unknown, as no tag
    assert chains.chain_runs(root, "model-ref-old", "declared") is None and chains.chain_runs(root, "model-ref-old") is None
    # now such a version keeps its chain and, as anchor, the reference's perplexity (an exact model of D′)
    kept = chains.reference_state({"perplexity_after": 5.2, "perplexity_retrain": 5.05}, ["forget-run-1"])
    state.save_cache(root, "model-ref", kind.KIND.private_state(Update(None, "suppress", "empirical", 1.0,
                                                                      detail=kept), None)())
    assert chains.chain_runs(root, "model-ref") == ["forget-run-1"]
    assert chains.exact_model_perplexity(root, "model-ref", 5.2) == 5.05  # the next request checks the drift


def evidence_row(fingerprint: str, after: float, excess: float, relearned: float, earlier=None) -> dict:
    # an earlier secret of the chain: no "before" and no exposure figure (evidence.judge's `figures`)
    row = {"fingerprint": fingerprint, "masked": f"****{fingerprint}", "before": None if earlier else 60.0,
           "after": None if earlier else after, "band": None if earlier else after - excess, "excess_bits": excess,
           "relearned_excess_bits": relearned, "occurrences": 2, "regenerated": 0}
    return {**row, "earlier_requests": earlier} if earlier else row


def test_the_headline_is_the_requests_own_secrets_and_an_earlier_one_that_came_back_fails_by_name():
    from unlearning.text.evidence import EvidenceConfig

    own = evidence_row("fa", after=4.0, excess=-3.0, relearned=-2.5)
    back = evidence_row("fb", after=40.0, excess=9.0, relearned=11.0, earlier=["REQ-1"])
    ppl = {"before": 5.0, "after": 5.05}
    m = verify.evidence_metrics([own, back], ppl, 0)
    headline = ("exposure_after", "excess_bits", "relearned_excess_bits", "control_band")
    assert [m[k] for k in headline] == [own["after"], own["excess_bits"], own["relearned_excess_bits"], own["band"]]
    earlier = [m[f"earlier_{k}"] for k in headline[1:3]]
    assert earlier == [back["excess_bits"], back["relearned_excess_bits"]]
    assert m["secrets"] == 1 and m["earlier_secrets"] == 1

    checks = {c["name"]: c for c in chains.chain_checks([own, back], ppl, EvidenceConfig(margin_bits=2.0))}
    for name in ("exposure_above_control_band_bits", "relearned_above_control_band_bits"):
        assert not checks[name]["passed"] and checks[name]["earlier_secrets"] == [{"masked": "****fb",
                                                                                   "requests": ["REQ-1"]}]
    assert checks["contexts_regenerating"]["passed"] and "earlier_secrets" not in checks["contexts_regenerating"]
    # the request's own secret failing: no earlier secret named
    own_fails = {c["name"]: c for c in chains.chain_checks([{**own, "excess_bits": 5.0}], ppl, EvidenceConfig())}
    assert not own_fails["exposure_above_control_band_bits"]["passed"]
    assert "earlier_secrets" not in own_fails["exposure_above_control_band_bits"]


def test_a_fast_version_whose_state_holds_only_its_perplexity_is_still_an_unknown_chain(chain_case):
    """A request's own verification writes the perplexity of the version it starts from into that
    version's state before the chain is read: the version's guarantee must still decide (it was read
    only for an empty state, and a fast version from older code then read as a fresh exact chain)."""
    root, plan, _, _ = chain_case
    state.save_evidence(root, "model-ref-old", {"held_out_perplexity": 5.2})
    plan.parent_run = "model-ref-old"
    plan.parent_guarantee = "empirical"  # its MLflow tag, as planning read it
    assert chains.known_chain(root, plan) == ["forget-run-1"]  # every escrow the model holds: the safe side
    # and the next version's chain stays unknown (rebuilt from the escrows held, a request whose escrow
    # is gone would drop out of it, and the audit would take it for one removed exactly)
    assert chains.chain_after(root, plan, "forget-run-2") is None
    kept = chains.evidence_state(Update(None, "suppress", "empirical", 1.0),
                                 {"perplexity_after": 5.3, "perplexity_anchor": 5.0}, None)
    state.save_evidence(root, "model-next", kept)
    assert chains.chain_runs(root, "model-next", "empirical") is None
