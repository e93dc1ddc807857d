"""bench.stream's command line: the options (the package's docstring lists them) and their checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import bench.stream
from bench.stream.policies import DEFAULT_CADENCE, DEFAULT_POLICIES, POLICIES

SCENARIOS = ("tables", "text", "images")
DEFAULT_REQUESTS = {"tables": 30, "text": 10, "images": 30}
QUICK_REQUESTS = {"tables": 6, "text": 3, "images": 6}
QUICK_STEPS = 100  # --quick: a text model trained (and retrained) a quarter of the demo's steps
RESULTS = Path(__file__).parent.parent / "results" / "stream.md"


def parse_requests(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in SCENARIOS or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"bad --requests entry {part!r}: SCENARIO=N with N ≥ 1, "
                                             f"SCENARIO one of {', '.join(SCENARIOS)}")
        out[name] = int(count)
    return out


def settings_of(name: str) -> Callable[[str], object]:
    """An argparse type: "k=v,k=v" → unlearning.images.verify.<name>(k=v, ...), validated."""
    def parse(text: str):
        from pydantic import ValidationError

        from unlearning.images import verify
        pairs = [p.partition("=") for p in filter(None, (p.strip() for p in text.split(",")))]
        try:
            return getattr(verify, name)(**{k.strip(): None if v.strip().lower() == "none" else v.strip()
                                            for k, _, v in pairs})
        except ValidationError as e:
            raise argparse.ArgumentTypeError(f"bad {name} settings {text!r}: {e.errors()[0]['loc']} "
                                             f"{e.errors()[0]['msg']}") from None
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    from flows.settings import DEMO_TEXT_STEPS
    ap = argparse.ArgumentParser(prog="bench.stream", description=bench.stream.__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_REQUESTS} requests over 7 days")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: tables,text,images")
    ap.add_argument("--requests", type=parse_requests, default={}, help="e.g. text=10,images=30 (default "
                    + ",".join(f"{k}={v}" for k, v in DEFAULT_REQUESTS.items()) + ")")
    ap.add_argument("--days", type=float, default=None, help="length of the stream (default 30; --quick 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None,
                    help=f"text: training steps of the LM (default: the demo's {DEMO_TEXT_STEPS}; --quick {QUICK_STEPS})")
    ap.add_argument("--policies", default=None,
                    help="comma-separated numbers of the policies to run (1–7, the list above; default 1–5); "
                    "without 1 the shares are of an estimate (n × the mean retraining measured)")
    ap.add_argument("--min-requests", default=str(DEFAULT_CADENCE[0]),
                    help=f"the cadence policy: audit once N requests wait (default {DEFAULT_CADENCE[0]}), "
                    "as `unlearn audit --min-requests N`")
    ap.add_argument("--max-age", default=str(DEFAULT_CADENCE[1]),
                    help=f"... or once the oldest is DAYS old (default {DEFAULT_CADENCE[1]:g})")
    ap.add_argument("--candidates", type=int, default=1000, help="text: same-format candidates per exposure")
    ap.add_argument("--text-people", type=int, default=4,
                    help="text: people pasting 5 secrets each into the corpus (default 4: the demo's 20 secrets; at most "
                    "16); a busier month, e.g. --text-people 12 --requests text=30")
    ap.add_argument("--image-subset", type=int, default=800, help="images: training images (bench.images --quick: 800)")
    ap.add_argument("--image-epochs", type=float, default=2.0, help="images: epochs of the CNN (bench.images --quick: 2)")
    ap.add_argument("--image-verify", type=settings_of("ImageVerifyConfig"), default=None,
                    help="images: reference/audit settings, KEY=VALUE,... of unlearning.images.verify.ImageVerifyConfig "
                    "(e.g. audit_images=200,audit_z=3; none for None)")
    ap.add_argument("--image-evidence", type=settings_of("ImageEvidenceConfig"), default=None,
                    help="images: evidence settings, KEY=VALUE,... of ImageEvidenceConfig (e.g. drift_z=1)")
    ap.add_argument("--compare-audits", action="store_true",
                    help="images: judge every audit on whole sets too (not charged) and report differing verdicts")
    ap.add_argument("--cache", type=Path, default=RESULTS.parent / "text-cache",
                    help="text: keep/reuse the original LM here (only the original: retrainings are measured)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="scenarios run side by side in separate processes (default: 2 where there are 2 cores: "
                    "text in one, tables then images in the other)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/stream.md (quick: stream-quick.md)")
    args = ap.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        ap.error(f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    from tasks.audit import cadence_setting
    from unlearning.errors import UnlearnError
    try:
        args.cadence = cadence_setting(args.min_requests, args.max_age)
    except UnlearnError as e:
        ap.error(str(e))
    chosen = [p.strip() for p in (args.policies or "").split(",") if p.strip()]
    if any(not p.isdigit() or not 1 <= int(p) <= len(POLICIES) for p in chosen):
        ap.error(f"--policies takes numbers 1–{len(POLICIES)}, got {args.policies!r}")
    args.policies = tuple(POLICIES[int(p) - 1] for p in chosen) or DEFAULT_POLICIES
    counts = dict(QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    counts.update(args.requests)
    args.counts = counts
    args.days = args.days or (7.0 if args.quick else 30.0)
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEMO_TEXT_STEPS)
    if args.days <= 0 or args.jobs < 1 or args.image_subset < 10 or args.image_epochs <= 0:
        ap.error("--days, --jobs and --image-epochs must be positive, --image-subset at least 10")
    from unlearning.text.shakespeare import MAX_PEOPLE
    if not 1 <= args.text_people <= MAX_PEOPLE:
        ap.error(f"--text-people must be from 1 to {MAX_PEOPLE}")
    if args.out is None:
        args.out = RESULTS.with_name("stream-quick.md") if args.quick else RESULTS
    return args
