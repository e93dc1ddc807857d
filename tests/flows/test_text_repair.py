"""`auto`'s repair for text (unlearning.text.repair), real Prefect, MLflow and DVC on the notes' tiny
char-LSTM: a `suppress` update whose evidence failed is taken further by steps that guard against
relearning and promoted when the same evidence passes (no model retrained, guarantee empirical, the
version continues the chain); a repair that does not pass is replaced by the retraining, which
records the repair it tried. The failing update is the real suppress cut to one step (injected where
the kind runs its method): it leaves the card above its control band."""

from __future__ import annotations

import mlflow
import pytest

from tests.flows.test_audit_text import notes_trained_and_scanned
from tests.flows.test_image_fallback import child_runs
from tests.flows.test_pipeline import run_json
from tests.flows.test_user_text import request_from


@pytest.fixture
def one_step_suppress(monkeypatch):
    """The kind's suppress update cut to a single step (no early stop, no passes)."""
    import tasks.kinds.text as kind

    real = kind.run_method

    def run(method, bundle, request, train_windows, options, teacher=None):
        if method == "suppress":
            options = {**(options or {}), "steps": 1, "passes": 0, "early_stop": False}
        return real(method, bundle, request, train_windows, options, teacher)

    monkeypatch.setattr(kind, "run_method", run)


def auto_request(workspace, detected: dict, request_id: str, fingerprint: str):
    path = request_from(workspace, detected, request_id, fingerprint)
    path.write_text(path.read_text().replace("method: retrain", "method: auto"))
    return path


def test_a_suppress_update_that_failed_its_evidence_is_repaired_not_retrained(
        workspace, tmp_path_factory, capsys, one_step_suppress):
    from flows.erasure_cli import format_forget
    from tasks import state, tracking

    _, _, prints, detected = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    trained = mlflow.MlflowClient().get_model_version_by_alias("notes", "production")
    code, out = run_json(capsys, ["forget", str(auto_request(workspace, detected, "TR-1", prints["card"]))])
    assert code == 0 and out["verified"] and out["status"] == "completed", out
    assert out["method"] == "suppress" and out["guarantee"] == "empirical" and out["fallback"] is None
    assert out["verification"]["mode"] == "evidence" and out["verification"]["retrains"] == 0
    repaired = out["repaired"]
    assert repaired["outcome"] == "repaired" and repaired["method"] == "suppress"
    assert "exposure_above_control_band_bits" in repaired["failed_checks"]
    assert repaired["repair"]["passed"] and repaired["repair"]["failed_checks"] == []
    assert repaired["repair"]["steps"] >= 1 and repaired["repair"]["seconds"] > 0
    assert all(c["passed"] for c in out["checks"])
    assert out["metrics"]["excess_bits"] <= 2.0 and out["metrics"]["relearned_excess_bits"] <= 2.0
    assert out["timings"]["update_s"] >= repaired["update_s"] + repaired["repair"]["seconds"] - 1e-9
    # recorded: a repair child run with its own evidence, no retraining; the certificate says the same
    runs = child_runs(workspace, "TR-1")
    assert "repair the update" in runs and "fall back to retraining" not in runs
    assert runs["repair the update"].data.params["failed_method"] == "suppress"
    assert runs["repair the update"].data.params["repair_relearn_steps"] == "10"
    certificate = tracking.load_json(out["run_id"], "certificate.json")
    assert certificate["config"]["repaired"]["repair"]["passed"] and certificate["config"]["fallback"] is None
    assert certificate["guarantee"] == "empirical"
    # the repaired version continues the chain: its sealed teacher is the trained model, as the update's
    version = mlflow.MlflowClient().get_model_version("notes", out["model"]["version"])
    assert version.tags["method"] == "suppress"
    assert state.load_evidence(workspace, version.run_id)[state.TEACHER_RUN_KEY] == trained.run_id
    text = format_forget(out)
    assert "auto: the suppress update failed exposure_above_control_band_bits" in text
    assert "steps that guard against relearning" in text and "no model retrained" in text


def test_a_repair_that_does_not_pass_is_replaced_by_the_retraining(
        workspace, tmp_path_factory, capsys, one_step_suppress, monkeypatch):
    """The repair cut to one step as well: still above the band, so the fall-back retrains."""
    import tasks.kinds.text_repair as step
    from flows.erasure_cli import format_forget
    from unlearning.text.repair import RepairConfig

    real = step.repair
    monkeypatch.setattr(step, "repair", lambda failed, request, windows, teacher, cfg:
                        real(failed, request, windows, teacher, RepairConfig(steps=1)))
    _, _, prints, detected = notes_trained_and_scanned(workspace, tmp_path_factory, capsys)
    code, out = run_json(capsys, ["forget", str(auto_request(workspace, detected, "TR-2", prints["card"]))])
    assert code == 0 and out["verified"] and out["method"] == "retrain" and out["guarantee"] == "exact", out
    assert out["repaired"] is None
    attempt = out["fallback"]
    assert attempt["outcome"] == "retrained" and attempt["method"] == "suppress"
    assert attempt["repair"]["passed"] is False and attempt["repair"]["failed_checks"] and attempt["repair"]["steps"] == 1
    runs = child_runs(workspace, "TR-2")
    assert "repair the update" in runs and "fall back to retraining" in runs
    assert out["timings"]["update_s"] >= attempt["update_s"] + attempt["repair"]["seconds"] - 1e-9
    assert "a repair was tried first (1 steps" in format_forget(out)
