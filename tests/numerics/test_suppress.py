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
    out = su.suppress(model, request, train, su.char_classes(vocab.chars), steps=30, lr=3e-3, margin=0.0, anchor=30.0,
                      batch=None, tilde_batch=4, retain_batch=8)
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
