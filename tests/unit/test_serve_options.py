"""`unlearn serve`'s options become the parameters of the deployments it registers: the nightly
comply and the on-demand forget verify as `--verify` says, the weekly audit rebases and keeps the
cadence it is given, and every parameter is one its flow takes."""

import inspect

import pytest

from flows.cli import build_parser, served_parameters
from unlearning.errors import UnlearnError


def parameters(root, *options):
    return served_parameters(build_parser().parse_args(["serve", *options]), root)


def test_no_options_register_the_flows_defaults_and_a_rebasing_weekly_audit(tmp_path):
    nightly, weekly, on_demand = parameters(tmp_path)
    assert nightly == on_demand == {"root": str(tmp_path)}
    assert weekly == {"root": str(tmp_path), "rebase": True}  # as prefect.yaml's weekly deployment
    assert parameters(tmp_path, "--audit-no-rebase")[1] == {"root": str(tmp_path), "rebase": False}


def test_every_option_reaches_the_deployment_it_names(tmp_path):
    from flows.audit import audit_flow
    from flows.comply import comply_flow
    from flows.forget import forget_flow

    nightly, weekly, on_demand = parameters(tmp_path, "--verify", "reference", "--task-runner", "dask",
                                            "--audit-min-requests", "30", "--audit-max-age", "20")
    assert nightly == {"root": str(tmp_path), "verify": "reference", "task_runner": "dask"}
    assert on_demand == {"root": str(tmp_path), "verify": "reference"}
    assert weekly == {"root": str(tmp_path), "task_runner": "dask", "rebase": True, "min_requests": 30,
                      "max_age_days": 20.0}
    for flow, params in ((comply_flow, nightly), (audit_flow, weekly), (forget_flow, on_demand)):
        assert set(params) <= set(inspect.signature(flow.fn).parameters)


def test_a_cadence_without_an_age_gets_the_audits_default_age(tmp_path):
    from tasks.audit import DEFAULT_MAX_AGE_DAYS

    _, weekly, _ = parameters(tmp_path, "--audit-min-requests", "30")
    assert (weekly["min_requests"], weekly["max_age_days"]) == (30, DEFAULT_MAX_AGE_DAYS)


def test_an_age_alone_is_an_age_only_cadence_and_beside_one_request_is_refused(tmp_path):
    """--audit-max-age alone reached the weekly deployment beside min_requests 1, where it does
    nothing; it is now the cadence (no count rule), and refused beside an explicit count of 1."""
    from tasks.audit import Cadence, cadence_setting

    _, weekly, _ = parameters(tmp_path, "--audit-max-age", "7")
    assert (weekly["min_requests"], weekly["max_age_days"]) == (None, 7.0)
    age_only = cadence_setting(None, "7")
    assert not age_only.due(100, 6.9 * 86400) and age_only.due(1, 7 * 86400)
    assert cadence_setting(None, None) == Cadence(1, None) and cadence_setting("1", None) == Cadence(1, None)
    with pytest.raises(UnlearnError, match="--audit-max-age has no effect with --audit-min-requests 1"):
        parameters(tmp_path, "--audit-min-requests", "1", "--audit-max-age", "7")


@pytest.mark.parametrize("written", ["1_000", "５", "٣"])
def test_an_age_is_read_as_written(written):
    """float() reads '1_000' as 1000 and full-width or Arabic-Indic digits as digits: --max-age took
    them while --min-requests refuses '1_000'; a number of days is ASCII as written, or refused."""
    from tasks.audit import cadence_setting

    assert cadence_setting(None, "1000").max_age_days == 1000 and cadence_setting(None, 1e-05).max_age_days == 1e-05
    with pytest.raises(UnlearnError, match=f"--max-age must be a positive number of days, got '{written}'"):
        cadence_setting(None, written)


def test_a_dask_address_is_registered_with_no_deployment(tmp_path):
    """`unlearn serve --dask-address tcp://user:secret@host:8786` put the address, password and all, into
    the nightly comply's and the weekly audit's parameters, which Prefect stores whole in its database
    and shows in its UI; the served runs read it from the service's environment instead."""
    address = "tcp://alice:Hunter2-Hunter2@10.0.0.5:8786"
    nightly, weekly, on_demand = parameters(tmp_path, "--dask-address", address)
    assert nightly == {"root": str(tmp_path), "task_runner": "dask"}
    assert weekly == {"root": str(tmp_path), "task_runner": "dask", "rebase": True}
    assert "Hunter2" not in repr((nightly, weekly, on_demand))
