"""Image unlearning behind one interface, on sklearn digits with the tiny CNN.

Every registered method runs on a class-forgetting request (class 3) and returns a finite model
without touching the input; alignment forgets the class while keeping retain and test accuracy;
retraining never sees the forget samples; requests and options are validated with one-line errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from unlearning import images
from unlearning.errors import UnlearnError
from unlearning.images import ImageData
from unlearning.images import cnn
from unlearning.images.registry import IMAGE_METHODS, choose_method, get_image_method, run_image_method
from unlearning.metrics import da_score

FORGET_CLASS = 3


@pytest.fixture(scope="module")
def setup():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    schedule = cnn.TrainSchedule.from_preset("tiny")
    model = cnn.CNN.from_preset("tiny", seed=0)
    cnn.train(model, X_tr, y_tr, schedule)  # ≈ 2.5 s: 8 epochs, train accuracy 100 %, test ≈ 98 %
    data = ImageData(X_tr, y_tr, schedule)
    request = images.forget_class(y_tr, FORGET_CLASS)
    return model, data, request, (X_te, y_te)


# Small budgets keep the contract fast; alignment and retrain run with their defaults because the
# quality tests below read their results.
QUICK = {"finetune": {"epochs": 0.3}, "l1_sparse": {"epochs": 0.3}, "scrub": {"epochs": 0.3, "max_epochs": 1},
         "random_labels": {"epochs": 0.3}, "salun": {"epochs": 0.3}, "gradient_ascent": {"epochs": 1},
         "second_order": {"cg_iters": 3, "subsample": 256}}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def results(setup):
    """Each method run once, shared by the tests below, with whether it changed the input model."""
    model, data, request, _ = setup
    before, out = _state(model), {}
    for name in IMAGE_METHODS:
        result = run_image_method(name, model, data, request, QUICK.get(name))
        after = model.state_dict()
        out[name] = (result, any(not torch.equal(before[k], after[k]) for k in before))
    return out


def _accuracies(model, data, request, test):
    X_te, y_te = test
    keep = y_te != FORGET_CLASS
    return {"forget": cnn.accuracy(model, data.X[request.forget], data.y[request.forget]),
            "retain": cnn.accuracy(model, data.X[request.retain], data.y[request.retain]),
            "test": cnn.accuracy(model, X_te[keep], y_te[keep])}


# --- requests -----------------------------------------------------------------------------------

def test_requests_split_the_training_set():
    y = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    r = images.forget_class(y, 1)
    assert r.forget.tolist() == [1, 3, 6] and r.retain.tolist() == [0, 2, 4, 5] and r.forget_class == 1
    r = images.delete_records(7, [5, 0])
    assert r.kind == "delete_records" and r.forget.tolist() == [0, 5] and r.corrected is None
    r = images.fix_labels(y, [6, 2], [0, 1])
    assert r.forget.tolist() == [2, 6] and r.corrected.tolist() == [1, 0]  # labels follow their index
    data = ImageData(torch.arange(7.0).reshape(7, 1, 1, 1), y)
    X_new, y_new = r.d_prime(data)  # retain rows in order, then Z̃ (same images, corrected labels)
    assert X_new.flatten().tolist() == [0, 1, 3, 4, 5, 2, 6] and y_new.tolist() == [0, 1, 1, 0, 2, 1, 0]


@pytest.mark.parametrize("make, message", [
    (lambda y: images.forget_class(y, 7), "no training sample has class 7"),
    (lambda y: images.delete_records(len(y), []), "names no training samples"),
    (lambda y: images.delete_records(len(y), [0, 9]), "outside the training set"),
    (lambda y: images.delete_records(len(y), [1, 1]), "twice"),
    (lambda y: images.delete_records(len(y), range(len(y))), "every training sample"),
    (lambda y: images.fix_labels(y, [0, 1], [2]), "one label per index"),
    (lambda y: images.fix_labels(y, [0], [5], n_classes=3), "not classes 0..2"),
])
def test_bad_requests_raise_one_line_errors(make, message):
    with pytest.raises(UnlearnError, match=message) as err:
        make(torch.tensor([0, 1, 2, 1, 0, 2]))
    assert "\n" not in str(err.value)


# --- the contract: every method -----------------------------------------------------------------

@pytest.mark.parametrize("name", list(IMAGE_METHODS))
def test_every_method_returns_a_finite_new_model_and_leaves_the_input_alone(setup, results, name):
    model = setup[0]
    result, touched_input = results[name]
    assert result.method == name and result.guarantee == IMAGE_METHODS[name].guarantee
    assert result.model is not model and not touched_input  # every weight and buffer untouched
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert math.isfinite(result.stats["seconds"]) and result.stats["seconds"] > 0
    assert any(not torch.equal(p, q) for p, q in zip(result.model.parameters(), model.parameters()))


def test_alignment_forgets_the_class_and_keeps_the_rest(setup, results):
    model, data, request, test = setup
    before = _accuracies(model, data, request, test)
    after = _accuracies(results["alignment"][0].model, data, request, test)
    # Measured with the defaults (6 recover + 6 forget steps; classes 3 and 8): forget accuracy
    # 100 → 1.4/0.0 %, retain accuracy 100 → 99.7–99.9 %, test accuracy on the other classes within
    # 1 point (class 0 forgets less: 37 % left; the previous one-epoch default 3.5 %). The thresholds leave
    # room for platform-level float differences but would catch a method that does not forget (the
    # opposite DA sign left forget accuracy at 100 %) or that damages the rest.
    assert before["forget"] > 0.95 and after["forget"] < 0.2
    assert after["retain"] >= before["retain"] - 0.02
    assert after["test"] >= before["test"] - 0.03


def _gap(metrics, reference):
    """Mean absolute gap over forget/retain/test accuracy (the bench's avg gap without MIA)."""
    return sum(abs(metrics[k] - reference[k]) for k in ("forget", "retain", "test")) / 3


def test_default_alignment_costs_a_fifth_of_retraining_and_lands_near_it(setup, results):
    # Issue 13 §3: the default update must pay, ≤ 20 % of retraining's cost, and still be judged
    # like retraining. Cost counted in images through the network (forward 1, backward 2), the
    # unit of both methods' stats, not in seconds: on a shared machine timings are noise.
    from unlearning.images.verify import ImageVerifyConfig, image_checks
    from unlearning.metrics import evaluate_model

    # Measured (class 3): 11 % of retraining's passes (the previous one-epoch default: 31 %), gap to
    # retraining 0.006 against the original's 0.34.
    model, data, request, test = setup
    aligned, retrained = results["alignment"][0], results["retrain"][0]
    assert aligned.stats["image_passes"] <= 0.20 * retrained.stats["image_passes"]
    original = _accuracies(model, data, request, test)
    reference = _accuracies(retrained.model, data, request, test)
    after = _accuracies(aligned.model, data, request, test)
    assert _gap(after, reference) < _gap(original, reference) / 5
    keep = test[1] != FORGET_CLASS
    sets = ((data.X[request.forget], data.y[request.forget]), (data.X[request.retain], data.y[request.retain]),
            (test[0][keep], test[1][keep]))
    metrics = {name: evaluate_model(m, *sets) for name, m in
               (("before", model), ("after", aligned.model), ("retrain", retrained.model))}
    checks = image_checks(metrics["after"], metrics["before"], metrics["retrain"], "forget_class", ImageVerifyConfig())
    assert all(c["passed"] for c in checks), checks


def test_alignment_raises_dimensional_alignment_towards_the_retrained_model(setup, results):
    # science.md §4: forget features of a retrained model lie inside the retain subspace, so DA rises.
    model, data, request, _ = setup

    def da(m):
        return da_score(cnn.features_of(m, data.X[request.forget]), cnn.features_of(m, data.X[request.retain]))

    original, retrained, aligned = da(model), da(results["retrain"][0].model), da(results["alignment"][0].model)
    assert retrained > original + 0.2  # measured 0.94 vs 0.67
    assert aligned > original + 0.2 and abs(aligned - retrained) < 0.1  # measured 0.93


def test_retrain_never_sees_the_forget_samples(setup):
    model, data, request, _ = setup
    poisoned = data.X.clone()
    poisoned[request.forget] = float("nan")  # any use of a forget image would spread NaN
    options = {"steps": 15}
    result = run_image_method("retrain", model, ImageData(poisoned, data.y, data.schedule), request, options)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.stats["samples"] == len(request.retain)
    reference = cnn.CNN.from_config(model.config, seed=data.schedule.init_seed)
    cnn.train(reference, data.X[request.retain], data.y[request.retain],
              cnn.TrainSchedule.from_preset("tiny", steps=15))
    assert all(torch.equal(p, q) for p, q in zip(result.model.state_dict().values(), reference.state_dict().values()))


def test_retrain_on_fixed_labels_trains_on_the_corrected_labels(setup):
    model, data, _, _ = setup
    request = images.fix_labels(data.y, [4, 9], [(int(data.y[4]) + 1) % 10, int(data.y[9])])
    result = run_image_method("retrain", model, data, request, {"steps": 5})
    X_new, y_new = request.d_prime(data)
    reference = cnn.CNN.from_config(model.config, seed=0)
    cnn.train(reference, X_new, y_new, cnn.TrainSchedule.from_preset("tiny", steps=5))
    assert y_new[-2] == (int(data.y[4]) + 1) % 10
    assert all(torch.equal(p, q) for p, q in zip(result.model.parameters(), reference.parameters()))


def test_salun_moves_only_the_salient_weights(setup):
    model, data, request, _ = setup
    result = run_image_method("salun", model, data, request, {"fraction": 0.2, "epochs": 0.5})
    moved = sum(int((p != q).sum()) for p, q in zip(result.model.parameters(), model.parameters()))
    total = sum(p.numel() for p in model.parameters())
    assert 0 < moved <= 0.2 * total + 1
    assert result.stats["masked_share"] == pytest.approx(0.2, abs=0.01)


def test_methods_run_on_random_and_label_fix_requests(setup):
    model, data, _, _ = setup
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(data), generator=gen)[:30]
    for request in (images.delete_records(len(data), pick), images.fix_labels(data.y, pick, (data.y[pick] + 1) % 10)):
        for name, options in (("alignment", {"epochs": 0.2}), ("second_order", QUICK["second_order"]),
                              ("first_order", {}), ("gradient_ascent", {"epochs": 1})):
            result = run_image_method(name, model, data, request, options)
            assert all(torch.isfinite(p).all() for p in result.model.parameters()), (name, request.kind)


