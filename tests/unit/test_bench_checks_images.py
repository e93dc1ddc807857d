"""bench.checks_images's verdicts: a model that kept its data and passed is a miss, counted as one,
also where no check of the forget set could have failed it (undecided: too few forget images)."""

from bench.checks_images import outcome_counts, verdict
from unlearning.checks import too_few_images
from unlearning.images.verify import ImageVerifyConfig, image_checks

ROW = {"ua": 0.0, "ra": 90.0, "ta": 85.0}


def checks_of(n_forget: int) -> list[dict]:
    """The reference checks of a model that still knows its n forget images (UA 0 against 100)."""
    return image_checks(ROW, None, {**ROW, "ua": 100.0}, "delete_records", ImageVerifyConfig(), n_forget=n_forget)


def test_an_undecided_pass_of_a_model_that_must_fail_is_a_miss_with_its_reason():
    assert verdict("original", checks_of(1)) == f"MISS (undecided: {too_few_images(1)})"  # was "undecided (…)"
    assert verdict("under", checks_of(30)) == "fail (as it must)"  # decided: the gap fails it
    passed = [{**c, "passed": True} for c in checks_of(30)]
    assert verdict("original", passed) == "MISS"


def test_the_miss_count_includes_the_undecided_ones_and_says_how_many():
    results = [("random", 1, "retrain", checks_of(1), True), ("random", 1, "original", checks_of(1), False),
               ("random", 1, "under", checks_of(30), False)]
    assert outcome_counts(results) == ("False alarms (retrained model failed): 0 of 1; misses (original or "
                                       "under-unlearned passed): 1 of 2, 1 of them undecided (no forget-set check "
                                       "could have failed).")
