"""A check that could not have failed (unlearning.checks: `decided: False`) is shown as undecided
wherever checks are shown — the console's forget and audit lines, the image checks table, the
signed certificate's HTML — never as passed; it fails no verdict, and a verification none of whose
forget-set checks decided says so (`decided: false`)."""

from tasks.common import Verification
from unlearning.checks import outcome, too_few_images, undecided
from unlearning.images.verify import REMOVAL_CHECKS, ImageVerifyConfig, image_checks

ROW = {"ua": 0.0, "ra": 90.0, "ta": 85.0}


def checks_of(n_forget: int) -> list[dict]:
    """The reference checks of an update that still knows its n forget images (UA 0 against 100)."""
    return image_checks(ROW, None, {**ROW, "ua": 100.0}, "delete_records", ImageVerifyConfig(), n_forget=n_forget)


def verification(n_forget: int) -> Verification:
    from tasks.kinds.images_verify import judged

    return judged(Verification({}, checks_of(n_forget), 1.0))


def test_an_undecided_check_fails_nothing_but_the_verification_says_removal_was_not_judged():
    one, many = verification(1), verification(30)
    assert one.passed and one.undecided == too_few_images(1)
    assert one.record()["decided"] is False and one.record()["reason"] == too_few_images(1)
    assert not many.passed and many.undecided is None and many.record()["decided"] is True
    assert "reason" not in many.record()
    assert {c["name"] for c in one.checks} & REMOVAL_CHECKS == {"ua_gap_to_retrain"}
    assert outcome(one.checks[0]) == "undecided" and outcome(one.checks[1]) == "ok"


def test_a_check_that_failed_is_never_marked_undecided():
    failed = {"name": "x", "value": 1.0, "threshold": "<= 0", "passed": False}
    assert undecided(failed, "any") is failed and outcome(failed) == "FAILED"


def test_the_console_says_undecided_where_it_said_ok():
    from flows.erasure_cli import format_audit, verification_lines
    from tasks.kinds.images_verify import checks_table

    v = verification(1)
    s = {"verification": v.record(), "timings": {"verify_s": 0.5, "time_to_removal_s": 2.0}}
    lines = verification_lines(s)
    assert "2/3 checks passed (ta_drop_vs_retrain, ra_drop_vs_retrain)" in lines[0]
    assert f"  undecided check ua_gap_to_retrain ({too_few_images(1)})" in lines
    assert lines[-1].startswith("  removal undecided: no check with power judged the forget set")
    table = "\n".join(checks_table(v.checks))
    assert f"undecided ({too_few_images(1)})" in table and table.count(" yes") == 2
    audit = {"passed": True, "promoted": None, "model": "m", "covered_requests": ["R1"], "shortfall": [],
             "timings": {"retrain_s": 1.0}, "record": "r.json", "checks": v.checks}
    printed = format_audit(audit)
    assert any(line.startswith("  undecided ua_gap_to_retrain 100") and too_few_images(1) in line for line in printed)
    assert any(line.startswith("  ok     ta_drop_vs_retrain") for line in printed)


def test_the_certificate_shows_an_undecided_check_and_an_undecided_removal():
    from unlearning.compliance.signing import certificate_html

    v = verification(3)
    html = certificate_html({"checks": v.checks, "verified": v.passed, "verification": v.record()})
    assert f"UNDECIDED ({too_few_images(3)})" in html and html.count(">PASS<") == 2
    assert "Removal <b>undecided</b>" in html


def test_an_undecided_audit_says_so_on_the_console_and_names_the_retrained_model_it_promoted():
    from flows.erasure_cli import audited_message, format_audit

    audit = {"passed": True, "decided": False, "undecided_reason": too_few_images(1), "promoted": "4",
             "production_version": "3", "model": "m", "covered_requests": ["R1"], "shortfall": [],
             "timings": {"retrain_s": 1.0}, "record": "r.json", "checks": verification(1).checks}
    printed = format_audit(audit)
    assert printed[0].startswith("audit of model m: UNDECIDED — 1 request(s) covered (R1); retrained model "
                                 "promoted: v3 → v4")  # was PASSED
    assert printed[-1] == (f"  removal undecided: no check with power judged the forgotten data ({too_few_images(1)}); "
                           "the retrained model was promoted, so the data is out for sure")
    assert audited_message([audit]) == "model m: audit undecided, retrained v4 promoted"
    decided = {**audit, "decided": True, "undecided_reason": None, "promoted": None}
    assert audited_message([decided]) == "model m: audit passed" and "UNDECIDED" not in format_audit(decided)[0]