# --- the interface --------------------------------------------------------------------------------

def test_auto_means_alignment(setup):
    model, data, request, _ = setup
    assert choose_method(request) == "alignment"
    assert get_image_method("auto").name == "alignment"
    assert run_image_method("auto", model, data, request, {"epochs": 0.1}).method == "alignment"


@pytest.mark.parametrize("name, options, message", [
    ("certified", None, "does not apply to an image model"),
    ("alignment", {"lamda_da": 1.0}, "bad options for method 'alignment'.*lamda_da"),
    ("alignment", {"lr": -1}, "lr: Input should be greater than 0"),
    ("second_order", {"params": "all"}, "params"),
    ("finetune", [("lr", 0.1)], "expected a mapping"),
    ("retrain", {"lr": "fast"}, "lr"),
])
def test_bad_methods_and_options_raise_one_line_errors(setup, name, options, message):
    model, data, request, _ = setup
    with pytest.raises(UnlearnError, match=message) as err:
        run_image_method(name, model, data, request, options)
    assert "\n" not in str(err.value)


def test_a_request_for_other_data_is_refused(setup):
    model, data, _, _ = setup
    with pytest.raises(UnlearnError, match="training set of 10 samples"):
        run_image_method("finetune", model, data, images.delete_records(10, [1]))


