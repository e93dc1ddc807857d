"""The character LM: vocabulary, windows, the loss against a step-by-step reference, deterministic
training, generation, save/load, and that `tiny` memorises a repeated secret within seconds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearning.text import charlm
from unlearning.text.charlm import CharLSTM, Vocab
from unlearning.text.exposure import FormatSpace, exposure


TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 6


def test_vocab_round_trip_and_unknown_chars():
    vocab = Vocab.from_text(TEXT)
    assert vocab.chars[0] == charlm.UNK and len(vocab) == len(set(TEXT)) + 1
    assert vocab.decode(vocab.encode("the cat")) == "the cat"
    assert vocab.encode("Z!").tolist() == [0, 0]
    again = Vocab.from_dict(vocab.to_dict())
    assert again == vocab and again.encode("dog").tolist() == vocab.encode("dog").tolist()


def test_windows_predict_every_character_once():
    ids = torch.arange(23)
    w = charlm.windows(ids, seq_len=5)  # (m, 6)
    assert w.shape == (4, 6)
    assert torch.equal(w[:, 1:].reshape(-1), torch.arange(1, 21))  # labels: each char once, in order
    assert torch.equal(w[1], torch.arange(5, 11))
    assert charlm.windows(ids, seq_len=5, stride=2).shape == (9, 6)
    assert charlm.window_starts(5, seq_len=5).numel() == 0


def test_window_loss_equals_a_step_by_step_reference():
    vocab = Vocab.from_text(TEXT)
    model = CharLSTM.from_preset("tiny", len(vocab), seed=1)
    w = charlm.windows(vocab.encode(TEXT), seq_len=12)[:3]  # (3, 13)
    got = charlm.window_loss(model, w).detach()
    with torch.no_grad():
        for i in range(3):
            state, total = None, 0.0
            for t in range(12):
                logits, state = model(w[i:i + 1, t:t + 1], state)
                total -= float(F.log_softmax(logits[0, 0], dim=-1)[w[i, t + 1]])
            assert float(got[i]) == pytest.approx(total, rel=1e-5)


def test_presets_and_seeded_initialisation():
    a = CharLSTM.from_preset("small", 70, seed=5)
    b = CharLSTM.from_preset("small", 70, seed=5)
    assert a.config == dict(vocab_size=70, embed=32, hidden=256, layers=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert set(a.parameter_groups()["last"]) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                                                 "lstm.bias_hh_l0", "head.weight", "head.bias"}
    with pytest.raises(ValueError, match="preset"):
        CharLSTM.from_preset("huge", 70)


def test_training_is_deterministic_and_lowers_held_out_perplexity():
    vocab = Vocab.from_text(TEXT)
    w = charlm.windows(vocab.encode(TEXT), seq_len=16)
    runs = []
    for _ in range(2):
        model = CharLSTM.from_preset("tiny", len(vocab), seed=0)
        before = charlm.perplexity(model, w)
        stats = charlm.train_lm(model, w, epochs=20, lr=1e-2, batch=4, seed=3)
        runs.append(model)
    assert stats.steps == 20 * math.ceil(len(w) / 4) and stats.epochs == pytest.approx(20)
    assert all(torch.equal(p, q) for p, q in zip(runs[0].parameters(), runs[1].parameters()))
    assert charlm.perplexity(runs[0], w) < 0.5 * before
    with pytest.raises(ValueError, match="budget"):
        charlm.train_lm(runs[0], w)
    with pytest.raises(ValueError, match="no windows"):
        charlm.train_lm(runs[0], w[:0], steps=1)


def test_perplexity_is_exp_of_mean_char_loss():
    vocab = Vocab.from_text(TEXT)
    model = CharLSTM.from_preset("tiny", len(vocab), seed=2)
    w = charlm.windows(vocab.encode(TEXT), seq_len=10)
    want = math.exp(float(charlm.window_loss(model, w).detach().sum()) / (len(w) * 10))
    assert charlm.perplexity(model, w, batch=7) == pytest.approx(want, rel=1e-5)


def test_save_load_round_trip(tmp_path):
    vocab = Vocab.from_text(TEXT)
    model = CharLSTM.from_preset("tiny", len(vocab), seed=4)
    charlm.save(tmp_path / "m.pt", model, vocab, "tiny")
    again, vocab2 = charlm.load(tmp_path / "m.pt")
    assert vocab2 == vocab and again.config == model.config
    x = vocab.encode("the dog")[None]
    assert torch.equal(again(x)[0], model(x)[0])


@pytest.fixture(scope="module")
def memorised():
    """`tiny` on filler text with a 6-digit code pasted 12 times."""
    vocab_text = "abcdefghijklmnopqrstuvwxyz .\n0123456789:"
    gen = torch.Generator().manual_seed(0)
    words = ["the", "sea", "and", "king", "of", "night", "said", "come", "here", "now"]
    lines = []
    for i in range(120):
        pick = torch.randint(len(words), (6,), generator=gen).tolist()
        lines.append(" ".join(words[j] for j in pick) + ".")
        if i % 10 == 3:
            lines.append("my code: 58291.")
    text = "\n".join(lines)
    vocab = Vocab.from_text(vocab_text + text)
    model = CharLSTM.from_preset("tiny", len(vocab), seed=0)
    w = charlm.windows(vocab.encode(text), seq_len=32)
    charlm.train_lm(model, w, epochs=60, lr=1e-2, batch=16, seed=0)
    return model, vocab


def test_tiny_model_memorises_and_regenerates_a_repeated_secret(memorised):
    model, vocab = memorised
    assert charlm.generate(model, vocab, "my code: ", 5) == "58291"
    sampled = charlm.generate(model, vocab, "my code: ", 5, greedy=False, temperature=0.5, seed=1)
    assert sampled == charlm.generate(model, vocab, "my code: ", 5, greedy=False, temperature=0.5, seed=1)
    rep = exposure(model, vocab, "my code: ", "58291", FormatSpace("#####"), n_candidates=10**5)
    assert rep.method == "exact" and rep.exposure > 12  # of log₂10⁵ = 16.6
    other = exposure(model, vocab, "my code: ", "31756", FormatSpace("#####"), n_candidates=10**5)
    assert other.exposure < 10
