"""The text audit's checks and their attribution (tasks.audit_checks): a removed secret whose exposure in
production exceeds the retrained model's by more than the margin fails the audit, and the shortfall
names the request that asked for that secret, not the others the audit covers."""

from __future__ import annotations

from types import SimpleNamespace

from tasks import audit_checks
from unlearning.text.lm import TextVerifyConfig

CFG = TextVerifyConfig()


def rows(*gaps: float, regenerated: tuple[bool, ...] = ()) -> list[dict]:
    regenerated = regenerated or (False,) * len(gaps)
    return [{"fingerprint": f"fp{i}", "detector": "card", "masked": f"**** {i}", "after": 20.0 + gap, "retrain": 20.0,
             "regenerated": again} for i, (gap, again) in enumerate(zip(gaps, regenerated))]


def test_the_secret_over_the_margin_fails_the_audit_and_names_its_request():
    measured = rows(0.5, CFG.exposure_margin_bits + 1.5)
    plan = SimpleNamespace(request_ids=["R-1", "R-2", "R-3"])
    owners = {"fp0": ["R-1"], "fp1": ["R-2"]}
    checks = audit_checks.text_checks(measured, {"after": 5.0, "retrain": 5.0}, CFG)
    failed = [c["name"] for c in checks if not c["passed"]]
    assert failed == ["exposure_vs_retrain_bits"]
    [short] = audit_checks.text_shortfall(checks, measured, owners, plan, CFG)
    assert short == {"check": "exposure_vs_retrain_bits", "requests": ["R-2"], "secrets": ["card **** 1"]}


def test_perplexity_is_judged_against_the_retrained_model_and_goes_to_every_covered_request():
    plan = SimpleNamespace(request_ids=["R-1", "R-2"])
    within = audit_checks.text_checks([], {"after": 5.0 * (1 + CFG.max_perplexity_increase * 0.5), "retrain": 5.0}, CFG)
    assert [c["passed"] for c in within] == [True]  # no secret escrowed: perplexity alone
    over = audit_checks.text_checks(rows(0.0, regenerated=(True,)), {"after": 5.0 * 1.1, "retrain": 5.0}, CFG)
    assert {c["name"]: c["passed"] for c in over} == {"exposure_vs_retrain_bits": True, "perplexity_vs_retrain": False,
                                                      "secrets_regenerated": False}
    shortfall = {s["check"]: s["requests"] for s in audit_checks.text_shortfall(over, rows(0.0, regenerated=(True,)),
                                                                          {"fp0": ["R-2"]}, plan, CFG)}
    assert shortfall == {"perplexity_vs_retrain": ["R-1", "R-2"], "secrets_regenerated": ["R-2"]}


def test_a_secret_removed_by_a_retraining_in_productions_lineage_is_not_judged_on_exposure():
    """Production never saw a secret a retraining of its own lineage left out: its exposure against the
    audit's retraining compares two models trained without it (training noise), so only the secrets of
    the fast updates since production's exact model are judged on it; regeneration is judged on all."""
    exact, fast = rows(CFG.exposure_margin_bits + 4.0, 0.5)
    exact["exact"], fast["exact"] = True, False
    checks = {c["name"]: c for c in audit_checks.text_checks([exact, fast], {"after": 5.0, "retrain": 5.0}, CFG)}
    assert checks["exposure_vs_retrain_bits"]["passed"] and checks["exposure_vs_retrain_bits"]["value"] == 0.5
    only_exact = [c["name"] for c in audit_checks.text_checks([exact], {"after": 5.0, "retrain": 5.0}, CFG)]
    assert only_exact == ["perplexity_vs_retrain", "secrets_regenerated"]
    again = {**exact, "regenerated": True}
    assert not {c["name"]: c for c in audit_checks.text_checks([again], {"after": 5.0, "retrain": 5.0},
                                                               CFG)}["secrets_regenerated"]["passed"]
    plan = SimpleNamespace(request_ids=["R-1", "R-2"])
    failing = {**fast, "after": fast["retrain"] + CFG.exposure_margin_bits + 1}
    checks = audit_checks.text_checks([exact, failing], {"after": 5.0, "retrain": 5.0}, CFG)
    [short] = audit_checks.text_shortfall(checks, [exact, failing], {"fp0": ["R-1"], "fp1": ["R-2"]}, plan, CFG)
    assert short["requests"] == ["R-2"]  # the exactly removed secret is not named


