"""The UA-gap check sized to the forget set (unlearning.images.verify.ua_gap_tolerance): a handful
of images cannot be judged by a fixed 10 points, a class still is, and the original model's
memorisation is still caught on a forget set large enough to measure it."""

import pytest

from unlearning.images.verify import ImageVerifyConfig, image_checks, ua_gap_tolerance

CFG = ImageVerifyConfig()


def row(ua: float) -> dict:
    return {"ua": ua, "ra": 90.0, "ta": 85.0}


def ua_check(ua: float, ua_retrain: float, n: int | None) -> dict:
    return image_checks(row(ua), None, row(ua_retrain), "delete_records", CFG, n_forget=n)[0]


def test_without_a_size_the_bound_is_the_fixed_one():
    assert ua_gap_tolerance(CFG, None, 100.0, 0.0) == CFG.max_ua_gap
    assert not ua_check(100.0, 80.0, None)["passed"]


def test_one_to_five_images_are_not_judged_by_a_fixed_ten_points():
    # one image: right in one model, wrong in the other is a 100-point gap and says nothing
    assert ua_check(100.0, 0.0, 1)["passed"]
    # five images, one flipped: 20 points
    assert ua_check(100.0, 80.0, 5)["passed"] and not ua_check(100.0, 80.0, None)["passed"]


def test_a_class_is_judged_by_about_the_fixed_bound():
    # class forgetting: both models at ≈ 0 % on 600 images, the bound stays within a point of 10
    assert ua_gap_tolerance(CFG, 600, 0.0, 0.0) == pytest.approx(CFG.max_ua_gap, abs=1.0)
    assert not ua_check(15.0, 0.0, 600)["passed"]


def test_memorisation_on_a_measurable_forget_set_still_fails():
    # 200 deleted images: 95 % right in a model that still holds them, 50 % in the retrained one
    check = ua_check(95.0, 50.0, 200)
    assert not check["passed"] and check["value"] == pytest.approx(45.0)
    # and the bound shrinks as the forget set grows
    bounds = [ua_gap_tolerance(CFG, n, 90.0, 70.0) for n in (5, 50, 500)]
    assert bounds[0] > bounds[1] > bounds[2] > CFG.max_ua_gap


@pytest.mark.parametrize("n", [1, 3])
def test_a_ua_gap_no_outcome_could_fail_is_undecided_not_passed(n):
    """One image: a 210-point bound; three: 108. Every UA the model could have (100·k/n) is within
    it, whatever the retrained model's: the check cannot fail, so it says undecided, not passed."""
    for ua_retrain in (100.0 * k / n for k in range(n + 1)):
        for ua in (100.0 * k / n for k in range(n + 1)):
            check = ua_check(ua, ua_retrain, n)
            assert check["passed"] and check["decided"] is False
            assert check["reason"].startswith(f"{n} forget image")


def test_a_ua_gap_on_enough_images_is_decided_both_ways():
    # five images, the retrained model forgot all: a model that still knows them fails
    assert ua_check(0.0, 100.0, 5).get("decided", True) and not ua_check(0.0, 100.0, 5)["passed"]
    assert ua_check(100.0, 100.0, 5).get("decided", True) and ua_check(100.0, 100.0, 5)["passed"]
    # four images at a retrained UA of 50 %: no UA is more than 50 points off, within the 103-point bound
    assert ua_check(100.0, 50.0, 4)["decided"] is False
    assert "decided" not in ua_check(15.0, 0.0, 600) and "decided" not in ua_check(100.0, 80.0, None)
