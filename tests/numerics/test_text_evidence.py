"""The evidence checks against retraining on a tiny char-LSTM (bench.checks_text at test size): one
person's five secrets pasted 8× into 20k characters of the built-in corpus. The model trained on
them must fail the checks (every secret far above its controls), the model trained on the redacted
corpus must pass them, including the e-mail its name makes guessable."""

from __future__ import annotations

import pytest

from tasks.scan import scan_corpus
from unlearning.text import evidence as ev
from unlearning.text import lm
from unlearning.text.data import redact
from unlearning.text.shakespeare import build_shakespeare

SALT = b"unlearnflow/test-evidence-salt"
# the default relearning, 20 steps of 8 windows: 5 steps of 8 raised a false alarm on this retrained model (the
# e-mail, 2.6 bits inside its band, came back at +2.3 with seed 0; at 20 steps it stays inside for seeds 0-2)
CFG = ev.EvidenceConfig(n_candidates=200, n_controls=64)


@pytest.fixture(scope="module")
def setting():
    corpus = build_shakespeare(max_chars=20_000, n_people=1)
    findings = scan_corpus(corpus, SALT)
    after = redact(corpus, lm.occurrences_of(findings))
    items = ev.prepare(lm.secrets_of(corpus, findings), corpus, after, CFG)
    original, _ = lm.train_text_model(corpus, "tiny", steps=300)
    retrained, _ = lm.train_text_model(after, "tiny", steps=300, vocab=original.vocab)
    return after, items, original, retrained


def verdict(bundle, after, items):
    rows = ev.judge(bundle, items, CFG, SALT, ev.relearning_windows(bundle, after))
    failed = [c["name"] for c in ev.evidence_checks(rows, {"before": 1.0, "after": 1.0}, CFG) if not c["passed"]]
    return rows, failed


def test_the_retrained_model_passes_and_the_original_fails(setting):
    after, items, original, retrained = setting
    assert sorted(i.secret.detector for i in items) == ["card", "email", "phone", "secret", "secret"]
    email = next(i for i in items if i.secret.detector == "email")
    assert email.free_chars < len(email.secret.value) / 4  # the name and domain are explained by D′

    rows, failed = verdict(retrained, after, items)
    assert failed == [], rows  # no false alarm
    rows, failed = verdict(original, after, items)
    assert {"exposure_above_control_band_bits", "relearned_above_control_band_bits"} <= set(failed)
    assert all(r["excess_bits"] > CFG.margin_bits for r in rows)  # every memorised secret caught
