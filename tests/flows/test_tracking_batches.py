"""tasks.tracking records params, metrics and run tags in batched requests (issue 14): what a run
holds afterwards is what one request per value recorded — every value, over MLflow's 100-per-request
limit too, None params and non-finite or boolean metrics left out as before."""

from __future__ import annotations

import math

from tasks import tracking


def test_batched_params_metrics_and_tags_are_all_recorded(tmp_path):
    experiment = tracking.configure(tmp_path)
    params = {f"p{i:03d}": i for i in range(150)} | {"skipped": None, "long": "x" * 7000}
    metrics = {"accuracy": 0.83, "count": 7, "nan": math.nan, "flag": True, "text": "no"}
    tags = {f"t{i:03d}": f"v{i}" for i in range(120)}
    with tracking.run(experiment, "batches", {"flow": "test"}) as run_id:
        tracking.log_params(run_id, params)
        tracking.log_metrics(run_id, metrics)
        tracking.set_run_tags(run_id, tags)
    data = tracking.client().get_run(run_id).data
    assert data.params == {**{f"p{i:03d}": str(i) for i in range(150)}, "long": "x" * 6000}
    assert data.metrics == {"accuracy": 0.83, "count": 7.0}
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == tags
    history = tracking.client().get_metric_history(run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.83)]
