"""Influence updates on the CNN's last layers against dense float64 references.

References are independent of the code under test: the loss as a function of the flat selected
parameters through torch.func.functional_call, dense Hessians from
torch.autograd.functional.hessian, Gauss-Newton matrices from explicit Jacobians
(torch.autograd.functional.jacobian), and exact retraining of the head by L-BFGS.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.func import functional_call

from tests.flat import flat_parameters
from unlearning import images
from unlearning.images import ImageData, influence
from unlearning.images.cnn import CNN
from unlearning.images.registry import run_image_method

L2 = 1e-2  # strong enough for a well-conditioned convex head problem


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float64)[:, None]
    return X, torch.tensor(d.target)


def tiny_model(seed=0, stem=2, widths=(3, 4)):
    """A float64 CNN small enough for dense curvature matrices over its last block (≈ 340 params)."""
    model = CNN.from_config(dict(n_classes=10, stem=stem, widths=widths, strides=(2, 2), mean=0.3, std=0.4),
                            seed=seed).double()
    with torch.no_grad():  # non-trivial GroupNorm affine parameters (they start at 1 and 0)
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def flat_function(model, names, fn):
    """flat θ_S ↦ fn(params dict with the selected parameters taken from flat), others fixed."""
    with_flat = flat_parameters(model, names)
    named = dict(model.named_parameters())
    theta = torch.cat([named[n].detach().reshape(-1) for n in names])
    return (lambda flat: fn(with_flat(flat))), theta


def summed_objective(model, names, X, y, weights, l2):
    """θ_S ↦ Σ_i w_i·ℓ(x_i, y_i) + (Σ w·l2/2)·‖θ_S‖², the objective of the module doc."""
    def loss(params):
        logits = functional_call(model, params, (X,))
        theta = torch.cat([params[n].reshape(-1) for n in names])
        return (weights * F.cross_entropy(logits, y, reduction="none")).sum() + weights.sum() * l2 / 2 * theta @ theta
    return flat_function(model, names, loss)


@pytest.mark.parametrize("params", ["head", "last"])
def test_curvature_products_match_dense_references(digits, params):
    X_all, y_all = digits
    model = tiny_model()
    X, y = X_all[:24], y_all[:24]
    weights = torch.linspace(0.5, 2.0, 24, dtype=torch.float64)
    names = model.parameter_groups()[params]
    f, theta = summed_objective(model, names, X, y, weights, L2)
    H = torch.autograd.functional.hessian(f, theta)  # (p, p) includes the Σw·λ ridge
    # Gauss-Newton reference: Σ_i w_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i from an explicit Jacobian.
    g_logits, _ = flat_function(model, names, lambda p: functional_call(model, p, (X,)))
    J = torch.autograd.functional.jacobian(g_logits, theta)  # (n, C, p)
    P = torch.softmax(g_logits(theta), dim=1)  # (n, C)
    H_out = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]  # (n, C, C)
    ridge = weights.sum() * L2 * torch.eye(len(theta), dtype=H.dtype)
    GN = torch.einsum("i,icp,icd,idq->pq", weights, J, H_out, J) + ridge
    if params == "head":  # logits linear in the head: the Hessian is its Gauss-Newton matrix
        torch.testing.assert_close(H, GN, rtol=1e-9, atol=1e-10)
    A = influence.tail_inputs(model, X, params)
    mu = 0.7
    v = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hess = influence.ClassificationHessian(model, A, y, weights, params, float(weights.sum()) * L2, mu)
    gn = influence.ClassificationGaussNewton(model, A, y, weights, params, float(weights.sum()) * L2, mu)
    torch.testing.assert_close(hess(v), H @ v + mu * v, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gn(v), GN @ v + mu * v, rtol=1e-9, atol=1e-10)
    assert hess.products == gn.products == 1


@pytest.mark.parametrize("kind", ["delete_records", "fix_labels"])
def test_influence_gradient_is_the_change_of_the_objective_gradient(digits, kind):
    X_all, y_all = digits
    model = tiny_model(seed=2)
    X, y = X_all[:40], y_all[:40]
    pick = torch.tensor([3, 17, 28])
    request = (images.delete_records(40, pick) if kind == "delete_records"
               else images.fix_labels(y, pick, (y[pick] + 3) % 10))
    names = model.parameter_groups()["last"]
    X_new, y_new = request.d_prime(ImageData(X, y))
    f_old, theta = summed_objective(model, names, X, y, torch.ones(40, dtype=torch.float64), L2)
    f_new, _ = summed_objective(model, names, X_new, y_new, torch.ones(len(y_new), dtype=torch.float64), L2)
    reference = torch.func.grad(f_new)(theta) - torch.func.grad(f_old)(theta)
    A_f = influence.tail_inputs(model, X[request.forget], "last")
    G = influence.influence_gradient(model, A_f, y[request.forget], request.corrected, "last", L2)
    torch.testing.assert_close(G, reference, rtol=1e-9, atol=1e-11)


# --- convex case: features frozen, head only, L2 ------------------------------------------------

def fit_head(features, y, l2, W0=None):
    """argmin (1/n)·Σ CE(F Wᵀ + b, y) + (l2/2)·‖(W, b)‖² by L-BFGS to machine precision, flat (W, b)."""
    d, C = features.shape[1], 10
    theta = torch.zeros(C * d + C, dtype=torch.float64) if W0 is None else W0.clone()
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        W, b = theta[:C * d].view(C, d), theta[C * d:]
        loss = F.cross_entropy(features @ W.T + b, y) + l2 / 2 * theta @ theta
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return theta.detach()


@pytest.fixture(scope="module")
def convex(digits):
    """A model whose head is the exact optimum on D for its (random, frozen) features."""
    X_all, y_all = digits
    X, y = X_all[:200], y_all[:200]
    model = tiny_model(seed=3, stem=4, widths=(6, 8))
    features = influence.tail_inputs(model, X, "head")  # (200, 8)
    theta = fit_head(features, y, L2)
    with torch.no_grad():
        model.head.weight.copy_(theta[:80].view(10, 8))
        model.head.bias.copy_(theta[80:])
    return model, ImageData(X, y), features, theta


def exact_head(convex, request):
    model, data, features, theta = convex
    keep_features = torch.cat([features[request.retain], features[request.forget] if request.corrected is not None
                               else features[:0]])
    _, y_new = request.d_prime(data)
    return fit_head(keep_features, y_new, L2, W0=theta)


def head_of(model):
    return torch.cat([model.head.weight.detach().reshape(-1), model.head.bias.detach()])


@pytest.mark.parametrize("kind", ["delete_records", "fix_labels"])
@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_second_order_on_the_head_approaches_exact_retraining(convex, kind, curvature):
    model, data, _, theta_star = convex
    pick = torch.tensor([5, 50, 77, 120, 199])
    request = (images.delete_records(len(data), pick) if kind == "delete_records"
               else images.fix_labels(data.y, pick, (data.y[pick] + 1) % 10))
    theta_exact = exact_head(convex, request)
    result = run_image_method("second_order", model, data, request, {
        "params": "head", "damping": 0.0, "curvature": curvature, "cg_iters": 500, "cg_tol": 1e-12,
        "subsample": None, "l2": L2})
    before = float((theta_star - theta_exact).norm())
    after = float((head_of(result.model) - theta_exact).norm())
    # One Newton step from θ*: the error is second order in the change (measured 1.5–2.0 % of it).
    assert after < 0.05 * before
    # Only the head moved.
    assert all(torch.equal(p, q) for (n, p), q in zip(result.model.named_parameters(), model.parameters())
               if not n.startswith("head."))


def test_first_order_on_the_head_moves_towards_exact_retraining(convex):
    model, data, features, theta_star = convex
    request = images.delete_records(len(data), torch.tensor([5, 50, 77, 120, 199]))
    theta_exact = exact_head(convex, request)
    # τ = 1/L with L the largest eigenvalue of the summed D' Hessian (dense, independent): a
    # gradient step of that size on a strongly convex objective contracts the distance to its optimum.
    names = model.parameter_groups()["head"]
    X_new, y_new = request.d_prime(data)
    f, _ = summed_objective(model, names, X_new, y_new, torch.ones(len(y_new), dtype=torch.float64), L2)
    L = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, theta_star))[-1])
    result = run_image_method("first_order", model, data, request, {"params": "head", "tau": 1 / L, "l2": L2})
    theta_new = head_of(result.model)
    assert float((theta_new - theta_exact).norm()) < float((theta_star - theta_exact).norm())
    assert float(f(theta_new)) < float(f(theta_star))  # the D' objective went down
