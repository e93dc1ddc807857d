"""The repair of a failed `suppress` update (unlearning.text.repair) on the notes chain of
test_suppress_chain: the chain's second update run at a fixed 3e-3 (a third of `tiny`'s training
rate) on a model trained 800 steps leaves the password to come back above its control band after 20
relearning steps on held-out text — the failure that sent a quarter of bench.stream's 1,600-step text
month to retraining. The repair goes on from it with steps that guard against relearning on the
*retained training* windows; the evidence's check, on held-out text, is the independent judge, here
with three evidence seeds (other controls, other relearning samples).

Ordering (the papers' kind of claim, measured in the same run): the relearned excess of the failed
update > the same steps without the relearning guard (`weight` 0: more suppress steps) > the repair."""

from __future__ import annotations

import dataclasses

import pytest

from tests.numerics.test_suppress_chain import SALT, notes  # noqa: F401 — notes: a fixture
from unlearning.text import evidence, lm
from unlearning.text.repair import RepairConfig, repair

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def failed_second_update(notes):
    corpus, card, password, without_card, without_both = notes
    original, _ = lm.train_text_model(corpus, "tiny", steps=800)
    first, _, _ = lm.run_lm_method("suppress", original, *lm.window_request(original, corpus, without_card, card))
    request, windows = lm.window_request(first, corpus, without_both, password + card)
    second, _, _ = lm.run_lm_method("suppress", first, request, windows, {"lr": 3e-3})
    ppl = {"before": lm.held_out_perplexity(first, without_card), "anchor": lm.held_out_perplexity(original, corpus)}
    return original, second, request, windows, ppl


def judged(bundle, notes, ppl: dict, seed: int) -> dict:
    """The evidence checks of the chain's second request, by name, with evidence seed `seed`."""
    corpus, card, password, _, without_both = notes
    cfg = evidence.EvidenceConfig(seed=seed)
    items = evidence.prepare(lm.secrets_of(corpus, card + password, cfg.prefix_chars), corpus, without_both, cfg)
    rows = evidence.judge(bundle, items, cfg, SALT, evidence.relearning_windows(bundle, without_both))
    checks = evidence.evidence_checks(rows, {**ppl, "after": lm.held_out_perplexity(bundle, without_both)}, cfg)
    return {c["name"]: c for c in checks}


def repaired(failed_second_update, weight: float):
    original, second, request, windows, _ = failed_second_update
    update = repair(second, request, windows, original, RepairConfig(weight=weight))
    return dataclasses.replace(second, model=update.model), update.stats


def test_the_repair_passes_the_evidence_the_failed_update_failed_on_every_evidence_seed(notes, failed_second_update):
    second, ppl = failed_second_update[1], failed_second_update[4]
    before = {seed: judged(second, notes, ppl, seed) for seed in SEEDS}
    assert not before[0]["relearned_above_control_band_bits"]["passed"]  # the failure the repair answers
    fixed, stats = repaired(failed_second_update, 1.0)
    assert stats["steps"] <= RepairConfig().steps and stats["relearn_steps"] == RepairConfig().relearn_steps
    for seed in SEEDS:
        after = judged(fixed, notes, ppl, seed)
        assert all(c["passed"] for c in after.values()), (seed, after)


def test_relearned_excess_orders_failed_above_unguarded_steps_above_the_repair(notes, failed_second_update):
    second, ppl = failed_second_update[1], failed_second_update[4]
    plain, _ = repaired(failed_second_update, 0.0)
    guarded, _ = repaired(failed_second_update, 1.0)
    for seed in SEEDS[:2]:
        relearned = [judged(m, notes, ppl, seed)["relearned_above_control_band_bits"]["value"]
                     for m in (second, plain, guarded)]
        assert relearned[0] > relearned[1] > relearned[2], (seed, relearned)


def test_the_repair_leaves_the_failed_model_untouched_and_is_deterministic(failed_second_update):
    second = failed_second_update[1]
    weights = {k: v.clone() for k, v in second.model.state_dict().items()}
    one, _ = repaired(failed_second_update, 1.0)
    two, _ = repaired(failed_second_update, 1.0)
    assert all((second.model.state_dict()[k] == v).all() for k, v in weights.items())
    assert all((one.model.state_dict()[k] == v).all() for k, v in two.model.state_dict().items())


def test_the_relearning_check_is_the_worst_of_its_draws(notes, failed_second_update):
    """The evidence's relearning check (an update's and a repair's alike) over three relearned copies,
    each on its own shuffle (seeds 0, 1, 2), against the same controls: the largest of the three single
    copies."""
    corpus, card, password, _, without_both = notes
    second = failed_second_update[1]
    cfg = evidence.EvidenceConfig()
    assert cfg.relearn_draws == 3
    items = evidence.prepare(lm.secrets_of(corpus, card + password, cfg.prefix_chars), corpus, without_both, cfg)
    windows = evidence.relearning_windows(second, without_both)
    rows = evidence.judge(second, items, cfg, SALT, windows)
    copies = [evidence.relearned_copy(second.model, windows, cfg.relearn_steps, float(second.settings["lr"]),
                                      cfg.relearn_batch, draw) for draw in range(3)]
    for row, item in zip(rows, items):
        single = [evidence.against_controls(c, second.vocab, item.secret.prefix, item.secret.value,
                                            list(item.controls)).excess_bits for c in copies]
        assert row["relearned_excess_bits"] == max(single)
    assert len({round(v, 6) for v in single}) == 3  # three draws, three different copies
