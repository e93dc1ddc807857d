"""What a forget costs beyond its compute (issue 14), kept without changing what it records: the
flow takes the plan the CLI made to validate the request instead of planning it again, but
plans again when another release changed what the plan read in between; a temporary Prefect
server (the one `unlearn serve` runs in its own process) gets no flow-run heartbeats. Real
Prefect, MLflow and DVC."""

from __future__ import annotations

import json

from flows.cli import main
from flows.forget import forget_flow
from unlearning.compliance.requests import load_request
from tasks import steps, tracking
from tests.flows.test_pipeline import add_and_train, request_file


def counted_plans(monkeypatch) -> list[str]:
    """The request ids `steps.plan_for` planned (it still plans: this only counts)."""
    planned, plan_for = [], steps.plan_for

    def counting(root, request, *args, **kwargs):
        planned.append(request.id)
        return plan_for(root, request, *args, **kwargs)

    monkeypatch.setattr(steps, "plan_for", counting)
    return planned


def test_forget_plans_its_request_once(workspace, people_csv, capsys, monkeypatch):
    add_and_train(people_csv, capsys)
    planned = counted_plans(monkeypatch)
    capsys.readouterr()
    code = main(["forget", str(request_file(workspace, id="once-1", delete_records=["P1003"])), "--json", "--local"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["verified"] and summary["model"]["parent_version"] == "1"
    assert planned == ["once-1"]  # the validation's plan; the flow took it
    # the plan holds the guarantee of the version it starts from, as MLflow tags it: the kinds' steps
    # read it there rather than asking MLflow each time (the text chain asked up to five times)
    nxt = steps.plan_for(workspace, load_request(request_file(workspace, id="once-2", delete_records=["P1004"])))
    assert nxt.parent_version == summary["model"]["version"]
    assert nxt.parent_guarantee == tracking.version_tags("people", nxt.parent_version)["guarantee"]


def test_a_release_between_validation_and_flow_is_planned_again(workspace, people_csv, capsys, monkeypatch):
    add_and_train(people_csv, capsys)
    first = request_file(workspace, id="late-1", delete_records=["P1004"])
    steps.plan_request.fn(workspace, first)  # the CLI's validation, before it takes the lock ...
    capsys.readouterr()
    # ... and another command releases meanwhile: production and the data move on
    assert main(["forget", str(request_file(workspace, id="other-1", delete_records=["P1005"])), "--json",
                 "--local"]) == 0
    other = json.loads(capsys.readouterr().out)
    planned = counted_plans(monkeypatch)
    summary = forget_flow(root=str(workspace), request_path=str(first))
    assert planned == ["late-1"]  # planned again, under the lock
    assert summary["verified"] and summary["model"]["parent_version"] == other["model"]["version"] == "2"
    assert summary["data"]["before"] == other["data"]["after"]


def test_a_plan_made_for_another_request_file_is_not_taken(workspace, people_csv, capsys, monkeypatch):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="swap-1", delete_records=["P1006"])
    steps.plan_request.fn(workspace, path)
    path.write_text(path.read_text().replace("P1006", "P1007"))  # the same file, another request
    planned = counted_plans(monkeypatch)
    summary = forget_flow(root=str(workspace), request_path=str(path))
    assert planned == ["swap-1"] and summary["verified"]
    table = "".join(p.read_text() for p in (workspace / "data" / "people").glob("*.csv"))
    assert "P1007" not in table and "P1006" in table  # the file's request as it is now was carried out


def test_a_temporary_prefect_server_gets_no_heartbeats():
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from flows.settings import flow_run_settings

    configured = get_current_settings().flows.heartbeat_frequency
    assert configured is not None  # Prefect's default: a heartbeat thread per flow run
    with temporary_settings(updates={PREFECT_API_URL: None}):  # as in `unlearn serve` without a server
        with flow_run_settings():
            assert get_current_settings().flows.heartbeat_frequency is None
            first = get_current_settings()
        with flow_run_settings():  # the next command's run: the settings made once, not re-validated
            assert get_current_settings() is first
    with flow_run_settings():  # a configured server (the test harness's) keeps them
        assert get_current_settings().flows.heartbeat_frequency == configured


def test_a_model_trained_on_the_dataset_since_validation_stops_the_kept_plan(workspace, people_csv, capsys):
    """An erasure must reach every model that saw the data: a second production model trained on the
    dataset between the CLI's validation and the flow must stop the request, as planning it anew would."""
    import pytest

    from unlearning.errors import UnlearnError

    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="sole-1", delete_records=["P1008"])
    steps.plan_request.fn(workspace, path)  # validated while `people` is the dataset's only model
    assert main(["train", "people", "--model", "people-copy"]) == 0
    capsys.readouterr()
    with pytest.raises(UnlearnError, match="people-copy"):
        forget_flow(root=str(workspace), request_path=str(path))
    table = "".join(p.read_text() for p in (workspace / "data" / "people").glob("*.csv"))
    assert "P1008" in table  # nothing erased
