"""Influence updates for the character LM against dense references on a tiny float64 model.

References are independent of the code under test: the Hessian from
torch.autograd.functional.hessian over a flat parameter vector (torch.func.functional_call), dense
solves with torch.linalg, Z / Z̃ rebuilt by hand from the spans.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tests.flat import flat_parameters
from unlearning import linalg
from unlearning.errors import UnlearnError
from unlearning.text import deep_influence as di
from unlearning.text import charlm
from unlearning.text.charlm import CharLSTM, Vocab


SEQ = 8
TEXT = ("so fair a day. pin 4711 is mine. so foul a night. the pin 4711 again, and once more 4711. "
        "no more.")


def redact(text: str, spans) -> str:
    out = list(text)
    for s, e in spans:
        out[s:e] = "#" * (e - s)
    return "".join(out)


def spans_of(text: str, secret: str):
    out, i = [], text.find(secret)
    while i >= 0:
        out.append((i, i + len(secret)))
        i = text.find(secret, i + 1)
    return out


@pytest.fixture(scope="module")
def setup():
    spans = spans_of(TEXT, "4711")
    tilde = redact(TEXT, spans)
    vocab = Vocab.from_text(TEXT + "#")
    model = CharLSTM.from_config(dict(vocab_size=len(vocab), embed=3, hidden=4, layers=2), seed=0).double()
    train = charlm.windows(vocab.encode(TEXT), SEQ)
    charlm.train_lm(model, train, epochs=30, lr=2e-2, batch=4, seed=0)
    request = di.affected_windows(vocab, TEXT, tilde, spans, SEQ)
    return model, vocab, train, request, tilde, spans


def flat_loss(model, names, windows_, weights):
    """θ_S ↦ Σ_w weight_w·ℓ(w, θ) as a function of the flat selected parameters (others fixed)."""
    with_flat = flat_parameters(model, names)

    def f(flat):
        logits, _ = functional_call(model, with_flat(flat), (windows_[:, :-1],))
        ce = F.cross_entropy(logits.transpose(1, 2), windows_[:, 1:], reduction="none").sum(dim=1)
        return (weights * ce).sum()

    theta = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])
    return f, theta


def dense_hessian(model, names, windows_, weights):
    f, theta = flat_loss(model, names, windows_, weights)
    return torch.autograd.functional.hessian(f, theta, vectorize=True)


# --- Z and Z̃ --------------------------------------------------------------------------------------

def test_affected_windows_are_those_overlapping_a_span(setup):
    model, vocab, train, request, tilde, spans = setup
    starts = charlm.window_starts(len(TEXT), SEQ)
    want = [i for i, a in enumerate(starts.tolist())
            if any(a < e and a + SEQ + 1 > s for s, e in spans)]
    assert request.index.tolist() == want and len(want) >= len(spans)
    assert torch.equal(request.Z, train[request.index])
    assert torch.equal(request.Z_tilde, charlm.windows(vocab.encode(tilde), SEQ)[request.index])
    assert "4711" not in "".join(vocab.decode(w) for w in request.Z_tilde)
    D_new = request.apply(train)
    assert torch.equal(D_new, charlm.windows(vocab.encode(tilde), SEQ))


def test_a_span_across_a_window_boundary_touches_both_windows():
    vocab = Vocab.from_text("abcdefghijklmnop#")
    text = "abcdefghijklmnop"
    req = di.affected_windows(vocab, text, text[:7] + "##" + text[9:], [(7, 9)], seq_len=4)
    # windows start at 0, 4, 8, 12 and span 5 chars: [4, 9) and [8, 13) overlap [7, 9)
    assert req.index.tolist() == [1, 2]


def test_request_errors_say_what_to_fix(setup):
    vocab = Vocab.from_text("abc")
    with pytest.raises(UnlearnError, match="preserve length"):
        di.affected_windows(vocab, "abcabc", "abc", [(0, 1)], seq_len=2)
    with pytest.raises(UnlearnError, match="outside"):
        di.affected_windows(vocab, "abcabc", "abcabc", [(4, 9)], seq_len=2)
    with pytest.raises(UnlearnError, match="parameter subset"):
        di.select_params(CharLSTM(4, 2, 2), "middle")
    model, _, train, request, _, _ = setup
    with pytest.raises(UnlearnError, match="curvature"):
        di.second_order(model, request, train, curvature="fisher")
    with pytest.raises(UnlearnError, match="start"):
        di.second_order(model, request, train, start="random")


# --- G ----------------------------------------------------------------------------------------------

def test_G_is_zero_when_nothing_changes(setup):
    model, vocab, train, _, _, spans = setup
    same = di.affected_windows(vocab, TEXT, TEXT, spans, SEQ)
    G = di.influence_gradient(model, same, di.select_params(model))
    assert len(same) > 0 and float(G.abs().max()) == 0.0


def test_G_equals_the_difference_of_summed_gradients(setup):
    model, _, _, request, _, _ = setup
    names = di.select_params(model)
    f_new, theta = flat_loss(model, names, request.Z_tilde, torch.ones(len(request), dtype=torch.float64))
    f_old, _ = flat_loss(model, names, request.Z, torch.ones(len(request), dtype=torch.float64))
    want = torch.func.grad(f_new)(theta) - torch.func.grad(f_old)(theta)
    got = di.influence_gradient(model, request, names)
    assert torch.allclose(got, want, atol=1e-10)


# --- Hessian-vector products and CG -----------------------------------------------------------------

@pytest.mark.parametrize("params", ["all", "last", "head"])
def test_hvp_equals_the_explicit_hessian_times_v(setup, params):
    model, _, train, request, _, _ = setup
    names = di.select_params(model, params)
    windows_, weights = di.curvature_windows(train, request, subsample=5, seed=1)
    H = dense_hessian(model, names, windows_, weights.double())
    op = di.HessianOperator(model, names, windows_, weights.double(), damping=0.3)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(op(v), H @ v + 0.3 * v, atol=1e-10, rtol=1e-10)
    assert torch.allclose(op(2 * v), 2 * (H @ v + 0.3 * v), atol=1e-10)  # the graph is reusable
    assert op.hvps == 2


def test_curvature_sample_is_scaled_to_the_full_sum(setup):
    _, _, train, request, _, _ = setup
    windows_, weights = di.curvature_windows(train, request, subsample=4, seed=0)
    n_rest = len(train) - len(request)
    assert weights[:4].tolist() == [n_rest / 4] * 4 and weights[4:].tolist() == [1.0] * len(request)
    assert torch.equal(windows_[4:], request.Z_tilde)
    untouched = set(range(len(train))) - set(request.index.tolist())
    rows = {i for i in untouched for w in windows_[:4] if torch.equal(train[i], w)}
    assert len(rows) == 4  # drawn from D \ Z only
    full, w_full = di.curvature_windows(train, request, subsample=10**6)
    assert len(full) == len(train) and bool((w_full == 1).all())  # everything: the exact H(θ; D')


def test_cg_solves_the_damped_system_like_a_dense_solve(setup):
    model, _, train, request, _, _ = setup
    names = di.select_params(model)
    windows_, weights = di.curvature_windows(train, request, subsample=10**6)
    H = dense_hessian(model, names, windows_, weights.double())
    mu = max(0.0, -float(torch.linalg.eigvalsh(H)[0])) + 1.0  # H + μI positive definite
    g = di.influence_gradient(model, request, names)
    op = di.HessianOperator(model, names, windows_, weights.double(), damping=mu)
    out = linalg.conjugate_gradient(op, g, max_iter=10 * len(g), tol=1e-12)
    want = torch.linalg.solve(H + mu * torch.eye(len(g), dtype=torch.float64), g)
    assert not out.negative_curvature and out.relative_residual <= 1e-12
    assert torch.allclose(out.x, want, rtol=1e-6, atol=1e-8 * float(want.abs().max()))


def test_cg_stops_on_negative_curvature():
    A = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    out = linalg.conjugate_gradient(lambda v: A @ v, torch.tensor([0.0, 1.0], dtype=torch.float64), max_iter=5)
    assert out.negative_curvature and out.iterations == 1 and float(out.x.abs().max()) == 0.0


# --- the updates --------------------------------------------------------------------------------------

def test_second_order_is_the_damped_newton_step(setup):
    model, _, train, request, _, _ = setup
    names = di.select_params(model)
    windows_, weights = di.curvature_windows(train, request, subsample=10**6)
    H = dense_hessian(model, names, windows_, weights.double())
    mu = max(0.0, -float(torch.linalg.eigvalsh(H)[0])) + 1.0
    g = di.influence_gradient(model, request, names)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    want = theta - torch.linalg.solve(H + mu * torch.eye(len(g), dtype=torch.float64), g)
    out = di.second_order(model, request, train, damping=mu, cg_iters=10 * len(g), cg_tol=1e-12,
                          subsample=10**6, curvature="hessian", start="zero", precondition=False, steps=1,
                          repair_steps=0)
    got = torch.cat([p.detach().reshape(-1) for p in out.model.parameters()])
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)
    assert out.stats["hvps"] > 0 and out.stats["cg_residual"] <= 1e-12
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), theta)  # input kept


def dense_gauss_newton(model, names, windows_, weights):
    """Σ_w weight_w Σ_t J_wtᵀ (diag p − ppᵀ) J_wt with J = ∂logits/∂θ_S from autograd's jacobian."""
    with_flat = flat_parameters(model, names)

    def logits_of(flat):
        return functional_call(model, with_flat(flat), (windows_[:, :-1],))[0]  # (m, T, V)

    theta = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])
    z = logits_of(theta).detach()
    J = torch.autograd.functional.jacobian(logits_of, theta, vectorize=True)  # (m, T, V, p)
    P = torch.softmax(z, dim=-1)
    H_out = torch.diag_embed(P) - P[..., :, None] * P[..., None, :]  # (m, T, V, V)
    JtHJ = torch.einsum("mtvp,mtvu,mtuq->mpq", J, H_out, J)  # (m, p, p)
    return (weights[:, None, None] * JtHJ).sum(dim=0)


