"""The image scenario end to end (real Prefect, MLflow, DVC; digits and the tiny CNN): data add →
train → forget a class → alignment verified against a retrained CNN and promoted; bad image
requests → exit 2, one line, nothing written."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import yaml

from flows.cli import main
from tests.flows.conftest import project_root
from tests.flows.test_cli_bad_input import snapshot
from unlearning.images.bundle import ImageTrainConfig


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory, prefect_harness):
    """A workspace with data/digits and a tiny CNN `digits` (v1, production), 6 epochs."""
    root = tmp_path_factory.mktemp("images")
    with project_root(root, chdir=True):
        assert main(["data", "add", "digits"]) == 0
        assert main(["train", "digits", "--epochs", "6"]) == 0
        yield root


def request_file(root, name: str, content: dict):
    path = root / name
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("content, expect", [
    ({"forget_class": "seven"}, "unknown class 'seven' in forget_class"),
    ({"forget_class": 12}, "unknown class '12'"),
    ({"forget_class": 3, "delete_records": ["digits:0000"]}, "exactly one of delete_records, forget_class or fix_labels"),
    ({"revoke_features": ["pixel_0"]}, "holds images"),
    ({"redact": {"findings": "all"}}, "holds images"),
    ({"delete_records": ["no-such-image"]}, "not in dataset 'digits'"),
    ({"fix_labels": {"digits:0000": "eleven"}}, "unknown class 'eleven' in fix_labels"),
    ({"forget_class": 3, "method": "certified"}, "does not apply to an image model"),
])
def test_bad_image_requests_exit_2_and_change_nothing(digits_ws, capsys, content, expect):
    before = snapshot(digits_ws)
    path = request_file(digits_ws, "bad.yaml", {"id": "BAD-1", "model": "digits", **content})
    capsys.readouterr()
    assert main(["forget", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expect in err, err
    path.unlink()
    assert snapshot(digits_ws) == before


def test_record_outside_the_training_subset_is_refused(digits_ws, capsys):
    from unlearning.images.data import load_images

    dataset = load_images(digits_ws / "data" / "digits")
    test_id = dataset.record_ids[int(np.flatnonzero(~dataset.train)[0])]
    path = request_file(digits_ws, "bad.yaml", {"id": "BAD-2", "model": "digits", "delete_records": [test_id]})
    capsys.readouterr()
    assert main(["forget", str(path)]) == 2
    assert "only its training images can be unlearned" in capsys.readouterr().err
    path.unlink()


def test_forget_class_promotes_verified_alignment(digits_ws, capsys):
    path = request_file(digits_ws, "forget3.yaml", {"id": "IMG-1", "model": "digits", "forget_class": "3"})
    capsys.readouterr()
    assert main(["forget", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["promoted"] and out["method"] == "alignment" and out["guarantee"] == "empirical"
    assert out["forget_class"] == "3" and out["model"]["version"] == "2"
    rows = {r["method"]: r for r in out["results"]}
    assert set(rows) == {"original", "retrain", "alignment"}
    assert rows["original"]["ua"] < 10 and rows["retrain"]["ua"] == 100.0
    assert rows["alignment"]["ua"] >= 80 and abs(rows["alignment"]["ta"] - rows["retrain"]["ta"]) <= 5
    assert rows["retrain"]["da"] > rows["original"]["da"]
    assert all(c["passed"] for c in out["checks"])

    # the data lost every training image of class 3 (test images stay), as a new DVC version
    from unlearning.images.data import load_images

    after = load_images(digits_ws / "data" / "digits")
    assert not (after.train & (after.labels == 3)).any() and (~after.train & (after.labels == 3)).any()
    assert out["data"]["before"] != out["data"]["after"]

    # the production model is the promoted CNN; as a pyfunc it maps images to class names
    model = mlflow.pyfunc.load_model("models:/digits@production")
    test = ~after.train & (after.labels != 3)
    predicted = np.asarray(model.predict(after.images[test]))
    assert (predicted == np.asarray(after.classes)[after.labels[test]]).mean() > 0.8
    forgotten = np.asarray(model.predict(after.images[~after.train & (after.labels == 3)]))
    assert (forgotten == "3").mean() < 0.3  # unseen images of the forgotten class: mostly not "3" any more
    version = mlflow.MlflowClient().get_model_version("digits", "2")
    assert version.tags["method"] == "alignment" and version.tags["verified"] == "true"

    # the same request again: already processed, nothing new
    assert main(["forget", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already_processed"


def test_image_train_config_defaults():
    from unlearning.images.bundle import default_train_config
    from unlearning.images.data import build_digits

    digits = build_digits()
    assert default_train_config(digits, ImageTrainConfig()) == ("tiny", int(digits.train.sum()))
    assert default_train_config(digits, ImageTrainConfig(subset=600)) == ("tiny", 600)
