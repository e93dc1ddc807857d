"""Precision and recall of the detectors on a labelled corpus — positions and counts only.

A corpus is a list of cases `{"id": ..., "text": ..., "expected": [{"detector", "start", "end"}]}`
(or the path of a JSON file holding one). A finding is a true positive when an expected span of
the same detector overlaps it by at least half of the *longer* of the two spans (stricter than
half of the expected span: a finding swallowing its neighbourhood does not count), each expected
span matched at most once. Everything reported is counts, rates, case ids and offsets, never text.

    python -m unlearning.detect.quality tests/data/detect_corpus/corpus.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from unlearning.detect.base import Match
from unlearning.detect.scan import DETECTORS, find_matches

MIN_OVERLAP = 0.5


def load_corpus(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def overlap_fraction(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Shared characters over the length of the longer span."""
    shared = min(a[1], b[1]) - max(a[0], b[0])
    return max(0, shared) / max(a[1] - a[0], b[1] - b[0], 1)


def match_case(expected: list[Mapping], found: list[Match]) -> tuple[list[tuple], list[Mapping], list[Match]]:
    """(pairs, missed expected, unmatched findings) for one text, greedy by best overlap."""
    unused = list(found)
    pairs, missed = [], []
    for exp in sorted(expected, key=lambda e: e["start"]):
        span = (exp["start"], exp["end"])
        candidates = [f for f in unused if f.detector == exp["detector"]
                      and overlap_fraction(span, (f.start, f.end)) >= MIN_OVERLAP]
        if candidates:
            best = max(candidates, key=lambda f: overlap_fraction(span, (f.start, f.end)))
            unused.remove(best)
            pairs.append((exp, best))
        else:
            missed.append(exp)
    return pairs, missed, unused


def quality_report(corpus: Iterable[Mapping[str, Any]] | str | Path) -> dict:
    """Per-detector and overall counts, precision and recall, plus the ids of cases with errors."""
    cases = load_corpus(corpus) if isinstance(corpus, str | Path) else list(corpus)
    counts = {name: {"expected": 0, "found": 0, "tp": 0} for name in DETECTORS}
    errors = []
    for i, case in enumerate(cases):
        case_id = case.get("id", i)
        expected = list(case.get("expected", []))
        found = find_matches(case["text"])
        pairs, missed, spurious = match_case(expected, found)
        for exp in expected:
            counts.setdefault(exp["detector"], {"expected": 0, "found": 0, "tp": 0})["expected"] += 1
        for f in found:
            counts.setdefault(f.detector, {"expected": 0, "found": 0, "tp": 0})["found"] += 1
        for exp, _ in pairs:
            counts[exp["detector"]]["tp"] += 1
        errors += [{"case": case_id, "kind": "missed", "detector": e["detector"], "start": e["start"], "end": e["end"]}
                   for e in missed]
        errors += [{"case": case_id, "kind": "spurious", "detector": f.detector, "start": f.start, "end": f.end}
                   for f in spurious]
    total = {key: sum(c[key] for c in counts.values()) for key in ("expected", "found", "tp")}
    return {
        "cases": len(cases),
        "negative_cases": sum(1 for c in cases if not c.get("expected")),
        "detectors": {name: _rates(c) for name, c in counts.items()},
        "overall": _rates(total),
        "errors": errors,
    }


def _rates(c: Mapping[str, int]) -> dict:
    tp, found, expected = c["tp"], c["found"], c["expected"]
    return {
        "expected": expected, "found": found, "tp": tp, "fp": found - tp, "fn": expected - tp,
        "precision": tp / found if found else 1.0,  # nothing reported, nothing wrongly reported
        "recall": tp / expected if expected else None,
    }


def format_report(report: Mapping[str, Any]) -> str:
    """A Markdown table of the report (what the closing note pastes)."""
    lines = ["| detector | expected | found | TP | FP | FN | precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = list(report["detectors"].items()) + [("**overall**", report["overall"])]
    for name, r in rows:
        recall = "—" if r["recall"] is None else f"{r['recall']:.3f}"
        lines.append(f"| {name} | {r['expected']} | {r['found']} | {r['tp']} | {r['fp']} | {r['fn']} "
                     f"| {r['precision']:.3f} | {recall} |")
    lines.append(f"\n{report['cases']} texts, {report['negative_cases']} of them with nothing to find.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m unlearning.detect.quality CORPUS.json", file=sys.stderr)
        return 2
    print(format_report(quality_report(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
