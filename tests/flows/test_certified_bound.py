"""A certified table request through the CLI spends the bound read from its model version's cache."""

from __future__ import annotations

from mlflow import MlflowClient

from tasks import tracking
from tests.flows.test_pipeline import add_and_train, request_file, run_json


def test_a_small_certified_deletion_spends_the_bound_from_the_versions_cache(workspace, people_csv, capsys):
    """Issue 14: where the O(p²) bound is small against the budget (a large budget here: on 480
    rows with λ = 1e-3 the bound of one deletion is ~10), the update reads no pass over D' — the
    version's XᵀX is tied to D by its kept encoding — and the certificate check's own pass finds
    the exact residual within what was spent."""
    add_and_train(people_csv, capsys, "--certified", "--budget", "1e6")
    req = request_file(workspace, id="REQ-FB", delete_records=["P1012"])
    code, out = run_json(capsys, ["forget", str(req)])
    assert code == 0 and out["method"] == "certified", out["checks"]
    assert all(c["passed"] for c in out["checks"])
    cert = out["certificate"]
    assert cert["residual"] <= cert["residual_bound"] == cert["budget_used"]
    tracking.connect(workspace)
    client = MlflowClient()
    parent = client.get_run(out["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    update = next(r for r in children if r.data.tags["step"].startswith("update model"))
    assert update.data.metrics["exact_pass"] == 0.0