@pytest.mark.parametrize("params", ["all", "head"])
def test_gauss_newton_product_equals_the_explicit_matrix_times_v(setup, params):
    model, _, train, request, _, _ = setup
    names = di.select_params(model, params)
    windows_, weights = di.curvature_windows(train, request, subsample=5, seed=1)
    C = dense_gauss_newton(model, names, windows_, weights.double())
    op = di.GaussNewtonOperator(model, names, windows_, weights.double(), damping=0.3)
    v = torch.randn(C.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(op(v), C @ v + 0.3 * v, atol=1e-10, rtol=1e-10)
    assert float(torch.linalg.eigvalsh(C)[0]) > -1e-9  # positive semi-definite
    if params == "head":  # the loss is convex in the output layer: there Gauss-Newton = Hessian
        assert torch.allclose(C, dense_hessian(model, names, windows_, weights.double()), atol=1e-10)


def test_default_second_order_converges_to_the_damped_gauss_newton_step(setup):
    """The preconditioned, warm-started CG changes how fast it gets there, not where."""
    model, _, train, request, _, _ = setup
    names = di.select_params(model)
    windows_, weights = di.curvature_windows(train, request, subsample=10**6)
    C = dense_gauss_newton(model, names, windows_, weights.double())
    g = di.influence_gradient(model, request, names)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    want = theta - torch.linalg.solve(C + 0.5 * torch.eye(len(g), dtype=torch.float64), g)
    out = di.second_order(model, request, train, damping=0.5, cg_iters=10 * len(g), cg_tol=1e-12,
                          subsample=10**6, steps=1, max_step=None, tilde_subsample=None, repair_steps=0)
    got = torch.cat([p.detach().reshape(-1) for p in out.model.parameters()])
    assert out.stats["curvature"] == "gauss_newton" and out.stats["precondition"]
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)

    # the trust radius shortens that same step to max_step along the same direction
    radius = 0.25 * float((want - theta).norm())
    short = di.second_order(model, request, train, damping=0.5, cg_iters=10 * len(g), cg_tol=1e-12,
                            subsample=10**6, steps=1, max_step=radius, tilde_subsample=None,
                            repair_steps=0)
    moved = torch.cat([p.detach().reshape(-1) for p in short.model.parameters()]) - theta
    assert short.stats["steps_shortened"] == 1 and abs(float(moved.norm()) - radius) < 1e-6 * radius
    assert torch.allclose(moved, (want - theta) * (radius / float((want - theta).norm())), atol=1e-8)