def test_retrain_without_a_schedule_says_what_to_give(setup):
    model, data, request, _ = setup
    with pytest.raises(UnlearnError, match="schedule"):
        run_image_method("retrain", model, ImageData(data.X, data.y), request)


# --- alignment's budget preset --------------------------------------------------------------------

BUDGET_PRESET = {"epochs": None, "budget": 0.08, "lam_da": 100.0, "clip": 20.0, "refresh": 2,
                 "sd_without_forgotten_class": True, "min_steps": 1, "forget_until": 1.0}


def test_alignment_budget_counts_steps_from_the_original_training_cost(setup):
    from unlearning.images.alignment import AlignmentConfig, recover_steps_for

    _, data, request, _ = setup
    cfg = AlignmentConfig(**BUDGET_PRESET)
    planned = cnn.planned_steps(len(data), data.schedule)  # 8 epochs × ⌈1437/64⌉ = 184
    per_recover = 4 * 64 + (3 * 64 + 512 / 2)  # teacher + student batch, forget step, half a bank forward
    expected = int(0.08 * 3 * 64 * planned // per_recover)
    assert recover_steps_for(cfg, data, len(request.retain)) == expected == 4
    assert recover_steps_for(cfg.model_copy(update={"steps": 7}), data, 10) == 7  # steps override the budget


def test_alignment_budget_buys_recover_steps_with_the_forget_steps_it_stops_halfway(setup):
    # The default forgets during the first half only: the forget steps and basis refreshes it does
    # not take pay for recover steps (9 instead of 7 on the 3k-image Fashion-MNIST model).
    from unlearning.images.alignment import AlignmentConfig, recover_steps_for

    _, data, request, _ = setup
    planned = cnn.planned_steps(len(data), data.schedule)
    train_passes = 3 * 64 * planned
    cfg = AlignmentConfig()
    assert cfg.forget_until == 0.5
    half = 4 * 64 + 0.5 * (3 * 64 + 512 / 3)
    every = 4 * 64 + (3 * 64 + 512 / 3)
    assert recover_steps_for(cfg, data, len(request.retain)) == int(0.12 * train_passes // half)
    assert recover_steps_for(cfg.model_copy(update={"forget_until": 1.0}), data, len(request.retain)) == int(
        0.12 * train_passes // every)


def test_alignment_forgets_only_during_the_first_forget_until_share_of_the_run(setup):
    model, data, request, _ = setup
    result = run_image_method("alignment", model, data, request, {"steps": 8, "forget_until": 0.5, "min_steps": 1})
    assert result.stats["recover_steps"] == 8 and result.stats["forget_steps"] == 4
    every = run_image_method("alignment", model, data, request, {"steps": 8, "forget_until": 1.0})
    assert every.stats["forget_steps"] == 8
    assert result.stats["image_passes"] < every.stats["image_passes"]


def test_a_run_forgets_on_at_least_min_steps_of_its_steps(setup):
    # Forget steps on half of a 6-step run left a user's factory model 98 % accurate on the class
    # (tests/flows/test_user_image_models.py) and failed the digits model's reference check
    # (tests/flows/test_image_pipeline.py): `min_steps` floors the forget steps too.
    from unlearning.images.alignment import AlignmentConfig, forget_steps_for

    model, data, request, _ = setup
    cfg = AlignmentConfig()
    assert [forget_steps_for(cfg, r) for r in (3, 6, 9, 12, 20)] == [3, 6, 6, 6, 10]
    short = ImageData(data.X, data.y, cnn.TrainSchedule.from_preset("tiny", steps=24))
    result = run_image_method("alignment", model, short, request)
    assert result.stats["recover_steps"] == result.stats["forget_steps"] == cfg.min_steps


def test_alignment_budget_runs_at_least_min_steps_after_a_short_training(setup):
    # A user's 180-image folder trained 24 steps: 12 % of that is under one recover step, and one
    # step forgot too little to pass verification (tests/flows/test_user_images.py).
    from unlearning.images.alignment import AlignmentConfig, recover_steps_for

    _, data, request, _ = setup
    short = ImageData(data.X, data.y, cnn.TrainSchedule.from_preset("tiny", steps=24))
    cfg = AlignmentConfig()
    assert recover_steps_for(cfg, short, len(request.retain)) == cfg.min_steps
    assert recover_steps_for(cfg, data, len(request.retain)) >= cfg.min_steps


def test_alignment_budget_preset_forgets_the_class_on_digits(setup):
    # Measured (class 3): forget accuracy 100 → 0 %, retain 97.4 %, 4 recover + 4 forget steps.
    model, data, request, test = setup
    result = run_image_method("alignment", model, data, request, BUDGET_PRESET)
    after = _accuracies(result.model, data, request, test)
    assert result.stats["recover_steps"] == result.stats["forget_steps"] == 4
    assert after["forget"] < 0.2 and after["retain"] >= 0.9


def test_distillation_without_the_forgotten_class_ignores_its_logit(setup):
    from unlearning.images.alignment import recover_loss

    model, data, request, _ = setup
    x, y = data.X[request.retain[:16]], data.y[request.retain[:16]]
    is_retain = torch.ones(16, dtype=torch.bool)
    kept = torch.tensor([c for c in range(10) if c != FORGET_CLASS])
    student = images.common.student_of(model)
    with torch.no_grad():
        student.head.bias[FORGET_CLASS] -= 5.0  # move only the forgotten class's logit
    full = recover_loss(student, model, x, y, is_retain, 1.0, 4.0).item()
    without = recover_loss(student, model, x, y, is_retain, 1.0, 4.0, kept).item()
    ce = torch.nn.functional.cross_entropy(student(x), y).item()
    assert without == pytest.approx(ce, abs=1e-5)  # over the other classes the student equals the teacher
    assert full > ce + 1e-3


# --- a deletion of a few records: unrolled, at a cost that scales with the request ----------------

def _mean_loss(model, X, y) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(X), y))


def test_a_few_deleted_records_are_unrolled_at_the_cost_of_one_pass_over_them(setup):
    # The 6-step floor made a 1–5 image deletion cost 82–88 % of retraining the bench's 800-image
    # model; the default now takes back the deleted images' own SGD steps: one pass over Z.
    from unlearning.images.alignment import AlignmentConfig, takes_unroll, unroll_rate

    model, data, _, _ = setup
    request = images.delete_records(len(data), [4, 40, 400, 900, 1400])  # 0.35 % of 1,437 images
    before = _state(model)
    result = run_image_method("auto", model, data, request)
    training_passes = 3 * data.schedule.batch * cnn.planned_steps(len(data), data.schedule)
    assert takes_unroll(AlignmentConfig(), data, request)
    assert result.method == "alignment" and result.stats["path"] == "unroll"
    guard = 64 * (result.stats["halvings"] + 2)  # the guard's loss before, and after each try
    assert result.stats["image_passes"] == 3 * 5 + guard <= 0.05 * training_passes
    rate = unroll_rate(data.schedule, 0.01)
    assert rate == 8 * 0.1 / (2 * 64) and result.stats["tau"] == rate / 2 ** result.stats["halvings"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is left alone
    Xf, yf = data.X[request.forget], data.y[request.forget]
    assert _mean_loss(result.model, Xf, yf) > _mean_loss(model, Xf, yf)  # the deleted images are less fitted
    keep = request.retain
    retain_before = cnn.accuracy(model, data.X[keep], data.y[keep])
    assert cnn.accuracy(result.model, data.X[keep], data.y[keep]) >= retain_before - 0.01


def test_the_unrolling_step_halves_while_it_raises_the_retain_loss_beyond_the_tolerance(setup):
    # A first-order rate overshoots where the loss is sharp: on an 800-image model that fits its
    # images, an unguarded step on 5 images lost more than 5 points of retain accuracy.
    model, data, _, _ = setup
    request = images.delete_records(len(data), [4, 40, 400, 900, 1400])
    from unlearning.images.alignment import AlignmentConfig, unroll

    strict = unroll(model, data, request, AlignmentConfig(), tolerance=0.0, halvings_at_most=3)
    loose = unroll(model, data, request, AlignmentConfig(), tolerance=1e6)
    assert loose.stats["halvings"] == 0
    assert strict.stats["halvings"] == 3 and strict.stats["tau"] == loose.stats["tau"] / 8
    Xf, yf = data.X[request.forget], data.y[request.forget]
    assert _mean_loss(model, Xf, yf) < _mean_loss(strict.model, Xf, yf) < _mean_loss(loose.model, Xf, yf)


def test_unrolling_is_kept_to_small_deletions_and_default_lengths(setup):
    from unlearning.images.alignment import AlignmentConfig, takes_unroll

    _, data, class_request, _ = setup
    n, cfg = len(data), AlignmentConfig()
    assert not takes_unroll(cfg, data, class_request)  # a class: the alignment steps
    assert not takes_unroll(cfg, data, images.delete_records(n, range(0, n, 50)))  # 2 % of the data
    few = images.delete_records(n, [1, 2])
    assert not takes_unroll(cfg.model_copy(update={"steps": 3}), data, few)  # a length asked for
    assert not takes_unroll(cfg.model_copy(update={"unroll_below": 0.0}), data, few)
    assert not takes_unroll(cfg, data, images.fix_labels(data.y, [1, 2], [0, 0]))  # relabelling: not a deletion


# --- the settle rung: recover-only steps while the retained classes are below the original ---------

def test_settle_recovers_only_while_the_retain_probe_is_below_the_original(setup):
    from unlearning.images.alignment import SETTLE_PROBE, AlignmentConfig, settle_steps_for

    model, data, request, _ = setup
    retain_accuracy = lambda m: cnn.accuracy(m, data.X[request.retain], data.y[request.retain])  # noqa: E731
    harsh = {"steps": 4, "lam_da": 100, "forget_until": 1.0, "min_steps": 1}  # forget steps that cost RA
    damaged = run_image_method("alignment", model, data, request, harsh)
    assert damaged.stats["settle_steps"] == 0  # off by default
    assert retain_accuracy(damaged.model) < retain_accuracy(model)
    settled = run_image_method("alignment", model, data, request, {**harsh, "settle": 1.0})
    cap = settle_steps_for(AlignmentConfig(**harsh, settle=1.0), data, len(request.retain), SETTLE_PROBE)
    # it stopped on reaching the original's accuracy on its probe, well before its budget
    assert 0 < settled.stats["settle_steps"] < cap
    assert retain_accuracy(settled.model) > retain_accuracy(damaged.model)
    assert settled.stats["recover_steps"] == 4 + settled.stats["settle_steps"]
    # an update that kept the retained classes (no forget term) takes none
    gentle = run_image_method("alignment", model, data, request, {"steps": 4, "lam_da": 0, "min_steps": 1, "settle": 1.0})
    assert gentle.stats["settle_steps"] == 0