def test_an_escrow_is_removed_exactly_when_its_forget_run_is_not_in_productions_chain():
    escrowed = {"file": "notes/run-a.bin"}
    assert audit_checks.removed_exactly(escrowed, ["run-b"])  # a retraining since removed it: the chain restarted
    assert not audit_checks.removed_exactly(escrowed, ["run-a", "run-b"])
    assert not audit_checks.removed_exactly(escrowed, None)  # chain unknown (older versions): judged


def test_an_altered_escrow_on_a_fast_updated_chain_says_which_command_clears_it(tmp_path, monkeypatch):
    """A later fast update on a text chain opens its earlier escrows (tasks.kinds.text_chain); an
    altered one stops it, and the one line must say what to do: the audit judges it and deletes it."""
    import pytest

    from tasks import audit, state
    from unlearning.compliance import escrow, signing
    from unlearning.errors import UnlearnError

    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    path = state.escrow_file(tmp_path, "notes", "run1")
    audit.write_private(path, escrow.seal({"requests": ["R-1"], "secrets": []}, signing.signing_key(tmp_path),
                                          audit.escrow_name(path)))
    assert audit.escrowed_secrets(tmp_path, "notes", ["run1", "run0"]) == ([], ["run0"])
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(UnlearnError, match=r"notes/run1\.bin does not open .*; `unlearn audit notes` fails the"):
        audit.escrowed_secrets(tmp_path, "notes", ["run1"])


def test_the_ledger_reason_says_an_unreadable_escrow_not_a_short_update():
    from tasks.audit_record import shortfall_reason
    shortfall = [{"check": "escrow_intact", "requests": ["R-1"], "runs": []},
                 {"check": "exposure_vs_retrain_bits", "requests": ["R-2"]}]
    assert shortfall_reason(shortfall, "R-1") == "its audit escrow did not open"
    assert shortfall_reason(shortfall, "R-2") == "this request's update fell short: exposure_vs_retrain_bits"
    assert shortfall_reason(shortfall, "R-3") == ("the audit failed on what other requests are charged with: "
                                                  "escrow_intact (R-1), exposure_vs_retrain_bits (R-2); this "
                                                  "request's own checks passed")


def test_a_missing_escrow_fails_unless_its_request_was_removed_exactly_in_productions_lineage(tmp_path):
    from tasks import audit
    records = [SimpleNamespace(id=f"R-{i}", response={"run_id": f"run-{i}"}) for i in (1, 2, 3)]
    plan = SimpleNamespace(model="m", records=records)
    audit.write_private(audit.escrow_file(tmp_path, "m", "run-3"), b"held")
    # run-1's escrow is gone and production descends from it by fast updates: its data was never judged
    assert audit_checks.requests_without_escrow(tmp_path, plan, ["run-1", "run-3"]) == ["R-1"]
    # run-2 is not in the chain: a retraining since left its data out (e.g. retire, then train)
    assert audit_checks.requests_without_escrow(tmp_path, plan, ["run-3"]) == []
    assert audit_checks.requests_without_escrow(tmp_path, plan, None) == ["R-1", "R-2"]  # chain unknown: judged


def test_only_a_production_model_retrained_on_the_current_data_spares_the_audit_its_retraining():
    from tasks.audit import exact_on_current_data
    from tasks.common import RETRAINED_AS_TRAINED

    retrained = {"guarantee": "exact", RETRAINED_AS_TRAINED: "true", "data_after": "d2", "dataset_digest": "f2"}
    assert exact_on_current_data(retrained, "d2", "f2")  # a fall-back, an audit's promotion
    assert not exact_on_current_data(retrained, "d3", "f2")  # the data version moved since
    assert not exact_on_current_data(retrained, "d2", "f3")  # the files changed without `dvc add`
    assert not exact_on_current_data(retrained, None, "f2") and not exact_on_current_data(retrained, "d2", None)
    # a training (it may have been fed the data again), a retraining with options overriding the schedule,
    # a version from before the tag: the audit retrains
    assert not exact_on_current_data({**retrained, RETRAINED_AS_TRAINED: None}, "d2", "f2")
    for guarantee in ("empirical", "certified", "declared", None):  # a fast update, an import
        assert not exact_on_current_data({**retrained, "guarantee": guarantee}, "d2", "f2")


def test_the_text_demo_says_when_its_audit_had_nothing_to_retrain():
    from flows.demo import audit_lines

    skipped = {"passed": True, "exposure_after": None, "exposure_retrain": None, "perplexity_after": None,
               "perplexity_retrain": None, "retrain_s": 0.0, "record": ".unlearn/audits/A.json"}
    [line] = audit_lines({"audit": skipped, "timings": {"update_s": 70.0}})
    assert line.startswith("Audit: PASSED: the production model was itself retrained") and "A.json" in line
