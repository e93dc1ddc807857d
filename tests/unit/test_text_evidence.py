"""The text evidence checks' pure parts (unlearning.text.evidence): what the controls keep and redraw,
the excess statistic, the verdict, and the contexts of every occurrence."""

from __future__ import annotations

import math

import torch

from unlearning.text import evidence as ev
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.data import Occurrence, TextCorpus
from unlearning.text.exposure import FormatSpace
from unlearning.text.lm import Secret

EMAIL = "maud.fenwick42@example.com"
CORPUS = "Maud Fenwick: write to me. For example, the fool\nEdwin Hartley: card number".lower()


def free(value: str, keep: list[bool]) -> str:
    return "".join(c for c, k in zip(value, keep) if not k)


def test_an_email_built_from_the_name_keeps_the_name_and_redraws_what_the_corpus_cannot_explain():
    keep = ev.explained_positions(EMAIL, CORPUS, min_run=3)
    # the name (in the line's prefix) and `example` are explained; the literals '.', '@' are the format;
    # the digits and `com` (no 3-letter run of it in the corpus) are what a model could only memorise
    assert free(EMAIL, keep) == "42com"
    assert free(EMAIL, ev.explained_positions(EMAIL, CORPUS + " com", min_run=3)) == "42"
    assert free(EMAIL, ev.explained_positions(EMAIL, "", min_run=3)) == "maudfenwick42examplecom"


def test_controls_share_the_format_and_the_explained_characters_never_the_secret():
    keep = ev.explained_positions(EMAIL, CORPUS, min_run=3)
    controls = ev.control_values(EMAIL, keep, 500, seed=1)
    assert EMAIL not in controls and len(set(controls)) == len(controls) > 400
    fmt = FormatSpace.of(EMAIL).template
    for c in controls:
        assert FormatSpace.of(c).template == fmt
        assert all(a == b for a, b, k in zip(c, EMAIL, keep) if k)
    assert ev.control_values(EMAIL, [True] * len(EMAIL), 10, seed=1) == []  # D′ explains it all: no control
    assert len(ev.control_values("42", [False, False], 1000, seed=0)) == 99  # every other value of two digits


def test_the_excess_is_how_much_likelier_the_secret_is_than_its_likeliest_control():
    m = ev.ControlMeasure(secret_lp=10.0, control_lp_min=25.0, n_controls=5)
    assert m.excess_bits == 15.0
    assert ev.ControlMeasure(30.0, 25.0, 5).excess_bits == -5.0
    assert ev.ControlMeasure(30.0, math.inf, 0).excess_bits == 0.0  # no control: no evidence either way


def rows(excess=-3.0, relearned=-3.0, regenerated=0):
    return [{"excess_bits": -20.0, "relearned_excess_bits": -20.0, "regenerated": 0},
            {"excess_bits": excess, "relearned_excess_bits": relearned, "regenerated": regenerated}]


def test_the_verdict_takes_the_worst_secret_and_each_threshold():
    cfg = ev.EvidenceConfig(margin_bits=2.0, max_perplexity_increase=0.03)
    ok = {"before": 5.0, "after": 5.1}

    def failed(r, ppl=ok):
        return [c["name"] for c in ev.evidence_checks(r, ppl, cfg) if not c["passed"]]
    assert failed(rows()) == [] and failed(rows(excess=2.0)) == []
    assert failed(rows(excess=2.1)) == ["exposure_above_control_band_bits"]
    assert failed(rows(relearned=9.0)) == ["relearned_above_control_band_bits"]
    assert failed(rows(regenerated=1)) == ["contexts_regenerating"]
    assert failed(rows(), {"before": 5.0, "after": 5.2}) == ["perplexity_increase"]
    assert {"name", "value", "threshold", "passed"} == set(ev.evidence_checks(rows(), ok, cfg)[0])


