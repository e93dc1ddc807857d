"""Users' own PyTorch image models end to end (real Prefect, MLflow, DVC): `train --model-factory
tests.custom_models:build` → lineage (factory + source hash) and a pyfunc that predicts with it →
a class forgotten (verified by evidence) → audited against a model retrained through the same
factory → a record deleted through the ledger and `comply`.
A stored model is rebuilt only through a factory the user passed; bad factories → exit 2, one
line, nothing written."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pytest
import yaml

from flows.cli import main
from tasks import factories
from tests.flows.conftest import project_root
from tests.flows.test_cli_bad_input import run_bad
from tests.flows.test_pipeline import run_json
from tests.image_folders import write_image_folder
from unlearning.images.data import load_images
from unlearning.images.factory import UserModel, source_sha256

SPEC = "tests.custom_models:build"


@pytest.fixture(scope="module")
def factory_ws(tmp_path_factory, prefect_harness):
    """data/shapes (3 classes × 60 images, 16×16) and the user's SmallNet `shapes` in production."""
    root = tmp_path_factory.mktemp("user-models")
    with project_root(root, chdir=True):
        write_image_folder(root / "incoming" / "shapes")
        assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", "16"]) == 0
        assert main(["train", "shapes", "--model-factory", SPEC, "--epochs", "15"]) == 0
        yield root


def request(root, **content):
    path = root / f"{content['id']}.yaml"
    path.write_text(yaml.safe_dump({"model": "shapes", **content}))
    return path


def test_the_trained_model_records_its_factory_and_predicts_as_a_pyfunc(factory_ws):
    version = mlflow.MlflowClient().get_model_version("shapes", "1")
    assert version.tags["model_factory"] == SPEC
    assert version.tags["model_factory_sha256"] == source_sha256(SPEC)
    assert (factory_ws / factories.FILE).read_text().split() == [SPEC]
    data = load_images(factory_ws / "data" / "shapes")
    model = mlflow.pyfunc.load_model("models:/shapes@production")
    assert isinstance(model.unwrap_python_model().bundle.model, UserModel)
    assert model.metadata.metadata["model_factory"] == SPEC and model.metadata.metadata["kind"] == "factory"
    test = ~data.train
    predicted = np.asarray(model.predict(data.images[test]))
    assert (predicted == np.asarray(data.classes)[data.labels[test]]).mean() > 0.8


def test_forget_audit_against_a_model_rebuilt_by_the_factory_then_comply(factory_ws, capsys):
    code, out = run_json(capsys, ["forget", str(request(factory_ws, id="F1", forget_class="vstripes"))])
    assert code == 0 and out["promoted"], out
    assert out["metrics"]["ua"] > 50 and out["metrics"]["forgotten_class_accuracy"] < 0.5, out["metrics"]
    new = mlflow.MlflowClient().get_model_version("shapes", out["model"]["version"])
    assert new.tags["model_factory"] == SPEC

    code, audited = run_json(capsys, ["audit", "shapes"])
    assert code == (0 if audited["passed"] else 1), audited
    # the retrained model, built by the same factory, never saw the class: it gets none of it right
    assert audited["covered_requests"] == ["F1"] and audited["metrics"]["ua_retrain"] == 100.0

    # a record deleted through the ledger and `comply`
    data = load_images(factory_ws / "data" / "shapes")
    record = next(i for i, t in zip(data.record_ids, data.train) if t and i.startswith("hstripes/"))
    code, out = run_json(capsys, ["requests", "submit", str(request(factory_ws, id="C1", delete_records=[record]))])
    assert code == 0, out
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and {r["id"]: r["status"] for r in out["requests"]} == {"C1": "completed"}, out
    assert record not in load_images(factory_ws / "data" / "shapes").record_ids


def test_outside_the_project_the_environment_allows_the_factory(factory_ws, monkeypatch):
    monkeypatch.setattr(factories, "_project", frozenset())  # a process that never pointed at the project
    with pytest.raises(Exception, match="has not been allowed"):
        mlflow.pyfunc.load_model("models:/shapes@production")
    monkeypatch.setenv(factories.ENV, f"other.models:make, {SPEC}")
    model = mlflow.pyfunc.load_model("models:/shapes@production")
    assert len(model.predict(load_images(factory_ws / "data" / "shapes").images[:3])) == 3


def test_a_project_that_was_not_given_the_factory_does_not_import_it(factory_ws, capsys, monkeypatch):
    allowed = factory_ws / factories.FILE
    kept = allowed.read_text()
    allowed.unlink()
    try:
        run_bad(factory_ws, capsys, ["forget", str(request(factory_ws, id="F2", forget_class="disc"))],
                f"UNLEARN_MODEL_FACTORIES={SPEC}")
    finally:
        allowed.write_text(kept)


def test_a_factory_that_cannot_be_imported_any_more_is_refused(factory_ws, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tests.custom_models", None)  # as if the module were gone
    run_bad(factory_ws, capsys, ["forget", str(request(factory_ws, id="F3", forget_class="disc"))],
            "cannot import module 'tests.custom_models'")


def test_a_factory_for_a_dataset_that_is_not_images_is_refused(factory_ws, capsys):
    (factory_ws / "notes.txt").write_text("".join(f"note {i}: the weather was fine again today\n\n" for i in range(80)))
    assert main(["data", "add", "notes", "--file", "notes.txt"]) == 0
    run_bad(factory_ws, capsys, ["train", "notes", "--model-factory", SPEC], "--model-factory builds image models")


@pytest.mark.parametrize("spec, expect", [
    ("tests.custom_models.build", "is not package.module:function"),
    ("no_such_team_package.models:build", "cannot import module 'no_such_team_package.models'"),
    ("tests.custom_models:missing", "has no attribute 'missing'"),
    ("tests.custom_models:NOT_A_FUNCTION", "not a function"),
    ("tests.custom_models:returns_a_list", "not a torch.nn.Module"),
    ("tests.custom_models:without_head", "no classifier layer named 'head'"),
    ("tests.custom_models:wrong_classes", "the dataset has 3 classes"),
])
def test_bad_factories_exit_2_and_write_nothing(factory_ws, capsys, spec, expect):
    run_bad(factory_ws, capsys, ["train", "shapes", "--model", "other", "--model-factory", spec], expect)
