"""The one-line description of failed verification checks (console, --json, ledger reason)."""

from unlearning.tabular.verify import VerifyConfig, checks, describe_failures


def test_failed_checks_are_described_with_value_and_threshold():
    measured = checks({"agreement": 0.9891, "accuracy_gap_pts": 1.1}, VerifyConfig(min_agreement=0.995))
    failed = [c for c in measured if not c["passed"]]
    assert describe_failures(failed) == ("agreement_with_retrain 0.9891 (needs >= 0.995); "
                                         "accuracy_gap_pts 1.1 (needs <= 0.5)")
    assert describe_failures([c for c in measured if c["passed"]]) == ""