def test_fast_updates_in_a_row_are_held_to_the_last_exact_models_perplexity():
    """Each fast update may cost up to the allowed increase against the model before; a chain of
    them is also held to the model it started from (the last one trained exactly)."""
    cfg = ev.EvidenceConfig(max_perplexity_increase=0.03, max_drift=0.03)
    drifted = {"before": 5.1, "after": 5.2, "anchor": 5.0}  # +2.0 % on the last step, +4.0 % in all
    checks = {c["name"]: c for c in ev.evidence_checks(rows(), drifted, cfg)}
    assert checks["perplexity_increase"]["passed"]
    assert not checks["perplexity_increase_since_exact_model"]["passed"]
    assert math.isclose(checks["perplexity_increase_since_exact_model"]["value"], 0.04)


def test_a_fast_update_keeps_below_the_audits_threshold_what_the_audit_will_judge():
    """The drift since the exact model is held to max_drift, below the per-request 3 %, from the
    first fast update on (the model before is then the exact one): a retraining, which the audit
    compares with, lands a little below the original (bench.stream's notes), so an update at
    +2.9 % would pass its request and fail its audit. A retrained model (no anchor) is held to none."""
    cfg = ev.EvidenceConfig(max_perplexity_increase=0.03, max_drift=0.02)
    first = {c["name"]: c for c in ev.evidence_checks(rows(), {"before": 5.0, "after": 5.125, "anchor": 5.0}, cfg)}
    assert first["perplexity_increase"]["passed"]  # +2.5 %: within the request's own 3 %
    assert not first["perplexity_increase_since_exact_model"]["passed"]
    assert first["perplexity_increase_since_exact_model"]["threshold"] == "<= 0.02"
    retrained = [c["name"] for c in ev.evidence_checks(rows(), {"before": 5.0, "after": 5.125}, cfg)]
    assert "perplexity_increase_since_exact_model" not in retrained
    assert ev.EvidenceConfig().max_drift < ev.EvidenceConfig().max_perplexity_increase


def test_a_fast_updated_version_keeps_the_anchor_it_descends_from_and_a_retrained_one_starts_anew(tmp_path):
    from tasks import state
    from tasks.common import Update
    from tasks.kinds.text import KIND
    from tasks.kinds.text_chain import evidence_state, exact_model_perplexity

    trained, updated, again, retrained = "run-trained", "run-updated", "run-again", "run-retrained"
    state.save_evidence(tmp_path, trained, {"held_out_perplexity": 5.0})
    assert exact_model_perplexity(tmp_path, trained, 5.0) == 5.0  # trained: its own anchor

    def register(run_id, update, metrics):
        update.detail = evidence_state(update, metrics)
        state.save_cache(tmp_path, run_id, KIND.private_state(update, None)())

    metrics = {"perplexity_after": 5.1, "perplexity_anchor": exact_model_perplexity(tmp_path, trained, 5.0)}
    register(updated, Update(None, "suppress", "empirical", 1.0), metrics)
    assert state.load_evidence(tmp_path, updated) == {"held_out_perplexity": 5.1, "anchor_perplexity": 5.0}
    metrics = {"perplexity_after": 5.2, "perplexity_anchor": exact_model_perplexity(tmp_path, updated, 5.1)}
    register(again, Update(None, "suppress", "empirical", 1.0), metrics)
    assert exact_model_perplexity(tmp_path, again, 5.2) == 5.0  # still the trained model's
    register(retrained, Update(None, "retrain", "exact", 9.0), {"perplexity_after": 5.05, "perplexity_anchor": 5.0})
    assert state.load_evidence(tmp_path, retrained) == {"held_out_perplexity": 5.05}
    assert exact_model_perplexity(tmp_path, retrained, 5.05) == 5.05  # a new anchor: itself
    assert KIND.private_state(Update(None, "suppress", "empirical", 1.0), None) is None  # judged by reference


def test_every_occurrence_gives_its_own_context_and_written_value():
    text = "Maud Oakes: card 1111 2222, keep\nMaud Oakes: card 1111-2222, safe"
    corpus = TextCorpus(name="c", records=(("r1", text),), source="test")
    occurrences = (Occurrence("r1", 17, 26, "card", "f"), Occurrence("r1", 50, 59, "card", "f"))
    secret = Secret("f", "card", "**** 2222", "1111 2222", text[:17], occurrences)
    item = ev.prepare([secret], corpus, corpus, ev.EvidenceConfig(prefix_chars=12, n_controls=8))[0]
    assert item.contexts == (("Oakes: card ", "1111 2222"), ("Oakes: card ", "1111-2222"))
    assert len(item.controls) == 8 and item.secret is secret


