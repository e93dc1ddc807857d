"""bench.tabular's command line and run: both parts, the results files and the MLflow run."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import bench.tabular
from bench.tabular.adult import run_adult
from bench.tabular.report import adult_section, load_average, machine_line, render, scaling_section
from bench.tabular.scaling import SCALING_LAM, SCALING_MAX_ITER, run_scaling, scaling_cases
from bench.tabular.timing import say

EXPERIMENT = "unlearnflow-bench"


def repo_root() -> Path:
    return Path(os.environ.get("UNLEARN_ROOT") or Path(__file__).resolve().parents[2]).resolve()


def flat_metrics(adult_rows: dict[str, list[dict]], scaling_rows: list[dict], total_seconds: float) -> dict:
    """Metric name → value, keys like adult/plain/delete_100/second_order_cholesky/seconds."""
    def key(*parts):
        return "/".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("_") for p in parts)

    metrics = {"total_seconds": total_seconds}
    for kind, rows in adult_rows.items():
        for r in rows:
            for name in ("seconds", "speedup", "speedup_sklearn", "acc_diff_pts", "agreement_pct", "residual",
                         "epsilon", "residual_bound", "hvps", "load"):
                if isinstance(r.get(name), (int, float)):
                    metrics[key("adult", kind, r["request"], r["method"], name)] = float(r[name])
    for r in scaling_rows:
        for name, value in r.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in ("n", "p", "removed"):
                metrics[key("scaling", f"n{r['n']}_p{r['p']}_z{r['removed']}", name)] = float(value)
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def log_to_mlflow(markdown: str, metrics: dict, params: dict, raw: dict) -> str:
    """One run in experiment `unlearnflow-bench`; returns its id."""
    root = repo_root()
    from flows.settings import configure_environment  # before mlflow is imported: quiet, offline

    configure_environment(root)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tasks import tracking

    tracking.configure(root)
    client = MlflowClient()
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        experiment = found.experiment_id
    else:
        uri = tracking.tracking_uri(root)
        location = (root / "mlflow" / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
        experiment = client.create_experiment(EXPERIMENT, artifact_location=location)
    with tracking.run(experiment, "bench tabular", {"git_commit": tracking.git_commit(root),
                                                     "benchmark": "tabular"}) as run_id:
        tracking.log_params(run_id, params)
        now = int(time.time() * 1000)
        entries = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for start in range(0, len(entries), 1000):  # the REST limit per batch
            client.log_batch(run_id, metrics=entries[start:start + 1000])
        tracking.log_text(run_id, markdown, "tabular.md")
        tracking.log_json(run_id, raw, "tabular.json")
    return run_id


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tabular",
                                     description=bench.tabular.__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run in under a minute")
    parser.add_argument("--no-scaling", action="store_true", help="Adult only (skip part 2)")
    parser.add_argument("--seeds", type=int, default=1, help="request seeds on Adult (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    header = "\n".join([
        "# unlearnflow benchmark — tabular",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line(threads)}; "
        f"options: {'--quick ' if args.quick else ''}{'--no-scaling ' if args.no_scaling else ''}--seeds {args.seeds}"])
    models, adult_rows, builds = run_adult(args.seeds, args.quick)
    sections = [adult_section(models, adult_rows, builds, args.seeds)]
    scaling_rows = []
    if not args.no_scaling:
        scaling_rows = run_scaling(scaling_cases(args.quick), seed=0)
        sections.append(scaling_section(scaling_rows))
    total = time.perf_counter() - started
    sections.append(f"Total benchmark time {total:.0f} s; load average at the end {load_average()}.")
    markdown = render(header, sections)
    print(markdown)
    params = {"quick": args.quick, "scaling": not args.no_scaling, "seeds": args.seeds, "threads": threads,
              "scaling_max_iter": SCALING_MAX_ITER, "scaling_lam": SCALING_LAM}
    raw = {"adult": adult_rows, "scaling": scaling_rows,
           "models": [{"kind": m.kind, "fit_seconds": m.fit_seconds, "cache_seconds": m.cache_seconds,
                       "test_accuracy": m.test_accuracy} for m in models]}
    out = repo_root() / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tabular.md").write_text(markdown)
    (out / "tabular.json").write_text(json.dumps(raw, indent=1, default=str))
    say(f"[done] tables in {out / 'tabular.md'}")
    run_id = log_to_mlflow(markdown, flat_metrics(adult_rows, scaling_rows, total), params, raw)
    say(f"[done] MLflow experiment '{EXPERIMENT}', run {run_id}")
    return 0

