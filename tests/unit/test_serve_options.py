"""`unlearn serve`'s options become the parameters of the deployments it registers: the nightly
comply and the on-demand forget verify as `--verify` says, the weekly audit rebases and keeps the
cadence it is given, and every parameter is one its flow takes."""

import inspect

from flows.cli import build_parser, served_parameters


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
