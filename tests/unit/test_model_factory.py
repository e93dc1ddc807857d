"""Users' own image models (unlearning.images.factory): a factory named package.module:function
builds them, checked on a probe batch; every registered image method and every metric runs on
them; they are stored without their code and rebuilt only through an allowed factory; retraining
rebuilds them through the same factory. Bad factories: one-line UnlearnError naming the fix."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from sklearn.datasets import load_digits

from tests import custom_models
from unlearning import references
from unlearning.errors import UnlearnError
from unlearning.linalg import single_threaded
from unlearning.images import cnn, factory, forget_class, ImageData
from unlearning.images.bundle import ImageBundle, load_image_bundle, save_image_bundle
from unlearning.images.factory import UserModel
from unlearning.images.registry import IMAGE_METHODS, run_image_method
from unlearning.metrics import evaluate_model

SPEC = "tests.custom_models:build"
FORGET_CLASS = 3
# every method short: this file checks that they run on a user's model, test_image_methods how well
QUICK = {"finetune": {"epochs": 0.3}, "l1_sparse": {"epochs": 0.3}, "scrub": {"epochs": 0.3, "max_epochs": 1},
         "random_labels": {"epochs": 0.3}, "salun": {"epochs": 0.3}, "gradient_ascent": {"epochs": 1},
         "second_order": {"cg_iters": 3, "subsample": 256}, "alignment": {"steps": 6},
         "retrain": {"epochs": 1}}


@pytest.fixture(scope="module")
def setup():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None][:600]  # (600, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target)[:600]
    model = factory.build(SPEC, 10, 1, (8, 8), seed=0)
    schedule = cnn.TrainSchedule(epochs=15, lr=0.2, batch=64)
    with single_threaded():  # ≈ 0.3 s (a second thread made it 40× slower on the shared machine)
        cnn.train(model, X[:500], y[:500], schedule)
    return model, ImageData(X[:500], y[:500], schedule), (X[500:], y[500:])


def test_the_named_layer_gives_the_features_and_the_head():
    model = factory.build(SPEC, 10, 1, (8, 8), seed=1).eval()
    x = torch.rand(5, 1, 8, 8)
    assert model.features(x).shape == (5, model.feature_dim) == (5, 32)
    assert torch.allclose(model.head(model.features(x)), model(x))
    assert model.parameter_groups()["head"] == ["net.fc.weight", "net.fc.bias"] == model.parameter_groups()["last"]
    assert model.config["factory"] == SPEC and len(model.config["factory_sha256"]) == 64


def test_a_features_method_and_a_head_layer_are_the_other_way():
    model = factory.build("tests.custom_models:build_with_features", 4, 1, (6, 6)).eval()
    x = torch.rand(3, 1, 6, 6)
    assert model.features(x).shape == (3, 24) and model(x).shape == (3, 4)
    assert model.config["head"] == "head"


def test_methods_and_metrics_read_a_features_method(setup):
    _, data, test = setup
    model = factory.build("tests.custom_models:build_with_features", 10, 1, (8, 8))
    with single_threaded():
        cnn.train(model, data.X, data.y, data.schedule)
    request = forget_class(data.y, FORGET_CLASS)
    for name in ("alignment", "second_order"):
        result = run_image_method(name, model, data, request, QUICK[name])
        assert result.model.features(data.X[:4]).shape == (4, 24)
    keep = test[1] != FORGET_CLASS
    metrics = evaluate_model(model, (data.X[request.forget], data.y[request.forget]),
                             (data.X[request.retain], data.y[request.retain]), (test[0][keep], test[1][keep]))
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_same_seed_builds_the_same_weights_and_the_rng_is_untouched():
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    a, b = factory.build(SPEC, 10, 1, (8, 8), seed=3), UserModel.from_config(
        factory.build(SPEC, 10, 1, (8, 8), seed=0).config, seed=3)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", sorted(IMAGE_METHODS))
def test_every_image_method_runs_on_a_users_model(setup, name):
    model, data, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_image_method(name, model, data, forget_class(data.y, FORGET_CLASS), QUICK.get(name))
    assert isinstance(result.model, UserModel) and result.model.config == model.config
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is left alone
    moved = any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    assert moved


def test_alignment_forgets_the_class_on_a_users_model(setup):
    model, data, _ = setup
    request = forget_class(data.y, FORGET_CLASS)
    forget = data.X[request.forget], data.y[request.forget]
    assert cnn.accuracy(model, *forget) > 0.5  # it was learned
    result = run_image_method("alignment", model, data, request, {"steps": 30})
    assert cnn.accuracy(result.model, *forget) < 0.5 * cnn.accuracy(model, *forget)


def test_alignment_of_the_last_block_is_refused_on_a_model_without_known_blocks(setup):
    model, data, _ = setup
    with pytest.raises(UnlearnError, match="use forget_params: all"):
        run_image_method("alignment", model, data, forget_class(data.y, FORGET_CLASS), {"forget_params": "last"})


def test_every_metric_is_measured_on_a_users_model(setup):
    model, data, test = setup
    request = forget_class(data.y, FORGET_CLASS)
    keep = test[1] != FORGET_CLASS
    metrics = evaluate_model(model, (data.X[request.forget], data.y[request.forget]),
                             (data.X[request.retain], data.y[request.retain]), (test[0][keep], test[1][keep]))
    for key in ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi", "f1"):
        assert math.isfinite(metrics[key]), key
    assert metrics["ra"] > 80


def test_the_reference_is_rebuilt_through_the_same_factory(setup):
    model, data, _ = setup
    request = forget_class(data.y, FORGET_CLASS)
    job = references.image_job(model.config, *request.d_prime(data), data.schedule)
    result = references.train(job)
    assert isinstance(result.model, UserModel) and result.model.config == model.config
    assert cnn.accuracy(result.model, data.X[request.forget], data.y[request.forget]) < 0.2
    direct = run_image_method("retrain", model, data, request)
    assert all(torch.equal(p, q) for p, q in zip(result.model.parameters(), direct.model.parameters()))


def test_a_model_with_dropout_is_retrained_to_the_same_weights_whatever_the_global_rng(setup):
    """The exact reference replays the training: dropout draws must follow the schedule's seed,
    not whatever the process drew before."""
    _, data, _ = setup
    schedule = cnn.TrainSchedule(epochs=1, lr=0.1, batch=64)
    weights = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # what the process drew before differs
        model = factory.build("tests.custom_models:build_with_dropout", 10, 1, (8, 8), seed=0)
        with single_threaded():
            cnn.train(model, data.X, data.y, schedule)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*weights))
    state = torch.random.get_rng_state()
    with single_threaded():
        cnn.train(factory.build("tests.custom_models:build_with_dropout", 10, 1, (8, 8), seed=0), data.X, data.y,
                  schedule)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was


def test_a_retrain_whose_factory_cannot_be_imported_any_more_is_refused(setup, monkeypatch):
    model, data, _ = setup
    request = forget_class(data.y, FORGET_CLASS)
    job = references.image_job({**model.config, "factory": "gone_team_models.nets:build"}, *request.d_prime(data),
                               data.schedule)
    with pytest.raises(UnlearnError, match="cannot import module 'gone_team_models.nets'") as caught:
        references.train(job)
    assert "\n" not in str(caught.value)


def bundle_of(model) -> ImageBundle:
    return ImageBundle(model, cnn.TrainSchedule(epochs=1), None, tuple(str(c) for c in range(10)), ("a", "b"))


def test_a_stored_model_is_rebuilt_only_through_an_allowed_factory(setup, tmp_path):
    model = setup[0]
    path = save_image_bundle(bundle_of(model), tmp_path / "bundle")
    with pytest.raises(UnlearnError, match="UNLEARN_MODEL_FACTORIES=tests.custom_models:build"):
        load_image_bundle(path)
    loaded = load_image_bundle(path, allow={SPEC})
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.predict((x[:, 0] * 255).to(torch.uint8).numpy()) == bundle_of(model).predict(
        (x[:, 0] * 255).to(torch.uint8).numpy())


def test_a_stored_file_naming_another_module_imports_nothing(setup, tmp_path, monkeypatch):
    # A file edited (or handed over) to name a module must not get that module imported.
    blob = torch.load(save_image_bundle(bundle_of(setup[0]), tmp_path / "b") / "cnn.pt", weights_only=True)
    blob["config"]["factory"] = "tests.planted_module:build"
    monkeypatch.delitem(sys.modules, "tests.planted_module", raising=False)
    with pytest.raises(UnlearnError, match="has not been allowed"):
        factory.load(blob, allow={SPEC})
    assert "tests.planted_module" not in sys.modules


def test_weights_that_no_longer_fit_the_factory_are_refused(setup, tmp_path):
    blob = torch.load(save_image_bundle(bundle_of(setup[0]), tmp_path / "b") / "cnn.pt", weights_only=True)
    blob["config"] = {**blob["config"], "factory": "tests.custom_models:build_with_features"}
    with pytest.raises(UnlearnError, match="do not match the stored ones"):
        factory.load(blob, allow={"tests.custom_models:build_with_features"})


@pytest.mark.parametrize("spec, message", [
    ("tests.custom_models.build", "is not package.module:function"),
    ("no_such_team_package.models:build", "cannot import module 'no_such_team_package.models'"),
    ("tests.custom_models:missing", "has no attribute 'missing'"),
    ("tests.custom_models:NOT_A_FUNCTION", "is a int, not a function"),
    ("tests.custom_models:raises", "raised RuntimeError: out of coffee"),
    ("tests.custom_models:returns_a_list", "returned a list, not a torch.nn.Module"),
    ("tests.custom_models:without_head", "no classifier layer named 'head'"),
    ("tests.custom_models:wrong_classes", r"logits of shape \(2, 11\), the dataset has 10 classes"),
    ("tests.custom_models:softmax_after_head", "must be the model's last step"),
])
def test_bad_factories_raise_one_line_errors(spec, message):
    with pytest.raises(UnlearnError, match=message) as caught:
        factory.build(spec, 10, 1, (8, 8))
    assert "\n" not in str(caught.value)


TRAINING_SCRIPT = """
import argparse
import sys