def test_subsampled_replacement_windows_keep_the_curvature_estimate_unbiased(setup):
    model, _, train, request, _, _ = setup
    k = max(1, len(request) // 2)
    windows_, weights = di.curvature_windows(train, request, subsample=4, seed=0, tilde_subsample=k)
    assert len(windows_) == 4 + k
    assert torch.allclose(weights[4:].sum(), torch.tensor(float(len(request))))  # Z̃ counted |Z̃| times
    assert all(any(torch.equal(w, z) for z in request.Z_tilde) for w in windows_[4:])


def test_fisher_diagonal_is_nonnegative_and_zero_for_unused_embeddings(setup):
    model, vocab, train, request, _, _ = setup
    names = di.select_params(model)
    windows_, weights = di.curvature_windows(train, request, subsample=4, seed=0)
    diag = di.fisher_diagonal(model, names, windows_, weights.double(), seed=0)
    assert diag.shape == (sum(p.numel() for p in model.parameters()),) and bool((diag >= 0).all())
    emb = diag[:model.embedding.weight.numel()].view_as(model.embedding.weight)  # embedding comes first
    used = set(windows_[:, :-1].reshape(-1).tolist())
    unused = [i for i in range(len(vocab)) if i not in used]
    assert unused and float(emb[unused].abs().max()) == 0.0 and float(emb[sorted(used)].sum()) > 0


def test_first_order_is_theta_minus_tau_G(setup):
    model, _, _, request, _, _ = setup
    g = di.influence_gradient(model, request, di.select_params(model))
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    out = di.first_order(model, request, tau=0.01, steps=1)
    got = torch.cat([p.detach().reshape(-1) for p in out.model.parameters()])
    assert torch.allclose(got, theta - 0.01 * g, atol=1e-12)


def test_iterated_first_order_re_linearises_each_fraction(setup):
    model, _, _, request, _, _ = setup
    names = di.select_params(model)
    half = di.first_order(model, request, tau=0.005, steps=1).model  # θ₁ = θ − (τ/2)·G(θ)
    g1 = di.influence_gradient(half, request, names)
    want = torch.cat([p.detach().reshape(-1) for p in half.parameters()]) - 0.005 * g1
    got = torch.cat([p.detach().reshape(-1) for p in di.first_order(model, request, tau=0.01, steps=2).model.parameters()])
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("params", ["head", "last", ["embedding.weight"]])
def test_subset_restriction_leaves_other_parameters_untouched(setup, params):
    model, _, train, request, _, _ = setup
    names = set(di.select_params(model, params))
    for out in (di.second_order(model, request, train, damping=10.0, cg_iters=5, subsample=4, params=params),
                di.second_order(model, request, train, damping=10.0, cg_iters=2, subsample=4, params=params,
                                curvature="hessian", start="zero", precondition=False),
                di.first_order(model, request, tau=0.01, params=params)):
        before, after = dict(model.named_parameters()), dict(out.model.named_parameters())
        for n in before:
            if n in names:
                assert not torch.equal(before[n], after[n]), n
            else:
                assert torch.equal(before[n], after[n]), n


def test_iterated_second_order_moves_less_per_step_and_lowers_the_secret(setup):
    model, vocab, train, request, _, _ = setup
    one = di.second_order(model, request, train, damping=5.0, cg_iters=30, subsample=10**6, steps=1)
    three = di.second_order(model, request, train, damping=5.0, cg_iters=30, subsample=10**6, steps=3)
    assert three.stats["steps"] == 3 and three.stats["hvps"] > one.stats["hvps"]
    from unlearning.text.exposure import log_perplexity
    lp = [log_perplexity(m, vocab, "pin ", "4711") for m in (model, one.model, three.model)]
    assert lp[1] > lp[0] and lp[2] > lp[0]


def test_repair_steps_win_back_retained_loss_without_relearning_the_secret(setup):
    model, vocab, train, request, _, _ = setup
    plain = di.second_order(model, request, train, damping=5.0, cg_iters=30, subsample=10**6, steps=1,
                            repair_steps=0)
    repaired = di.second_order(model, request, train, damping=5.0, cg_iters=30, subsample=10**6, steps=1,
                               repair_steps=30, repair_lr=1e-2)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[request.index] = False
    retained = torch.cat([train[keep], request.Z_tilde])
    with torch.no_grad():
        loss = [float(charlm.window_loss(m, retained).mean()) for m in (model, plain.model, repaired.model)]
    assert loss[2] < loss[1]  # the repair lowers the loss on the data that stays
    from unlearning.text.exposure import log_perplexity
    lp = [log_perplexity(m, vocab, "pin ", "4711") for m in (model, plain.model, repaired.model)]
    assert lp[2] > lp[0] + 1.0  # and the secret stays far less likely than in the original
    assert repaired.stats["repair_steps"] == 30


def test_retrain_is_training_from_scratch_on_the_redacted_windows(setup):
    model, vocab, train, request, tilde, _ = setup
    out = di.retrain(model, request, train, steps=20, lr=1e-2, batch=4, seed=3, init_seed=7)
    ref = CharLSTM.from_config(model.config, seed=7)
    charlm.train_lm(ref, charlm.windows(vocab.encode(tilde), SEQ), steps=20, lr=1e-2, batch=4, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(out.model.parameters(), ref.parameters()))


def test_finetune_touches_the_model_copy_only(setup):
    model, _, train, request, _, _ = setup
    theta = [p.detach().clone() for p in model.parameters()]
    out = di.finetune(model, request, train, steps=3, lr=1e-2, retain_batch=2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), theta))
    assert any(not torch.equal(p, q) for p, q in zip(out.model.parameters(), theta))
