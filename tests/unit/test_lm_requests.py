"""How a text request becomes windows, and what `auto` picks for it (lm.window_request,
lm.affected_window_count, lm.auto_method) — on the built-in corpus, against the windows the
update itself uses."""

from __future__ import annotations

import pytest

from tasks.scan import scan_corpus
from unlearning.text.shakespeare import build_shakespeare
from unlearning.text import lm
from unlearning.text.charlm import PRESETS
from unlearning.text.data import redact


@pytest.fixture(scope="module")
def corpus_and_findings():
    corpus = build_shakespeare(max_chars=20_000, n_people=2, repeats=3)
    return corpus, scan_corpus(corpus, b"test-salt")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_counted_windows_are_the_windows_the_update_replaces(corpus_and_findings, preset):
    corpus, findings = corpus_and_findings
    text, _ = lm.training_text(corpus)
    bundle = lm.LMBundle(model=None, vocab=lm.corpus_vocab(text), preset=preset,
                         settings={"seq_len": PRESETS[preset]["seq_len"]})
    for chosen in (findings, findings[:1], [f for f in findings if f["detector"] == "card"]):
        after = redact(corpus, lm.occurrences_of(chosen), policy="token")
        request, windows = lm.window_request(bundle, corpus, after, chosen)
        assert lm.affected_window_count(corpus, chosen, bundle.seq_len) == len(request) > 0
        assert bool((request.Z != request.Z_tilde).any(dim=1).all())  # every counted window changes
        assert len(windows) > len(request)


def test_auto_takes_the_influence_update_only_where_it_was_shown_to_pass():
    assert lm.auto_method(1) == lm.auto_method(lm.AUTO_MAX_WINDOWS) == "suppress"
    assert lm.auto_method(lm.AUTO_MAX_WINDOWS + 1) == "retrain"


def test_an_unknown_detector_in_a_redaction_is_named(corpus_and_findings, tmp_path):
    """`redact: {detectors: [cards]}` was refused as 'the request selects no finding', which hid the typo."""
    from tasks.kinds.text import plan_findings
    from unlearning.compliance.requests import request_from_dict
    from unlearning.errors import UnlearnError

    corpus, _ = corpus_and_findings
    request = request_from_dict({"id": "R", "model": "m", "redact": {"findings": "all", "detectors": ["cards"]}})
    with pytest.raises(UnlearnError, match="unknown detector\\(s\\) cards; choose from card"):
        plan_findings(tmp_path, request, corpus, "auto")
    found = plan_findings(tmp_path, request_from_dict({"id": "R", "model": "m", "redact": {"detectors": ["card"]}}),
                          corpus, "auto")
    assert found and {f["detector"] for f in found} == {"card"}