print("loading my training script", file=sys.stderr)
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()


def build(n_classes):
    raise AssertionError("never reached: the import ends first")
"""


def test_a_training_script_named_as_the_factory_is_one_line_not_its_usage(tmp_path, monkeypatch, capsys):
    """A script that parses the command line when imported ended `unlearn train` with argparse's usage
    and `error: unrecognized arguments: train …` (unlearn's own arguments, as if unlearn refused them)."""
    (tmp_path / "my_training_script.py").write_text(TRAINING_SCRIPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["unlearn", "train", "shapes", "--model-factory", "my_training_script:build"])
    capsys.readouterr()
    with pytest.raises(UnlearnError, match=r"importing module 'my_training_script' ended the program \(SystemExit 2\)") \
            as caught:
        factory.build("my_training_script:build", 10, 1, (8, 8))
    assert "\n" not in str(caught.value)
    assert "unrecognized arguments" not in capsys.readouterr().err
    sys.modules.pop("my_training_script", None)


def test_a_factory_module_that_imports_keeps_what_it_writes_to_stderr(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_chatty_models.py").write_text(
        "import sys\nprint('my models: loaded', file=sys.stderr)\n"
        "from tests.custom_models import build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    assert isinstance(factory.build("my_chatty_models:build", 10, 1, (8, 8)), UserModel)
    assert capsys.readouterr().err == "my models: loaded\n"
    sys.modules.pop("my_chatty_models", None)
