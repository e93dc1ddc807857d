"""Score one or more marked YAML batches alone (precision/recall table, then the errors as case ids
and offsets — never values), e.g. a new batch once, before any detector change:

    .venv/bin/python -m tests.data.detect_corpus.score_batch tests/data/detect_corpus/heldout3.yaml
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.data.detect_corpus.build_corpus import handwritten_cases
from unlearning.detect.quality import format_report, quality_report


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m tests.data.detect_corpus.score_batch BATCH.yaml [...]", file=sys.stderr)
        return 2
    report = quality_report(handwritten_cases(tuple(paths)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{', '.join(p.name for p in paths)} scored at commit {commit}")
    print(format_report(report))
    print("\nerrors (case, kind, detector, start-end):")
    for e in report["errors"]:
        print(f"  {e['case']}  {e['kind']:8s} {e['detector']:6s} {e['start']}-{e['end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
