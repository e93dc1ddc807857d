"""`python -m bench.comply`: what a task runner buys `unlearn comply` for batch verification.

For each scenario, one fresh workspace per runner mode is prepared with the real CLI (`unlearn
data add`, `unlearn train`, `unlearn requests submit`): K datasets, one model on each, one pending
request per model — K batches, each with a verification reference of its own (the models differ
in their requests or seeds, so no two reference jobs share a content key). Then `unlearn comply
--json --task-runner R --verify reference` runs in each workspace, and the run is read back from its own stores:

- wall clock and CPU seconds of the comply process (its children included once they exit);
- from the Prefect database (.prefect/prefect.db): the comply flow's duration, the `retrain
  references` subflow (the prefetch), when its first reference task started (before it: planning
  every batch, starting the cluster, shipping D' to the workers) and how long after it the first
  batch was released (tearing the cluster down);
- from MLflow (mlflow/mlflow.db): each verify run's `reference` (prefetched / trained / the update)
  and `retrain_seconds` (the reference's own training time, wherever it ran);
- the signed certificates: verified, model version, data versions, every verification metric
  (`fidelity`) and check — compared field by field with the inline run's ("same results").

Scenarios:
- tabular: K copies of UCI Adult (48,842 rows; the CLI adds a built-in only under its own name, so
  each copy goes in as a CSV with an `id` column), logistic regression, second_order deletions of
  5 different records per model. References are cheap (a few seconds): start-up dominates.
- images: K copies of the first `--subset` Fashion-MNIST training images (+ 2,000 test images),
  the small CNN trained `--epochs` epochs with seed i, forget class Trouser with `auto`
  (alignment). The CLI cannot add an image built-in under another name either, so the copies are
  written with the library's own `save_dataset` + DVC (`tasks.data`), as `data add` does.

Tables go to stdout and bench/results/comply.md, progress to stderr.

    python -m bench.comply                         # tabular K=2 + images K=2, inline vs dask (19 min at load 4)
    python -m bench.comply --scenarios tabular --runners inline,dask
    python -m bench.comply --scenarios images --models 2 --subset 3000 --epochs 4 --workers 2
    python -m bench.comply --keep DIR              # keep the workspaces (default: a temp dir, removed)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "comply.md"
SCENARIOS = ("tabular", "images")
RUNNERS = ("inline", "dask")
ADULT_DELETED = 5  # records deleted per tabular model (different ones per model)
IMAGE_CLASS = "Trouser"
# The image copies: the library's own ingest path (what `unlearn data add fashion-mnist` runs),
# under a name of our choosing. argv: root, name, n_train.
ADD_IMAGES = """
import sys
from pathlib import Path
from flows.settings import configure_environment
root, name, n_train = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
configure_environment(root)
from tasks import data, dvc
from unlearning.images.data import build_fashion_mnist
dvc.ensure_repo(root)
data.save_dataset(build_fashion_mnist(n_train=n_train, n_test=2000, name=name, allow_download=False),
                  data.dataset_dir(root, name))
