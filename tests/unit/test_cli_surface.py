"""What a user meets before any flow runs: help on every option, `--version`, the code version
recorded in lineage, the Prefect UI command, run names, progress of long steps, and no
import-time changes to the process environment."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from flows.cli import build_parser, main
from flows.compliance_cli import EXIT_FAILED, EXIT_OK
from flows.demo_cli import demo_exit, prefect_ui_command
from flows.runs import requests_label
from tasks import version as code
from unlearning import references
from unlearning.text import charlm

REPO = Path(__file__).resolve().parents[2]


def options_without_help(parser: argparse.ArgumentParser, path: str = "unlearn") -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{path} {name} (the subcommand)")
                missing += options_without_help(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_subcommand_has_help():
    assert options_without_help(build_parser()) == []


def numeric_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(subcommand path, option) of every option that takes a number."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += numeric_options(sub, (*path, name))
        elif action.option_strings and getattr(action.type, "__name__", "") in ("int", "float", "whole_number",
                                                                                  "real_number"):
            found.append((path, action.option_strings[-1]))
    return found


@pytest.mark.parametrize("written", ["\u0663", "\uff13", "1_000"])  # Arabic-Indic 3, full-width 3, an underscore
def test_every_numeric_option_reads_numbers_as_written(written, capsys):
    options = numeric_options(build_parser())
    assert len(options) >= 15  # train's, data add's, demo's, ui's, model import's
    for path, option in options:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, *(["x"] * 2), option, written])
        assert exit_.value.code == 2, (path, option)
        assert "ASCII digits" in capsys.readouterr().err, (path, option)


@pytest.mark.parametrize("argv, usage", [
    (["forget", "r.yaml", "--bogus", "1"], "unlearn forget"),
    (["requests", "submit", "r.yaml", "--bogus"], "unlearn requests submit"),
    (["--bogus", "forget", "r.yaml"], "unlearn"),
])
def test_an_unrecognized_argument_points_at_the_usage_of_the_command_that_refused_it(argv, usage, capsys):
    """argparse refuses a sub-command's unrecognized arguments in the top parser: the line said
    `see \`unlearn --help\``, whose usage lists no option of `forget` (review, session 21)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.endswith(f"; see `{usage} --help`\n"), err


def test_parsed_arguments_carry_nothing_of_the_refusal_bookkeeping():
    assert not [key for key in vars(build_parser().parse_args(["forget", "r.yaml"])) if key.startswith("_")]


def test_version_names_the_package_version_and_the_commit_of_the_code(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = f"unlearn (unlearnflow) {version('unlearnflow')}"
    expected += f", commit {commit.stdout.strip()}" if commit.returncode == 0 else ", no git commit"
    assert capsys.readouterr().out.startswith(expected)


def test_the_code_version_is_the_package_version_plus_the_commit_never_the_word_head(tmp_path):
    no_commits = tmp_path / "fresh"
    no_commits.mkdir()
    subprocess.run(["git", "init", "-q", str(no_commits)], check=True)
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    for folder in (no_commits, not_a_repo):
        assert code.commit_of(folder) is None
        from tasks import tracking

        assert tracking.git_commit(folder) == "unknown"  # was "HEAD" in a repository without commits
    release, _, commit = code.code_version().partition("+")
    assert release == version("unlearnflow") and "HEAD" not in code.code_version()
    assert commit == (code.commit_of(REPO) or "")


def test_the_prefect_ui_serves_the_projects_flow_runs_with_its_api_url(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    cmd, env = prefect_ui_command(4321)
    assert cmd[1:] == ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4321",
                       "--no-services", "--analytics-off"]
    assert env["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api" and "PREFECT_API_URL" not in env


def test_a_run_name_lists_request_ids_within_its_bound():
    assert requests_label(["PAT-001"]) == "PAT-001"
    assert requests_label(["PAT-001", "PAT-002"]) == "PAT-001, PAT-002"
    many = [f"PAT-{i:03d}" for i in range(100)]
    label = requests_label(many, limit=60)
    assert len(label) <= 60 and label.startswith("PAT-000, PAT-001") and label.endswith(" more")
    shown = label.split(" +")[0].split(", ")
    assert label.endswith(f"+{100 - len(shown)} more")
    assert requests_label(["X" * 500], limit=60) == "X" * 60


def test_importing_the_tracking_module_leaves_the_environment_alone():
    probe = ("import os, json; os.environ.pop('MLFLOW_DISABLE_TELEMETRY', None); import tasks.tracking as t; "
             "before = os.environ.get('MLFLOW_DISABLE_TELEMETRY'); t.quiet(); "
             "from mlflow.telemetry.client import get_telemetry_client; "
             "print(json.dumps([before, os.environ.get('MLFLOW_DISABLE_TELEMETRY'), get_telemetry_client() is None]))")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "PYTEST_CURRENT_TEST")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [None, "true", True]


def test_retraining_a_reference_reports_its_epochs_on_stderr(capsys):
    from tasks import references as prefetch

    text = "the quick brown fox jumps over the lazy dog. " * 8
    vocab = charlm.Vocab.from_text(text)
    model = charlm.CharLSTM.from_preset("tiny", len(vocab), seed=0)
    windows = charlm.windows(vocab.encode(text), 16)
    job = references.text_job(model.config, {"steps": 3 * (len(windows) // 8), "lr": 3e-3, "batch": 8, "seed": 0},
                              windows)
    torch.manual_seed(0)
    prefetch.obtain(job, "  verify: retraining a reference language model ...")
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and lines[0] == "  verify: retraining a reference language model ..."
    epochs = [line for line in lines[1:] if line.startswith("    epoch ")]
    assert len(epochs) >= 2, lines  # one line per finished epoch (the last one ends the training)


@pytest.mark.parametrize("verified,audit,code", [
    (True, {"passed": True}, EXIT_OK), (True, None, EXIT_OK),
    (True, {"passed": None}, EXIT_OK),  # undecided: `unlearn audit` exits 0 too
    (True, {"passed": False}, EXIT_FAILED),  # the audit promoted the retrained model, as `unlearn audit` exits 1
    (False, {"passed": True}, EXIT_FAILED), (False, None, EXIT_FAILED)])
def test_the_demo_exits_as_its_request_and_its_audit_ended(verified, audit, code):
    assert demo_exit({"verified": verified, "audit": audit}) == code
