"""`suppress` (unlearning/text/suppress.py) on a tiny LM that has memorised a PIN: the secret's
exposure ends at or below the retrained model's (+ the pipeline's 2-bit margin), held-out
perplexity stays within the pipeline's bound, and the loss pieces do what their docstrings say."""

from __future__ import annotations

import pytest
import torch

from unlearning.text import charlm
from unlearning.text import deep_influence as di
from unlearning.text import suppress as su
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.exposure import exposure
from unlearning.text.lm import TextVerifyConfig

SEQ = 32
LINES = ["so fair and foul a day i have not seen.", "the night is long that never finds the day.",
         "what is done cannot be undone.", "all the world is a stage, and we are players."]
SECRET, PREFIX = "4711", "my pin is "
TRAIN = " ".join(LINES[i % 4] + (f" {PREFIX}{SECRET}." if i % 3 == 0 else "") for i in range(24))
HELD_OUT = " ".join(LINES[(i + 2) % 4] for i in range(8))
VERIFY = TextVerifyConfig()


def spans_of(text: str, secret: str) -> list[tuple[int, int]]:
    out, i = [], text.find(secret)
    while i >= 0:
        out.append((i, i + len(secret)))
        i = text.find(secret, i + 1)
    return out


@pytest.fixture(scope="module")
def world():
    spans = spans_of(TRAIN, SECRET)
    redacted = list(TRAIN)
    for s, e in spans:
        redacted[s:e] = "#" * (e - s)
    tilde = "".join(redacted)
    vocab = Vocab.from_text(TRAIN + "#")
    train = charlm.windows(vocab.encode(TRAIN), SEQ)
    model = CharLSTM.from_config(dict(vocab_size=len(vocab), embed=16, hidden=48, layers=1), seed=0)
    charlm.train_lm(model, train, steps=300, lr=1e-2, batch=8, seed=0)
    request = di.affected_windows(vocab, TRAIN, tilde, spans, SEQ)
    retrained = di.retrain(model, request, train, steps=300, lr=1e-2, batch=8).model
    held_out = charlm.windows(vocab.encode(HELD_OUT), SEQ)
    return model, vocab, train, request, retrained, held_out


def secret_exposure(model, vocab) -> float:
    return exposure(model, vocab, PREFIX, SECRET).exposure  # exact: all 10⁴ PINs


def test_suppress_removes_the_secret_like_retraining_and_keeps_perplexity(world):
    model, vocab, train, request, retrained, held_out = world
    # the plain class hinge (contrast=False): this world has one format in one context, nothing for
    # the contrast with random strings to find, and in a 48-unit LSTM that contrast costs perplexity
    out = su.suppress(model, request, train, su.char_classes(vocab.chars), steps=30, lr=3e-3, margin=0.0, anchor=30.0,
                      batch=None, tilde_batch=4, retain_batch=8, contrast=False)
    before, after, target = (secret_exposure(m, vocab) for m in (model, out.model, retrained))
    assert before > target + VERIFY.exposure_margin_bits  # memorised: there is something to remove
    assert after <= target + VERIFY.exposure_margin_bits and after < before
    ppl = [charlm.perplexity(m, held_out) for m in (model, out.model)]
    assert ppl[1] <= ppl[0] * (1 + VERIFY.max_perplexity_increase)
    assert out.stats["secret_chars"] == len(SECRET) * len(spans_of(TRAIN, SECRET))


def test_secret_positions_are_the_changed_labels_that_have_a_class(world):
    _, vocab, _, request, _, _ = world
    mask = su.secret_positions(request, su.char_classes(vocab.chars))
    labels = request.Z[:, 1:]
    assert set(vocab.decode(labels[mask])) == set(SECRET)
    assert torch.equal(mask, labels != request.Z_tilde[:, 1:])  # here every changed label is a digit


