"""Where the wall clock of one table erasure goes (issue 14): a table per phase for (a) the cold CLI
(`unlearn forget REQ --json` in a fresh process, no service) and (b) the warm service (`unlearn serve`
running in the project, the CLI handing the request to it).

    python bench/overhead.py                      # this checkout, 3 cold calls, then the warm path
    python bench/overhead.py --before /work/main  # also a checkout to compare against, calls interleaved
    python bench/overhead.py --repeats 5 --json bench/results/overhead.json

It builds one project in a temporary folder (`git init; unlearn data add adult; unlearn train adult`),
then times one-record deletions (each a different Adult record, so each is a real request). Every
cold call runs the real CLI in a process of its own under a small bootstrap (`--child`) that times,
on the main thread and exclusive of each other (a phase nested in another counts only for itself):

| phase | what is timed |
|---|---|
| process start | from spawning the process to the bootstrap's first line (interpreter, site) |
| imports | every top-level module import (lazy imports inside functions too) |
| Prefect server start / stop | the temporary API server: starting it or waiting for it, stopping it |
| Prefect runs | the flow and task engines outside the pipeline's own functions |
| MLflow | tasks.tracking (the one module that talks to MLflow) |
| DVC | tasks.dvc |
| private state | tasks.state (caches, noise kept per model version) |
| table encoding | unlearning.tabular.erasure (re-encoding the table, the model cache) |
| update / verification | the kind's `update` and `verification` steps, less the above inside them |
| other | the rest of the command: planning, certificate, ledger, escrow, printing |
| process exit | from the command's last atexit handler to the process's end |

The warm path is timed from outside only (the service's phases run in the service): its wall clock,
beside the compute the request reports (update_s, verify_s). It is skipped, with a line saying why,
where this checkout has no `unlearn serve` that listens on .unlearn/service.sock.

The load average is printed with every table: on a shared machine the absolute numbers move with
it, the split much less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_RECORD = 6001

# "module:qualname" (a function, or a class's method) or "module:*" (every function defined in the
# module) → phase. "inherit": the pipeline's own code called back by Prefect's engines, which
# counts for the phase that called the engine (an update run as a Prefect task is the update).
TIMED = {
    "prefect.server.api.server:SubprocessASGIServer.start": "Prefect server start",
    "prefect.server.api.server:SubprocessASGIServer.stop": "Prefect server stop",
    "flows.settings:PrefectServer.wait_ready": "Prefect server start",
    "flows.settings:PrefectServer.stop": "Prefect server stop",
    "prefect.flow_engine:run_flow": "Prefect runs",
    "prefect.task_engine:run_task": "Prefect runs",
    "prefect.utilities.callables:call_with_parameters": "inherit",
    "tasks.tracking:*": "MLflow",
    "tasks.dvc:*": "DVC",
    "tasks.state:*": "private state",
    "unlearning.tabular.erasure:*": "table encoding",
    "tasks.kinds.tabular:Tabular.update": "update",
    "tasks.kinds.base:Kind.verification": "verification",
}
PREFECT_PHASES = ("Prefect server start", "Prefect server stop", "Prefect runs")
ROWS = ("process start", "imports", "Prefect server start", "Prefect runs", "Prefect server stop", "MLflow", "DVC",
        "private state", "table encoding", "update", "verification", "other", "process exit")


# --- the bootstrap, in the measured process ---------------------------------------------------------

class PhaseClock:
    """Exclusive time per phase on the main thread: a phase nested in another is subtracted from it."""

    def __init__(self):
        import threading
        from collections import defaultdict

        self.main = threading.main_thread()
        self.stack: list[list] = []  # [phase, started, time of nested phases]
        self.totals: dict[str, float] = defaultdict(float)
        self.threading = threading

    def enter(self, phase: str) -> bool:
        if self.threading.current_thread() is not self.main:
            return False
        if phase == "inherit":
            phase = next((p for p, _, _ in reversed(self.stack) if p not in PREFECT_PHASES), "other")
        self.stack.append([phase, time.perf_counter(), 0.0])
        return True

    def leave(self) -> None:
        phase, started, nested = self.stack.pop()
        elapsed = time.perf_counter() - started
        self.totals[phase] += elapsed - nested
        if self.stack:
            self.stack[-1][2] += elapsed

    def wrap(self, fn, phase: str):
        import functools

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.enter(phase):
                return fn(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        timed.__bench_timed__ = True
        return timed


def instrument(clock: PhaseClock, module) -> None:
    """Wrap the functions of `module` that TIMED names (a module is instrumented as it is imported,
    before anyone has copied its functions with `from module import name`)."""
    import types

    for target, phase in TIMED.items():
        name, _, qualname = target.partition(":")
        if name != module.__name__:
            continue
        if qualname == "*":
            for attr, value in list(vars(module).items()):
                if isinstance(value, types.FunctionType) and value.__module__ == name \
                        and not getattr(value, "__bench_timed__", False):
                    setattr(module, attr, clock.wrap(value, phase))
            continue
        owner, _, attr = qualname.rpartition(".")
        holder = getattr(module, owner, None) if owner else module
        fn = getattr(holder, attr, None) if holder is not None else None
        if fn is not None and not getattr(fn, "__bench_timed__", False):
            setattr(holder, attr, clock.wrap(fn, phase))


def child(out: Path, argv: list[str]) -> int:
    """Run `unlearn ARGV` in this process with the phases timed; write them to `out` at exit."""
    import atexit
    import importlib._bootstrap as bootstrap

    started = float(os.environ["BENCH_SPAWNED_AT"])
    clock = PhaseClock()
    clock.totals["process start"] = time.time() - started
    modules = {target.partition(":")[0] for target in TIMED}
    original = bootstrap._find_and_load

    def find_and_load(name, import_):
        entered = clock.enter("imports") if not clock.stack or clock.stack[-1][0] != "imports" else False
        try:
            module = original(name, import_)
        finally:
            if entered:
                clock.leave()
        if name in modules:
            instrument(clock, module)
        return module

    def report():  # registered first, so run last: after Prefect's own handlers stop its server
        while clock.stack:
            clock.leave()
        out.write_text(json.dumps({"phases": dict(clock.totals), "ended_at": time.time()}))

    atexit.register(report)
    bootstrap._find_and_load = find_and_load
    sys.argv = ["unlearn", *argv]
    clock.enter("other")
    from flows.cli import main

    try:
        return main()  # as the `unlearn` script calls it (sys.argv): the process ends as a user's does
    finally:
        clock.leave()


# --- the driver ---------------------------------------------------------------------------------------

def unlearn(code: Path, project: Path, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=project, env=env or child_env(code, project),
                          capture_output=True, text=True, **kw)


def child_env(code: Path, project: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "UNLEARN_ROOT": str(project)}
    for name in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # the project's own stores, as a user's first call meets them
    return env


def build_project(code: Path) -> Path:
    project = Path(tempfile.mkdtemp(prefix="overhead-"))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    for args in (("data", "add", "adult"), ("train", "adult")):
        done = unlearn(code, project, *args)
        if done.returncode:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return project


def write_request(project: Path, record: int) -> Path:
    path = project / f"r{record}.yaml"
    path.write_text(f"id: bench-{record}\nmodel: adult\ndelete_records: [{record}]\n")
    return path


def cold_call(code: Path, project: Path, record: int) -> dict:
    """One `unlearn forget --json` in a fresh process under the bootstrap: phases, wall, compute."""
    request, out = write_request(project, record), project / f"phases-{record}.json"
    env = {**child_env(code, project), "BENCH_SPAWNED_AT": repr(time.time())}
    spawned = float(env["BENCH_SPAWNED_AT"])
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--", "forget",
                           str(request), "--json"], cwd=project, env=env, capture_output=True, text=True)
    finished = time.time()
    if done.returncode != 0:
        raise SystemExit(f"forget failed ({done.returncode}):\n{done.stderr[-3000:]}")
    measured = json.loads(out.read_text())
    phases = measured["phases"]
    phases["process exit"] = max(0.0, finished - measured["ended_at"])
    summary = json.loads(done.stdout)
    return {"wall": finished - spawned, "phases": phases, "update_s": summary["timings"]["update_s"],
            "verify_s": summary["timings"]["verify_s"], "load": os.getloadavg()[0]}


def median_table(calls: list[dict]) -> dict:
    keys = set(ROWS) | {k for c in calls for k in c["phases"]}
    return {"phases": {k: statistics.median(c["phases"].get(k, 0.0) for c in calls) for k in keys},
            "wall": statistics.median(c["wall"] for c in calls),
            "update_s": statistics.median(c["update_s"] for c in calls),
            "verify_s": statistics.median(c["verify_s"] for c in calls),
            "load": statistics.mean(c["load"] for c in calls), "calls": len(calls)}


def print_cold(tables: dict[str, dict]) -> None:
    names = list(tables)
    print("\n(a) cold CLI: `unlearn forget REQ --json`, one Adult record, median of "
          f"{', '.join(str(t['calls']) for t in tables.values())} calls (s)")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for row in ROWS:
        print(f"| {row} | " + " | ".join(f"{t['phases'].get(row, 0.0):.2f}" for t in tables.values()) + " |")
    print("| **total wall** | " + " | ".join(f"**{t['wall']:.2f}**" for t in tables.values()) + " |")
    print("| beyond compute (wall − update − verification) | " + " | ".join(
        f"{t['wall'] - t['phases'].get('update', 0) - t['phases'].get('verification', 0):.2f}"
        for t in tables.values()) + " |")
    print("| load average (1 min) during the calls | " + " | ".join(f"{t['load']:.1f}" for t in tables.values()) + " |")


# --- the warm service ----------------------------------------------------------------------------------

def has_service(code: Path) -> bool:
    return (code / "flows" / "service.py").exists()


def warm_calls(code: Path, project: Path, records: list[int]) -> dict | None:
    """Wall of `unlearn forget --json` handed to a running `unlearn serve`; None when not available."""
    if not has_service(code):
        print(f"\n(b) warm service: skipped — {code} has no flows/service.py (`unlearn serve` with a socket)")
        return None
    env = child_env(code, project)
    serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    socket_path = project / ".unlearn" / "service.sock"
    try:
        deadline = time.monotonic() + 180
        while not socket_path.exists():
            if serve.poll() is not None or time.monotonic() > deadline:
                print(f"\n(b) warm service: skipped — `unlearn serve` did not open {socket_path} "
                      f"({(serve.stderr.read() if serve.poll() is not None else '') [-300:]!r})")
                return None
            time.sleep(0.5)
        calls = []
        for record in records:
            request = write_request(project, record)
            started = time.time()
            done = unlearn(code, project, "forget", str(request), "--json", env=env)
            wall = time.time() - started
            if done.returncode != 0:
                print(f"warm forget failed ({done.returncode}): {done.stderr[-500:]}")
                return None
            timings = json.loads(done.stdout)["timings"]
            calls.append({"wall": wall, "update_s": timings["update_s"], "verify_s": timings["verify_s"],
                          "load": os.getloadavg()[0]})
        return {"wall": statistics.median(c["wall"] for c in calls),
                "update_s": statistics.median(c["update_s"] for c in calls),
                "verify_s": statistics.median(c["verify_s"] for c in calls or [0]),
                "load": statistics.mean(c["load"] for c in calls), "calls": len(calls),
                "first_wall": calls[0]["wall"]}
    finally:
        os.killpg(serve.pid, 15)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, 9)


def print_warm(warm: dict) -> None:
    print(f"\n(b) warm service: `unlearn forget REQ --json` handed to `unlearn serve`, median of {warm['calls']} "
          f"calls (first call {warm['first_wall']:.2f} s)")
    print("| | s |\n|---|---:|")
    print(f"| total wall | {warm['wall']:.2f} |\n| update | {warm['update_s']:.3f} |\n| verification | "
          f"{warm['verify_s']:.2f} |\n| beyond compute | {warm['wall'] - warm['update_s'] - warm['verify_s']:.2f} |\n"
          f"| load average (1 min) | {warm['load']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold calls per checkout (default 3)")
    parser.add_argument("--before", type=Path, help="another checkout (e.g. /work/main) timed the same way, "
                        "its calls interleaved with this one's")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm service")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument("--project", type=Path, help="reuse a project kept by an earlier run (--keep)")
    parser.add_argument("--first-record", type=int, default=FIRST_RECORD, help="the first Adult record deleted "
                        f"(default {FIRST_RECORD}; a reused project needs records not deleted before)")
    args = parser.parse_args()
    codes = {"after": REPO, **({"before": args.before.resolve()} if args.before else {})}
    if args.project:
        project, args.keep = args.project.resolve(), True
    else:
        print(f"building the project (data add adult, train adult) with {REPO} ...", file=sys.stderr)
        project = build_project(REPO)
    record = args.first_record
    calls: dict[str, list[dict]] = {name: [] for name in codes}
    try:
        for i in range(args.repeats):
            for name, code in (codes.items() if i % 2 == 0 else reversed(list(codes.items()))):
                calls[name].append(cold_call(code, project, record))
                print(f"  {name} call {i + 1}: {calls[name][-1]['wall']:.2f} s", file=sys.stderr)
                record += 1
        tables = {name: median_table(found) for name, found in calls.items()}
        print_cold(tables)
        warm = None if args.no_warm else warm_calls(REPO, project, list(range(record, record + args.repeats + 1)))
        if warm:
            print_warm(warm)
        if args.json:
            args.json.write_text(json.dumps({"cold": tables, "warm": warm, "cores": os.cpu_count()}, indent=2))
    finally:
        if args.keep:
            print(f"project kept at {project}", file=sys.stderr)
        else:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(Path(sys.argv[2]), sys.argv[4:]))
    main()
