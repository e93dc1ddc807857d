"""A certified table request through the CLI spends the bound read from its model version's cache
when the request keeps the feature map (a label fix); one that refits it (a deletion changes the
statistics of the training rows) takes the exact pass over D' in the new map."""

from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient

from tasks import tracking
from tests.flows.test_pipeline import add_and_train, request_file, run_json


def update_run_metrics(workspace, out: dict) -> dict:
    tracking.connect(workspace)
    client = MlflowClient()
    parent = client.get_run(out["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    return next(r for r in children if r.data.tags["step"].startswith("update model")).data.metrics


def test_a_small_certified_label_fix_spends_the_bound_from_the_versions_cache(workspace, people_csv, capsys):
    """Issue 14: where the O(p²) bound is small against the budget (a large budget here: on 480
    rows with λ = 1e-3 the bound of one change is ~10), the update reads no pass over D' — the
    version's XᵀX is tied to D by its kept encoding — and the certificate check's own pass finds
    the exact residual within what was spent. A deletion after it refits the map: XᵀX of the old
    map bounds nothing there, and the exact residual is spent."""
    add_and_train(people_csv, capsys, "--certified", "--budget", "1e6")
    label = pd.read_csv(people_csv).set_index("person").loc["P1012", "label"]
    flipped = {"yes": "no", "no": "yes"}[label]
    req = request_file(workspace, id="REQ-FB", fix_labels={"P1012": flipped})
    code, out = run_json(capsys, ["forget", str(req)])
    assert code == 0 and out["method"] == "certified", out["checks"]
    assert all(c["passed"] for c in out["checks"])
    cert = out["certificate"]
    assert cert["residual"] <= cert["residual_bound"] == cert["budget_used"]
    assert update_run_metrics(workspace, out)["exact_pass"] == 0.0

    req = request_file(workspace, id="REQ-DEL", delete_records=["P1013"])
    code, out = run_json(capsys, ["forget", str(req)])
    assert code == 0 and out["method"] == "certified", out["checks"]
    assert all(c["passed"] for c in out["checks"])
    assert update_run_metrics(workspace, out)["exact_pass"] == 1.0
    assert out["certificate"]["residual"] <= out["certificate"]["residual_bound"]