print(dvc.add_data(root))
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def environment(root: Path) -> dict:
    return {**os.environ, "UNLEARN_ROOT": str(root),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def unlearn(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> dict | str:
    """Run the CLI (this checkout's code) in workspace `root`; its JSON (with --json) or stdout.
    `ok`: the exit codes that are results, not failures (comply exits 1 when a request failed)."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=root, env=environment(root),
                          capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"bench.comply: `unlearn {' '.join(args)}` failed in {root} (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout) if "--json" in args else done.stdout


def submit(root: Path, content: dict) -> None:
    path = root / f"{content['id']}.yaml"
    path.write_text(yaml.safe_dump(content))
    unlearn(root, "requests", "submit", str(path))


# ---------------------------------------------------------------- preparing the workspaces


def adult_csv(folder: Path) -> Path:
    """The built-in Adult table as a CSV with its record ids in an `id` column."""
    from unlearning.builtin import build_adult

    path = folder / "adult.csv"
    if not path.exists():
        table = build_adult()
        frame = table.frame.copy()
        frame.insert(0, "id", frame.index.astype(str))
        frame.to_csv(path, index=False)
    return path


def prepare_tabular(root: Path, k: int, args) -> dict:
    state = {"data": [], "models": []}
    for i in range(1, k + 1):
        added = unlearn(root, "data", "add", f"adult{i}", "--file", str(args.adult_csv), "--target", "income",
                        "--id", "id", "--json")
        trained = unlearn(root, "train", f"adult{i}", "--json")
        state["data"].append(added.get("data_version"))
        state["models"].append((trained["model"]["name"], trained["model"]["version"], trained["metrics"]))
        ids = [str(1000 * i + j) for j in range(ADULT_DELETED)]
        submit(root, {"id": f"DSR-T{i}", "model": f"adult{i}", "delete_records": ids, "method": "second_order"})
    return state


def prepare_images(root: Path, k: int, args) -> dict:
    state = {"data": [], "models": []}
    for i in range(1, k + 1):
        name = f"fm{i}"
        done = subprocess.run([sys.executable, "-c", ADD_IMAGES, str(root), name, str(args.subset)], cwd=root,
                              env=environment(root), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench.comply: adding image dataset {name} failed:\n{done.stderr[-3000:]}")
        trained = unlearn(root, "train", name, "--subset", str(args.subset), "--epochs", str(args.epochs),
                          "--seed", str(i - 1), "--json")
        state["data"].append(done.stdout.strip().splitlines()[-1])
        state["models"].append((trained["model"]["name"], trained["model"]["version"], trained["metrics"]))
        submit(root, {"id": f"DSR-I{i}", "model": name, "forget_class": IMAGE_CLASS, "method": "auto"})
    return state


PREPARE = {"tabular": prepare_tabular, "images": prepare_images}


# ---------------------------------------------------------------- reading a comply run back


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql, params).fetchall()


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp()


def prefect_timeline(root: Path) -> dict:
    """Durations (s) of the comply run's phases, from its Prefect flow and task runs."""
    db = root / ".prefect" / "prefect.db"
    flows = query(db, "select f.name, r.start_time, r.end_time from flow_run r join flow f on f.id = r.flow_id "
                      "where r.start_time is not null order by r.start_time")
    comply = [(s, e) for n, s, e in flows if n == "comply"][-1]
    start = seconds(comply[0])
    out = {"comply_flow_s": seconds(comply[1]) - start}
    prefetch = [(s, e) for n, s, e in flows if n == "retrain references" and seconds(s) >= start]
    forgets = [seconds(s) for n, s, e in flows if n == "forget" and seconds(s) >= start]
    if prefetch:
        p0, p1 = seconds(prefetch[-1][0]), seconds(prefetch[-1][1])
        tasks = [(seconds(s), seconds(e)) for s, e in query(
            db, "select start_time, end_time from task_run where name like 'retrain reference-%' "
                "and start_time is not null")
                 if seconds(s) >= p0]
        out.update(prefetch_s=p1 - p0, teardown_s=(min(forgets) - p1) if forgets else None,
                   before_first_s=(min(s for s, _ in tasks) - p0) if tasks else None,
                   task_s=[e - s for s, e in tasks])
    return out


def verify_runs(root: Path) -> list[tuple[str, float | None]]:
    """(reference source, retrain_seconds) of every verify run (table and image verify runs log both)."""
    db = root / "mlflow" / "mlflow.db"
    rows = query(db, "select r.run_uuid, p.value from runs r join params p on p.run_uuid = r.run_uuid "
                     "where p.key = 'reference' and r.name = 'verify'")
    out = []
    for run, source in rows:
        value = query(db, "select value from metrics where run_uuid = ? and key = 'retrain_seconds' "
                          "order by step desc limit 1", run)
        out.append((source, value[0][0] if value else None))
    return out


def certificate_facts(root: Path, summary: dict) -> dict[str, dict]:
    """request id → what must not depend on the runner: verdict, versions, every metric and check."""
    out = {}
    for r in summary["requests"]:
        if r.get("certificate") is None:
            out[r["id"]] = {"status": r["status"], "reason": r.get("reason")}
            continue
        cert = json.loads((root / r["certificate"]).read_text())
        cert = cert.get("certificate", cert)
        out[r["id"]] = {"verified": cert["verified"], "model_version": cert["model"]["version"],
                        "data": cert["data"], "fidelity": cert["fidelity"], "checks": cert["checks"],
                        "method": cert["method"], "retrain_s": cert["timings"].get("retrain_s")}
    return out


def run_comply(root: Path, runner: str, workers: int) -> dict:
    # the references it measures are trained only in reference mode (the default modes train none)
    args = (["comply", "--task-runner", runner, "--verify", "reference", "--json"]
            + (["--workers", str(workers)] if runner != "inline" else []))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    summary = unlearn(root, *args, ok=(0, 1))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    facts = certificate_facts(root, summary)
    refs = verify_runs(root)
    return {"runner": runner, "wall_s": wall, "cpu_s": cpu, "summary": summary, "facts": facts,
            "verify": refs, **prefect_timeline(root)}


# ---------------------------------------------------------------- the table


def same_results(run: dict, inline: dict) -> bool:
    strip = lambda facts: {k: {f: v for f, v in d.items() if f != "retrain_s"} for k, d in facts.items()}  # noqa: E731
    return strip(run["facts"]) == strip(inline["facts"])


def fmt(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


HEADER = ("| runner | comply wall s | CPU s | speed-up vs inline | references: own s (sum / longest) | "
          "prefetch subflow s | before the first reference s | teardown s | runner overhead s | "
          "reference sources | prefetched / used | verified | same results as inline |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(run: dict, inline: dict | None) -> str:
    own = [s for _, s in run["verify"] if s is not None]
    sources = {}
    for source, _ in run["verify"]:
        sources[source] = sources.get(source, 0) + 1
    refs = run["summary"]["references"]
    verified = sum(bool(f.get("verified")) for f in run["facts"].values())
    prefetch = run.get("prefetch_s")
    # Overhead: the prefetch phase (subflow + teardown) beyond its longest reference — what a
    # perfectly parallel pool of ≥ K workers would still need.
    longest_task = max(run.get("task_s") or [0.0])
    overhead = None if prefetch is None else prefetch + (run.get("teardown_s") or 0.0) - longest_task
    speedup = f"{inline['wall_s'] / run['wall_s']:.2f}×" if inline else "—"
    same = "—" if inline is None or run is inline else ("yes" if same_results(run, inline) else "**no**")
    return (f"| {run['runner']} | {run['wall_s']:.1f} | {run['cpu_s']:.1f} | {speedup} | "
            f"{fmt(sum(own))} / {fmt(max(own) if own else None)} | {fmt(prefetch)} | {fmt(run.get('before_first_s'))} | "
            f"{fmt(run.get('teardown_s'))} | {fmt(overhead)} | "
            f"{', '.join(f'{n} {s}' for s, n in sorted(sources.items()))} | {refs['prefetched']} / {refs['used']} | "
            f"{verified}/{len(run['facts'])} | {same} |")


def machine_line() -> str:
    import torch

    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.node()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: tabular, images")
    ap.add_argument("--runners", default="inline,dask", help="comma-separated: inline (always run), dask "
                    "(default inline,dask)")
    ap.add_argument("--models", type=int, default=2, help="K: models = datasets = batches per scenario (default 2)")
    ap.add_argument("--workers", type=int, default=None, help="task runner workers (default: min(K, cores))")
    ap.add_argument("--subset", type=int, default=3000, help="images: training images per copy (default 3000)")
    ap.add_argument("--epochs", type=float, default=4.0, help="images: CNN epochs (default 4, as the demo)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the workspaces under this folder")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.runners = ["inline", *[r for r in args.runners.split(",") if r and r != "inline"]]
    bad = [s for s in args.scenarios if s not in SCENARIOS] + [r for r in args.runners if r not in RUNNERS]
    if bad or not args.scenarios or args.models < 1 or (args.workers is not None and args.workers < 1) \
            or args.subset < 100 or args.epochs <= 0:
        ap.exit(2, f"bench.comply: unknown scenario/runner {bad} (scenarios: {', '.join(SCENARIOS)}; runners: "
                   f"{', '.join(RUNNERS)}) or --models/--workers < 1, --subset < 100, --epochs ≤ 0\n")
    if args.workers is None:
        args.workers = max(1, min(args.models, os.cpu_count() or 1))
    return args


def run_scenario(name: str, args, base: Path) -> list[str]:
    roots = {runner: base / name / runner for runner in args.runners}
    for root in roots.values():
        root.mkdir(parents=True)
    say(f"[{name}] preparing {len(roots)} workspaces × {args.models} models with the CLI (concurrently) ...")
    started = time.perf_counter()
    with ThreadPoolExecutor(len(roots)) as pool:
        states = dict(zip(roots, pool.map(lambda r: PREPARE[name](r, args.models, args), roots.values())))
    prepare_s = time.perf_counter() - started
    first = next(iter(states.values()))
    identical = all(s == first for s in states.values())
    say(f"  prepared in {prepare_s:.0f} s; data and model versions and training metrics identical across "
        f"workspaces: {'yes' if identical else 'NO'}")
    runs = {}
    for runner, root in roots.items():
        say(f"  comply --task-runner {runner}" + (f" --workers {args.workers}" if runner != "inline" else "") + " ...")
        runs[runner] = run_comply(root, runner, args.workers)
        say(f"    {runs[runner]['wall_s']:.1f} s wall, references {runs[runner]['summary']['references']}")
    inline = runs["inline"]
    lines = [HEADER, *(row(run, inline) for run in runs.values())]
    models = ", ".join(f"{n} v{v}" for n, v, _ in first["models"])
    return [f"## {name}: K = {args.models} models ({models}), {args.workers} worker(s)", "",
            f"Workspaces prepared in {prepare_s:.0f} s (not part of the table); data versions, model versions and "
            f"training metrics identical across the {len(roots)} workspaces: {'yes' if identical else '**no**'}.", "",
            *lines, ""]


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="bench-comply-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    try:
        if "tabular" in args.scenarios:
            args.adult_csv = adult_csv(base)
        out = []
        for name in args.scenarios:
            section = run_scenario(name, args, base)
            print("\n".join(section), flush=True)
            out += section
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    doc = [f"# bench.comply — {machine_line()} (at the start: {load_before:.1f})", "",
           f"Generated by `python -m bench.comply {' '.join(argv if argv is not None else sys.argv[1:])}`. "
           "Wall and CPU s: the whole `unlearn comply --json` process (CPU includes its children once they "
           "exit). References: each verify run's `retrain_seconds` (where it ran). Prefetch subflow: the "
           "`retrain references` flow run; before the first reference: planning every batch + starting the "
           "runner + shipping D'; teardown: subflow end → first batch released; runner overhead = prefetch "
           "subflow + teardown − the longest reference task.", "", *out,
           f"Total benchmark time {time.perf_counter() - started:.0f} s."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(doc) + "\n")
    say(f"written {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
