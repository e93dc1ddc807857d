"""Reference jobs (unlearning.references): a job carries D' only, and training it gives exactly the
model the method registry's `retrain` gives from the full request — checked against that
independent path for each model kind. The key is a content address: equal for equal jobs (also
after pickling, as a Dask worker receives them), different when anything that shapes the
reference differs."""

from __future__ import annotations

import cloudpickle
import pytest
import torch
from sklearn.datasets import load_digits

from unlearning import images, references
from unlearning.errors import UnlearnError
from unlearning.images import ImageData
from unlearning.images import cnn
from unlearning.images.registry import run_image_method
from unlearning.tabular.logreg import DTYPE, Objective
from unlearning.tabular.methods import run_method
from unlearning.tabular.problem import Certification, make_problem
from unlearning.text import deep_influence
from unlearning.text.charlm import CharLSTM, Vocab, train_lm, windows as char_windows


def _table_problem(noise: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(80, 6, generator=g, dtype=DTYPE)
    y = (X[:, 0] + 0.3 * torch.randn(80, generator=g, dtype=DTYPE) > 0).long()
    b = torch.randn(6, generator=g, dtype=DTYPE) * 0.1 if noise else None
    cert = Certification(epsilon=1.0, delta=1e-4, sigma=0.1) if noise else None
    theta = run_method("retrain", make_problem(torch.zeros(6, dtype=DTYPE), Objective(0.5, b), X, y, 2, [],
                                               X[:0], y[:0])).theta
    # delete rows 3 and 7, relabel row 20
    return make_problem(theta, Objective(l2=0.5, b=b), X, y, 2, [3, 7, 20], X[[20]], 1 - y[[20]],
                        certification=cert)


@pytest.mark.parametrize("noise", [False, True], ids=["plain", "certified noise"])
def test_a_table_job_retrains_exactly_what_the_registry_retrains(noise):
    problem = _table_problem(noise)
    job = references.table_job(problem)
    expected = run_method("retrain", problem, {})
    got = references.train(job)
    assert torch.equal(got.theta, expected.theta)
    assert got.residual == pytest.approx(expected.residual, rel=1e-9, abs=1e-15)
    # D' only: 80 rows − 3 affected + 1 replacement, and the deleted rows are not in it
    assert len(job.data["X"]) == 78
    for row in (3, 7):
        assert not (job.data["X"] == problem.X[row]).all(dim=1).any()


def test_the_key_is_a_content_address():
    problem = _table_problem()
    job = references.table_job(problem)
    assert job.key == references.table_job(_table_problem()).key  # rebuilt from the same inputs
    assert cloudpickle.loads(cloudpickle.dumps(job)).key == job.key  # as a worker receives it
    other_rows = make_problem(problem.theta, problem.obj, problem.X, problem.y, 2, [3, 7, 21],
                              problem.X[[21]], 1 - problem.y[[21]])
    other_l2 = make_problem(problem.theta, Objective(l2=0.6), problem.X, problem.y, 2, [3, 7, 20],
                            problem.X[[20]], 1 - problem.y[[20]])
    keys = {job.key, references.table_job(other_rows).key, references.table_job(other_l2).key,
            references.table_job(_table_problem(noise=True)).key}
    assert len(keys) == 4


def test_a_text_job_retrains_exactly_what_deep_influence_retrain_trains():
    text = "the quick brown fox jumps over the lazy dog; card 4111 1111 1111 1111 ends here. " * 6
    tilde = text.replace("4111 1111 1111 1111", "XXXXXXXXXXXXXXXXXXX")
    vocab = Vocab.from_text(text + "X")
    seq_len = 16
    original = CharLSTM.from_preset("tiny", len(vocab), seed=3)
    windows = char_windows(vocab.encode(text), seq_len)
    train_lm(original, windows, steps=5, lr=3e-3, batch=8, seed=3)
    spans = [(i, i + 19) for i in range(len(text)) if text.startswith("4111 1111 1111 1111", i)]
    request = deep_influence.affected_windows(vocab, text, tilde, spans, seq_len)
    settings = {"steps": 6, "lr": 3e-3, "batch": 8, "seed": 3, "seq_len": seq_len}
    expected = deep_influence.retrain(original, request, windows, steps=6, lr=3e-3, batch=8, seed=3, init_seed=3)
    job = references.text_job(original.config, settings, request.apply(windows))
    got = references.train(job)
    for name, tensor in expected.model.state_dict().items():
        assert torch.equal(got.model.state_dict()[name], tensor), name
    # D' only: no window of the job holds the card number's characters
    card = vocab.encode("4111 1111")
    flat = job.data["windows"]
    assert not any(torch.equal(w[i:i + len(card)], card) for w in flat for i in range(len(w) - len(card) + 1))


def test_an_image_job_retrains_exactly_what_the_registry_retrains():
    d = load_digits()
    X = torch.tensor(d.images[:300] / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target[:300])
    schedule = cnn.TrainSchedule.from_preset("tiny", epochs=1.0)
    model = cnn.CNN.from_preset("tiny", seed=0)
    data = ImageData(X, y, schedule)
    request = images.forget_class(y, 3)
    expected = run_image_method("retrain", model, data, request)
    job = references.image_job(model.config, *request.d_prime(data), schedule)
    got = references.train(job)
    for name, tensor in expected.model.state_dict().items():
        assert torch.equal(got.model.state_dict()[name], tensor), name
    assert (job.data["y"] != 3).all() and len(job.data["y"]) == int((y != 3).sum())
    assert got.stats["seconds"] > 0
    with pytest.raises(UnlearnError, match="schedule"):
        references.image_job(model.config, *request.d_prime(data), None)
