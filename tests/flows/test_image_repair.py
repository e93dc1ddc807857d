"""`auto`'s repair for images (unlearning.images.repair), real Prefect, MLflow and DVC on the digits CNN:
a record deletion whose update failed its evidence by too much change only is repaired on D' and
promoted when the same evidence passes (no model retrained, guarantee empirical, the version keeps
no chain); a repair that does not pass is replaced by the retraining, which records the repair it
tried. The update that changed too much is the real update with its weights moved by seeded noise
(an overshoot, injected where the kind runs its method)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from tests.flows.test_image_fallback import child_runs, production
from tests.flows.test_image_pipeline import digits_ws, request_file  # noqa: F401 — digits_ws: a fixture (this module's own workspace)


@pytest.fixture
def overshooting(monkeypatch):
    """Make the kind's update overshoot by `scale` × each weight tensor's mean magnitude (seeded)."""
    import tasks.kinds.images as kind

    real = kind.run_method

    def with_scale(scale: float):
        def run(*args, **kwargs):
            result = real(*args, **kwargs)
            gen = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for p in result.model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
            return result
        monkeypatch.setattr(kind, "run_method", run)

    return with_scale


def delete_request(root, request_id: str, first: int):
    from unlearning.images.data import load_images

    dataset = load_images(root / "data" / "digits")
    ids = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train)[first:first + 5]]
    return request_file(root, f"{request_id}.yaml", {"id": request_id, "model": "digits", "delete_records": ids}), ids


def test_an_update_that_changed_too_much_is_repaired_not_retrained(digits_ws, overshooting):
    from flows.erasure_cli import format_forget
    from flows.forget import forget_flow
    from tasks import state, tracking
    from unlearning.images.data import load_images

    overshooting(0.6)
    path, ids = delete_request(digits_ws, "RP-1", 0)
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="auto")
    assert out["verified"] and out["promoted"] and out["status"] == "completed"
    assert out["method"] == "alignment" and out["guarantee"] == "empirical" and out["fallback"] is None
    assert out["verification"]["mode"] == "evidence" and out["verification"]["retrains"] == 0
    # what failed, and the repair that mended it: only utility, judged again by the same evidence
    repaired = out["repaired"]
    assert repaired["outcome"] == "repaired" and repaired["method"] == "alignment"
    assert set(repaired["failed_checks"]) <= {"ta_drop_vs_original", "ra_drop_vs_original"} and repaired["failed_checks"]
    assert repaired["repair"]["passed"] and repaired["repair"]["failed_checks"] == [] and repaired["repair"]["seconds"] > 0
    checks = {c["name"]: c for c in out["checks"]}
    assert all(c["passed"] for c in checks.values()) and "forget_accuracy_gap_to_heldout" in checks
    rows = {r["method"]: r for r in out["results"]}
    assert set(rows) == {"original", "alignment before repair", "alignment"}
    assert rows["alignment before repair"]["ta"] < rows["alignment"]["ta"]
    assert out["timings"]["update_s"] >= repaired["update_s"] + repaired["repair"]["seconds"] - 1e-9
    # recorded: a repair child run, no retraining; the certificate says the same
    runs = child_runs(digits_ws, "RP-1")
    assert "repair the update" in runs and "fall back to retraining" not in runs
    assert runs["repair the update"].data.params["failed_method"] == "alignment"
    certificate = tracking.load_json(out["run_id"], "certificate.json")
    assert certificate["config"]["repaired"]["repair"]["passed"] and certificate["config"]["fallback"] is None
    assert certificate["guarantee"] == "empirical"
    version = mlflow.MlflowClient().get_model_version("digits", out["model"]["version"])
    assert production(digits_ws) == out["model"]["version"] and version.tags["method"] == "alignment"
    # the repaired version keeps no chain: its next deletion starts one from it
    assert state.load_evidence(digits_ws, version.run_id).get(state.TEACHER_RUN_KEY) is None
    after = load_images(digits_ws / "data" / "digits")
    assert not set(ids) & set(after.record_ids)
    text = format_forget(out)
    assert "auto repaired the update: alignment failed" in text.splitlines()[0]
    assert "evidence, the repaired update, no model retrained" in text and "auto: alignment failed by too much change" in text


def test_a_repair_that_does_not_pass_is_replaced_by_the_retraining(digits_ws, overshooting):
    from flows.erasure_cli import format_forget
    from flows.forget import forget_flow

    overshooting(0.9)
    path, _ = delete_request(digits_ws, "RP-2", 10)
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="auto")
    assert out["verified"] and out["method"] == "retrain" and out["guarantee"] == "exact" and out["repaired"] is None
    attempt = out["fallback"]
    assert attempt["outcome"] == "retrained" and attempt["method"] == "alignment"
    assert attempt["repair"]["passed"] is False and attempt["repair"]["failed_checks"]
    runs = child_runs(digits_ws, "RP-2")
    assert "repair the update" in runs and "fall back to retraining" in runs
    assert out["timings"]["update_s"] >= attempt["update_s"] + attempt["repair"]["seconds"] + out["timings"]["retrain_s"] - 1e-9
    assert "a repair on D' was tried first" in format_forget(out)


def test_a_failure_to_forget_is_not_repaired(digits_ws):
    """Class forgetting cut to one step still predicts the class: retrained, no repair tried."""
    from flows.forget import forget_flow

    path = request_file(digits_ws, "RP-3.yaml", {"id": "RP-3", "model": "digits", "forget_class": "5"})
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="auto", options={"steps": 1})
    assert out["method"] == "retrain" and "repair" not in out["fallback"]
    assert "forgotten_class_accuracy" in out["fallback"]["failed_checks"]
    assert "repair the update" not in child_runs(digits_ws, "RP-3")
