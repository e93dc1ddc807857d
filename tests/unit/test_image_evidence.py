"""The image evidence checks (unlearning.images.evidence) on synthetic outputs: what a retrained
model looks like (Z as unseen as held-out images of its classes) passes, memorisation, a class
still predicted and a utility drop fail; tolerances come from the sample sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearning.images import delete_records, fix_labels, forget_class
from unlearning.images.evidence import (
    accuracy_gap, control_positions, evidence_checks, evidence_sets, forget_evidence, label_losses, smoothed_rate,
    strata,
)
from unlearning.images.verify import ImageEvidenceConfig
from unlearning.images.request import ImageData

K = 4
CFG = ImageEvidenceConfig()
SAME = {"ra": 90.0, "ta": 85.0}


def logits_for(labels, correct: np.ndarray, rng, confidence: np.ndarray | float = 3.0) -> torch.Tensor:
    """Logits (n, K): argmax = the label where `correct`, another class elsewhere; the margin
    `confidence` (per sample or one value) sets the loss."""
    labels = np.asarray(labels)
    n = len(labels)
    out = rng.normal(0, 0.1, (n, K))
    wrong = (labels + 1 + rng.integers(0, K - 1, n)) % K
    top = np.where(correct, labels, wrong)
    out[np.arange(n), top] += confidence
    return torch.tensor(out)


def outputs(rng, n_f: int, n_h: int, acc_f: float, acc_h: float, conf_f=3.0, conf_h=3.0, classes=(0, 1, 2)):
    """Logits on Z (recorded = source = a cycle of `classes`) and on held-out images of those classes."""
    y_f = np.resize(np.array(classes), n_f)
    y_h = np.resize(np.array(classes), n_h)
    f = logits_for(y_f, rng.random(n_f) < acc_f, rng, rng.normal(conf_f, 1.0, n_f))
    h = logits_for(y_h, rng.random(n_h) < acc_h, rng, rng.normal(conf_h, 1.0, n_h))
    return f, y_f, h, y_h


def verdicts(checks: list[dict]) -> dict[str, bool]:
    return {c["name"]: c["passed"] for c in checks}


def test_a_forget_set_like_unseen_images_passes_and_a_memorised_one_fails():
    rng = np.random.default_rng(0)
    present = {0, 1, 2, 3}
    # retrained-like: Z predicted as often and as confidently as held-out images of its classes
    f, y_f, h, y_h = outputs(rng, 300, 600, 0.8, 0.8)
    ev = forget_evidence(f, y_f, h, y_h, present, False, CFG)
    assert abs(ev["accuracy"]["gap"]) < ev["accuracy"]["tolerance"] and abs(ev["membership"]["auc"] - 0.5) < 0.1
    assert all(verdicts(evidence_checks(ev, SAME, SAME, CFG)).values())
    # memorised: Z fit better and with lower loss than unseen images
    f, y_f, h, y_h = outputs(rng, 300, 600, 0.99, 0.8, conf_f=6.0)
    ev = forget_evidence(f, y_f, h, y_h, present, False, CFG)
    got = verdicts(evidence_checks(ev, SAME, SAME, CFG))
    assert not got["forget_accuracy_gap_to_heldout"] and not got["membership_auc_vs_heldout"]
    assert ev["membership"]["auc"] > 0.8 and ev["accuracy"]["gap"] > 15


def test_deletions_are_judged_both_ways_relabels_one_way():
    """A deleted set fit much *worse* than unseen images stands out too (Streisand effect); a
    relabelled one is predicted as its old label less often under retraining, which is expected."""
    rng = np.random.default_rng(1)
    f, y_f, h, y_h = outputs(rng, 300, 600, 0.4, 0.8, conf_f=1.0)
    deleted = forget_evidence(f, y_f, h, y_h, {0, 1, 2}, False, CFG)
    assert deleted["accuracy"]["gap"] < -20 and not deleted["one_sided"]
    got = verdicts(evidence_checks(deleted, SAME, SAME, CFG))
    assert not got["forget_accuracy_gap_to_heldout"] and not got["membership_auc_vs_heldout"]
    relabelled = forget_evidence(f, y_f, h, y_h, {0, 1, 2}, True, CFG)
    assert relabelled["one_sided"] and all(verdicts(evidence_checks(relabelled, SAME, SAME, CFG)).values())


def test_a_relabelled_image_is_controlled_by_its_recorded_class_not_its_corrected_one():
    """An image relabelled into a class it does not look like (a striped image called "disc"): a
    retrained model still calls it striped, as often as held-out striped images. Controls of the
    corrected class (discs, never called striped) raised a false alarm on that."""
    rng = np.random.default_rng(5)
    striped, disc = 1, 2
    f = logits_for(np.full(40, striped), rng.random(40) < 0.9, rng)  # retrained: still "striped"
    y_h = np.r_[np.full(100, striped), np.full(100, disc)]
    h = logits_for(y_h, rng.random(200) < 0.9, rng)
    ev = forget_evidence(f, np.full(40, striped), h, y_h, {0, striped, disc}, True, CFG)
    assert abs(ev["accuracy"]["heldout"] - 90) < 10  # the striped controls, not the discs (≈ 0 % "striped")
    assert all(verdicts(evidence_checks(ev, SAME, SAME, CFG)).values())


def test_a_class_absent_from_d_prime_must_not_be_predicted_on_z_or_on_unseen_images():
    """A model that never saw the class predicts it (almost) never: the expectation is ≈ 0, not
    the held-out rate — which a model that still knows the class matches just as well."""
    rng = np.random.default_rng(2)
    for acc, passes in ((0.02, True), (0.9, False)):
        f, y_f, h, y_h = outputs(rng, 200, 100, acc, acc, classes=(3,))
        ev = forget_evidence(f, y_f, h, y_h, {0, 1, 2}, False, CFG)
        assert ev["accuracy"] is None and ev["absent"]["forget"] == pytest.approx(100 * (y_f == f.argmax(1).numpy()).mean())
        got = verdicts(evidence_checks(ev, SAME, SAME, CFG))
        assert got["forgotten_class_accuracy"] is passes and got["forgotten_class_heldout_accuracy"] is passes


def test_utility_is_judged_against_the_model_before():
    rng = np.random.default_rng(3)
    f, y_f, h, y_h = outputs(rng, 100, 100, 0.8, 0.8)
    ev = forget_evidence(f, y_f, h, y_h, {0, 1, 2}, False, CFG)
    got = verdicts(evidence_checks(ev, {"ra": 84.0, "ta": 82.0}, SAME, CFG))
    assert not got["ra_drop_vs_original"] and got["ta_drop_vs_original"]


def test_the_accuracy_tolerance_is_a_sampling_bound_that_shrinks_with_the_sizes():
    def tolerance(n_f, n_h):
        groups = strata(np.zeros(n_f, int), np.zeros(n_h, int), {0})
        pred_f, pred_h = np.r_[np.zeros(n_f // 2), np.ones(n_f - n_f // 2)], np.r_[np.zeros(n_h // 2), np.ones(n_h - n_h // 2)]
        return accuracy_gap(groups, pred_f, pred_h, z=3.0, margin=0.0)["tolerance"]

    # p = 0.5: SE² = p(1−p)(1/n_f + 1/n_h) (smoothed p ≈ 0.5), in points
    assert tolerance(100, 100) == pytest.approx(300 * np.sqrt(0.25 * (1 / 100 + 1 / 100)), rel=1e-3)
    assert tolerance(1, 100) > 100 > tolerance(100, 1000) > tolerance(1000, 10000)
    assert smoothed_rate(0, 10) > 0 and smoothed_rate(10, 10) < 1  # a perfect control still has an error


def test_controls_are_scored_with_the_recorded_label_and_uncontrolled_strata_are_counted():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert label_losses(logits, [1, 1]) == pytest.approx([np.log1p(np.exp(2.0)), np.log1p(np.exp(-2.0))])
    groups = strata(np.array([1, 1, 2]), np.array([1, 0, 1]), {0, 1})
    assert [(g.label, g.forget.tolist(), g.controls.tolist(), g.present) for g in groups] == [
        (1, [0, 1], [0, 2], True), (2, [2], [], False)]
    rng = np.random.default_rng(4)
    ev = forget_evidence(logits_for([0, 1], [True, True], rng), np.array([0, 1]),
                         logits_for([2], [True], rng), np.array([2]), {0, 1}, False, CFG)
    assert ev["uncontrolled"] == 2 and ev["accuracy"] is None and ev["membership"] is None
    assert verdicts(evidence_checks(ev, SAME, SAME, CFG)) == {
        "heldout_controls": False, "ta_drop_vs_original": True, "ra_drop_vs_original": True}


def test_evidence_sets_know_what_d_prime_holds():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    data = ImageData(torch.zeros(6, 1, 2, 2), y)
    controls = (torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]))
    cls = evidence_sets(data, forget_class(y, 2), controls)
    assert cls.present == {0, 1} and cls.forget[1].tolist() == [2, 2] and not cls.relabelled
    fix = evidence_sets(data, fix_labels(y, [3], [2]), controls)
    assert fix.forget[1].tolist() == [1] and fix.relabelled and fix.present == {0, 1, 2}
    assert evidence_sets(data, delete_records(6, [2, 3]), controls).present == {0, 2}  # the last images of class 1
    train = np.array([True, False, False, True, False])
    labels = np.array([0, 0, 1, 1, 2])
    assert control_positions(train, labels, {0, 1}, cap=10).tolist() == [1, 2]
    assert len(control_positions(train, labels, {0, 1, 2}, cap=2)) == 2


# --- the model before's outputs, once per version (judge_request, KnownOutputs) ----------------------

def request_images(relabelled: bool = False, seed: int = 0):
    """A request on 8×8 images of 4 classes: Z (6), D \\ Z (40), test (30), controls (12 of the test
    images, so ids overlap as the pipeline's do), each with record ids."""
    g = torch.Generator().manual_seed(seed)
    X, y = torch.rand(76, 1, 8, 8, generator=g), torch.arange(76) % K
    ids = [f"r{i}" for i in range(76)]
    part = lambda lo, hi: (X[lo:hi], y[lo:hi], ids[lo:hi])  # noqa: E731
    from unlearning.images.evidence import RequestImages
    return RequestImages(part(0, 6), part(6, 46), part(46, 76), part(58, 70), frozenset(range(K)), relabelled)


def small_cnn(seed: int):
    from unlearning.images.cnn import CNN
    torch.manual_seed(seed)
    return CNN(n_classes=K, in_channels=1, stem=8).eval()


def judged_in_full(before, after, images, cfg):
    """What the pipeline computed before the cache: every metric and the evidence of both models."""
    from unlearning.images.evidence import EvidenceSets, evidence_of
    from unlearning.metrics import evaluate_model
    sets = [(x, y) for x, y, _ in (images.forget, images.retain, images.test)]
    rows = [evaluate_model(m, *sets) for m in (before, after)]
    ev = EvidenceSets(images.forget[:2], images.controls[:2], images.present, images.relabelled)
    return rows, [evidence_of(m, ev, cfg) for m in (before, after)]


def test_checks_with_the_model_before_read_from_its_version_equal_those_computed_in_full():
    from unlearning.images.evidence import judge_request
    before, after, images = small_cnn(0), small_cnn(1), request_images()
    cfg = ImageEvidenceConfig(max_ra_drop=2.0)  # two random models: some checks pass, some fail
    rows, found = judged_in_full(before, after, images, cfg)
    full = evidence_checks(found[1], rows[1], rows[0], cfg)
    first = judge_request(before, after, images, cfg)  # nothing known yet: evaluated, and kept
    assert first.evaluated_before == 76  # 88 rows, 76 images: a control among the test images evaluated once
    again = judge_request(before, after, images, cfg, first.known_before)
    assert again.evaluated_before == 0 and again.known_before is None
    for judged in (first, again):
        assert [(c["name"], c["passed"]) for c in judged.checks] == [(c["name"], c["passed"]) for c in full]
        assert [c["value"] for c in judged.checks] == pytest.approx([c["value"] for c in full], abs=1e-9)
        assert judged.before == pytest.approx(rows[0], abs=1e-9) and judged.after == pytest.approx(rows[1], abs=1e-9)
        assert judged.evidence_before["membership"] == pytest.approx(found[0]["membership"], abs=1e-9)
    assert {c["passed"] for c in full} == {True, False}  # both verdicts occur, so equality means something


def test_a_version_keeps_outputs_of_its_own_images_never_of_the_deleted_ones():
    from unlearning.images.evidence import judge_request
    images = request_images()
    judged = judge_request(small_cnn(0), small_cnn(1), images, CFG)
    kept = set(judged.known_after.ids)
    assert not kept & set(images.forget[2])  # derived from erased images: not kept with the update
    assert kept == set(images.retain[2]) | set(images.test[2])
    assert judged.known_after.logits.dtype == torch.float32  # a float32 model's outputs, stored exactly
    relabelled = judge_request(small_cnn(0), small_cnn(1), request_images(relabelled=True), CFG)
    assert set(images.forget[2]) <= set(relabelled.known_after.ids)  # Z̃ stays in D' under its new labels


def test_only_the_images_a_version_does_not_know_are_evaluated():
    from unlearning.images.evidence import judge_request
    from unlearning.images.outputs import outputs_of
    from unlearning.metrics import model_outputs
    before, images = small_cnn(0), request_images()
    x, y, ids = images.retain
    known = judge_request(before, small_cnn(1), images, CFG).known_before.restricted(ids[:25])
    out, evaluated = outputs_of(before, x, y, ids, known)
    assert evaluated == 15
    full = model_outputs(before, x, y)
    assert torch.allclose(out.logits, full.logits, atol=1e-6) and torch.equal(out.labels, full.labels)


# --- utility on a fixed sample, paired with the model before (paired_drop, request_sample) ---------

def population(rng, n: int, acc: float, lost: float, gained: float):
    """Correctness of the model before and of an update on n images: the update loses a share
    `lost` of the images the model before got right and gains `gained` of the others."""
    before = rng.random(n) < acc
    after = np.where(before, rng.random(n) >= lost, rng.random(n) < gained)
    return before, after


def sampled_drop(before, after, ids, m: int, max_drop: float = 5.0) -> dict:
    from unlearning.images.samples import first_by_key, paired_drop
    pos = first_by_key(ids, m)
    return paired_drop(before[pos], after[pos], len(ids), max_drop, CFG.z)


def test_the_paired_sample_estimate_agrees_with_the_full_drop_within_its_tolerance():
    from unlearning.images.samples import paired_drop
    rng = np.random.default_rng(0)
    n, m, misses, draws = 2000, 100, 0, 300
    for draw in range(draws):
        before, after = population(rng, n, 0.8, rng.uniform(0, 0.15), rng.uniform(0, 0.3))
        full = paired_drop(before, after, n, 5.0, CFG.z)
        assert full["se"] == 0 and full["drop"] == pytest.approx(100 * (before.mean() - after.mean()))
        est = sampled_drop(before, after, [f"d{draw}-{i}" for i in range(n)], m)
        assert est["n"] == m
        misses += abs(est["drop"] - full["drop"]) > CFG.z * est["se"]
    assert misses <= 0.02 * draws  # z = 3: ≈ 0.3 % two-sided for a normal mean; smoothing keeps it wide


def test_clear_drops_get_the_full_checks_verdict_from_a_sample_both_ways():
    from unlearning.images.samples import paired_drop
    rng = np.random.default_rng(1)
    n = 2000
    for lost, gained, passes in ((0.02, 0.08, True), (0.0, 0.0, True), (0.6, 0.05, False), (0.8, 0.0, False)):
        for draw in range(20):
            before, after = population(rng, n, 0.8, lost, gained)
            full = paired_drop(before, after, n, 5.0, CFG.z)
            est = sampled_drop(before, after, [f"c{draw}-{i}" for i in range(n)], 100)
            assert (full["drop"] <= full["tolerance"]) == passes == (est["drop"] <= est["tolerance"]), (lost, gained)


def test_a_sample_of_the_whole_set_is_the_full_check():
    from unlearning.images.evidence import utility_drops
    from unlearning.metrics.evaluate import Outputs
    rng = np.random.default_rng(2)
    labels = torch.as_tensor(rng.integers(0, K, 50))
    out = lambda correct: Outputs(torch.zeros(50, 2), logits_for(labels, correct, rng).double(), labels)  # noqa: E731
    before, after = population(rng, 50, 0.8, 0.2, 0.1)
    drops = utility_drops({"test": out(before), "retain": out(before)}, {"test": out(after), "retain": out(after)},
                          {"test": 50, "retain": 50}, CFG)
    for d in drops.values():
        assert d["se"] == 0 and d["tolerance"] == CFG.max_ta_drop
        assert d["drop"] == pytest.approx(100 * (before.mean() - after.mean()))
    checks = verdicts(evidence_checks({"accuracy": None, "absent": None, "membership": {"auc": 0.5, "tolerance": 0.1},
                                       "one_sided": False}, {}, {}, CFG, drops))
    assert checks["ta_drop_vs_original"] == (drops["ta"]["drop"] <= 5.0)


def test_the_sample_is_fixed_by_record_id_so_an_erasure_changes_only_its_own_images():
    from unlearning.images.samples import first_by_key
    ids = [f"fm{i}" for i in range(800)]
    sample = {ids[p] for p in first_by_key(ids, 100)}
    erased = set(list(sample)[:3]) | {"fm5", "fm6"}
    after = [i for i in ids if i not in erased]
    sample_after = {after[p] for p in first_by_key(after, 100)}
    assert len(sample_after) == 100 and sample - erased <= sample_after
    assert len(sample_after - sample) == len(sample & erased)  # as many new images as erased sampled ones
    assert len(first_by_key(ids, None)) == len(first_by_key(ids, 5000)) == 800


def test_controls_are_per_class_a_prefix_shared_with_the_test_sample():
    from unlearning.images.evidence import control_sample
    from unlearning.images.samples import first_by_key
    ids = [f"t{i}" for i in range(1000)]
    labels = np.arange(1000) % 10
    recorded = np.array([3, 3, 3, 7])  # three forget images of class 3, one of class 7
    cfg = ImageEvidenceConfig(min_controls=20, controls_per_forget=8)
    chosen = control_sample(ids, labels, recorded, cfg)
    assert {3: 24, 7: 20} == {c: int((labels[chosen] == c).sum()) for c in (3, 7)} and len(chosen) == 44
    test_sample = first_by_key(ids, 100)
    of_classes = {p for p in test_sample.tolist() if labels[p] in (3, 7)}
    assert of_classes <= set(chosen.tolist())  # the update evaluates those images once


def random_request_images(seed: int):
    """700 random 8×8 images of K classes, ids r0..r699: Z = r0, r1; D′ = r2..r399; the test images
    and the controls r400..r699. Returns (the RequestImages, positions → an (X, y, ids) part)."""
    from unlearning.images.evidence import RequestImages

    g = torch.Generator().manual_seed(seed)
    X, y = torch.rand(700, 1, 8, 8, generator=g), torch.arange(700) % K
    ids = [f"r{i}" for i in range(700)]

    def part(sel):
        return X[sel], y[sel], [ids[i] for i in sel]

    return RequestImages(part([0, 1]), part(list(range(2, 400))), part(list(range(400, 700))),
                         part(list(range(400, 700))), frozenset(range(K)), False), part


def test_a_request_evaluates_samples_and_the_next_one_finds_them_known():
    from unlearning.images.evidence import RequestImages, judge_request
    first, part = random_request_images(3)
    before, after = small_cnn(0), small_cnn(1)
    judged = judge_request(before, after, first, CFG)
    assert judged.judged_images == {"forget": 2, "retain": 100, "test": 100, "controls": 40}
    assert {d["n"] for d in judged.drops.values()} == {100} and all(d["se"] > 0 for d in judged.drops.values())
    # the next request deletes two images of the update's D': its model before (the update) knows
    # its outputs on every sampled image but the replacements of erased ones and new controls
    retain = [i for i in range(4, 400)]
    second = RequestImages(part([2, 3]), part(retain), part(list(range(400, 700))), part(list(range(400, 700))),
                           frozenset(range(K)), False)
    again = judge_request(after, small_cnn(2), second, CFG, judged.known_after)
    assert again.evaluated_before <= 2 + 2


def test_a_chain_of_updates_is_judged_against_the_exact_model_it_started_from():
    from unlearning.images.evidence import judge_request
    from unlearning.images.outputs import KnownOutputs
    images = request_images()
    model = small_cnn(1)  # an update that changed nothing since the model before, but drifted since the anchor
    exact = {}
    for _, y, ids in (images.retain, images.test):
        exact.update({i: int(label) for i, label in zip(ids, y.tolist())})
    ids = list(exact)
    logits = torch.nn.functional.one_hot(torch.tensor([exact[i] for i in ids]), K).float() * 10
    anchor = KnownOutputs(tuple(ids), torch.zeros(len(ids), 2), logits)  # the exact model: every image right
    alone = verdicts(judge_request(model, model, images, CFG).checks)
    assert alone["ta_drop_vs_original"] and "ta_drop_vs_exact_model" not in alone
    judged = judge_request(model, model, images, CFG, anchor=anchor)
    got = verdicts(judged.checks)
    assert got["ta_drop_vs_original"] and got["ra_drop_vs_original"]  # each step small ...
    assert not got["ta_drop_vs_exact_model"] and not got["ra_drop_vs_exact_model"]  # ... the chain not
    assert set(judged.anchor_after.ids) == set(ids)  # kept for the next request, on the samples
    first = judge_request(small_cnn(0), model, images, CFG)  # the model before is exact: it is the anchor
    rows = first.known_before.rows()
    assert set(first.anchor_after.ids) == set(ids) and torch.equal(
        first.anchor_after.logits, first.known_before.logits[[rows[i] for i in first.anchor_after.ids]])


def test_the_drift_since_the_exact_model_can_be_held_to_the_audits_bare_threshold():
    """drift_z = 0 (the default): the chain's TA drop on the sample judged against max_ta_drop
    itself, as the audit judges it; drift_z None adds 3 paired SE (≈ 5 + 6.6 points here) and
    passed a chain the audit then failed (bench.stream)."""
    from unlearning.images.evidence import judge_request, request_sample
    from unlearning.images.outputs import KnownOutputs
    from unlearning.metrics import model_outputs
    images, _ = random_request_images(4)
    model = small_cnn(1)
    test = request_sample(images, CFG).test
    out = model_outputs(model, test[0], test[1])
    wrong = (out.predictions != out.labels).nonzero().flatten()[:7]  # the exact model got these right
    logits = out.logits.clone()
    logits[wrong] = torch.nn.functional.one_hot(out.labels[wrong], K).double() * 100
    anchor = KnownOutputs(tuple(test[2]), out.features, logits)
    wide = verdicts(judge_request(model, model, images, CFG.model_copy(update={"drift_z": None}), anchor=anchor).checks)
    bare = judge_request(model, model, images, CFG, anchor=anchor)
    assert bare.drops_since_exact["ta"]["drop"] == 7.0 and bare.drops_since_exact["ta"]["se"] > 1
    assert wide["ta_drop_vs_exact_model"] and not verdicts(bare.checks)["ta_drop_vs_exact_model"]
    assert verdicts(bare.checks)["ta_drop_vs_original"]  # the step itself changed nothing


def test_sampling_keeps_no_record_id_once_it_returns():
    """`unlearn serve` runs request after request in one process: a cache of the ids it hashed would
    keep erased images' record ids in its memory (a reference held is a refcount that stays up)."""
    import sys
    import uuid

    from unlearning.images.samples import first_by_key

    erased = "erased/" + uuid.uuid4().hex  # a fresh string: only this test refers to it
    before = sys.getrefcount(erased)
    first_by_key([erased, *(f"kept/{i}" for i in range(50))], 10)
    assert sys.getrefcount(erased) == before


def decided(checks: list[dict]) -> dict[str, bool]:
    return {c["name"]: c.get("decided", True) for c in checks}


@pytest.mark.parametrize("n_f", [1, 3])
def test_a_check_no_forget_set_of_a_few_images_could_fail_is_undecided_not_passed(n_f):
    """One or three images against controls at ≈ 50 %: the AUC's band 0.5 ± ≥ 0.56 holds every AUC
    and the gap's tolerance every accuracy Z could have — even a model that memorised them (Z all
    right, lower loss) passes. Such a check is no evidence: it says undecided, with the reason."""
    rng = np.random.default_rng(11)
    f, y_f, h, y_h = outputs(rng, n_f, 8 * max(n_f, 3), 1.0, 0.5, conf_f=8.0, classes=(0,))
    ev = forget_evidence(f, y_f, h, y_h, {0, 1, 2}, False, CFG)
    assert ev["membership"]["tolerance"] >= 0.5
    assert ev["accuracy"]["tolerance"] >= max(ev["accuracy"]["heldout"], 100 - ev["accuracy"]["heldout"])
    checks = evidence_checks(ev, SAME, SAME, CFG)
    assert all(verdicts(checks).values())  # the verdict: nothing failed, nothing could
    got = decided(checks)
    assert not got["membership_auc_vs_heldout"] and not got["forget_accuracy_gap_to_heldout"]
    assert got["ta_drop_vs_original"] and got["ra_drop_vs_original"]
    reasons = {c["name"]: c["reason"] for c in checks if not c.get("decided", True)}
    image = f"{n_f} forget image{'' if n_f == 1 else 's'}"
    assert reasons["membership_auc_vs_heldout"] == f"{image}: too few to decide, the band covers every possible value"
    assert reasons["forget_accuracy_gap_to_heldout"].startswith(f"{image} against controls ")
    # forty such images get a real verdict, both ways
    for acc_f, conf_f, passes in ((0.5, 3.0, True), (1.0, 8.0, False)):
        f, y_f, h, y_h = outputs(rng, 40, 320, acc_f, 0.5, conf_f=conf_f, classes=(0,))
        checks = evidence_checks(forget_evidence(f, y_f, h, y_h, {0, 1, 2}, False, CFG), SAME, SAME, CFG)
        assert all(decided(checks).values())
        got = verdicts(checks)
        assert got["membership_auc_vs_heldout"] is passes and got["forget_accuracy_gap_to_heldout"] is passes


def test_a_few_images_still_decide_where_some_outcome_would_fail():
    """One image against controls all right: a wrong prediction (gap −100) is beyond the gap's
    tolerance, so that check has power and stays decided; the AUC's band (0.5 ± 0.93) does not."""
    rng = np.random.default_rng(12)
    f, y_f, h, y_h = outputs(rng, 1, 40, 1.0, 1.0, classes=(0,))
    ev = forget_evidence(f, y_f, h, y_h, {0, 1}, False, CFG)
    got = decided(evidence_checks(ev, SAME, SAME, CFG))
    assert got["forget_accuracy_gap_to_heldout"] and not got["membership_auc_vs_heldout"]
    # relabelled (one-sided): only a gap above +tolerance fails, and Z cannot beat controls all right
    one_sided = evidence_checks(forget_evidence(f, y_f, h, y_h, {0, 1}, True, CFG), SAME, SAME, CFG)
    assert not decided(one_sided)["forget_accuracy_gap_to_heldout"]
    [gap] = [c for c in one_sided if c["name"] == "forget_accuracy_gap_to_heldout"]
    assert "controls 100 % right" in gap["reason"] and "too few" not in gap["reason"]  # not a matter of size