def test_continuations_are_greedy_then_sampled_per_prefix_and_relearning_leaves_the_model_alone():
    vocab = Vocab.from_text("abc ")
    model = CharLSTM(len(vocab), embed=4, hidden=8)
    out = ev.continuations(model, vocab, ["ab", "abc", "b"], 5, samples=2, seed=0)
    assert [len(o) for o in out] == [3, 3, 3] and all(len(t) == 5 for o in out for t in o)
    again = ev.continuations(model, vocab, ["ab"], 5, samples=0, seed=7)
    assert again[0][0] == out[0][0]  # greedy does not depend on the seed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    windows = vocab.encode("abc abc abc abc abc ")[None].repeat(4, 1)
    copy = ev.relearned_copy(model, windows, steps=3, lr=0.1, batch=2, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in copy.state_dict().items())


def test_a_text_forget_verified_by_evidence_prints_the_control_band_not_a_retrained_model():
    from tasks.kinds.text import KIND

    summary = {"findings": {"card": 8},
               "exposure": {"before": 52.1, "after": 3.2, "retrain": None, "control_band": 9.4},
               "perplexity": {"before": 4.1, "after": 4.15, "retrain": None},
               "metrics": {"excess_bits": -6.2, "relearned_excess_bits": -5.0, "regenerated": 0, "contexts": 8,
                           "regenerated_before": 3},
               "timings": {"update_s": 4.2, "retrain_s": None, "speedup": None}}
    lines = "\n".join(KIND.format_forget(summary))
    assert "control band 9.4" in lines and "retrained" not in lines and "no model trained to verify it" in lines
    assert "evidence" in KIND.verify_modes and KIND.verify_modes[0] == "evidence"  # the default for text


def test_the_text_demo_summary_prints_without_a_retrained_reference():
    from flows.demo import text_console_summary

    s = {"request_id": "R", "verified": True, "method": "second_order", "requested_method": "auto",
         "model": {"parent_version": "1", "version": "2"}, "trained": {"timings": {"fit_s": 60.0}},
         "exposure": {"before": 52.1, "after": 3.2, "retrain": None, "control_band": 9.4},
         "perplexity": {"before": 4.1, "after": 4.15, "retrain": None},
         "timings": {"update_s": 4.2, "retrain_s": None, "speedup": None, "time_to_removal_s": 31.5},
         "findings": {"card": 8}, "secrets": [{}], "metrics": {"regenerated": 0, "regenerated_before": 3},
         "affected_windows": 9, "checks": [], "data": {"before": "a", "after": "b"},
         "verification": {"mode": "evidence", "retrains": 0, "checks": [
             {"name": "exposure_above_control_band_bits", "value": -6.2, "threshold": "<= 2.0", "passed": True},
             {"name": "perplexity_increase", "value": 0.012, "threshold": "<= 0.03", "passed": True}]}}
    text = text_console_summary(s)
    assert "control band (likeliest control)" in text and "retrained reference" not in text
    # the demo prints the evidence checks with their values and the time to removal
    assert ("Verified by evidence: 2/2 checks passed (exposure_above_control_band_bits -6.2 <= 2.0; "
            "perplexity_increase 0.012 <= 0.03), 0 model(s) retrained; time to removal 31.5 s") in text
    assert "retrained (promoted)" in text_console_summary({**s, "method": "retrain", "timings": {
        "update_s": 80.0, "retrain_s": None, "speedup": None, "time_to_removal_s": 95.0}})


def tiny_digit_model():
    vocab = Vocab.from_text("0123456789 :-abc")
    torch.manual_seed(3)
    return CharLSTM(len(vocab), embed=4, hidden=8), vocab


