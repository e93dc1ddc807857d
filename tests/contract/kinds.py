"""Tiny worlds, one per kind, that the contract suite runs every registered method in: a trained
model, a request, the retrained reference, and how to read a result. Each is built once per test
session (models really trained, in about a second each)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tests.synthetic import logistic_data
from unlearning import registry
from unlearning.images import ImageData, forget_class
from unlearning.images import cnn
from unlearning.images.registry import ImageContext
from unlearning.tabular import logreg
from unlearning.tabular.logreg import DTYPE, Objective
from unlearning.tabular.problem import Certification, make_problem
from unlearning.text import deep_influence
from unlearning.text import charlm
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.lm import TextContext
from unlearning.text.bundle import LMBundle

# Small budgets for the slow methods so the whole suite stays quick; a method without an entry runs
# with its defaults (so a newly registered method is covered as it is).
PRESETS: dict[str, dict[str, dict]] = {
    "tabular": {},
    "text": {"first_order": {"steps": 2}, "finetune": {"steps": 5},
             "second_order": {"steps": 1, "cg_iters": 2, "subsample": 4, "tilde_subsample": 4, "repair_steps": 1}},
    "images": {"alignment": {"epochs": 0.3}, "finetune": {"epochs": 0.3}, "l1_sparse": {"epochs": 0.3},
               "scrub": {"epochs": 0.3, "max_epochs": 1}, "random_labels": {"epochs": 0.3},
               "salun": {"epochs": 0.3}, "gradient_ascent": {"epochs": 0.3},
               "second_order": {"cg_iters": 2, "subsample": 64}},
}


@dataclass(frozen=True)
class World:
    """A kind's test world. `parameters(result)` the new model's tensors; `inputs()` the tensors the
    methods must leave untouched (`initial`: their values before any method ran); `usable(result)` whether the new model still computes finite
    outputs of the right shape; `towards_reference(result)` the kind's check against its retrained
    reference (see each builder)."""

    kind: str
    context: Any
    parameters: Callable[[Any], list[torch.Tensor]]
    inputs: Callable[[], list[torch.Tensor]]
    usable: Callable[[Any], bool]
    towards_reference: Callable[[Any], bool]
    initial: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "initial", tuple(t.detach().clone() for t in self.inputs()))


@functools.cache
def world(kind: str) -> World:
    return {"tabular": _tabular, "text": _text, "images": _images}[kind]()


@functools.cache
def run(kind: str, name: str):
    """Each method's result on its kind's world, computed once per session."""
    return registry.run(kind, name, world(kind).context, PRESETS[kind].get(name, {}))


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --- tables: binary logistic regression with objective perturbation (so `certified` runs too) -----

def _tabular() -> World:
    n, d = 160, 6
    X, y, g = logistic_data(n, d, 2, 7, weight_scale=3.0, spread_radius=True)
    obj = Objective(l2=0.02 * n, b=torch.randn(d, generator=g, dtype=DTYPE))
    theta = logreg.fit(X, y, 2, obj, tol=1e-10).theta
    dele, fix = torch.tensor([5, 77, 3]), torch.tensor([40, 0, 150, 12])
    p = make_problem(theta, obj, X, y, 2, torch.cat([dele, fix]), X[fix], 1 - y[fix], (),
                     Certification(epsilon=1.0, delta=1e-4, sigma=5.0))
    theta_rt = registry.run("tabular", "retrain", p, {}).theta

    def towards_reference(result) -> bool:
        """Exact reference: the update ends no farther from retrained θ than θ* (doing nothing)."""
        return float((result.theta - theta_rt).norm()) <= float((p.theta - theta_rt).norm())

    return World("tabular", p, lambda r: [r.theta], lambda: [p.theta, p.X, p.y, p.X_tilde, p.y_tilde, p.obj.b],
                 lambda r: r.theta.shape == p.theta.shape and bool(torch.isfinite(r.theta).all()),
                 towards_reference)


# --- text: a tiny character LSTM that saw a PIN three times ---------------------------------------

TEXT = ("so fair a day. pin 4711 is mine. so foul a night. the pin 4711 again, and once more 4711. "
        "no more of it, said the clerk, and wrote the day down. ") * 3
SECRET, SEQ = "4711", 16


def _text() -> World:
    spans, i = [], TEXT.find(SECRET)
    while i >= 0:
        spans.append((i, i + len(SECRET)))
        i = TEXT.find(SECRET, i + 1)
    tilde = list(TEXT)
    for s, e in spans:
        tilde[s:e] = "#" * (e - s)
    tilde = "".join(tilde)
    vocab = Vocab.from_text(TEXT + "#")
    model = CharLSTM.from_config(dict(vocab_size=len(vocab), embed=8, hidden=24, layers=1), seed=0)
    windows = charlm.windows(vocab.encode(TEXT), SEQ)
    settings = {"seq_len": SEQ, "lr": 1e-2, "batch": 16, "seed": 0, "steps": 120}
    stats = charlm.train_lm(model, windows, steps=settings["steps"], lr=settings["lr"], batch=settings["batch"], seed=0)
    bundle = LMBundle(model, vocab, "tiny", {**settings, "steps": stats.steps, "seconds": stats.seconds})
    request = deep_influence.affected_windows(vocab, TEXT, tilde, spans, SEQ)
    context = TextContext(bundle, request, windows)
    secret_targets = request.Z[:, 1:] != request.Z_tilde[:, 1:]  # (k, T) the secret characters

    def secret_loss(m: CharLSTM) -> float:
        with torch.no_grad():
            logits, _ = m(request.Z[:, :-1])
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), request.Z[:, 1:], reduction="none")
        return float(ce[secret_targets].mean())

    before = secret_loss(model)

    def towards_reference(result) -> bool:
        """Retraining a language model is too noisy at this size to demand closeness to it; the
        update must at least not make the removed characters likelier than doing nothing does."""
        return secret_loss(result.bundle.model) >= before

    def usable(result) -> bool:
        ppl = charlm.perplexity(result.bundle.model, windows)
        return result.bundle.vocab is vocab and torch.isfinite(torch.tensor(ppl)).item()

    return World("text", context, lambda r: _params(r.bundle.model), lambda: [*_params(model), windows],
                 usable, towards_reference)


# --- images: the tiny CNN on 8×8 digits, forgetting class 3 ---------------------------------------

def _images() -> World:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images[:600] / 16.0, dtype=torch.float32)[:, None]  # (600, 1, 8, 8)
    y = torch.tensor(d.target[:600])
    schedule = cnn.TrainSchedule.from_preset("tiny", epochs=4)
    model = cnn.CNN.from_preset("tiny", seed=0)
    cnn.train(model, X, y, schedule)
    data = ImageData(X, y, schedule)
    request = forget_class(y, 3)
    context = ImageContext(model, data, request)

    def forget_accuracy(m) -> float:
        with torch.no_grad():
            return float((m(X[request.forget]).argmax(1) == y[request.forget]).float().mean())

    reference = forget_accuracy(registry.run("images", "retrain", context, {}).model)
    nothing = abs(forget_accuracy(model) - reference)

    def towards_reference(result) -> bool:
        """Accuracy on the forgotten class ends no farther from the retrained model's than doing nothing."""
        return abs(forget_accuracy(result.model) - reference) <= nothing

    def usable(result) -> bool:
        with torch.no_grad():
            logits = result.model(X[:32])
        return logits.shape == (32, 10) and bool(torch.isfinite(logits).all())

    return World("images", context, lambda r: _params(r.model), lambda: [*_params(model), X, y],
                 usable, towards_reference)
