"""The contract every registered unlearning method keeps, run over all of METHODS.

Registering a method is enough for it to be checked here: shapes, finiteness, guarantee class,
an honest residual (recomputed by hand on D'), no mutation of the request, one-line errors.
"""

from __future__ import annotations

import pytest
import torch

from unlearning.errors import UnlearnError
from unlearning.tabular import logreg
from unlearning.registry import GUARANTEES
from unlearning.tabular.methods import METHODS, Result, get_method, run_method
from tests.synthetic import logistic_data
from unlearning.tabular.logreg import DTYPE, Objective
from unlearning.tabular.problem import Certification, make_problem

NAMES = sorted(METHODS)
CERT = Certification(epsilon=1.0, delta=1e-4, sigma=5.0)


def _data(n, d, K, seed):
    X, y, g = logistic_data(n, d, K, seed, weight_scale=3.0, spread_radius=True)
    b = torch.randn((d,) if K == 2 else (d, K), generator=g, dtype=DTYPE)
    return X, y, b


def build(kind: str, certification=CERT):
    """A small trained model and a request: `binary` (3 deletions + 4 label fixes, with noise b),
    `multiclass` (same request, K = 3), `revoke` (binary, columns 0 and 2 revoked)."""
    K = 3 if kind == "multiclass" else 2
    n, d = 160, 6
    X, y, b = _data(n, d, K, seed=len(kind))
    obj = Objective(l2=0.02 * n, b=b)
    theta = logreg.fit(X, y, K, obj, tol=1e-10).theta
    if kind == "revoke":
        cols = [0, 2]
        z = (X[:, cols] != 0).any(dim=1).nonzero().squeeze(1)
        X_tilde = X[z].clone()
        X_tilde[:, cols] = 0.0
        return make_problem(theta, obj, X, y, K, z, X_tilde, y[z], cols, certification)
    dele, fix = torch.tensor([5, 77, 3]), torch.tensor([40, 0, 150, 12])
    z = torch.cat([dele, fix])
    return make_problem(theta, obj, X, y, K, z, X[fix], (y[fix] + 1) % K, (), certification)


PROBLEM_KINDS = ["binary", "multiclass", "revoke"]


@pytest.fixture(scope="module")
def problems():
    return {kind: build(kind) for kind in PROBLEM_KINDS}


def residual_by_hand(p, theta) -> float:
    """‖∇L_b(θ; D')‖₂ with D' = (D \\ Z) ∪ Z̃ rebuilt here and the gradient from its definition."""
    keep = torch.ones(len(p.X), dtype=torch.bool)
    keep[p.z_index] = False
    X = torch.cat([p.X[keep], p.X_tilde])
    y = torch.cat([p.y[keep], p.y_tilde])
    z = X @ theta
    if theta.dim() == 1:
        r = torch.sigmoid(z) - y.to(DTYPE)
    else:
        r = torch.softmax(z, dim=1) - torch.nn.functional.one_hot(y, theta.shape[1]).to(DTYPE)
    grad = X.T @ r + p.obj.l2 * theta
    return float((grad if p.obj.b is None else grad + p.obj.b).norm())


def run_or_refuse(name, p, options=None):
    """The method's Result, or None when it refuses the problem with a one-line UnlearnError."""
    try:
        return run_method(name, p, options or {})
    except UnlearnError as exc:
        assert_one_line(exc)
        return None


def assert_one_line(exc: Exception):
    message = str(exc)
    assert message and "\n" not in message and len(message) < 400, message


# --- registry -----------------------------------------------------------------------------------

def test_registry_lists_the_documented_methods():
    assert {"first_order", "second_order", "certified", "retrain", "finetune"} <= set(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_well_formed(name):
    method = get_method(name)
    assert method.name == name
    assert method.guarantee in GUARANTEES
    assert method.summary and "\n" not in method.summary
    assert method.config.model_config.get("extra") == "forbid"
    method.config()  # every option has a default: {} is a valid configuration


def test_unknown_method_name():
    with pytest.raises(UnlearnError) as info:
        run_method("no_such_method", build("binary"), {})
    assert_one_line(info.value)
    assert "no_such_method" in str(info.value) and "second_order" in str(info.value)


# --- results ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PROBLEM_KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_result_contract(name, kind, problems):
    p = problems[kind]
    out = run_or_refuse(name, p)
    if out is None:
        assert kind == "multiclass", f"{name} refused a binary problem"
        return
    assert isinstance(out, Result)
    assert out.method == name
    assert out.theta.shape == p.theta.shape and out.theta.dtype == DTYPE
    assert torch.isfinite(out.theta).all()
    assert out.guarantee in GUARANTEES and out.guarantee == METHODS[name].guarantee
    assert isinstance(out.residual, float) and out.residual >= 0
    assert out.residual == pytest.approx(residual_by_hand(p, out.theta), rel=1e-9, abs=1e-12)
    if out.guarantee == "certified":
        assert out.residual_bound is not None and out.residual_bound >= out.residual
        assert out.epsilon is not None and out.epsilon > 0 and out.delta == p.certification.delta
    if out.guarantee == "exact":
        assert out.residual <= 1e-6 * p.n_new


@pytest.mark.parametrize("kind", PROBLEM_KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_does_not_mutate_the_problem(name, kind):
    p = build(kind)
    before = {k: getattr(p, k).clone() for k in ("theta", "X", "y", "z_index", "X_tilde", "y_tilde")}
    b_before = p.obj.b.clone()
    revoked = p.revoked
    run_or_refuse(name, p)
    for k, value in before.items():
        assert torch.equal(getattr(p, k), value), f"{name} changed Problem.{k}"
    assert torch.equal(p.obj.b, b_before) and p.revoked == revoked


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, problems):
    p = problems["binary"]
    assert torch.equal(run_method(name, p, {}).theta, run_method(name, p, {}).theta)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
@pytest.mark.parametrize("name", NAMES)
def test_empty_request_keeps_the_model(name, kind, problems):
    q = problems[kind]
    p = make_problem(q.theta, q.obj, q.X, q.y, q.n_classes, [], q.X[:0], q.y[:0], (), CERT)
    out = run_or_refuse(name, p)
    if out is not None:
        assert float((out.theta - q.theta).norm()) <= 1e-6 * float(q.theta.norm())


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_a_one_line_error_naming_it(name, problems):
    with pytest.raises(UnlearnError) as info:
        run_method(name, problems["binary"], {"no_such_option": 1})
    assert_one_line(info.value)
    assert "no_such_option" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_options_must_be_a_mapping(name, problems):
    with pytest.raises(UnlearnError) as info:
        run_method(name, problems["binary"], ["solver", "cg"])
    assert_one_line(info.value)


@pytest.mark.parametrize("name,field", [(n, f) for n in NAMES for f in METHODS[n].config.model_fields])
def test_invalid_option_value_is_a_one_line_error_naming_it(name, field, problems):
    with pytest.raises(UnlearnError) as info:
        run_method(name, problems["binary"], {field: object()})
    assert_one_line(info.value)
    assert field in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_certified_methods_need_a_certified_model(name):
    p = build("binary", certification=None)
    if METHODS[name].guarantee != "certified":
        assert isinstance(run_method(name, p, {}), Result)
        return
    with pytest.raises(UnlearnError) as info:
        run_method(name, p, {})
    assert_one_line(info.value)