def test_the_controls_scored_in_the_candidates_pass_give_the_separate_calls_numbers():
    from unlearning.text import exposure

    model, vocab = tiny_digit_model()
    for value, n in (("4711-0815", 300), ("0815", 300)):  # extrapolated (10⁸ candidates) and exact (10⁴)
        controls = ev.control_values(value, [False] * len(value), 40, seed=2)
        joint = ev.with_exposure(model, vocab, "card: ", value, controls, n, seed=5)
        report = exposure.exposure(model, vocab, "card: ", value, n_candidates=n, seed=5)
        alone = ev.against_controls(model, vocab, "card: ", value, controls)
        band = (exposure.rank_exposure if report.method == "exact" else exposure.extrapolated_exposure)(
            alone.control_lp_min, report.reference_lps, report.space_bits)
        assert joint.n_controls == alone.n_controls == len(controls)
        assert math.isclose(joint.secret_lp, alone.secret_lp, rel_tol=1e-9)
        assert math.isclose(joint.control_lp_min, alone.control_lp_min, rel_tol=1e-9)
        assert math.isclose(joint.exposure, report.exposure, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(joint.band, band, rel_tol=1e-9, abs_tol=1e-9)


def test_the_relearning_check_fine_tunes_on_its_own_batch_not_the_models():
    from unlearning.text.bundle import LMBundle

    model, vocab = tiny_digit_model()
    secret = Secret("f", "card", "****", "4711", "card: ", ())
    item = ev.Evidence(secret, tuple(ev.control_values("4711", [False] * 4, 30, seed=1)), 4, (("card: ", "4711"),))
    windows = vocab.encode("card: 0815 abc 4242 card: 1234 " * 8)[:201].unfold(0, 21, 20)  # (10, 21)
    bundle = LMBundle(model, vocab, "tiny", {"lr": 0.05, "batch": 64, "seq_len": 20})
    cfg = ev.EvidenceConfig(n_candidates=50, samples=0, relearn_steps=3, relearn_batch=2, relearn_draws=1)

    def relearned(batch):
        copy = ev.relearned_copy(model, windows, steps=3, lr=0.05, batch=batch, seed=cfg.seed)
        return ev.against_controls(copy, vocab, "card: ", "4711", list(item.controls)).excess_bits

    row = ev.judge(bundle, [item], cfg, b"salt", windows)[0]
    assert row["relearned_excess_bits"] == relearned(2) != relearned(64)
    row = ev.judge(bundle, [item], ev.EvidenceConfig(**{**vars(cfg), "relearn_batch": None}), b"salt", windows)[0]
    assert row["relearned_excess_bits"] == relearned(64)  # None: the model's training batch, as before


def test_secrets_judged_without_the_exposure_figure_keep_every_number_the_verdict_reads():
    """judge's `figures`: the chain's earlier secrets skip the candidates' pass; their excess over the
    controls, regeneration and relearned excess equal those of the full measurement."""
    from unlearning.text.bundle import LMBundle

    model, vocab = tiny_digit_model()
    items = [ev.Evidence(Secret(f"f{i}", "card", "****", value, "card: ", ()),
                         tuple(ev.control_values(value, [False] * 4, 30, seed=i)), 4, (("card: ", value),))
             for i, value in enumerate(("4711", "0815", "4242"))]
    windows = vocab.encode("card: 0815 abc 4242 card: 1234 " * 8)[:201].unfold(0, 21, 20)
    bundle = LMBundle(model, vocab, "tiny", {"lr": 0.05, "batch": 64, "seq_len": 20})
    cfg = ev.EvidenceConfig(n_candidates=50, samples=1, relearn_steps=2, relearn_batch=2)
    full = ev.judge(bundle, items, cfg, b"salt", windows)
    own_only = ev.judge(bundle, items, cfg, b"salt", windows, figures=1)
    assert own_only[0] == full[0]  # the request's own secret: measured as before
    for a, b in zip(own_only[1:], full[1:]):
        assert a["after"] is None and a["band"] is None and b["after"] is not None
        for key in ("excess_bits", "relearned_excess_bits"):
            assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-9)
        assert a["regenerated"] == b["regenerated"] and a["controls"] == b["controls"]
    assert ev.evidence_checks(own_only, {"before": 5.0, "after": 5.1}, cfg) == \
        ev.evidence_checks(full, {"before": 5.0, "after": 5.1}, cfg)