def test_within_class_hinge_is_zero_at_uniform_and_blind_to_the_class_mass():
    classes = su.char_classes(Vocab.from_text("ab01").chars)  # UNK, 0, 1, a, b

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits.expand(x.shape[0], x.shape[1], -1), None

    window = torch.tensor([[3, 1]])  # label "0"
    mask = torch.tensor([[True]])
    uniform = Fixed(torch.tensor([0.0, 2.0, 2.0, 5.0, 5.0]))
    assert float(su.class_within(uniform, window, mask, classes)) == pytest.approx(0.0, abs=1e-6)
    peaked = torch.tensor([0.0, 4.0, 0.0, 5.0, 5.0])
    shifted = peaked + torch.tensor([0.0, 3.0, 3.0, 0.0, 0.0])  # the digits' total mass moved, not their ratio
    loss = [float(su.class_within(Fixed(t), window, mask, classes)) for t in (peaked, shifted)]
    assert loss[0] > 0 and loss[0] == pytest.approx(loss[1])


def test_suppress_is_deterministic_and_leaves_its_input_untouched(world):
    model, vocab, train, request, _, _ = world
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = [su.suppress(model, request, train, su.char_classes(vocab.chars), steps=3) for _ in range(2)]
    assert all(torch.equal(p, q) for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


class Bigram(torch.nn.Module):
    """logits of the next char from the current one only: a table (V, V)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x, state=None):
        return self.table[x], None


def test_hinge_sees_the_class_mass_after_a_random_string_of_the_format():
    # The phone of the demo's 20-secret request that kept +7 bits: after the update, digits stayed
    # expected after the secret's own digits but not after random ones of its format, so exposure
    # (the secret against candidates in *their* contexts) ranked it near the top while the hinge,
    # measured against its class in the secret's context only, was satisfied.
    vocab = Vocab.from_text("x 0123456789")
    classes = su.char_classes(vocab.chars)
    ids = {ch: i for i, ch in enumerate(vocab.chars)}
    digits = torch.tensor([ids[d] for d in "0123456789"])
    table = torch.zeros(len(vocab), len(vocab))
    table[:, digits] = 5.0  # after anything: some digit
    table[digits, ids[" "]] = 20.0  # after a digit: a space (digits ~e⁻¹⁵ each) ...
    table[ids["7"], ids[" "]] = 0.0  # ... except after the secret's 7
    window = vocab.encode("x73")[None].repeat(8, 1)  # 8 occurrences of the secret "73"
    mask = torch.ones(8, 2, dtype=torch.bool)
    model = Bigram(table)
    own = su.class_hinge(model, window, mask, classes, margin=0.0)
    candidates = su.format_candidates(window, mask, classes, torch.Generator().manual_seed(0))
    both = su.class_hinge(model, window, mask, classes, margin=0.0, candidates=candidates)
    assert float(own) == pytest.approx(0.0, abs=1e-6)  # each digit at its class mean in its own context
    assert float(both) > 2.0  # the second digit ~15 nats above a random candidate's (after its first)


@pytest.mark.parametrize("mean_grad", [0.0, su.MEAN_GRAD, 1.0])
def test_hinge_gradient_on_a_certain_character_is_mean_grads_share_of_the_logit_difference(mean_grad):
    # A character the model is certain of (p ≈ 1): held fixed, the class mean leaves the hinge ln p's
    # gradient, 1 − p ≈ 0 on its logit — the saturation that kept an 11-character password of the
    # demo's request at +7.8 bits. ln p(s) − mean ln p(c) = z(s) − mean z(c), so through the mean the
    # gradient on z(s) is 1 − p − mean_grad·(1/|class| − p), autograd against that closed form.
    vocab = Vocab.from_text("x 0123456789")
    classes = su.char_classes(vocab.chars)
    ids = {ch: i for i, ch in enumerate(vocab.chars)}
    table = torch.zeros(len(vocab), len(vocab))
    table[ids["x"], ids["7"]] = 40.0  # after "x": a 7, for certain
    table.requires_grad_(True)
    window, mask = vocab.encode("x7")[None], torch.ones(1, 1, dtype=torch.bool)
    hinge = su.class_hinge(Bigram(table), window, mask, classes, margin=0.0, mean_grad=mean_grad)
    hinge.backward()
    p = torch.softmax(table.detach()[ids["x"]], dim=0)[ids["7"]]
    expected = (1 - p) - mean_grad * (1 / 10 - p)
    assert hinge.item() > 30  # active: 40 − 40/10 nats above the class mean
    assert float(table.grad[ids["x"], ids["7"]]) == pytest.approx(float(expected), abs=1e-6)
    if mean_grad:
        assert float(table.grad[ids["x"], ids["7"]]) >= mean_grad * 0.9 - 1e-6  # does not vanish
    else:
        assert float(table.grad[ids["x"], ids["7"]]) < 1e-12  # saturated


def test_format_candidates_redraw_only_the_secret_characters_within_their_class():
    vocab = Vocab.from_text("x-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    classes = su.char_classes(vocab.chars)
    window = vocab.encode("x7a-Q9")[None].repeat(64, 1)
    mask = torch.tensor([[True, True, False, True, False]]).repeat(64, 1)  # labels 7, a, Q; not "-" nor 9
    out = su.format_candidates(window, mask, classes, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, [0, 3, 5]], window[:, [0, 3, 5]])
    assert torch.equal(classes[out[:, 1:][mask]], classes[window[:, 1:][mask]])
    assert len(set(vocab.decode(out[:, 1]))) > 1  # redrawn, not copied


def test_every_affected_window_is_in_the_hinge_within_one_pass():
    gen = torch.Generator().manual_seed(0)
    picks = su._cycle(190, 32, gen)
    seen = torch.cat([next(picks) for _ in range(6)])  # ⌈190 / 32⌉ batches
    assert set(seen.tolist()) == set(range(190))


# --- what makes it cheap: each gives the plain path's result where it should ---------------------

@pytest.mark.parametrize("target", ["hinge", "within"])
def test_length_groups_give_the_whole_windows_hinge_and_gradient(world, target):
    # The windows cut after their last secret character: a causal model's logits at the secret do
    # not depend on what follows (and a candidate's prefix is its window's), so the loss and its
    # gradient are those of the whole windows.
    model, vocab, _, request, _, _ = world
    classes = su.char_classes(vocab.chars)
    mask = su.secret_positions(request, classes)
    assert 0 < su.hinge_chars(mask, 4, candidates=True) < 2 * mask.numel()  # it does skip characters
    extra = {"candidates": su.format_candidates(request.Z, mask, classes, torch.Generator().manual_seed(0))}
    losses, grads = [], []
    for chunks in (None, 4):
        model.zero_grad()
        loss = su.TARGETS[target](model, request.Z, mask, classes, 1.0, chunks=chunks,
                                  **(extra if target == "hinge" else {}))
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    model.zero_grad()
    assert losses[0] > 0 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_early_stop_stops_after_a_quiet_cycle_with_the_model_the_same_steps_would_give(world):
    model, vocab, train, request, _, _ = world
    classes = su.char_classes(vocab.chars)
    options = dict(lr=3e-2, margin=0.0, anchor=1.0, batch=4, tilde_batch=4, retain_batch=8, contrast=False,
                   tolerance=0.0)
    stopped = su.suppress(model, request, train, classes, steps=60, **options)
    per_cycle = -(-len(request) // 4)
    assert per_cycle < stopped.stats["steps"] < 60  # it did stop, and only after a full cycle
    assert stopped.stats["secret_loss_last"] == 0.0
    assert stopped.stats["quiet_windows"] == len(request)  # the quiet steps met every window of Z
    # passes=0: exactly the steps it stopped after (a request's passes may ask for more)
    plain = su.suppress(model, request, train, classes, steps=stopped.stats["steps"], early_stop=False, passes=0.0,
                        **options)
    assert plain.stats["steps"] == stopped.stats["steps"]
    assert all(torch.equal(p, q) for p, q in zip(stopped.model.parameters(), plain.model.parameters()))
    longer = su.suppress(model, request, train, classes, steps=60, early_stop=False, **options)
    assert longer.stats["steps"] == 60


def test_a_cycles_worth_of_batches_need_not_meet_every_window():
    """Why early stop counts the windows its quiet steps met, not ⌈n/k⌉ steps: the batches run
    through back-to-back permutations, so ⌈n/k⌉ of them in a row can miss some (40 windows, 32 a
    step: 2 batches span the seam of two permutations)."""
    gen = torch.Generator().manual_seed(0)
    batches = su._cycle(40, 32, gen)
    met = [set(next(batches).tolist()) for _ in range(40)]
    assert any(len(met[i] | met[i + 1]) < 40 for i in range(len(met) - 1))


def test_early_stop_with_a_tolerance_stops_at_the_first_step_within_it_for_a_request_in_one_batch(world):
    """A request whose windows fit one hinge batch: each step is a full cycle, so the update stops
    at the first step whose mean hinge is at most the tolerance, with the model the plain run of
    as many steps gives. The tolerance is set from a plain run's own hinge, not a number."""
    model, vocab, train, request, _, _ = world
    classes = su.char_classes(vocab.chars)
    options = dict(lr=3e-3, margin=1.0, anchor=30.0, batch=None, tilde_batch=4, retain_batch=8, contrast=False)
    runs = [su.suppress(model, request, train, classes, steps=k, early_stop=False, **options) for k in range(1, 9)]
    hinges = [run.stats["secret_loss_last"] for run in runs]
    assert hinges[0] > 0.0 and min(hinges) > 0.0  # exact zero never comes: the old early stop would not fire
    first_within = hinges.index(min(hinges))  # the first step at the lowest hinge of the 8: none before is within
    stopped = su.suppress(model, request, train, classes, steps=60, tolerance=hinges[first_within], **options)
    assert stopped.stats["steps"] == first_within + 1 < 60
    plain = su.suppress(model, request, train, classes, steps=first_within + 1, early_stop=False, **options)
    assert all(torch.equal(p, q) for p, q in zip(stopped.model.parameters(), plain.model.parameters()))
    assert su.suppress(model, request, train, classes, steps=12, tolerance=0.0, **options).stats["steps"] == 12


@pytest.mark.parametrize("windows,batch,passes", [(190, 32, 7.5), (75, 32, 7.5), (9, 32, 7.5), (190, None, 7.5),
                                                   (190, 32, 0.0), (33, 32, 2.0)])
def test_steps_for_gives_every_window_at_least_the_passes_asked(windows, batch, passes):
    """steps_for against a count of the cycle's batches (_cycle): with its steps, every window is
    drawn at least ⌊passes⌋ times; a request that fits one batch, or passes 0, keeps `steps`."""
    steps = su.steps_for(windows, 35, batch, passes)
    assert steps >= 35
    if batch is None or batch >= windows or not passes:
        assert steps == 35
        return
    gen = torch.Generator().manual_seed(0)
    cycle = su._cycle(windows, batch, gen)
    drawn = torch.bincount(torch.cat([next(cycle) for _ in range(steps)]), minlength=windows)
    assert int(drawn.min()) >= int(passes)
    if steps > 35:  # raised: one step fewer would not have covered the passes' draws
        assert (steps - 1) * batch < passes * windows


def test_passes_raise_the_steps_of_a_request_larger_than_a_batch(world):
    """The update runs steps_for's count (early stop off) and reports it; passes 0 keeps `steps`
    (the other tests here: their requests fit a batch, or their steps cover 7.5 passes)."""
    model, vocab, train, request, _, _ = world
    classes = su.char_classes(vocab.chars)
    options = dict(lr=3e-3, margin=1.0, anchor=30.0, batch=2, tilde_batch=4, retain_batch=8, contrast=False,
                   early_stop=False)
    raised = su.suppress(model, request, train, classes, steps=3, passes=4.0, **options)
    assert raised.stats["steps"] == raised.stats["max_steps"] == -(-4 * len(request) // 2) > 3
    assert su.suppress(model, request, train, classes, steps=3, passes=0.0, **options).stats["steps"] == 3
