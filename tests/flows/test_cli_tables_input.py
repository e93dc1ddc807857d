"""Bad tables and bad `train` options (issue 11, item 7): one line on stderr naming the problem
and what to give instead, exit 2, nothing written; staging folders never outlive their writer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tests.flows.conftest import synthetic_people
from tests.flows.test_cli_bad_input import run_bad, snapshot, trained  # noqa: F401 — fixture
from unlearning.tabular.data import MIN_TRAIN_ROWS, _in_train
from unlearning.tabular.files import MAX_CATEGORIES, MAX_PARAMETERS


def table_file(tmp_path: Path, frame: pd.DataFrame, name: str = "table.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def add(path: Path, name: str = "more", *extra: str) -> list[str]:
    return ["data", "add", name, "--file", str(path), "--target", "label", *extra]


def staging_left(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data").iterdir() if p.name.startswith("."))


def small_people(n: int) -> pd.DataFrame:
    """n people with both labels (a one-class table is refused for that reason instead)."""
    return synthetic_people(n).assign(label=[("no", "yes")[i % 2] for i in range(n)])


def people_with_held_out_only_label() -> pd.DataFrame:
    """40 people; one held-out record (by the id-hash split) carries a label no training row has."""
    frame = synthetic_people(40)
    held_out = next(i for i, pid in enumerate(frame["person"]) if not _in_train(pid))
    frame.loc[held_out, "label"] = "maybe"
    return frame


@pytest.mark.parametrize("frame, expect", [
    (small_people(2), "too small to train and evaluate"),
    (small_people(MIN_TRAIN_ROWS - 1), "too small to train and evaluate"),
    (people_with_held_out_only_label(), "label 'maybe' occurs only among the held-out rows"),
], ids=["2 rows", "fewer training rows than the minimum", "a label absent from training"])
def test_data_add_refuses_a_table_too_small_to_train(trained, capsys, tmp_path, frame, expect):
    run_bad(trained, capsys, add(table_file(tmp_path, frame), "more", "--id", "person"), expect)


def test_train_refuses_a_stored_table_too_small_to_train(trained, capsys):
    """A table that is too small when it reaches `train` (stored by an older version, or shrunk by
    erasures) is refused before any run is recorded: the 2-row table used to be promoted with NaN
    test accuracy."""
    from tasks.dvc import add_data
    from unlearning.tabular.data import save_table
    from unlearning.tabular.files import table_from_frame

    save_table(table_from_frame("tiny", small_people(2), "label", "person"), trained / "data" / "tiny")
    add_data(trained)
    run_bad(trained, capsys, ["train", "tiny"], "too small to train and evaluate")


def test_refuse_unmeasured_metrics():
    from flows.train import refuse_unmeasured
    from unlearning.errors import UnlearnError

    refuse_unmeasured("people", {"test_accuracy": 0.8, "train_accuracy": 1.0})
    with pytest.raises(UnlearnError, match="test_accuracy could not be measured"):
        refuse_unmeasured("people", {"test_accuracy": float("nan"), "train_accuracy": 1.0})


def wide_numeric(n_columns: int, rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, n_columns)).round(3), columns=[f"x{i}" for i in range(n_columns)])
    return frame.assign(person=[f"P{i}" for i in range(rows)], label=rng.choice(["no", "yes"], rows))


def wide_categorical(rows: int = 400) -> pd.DataFrame:
    """Few columns, but their categories expand past MAX_PARAMETERS one-hot columns."""
    per_column = MAX_CATEGORIES - 1
    n_columns = MAX_PARAMETERS // per_column + 1
    rng = np.random.default_rng(1)
    columns = {f"c{j}": [f"v{v}" for v in rng.permutation(np.arange(rows) % per_column)] for j in range(n_columns)}
    return pd.DataFrame(columns).assign(person=[f"P{i}" for i in range(rows)], label=rng.choice(["no", "yes"], rows))


def test_data_add_refuses_a_table_too_wide_quickly(trained, capsys, tmp_path):
    """The 10,000-column table ran > 400 s and left data/.wide.new-*: now refused before any
    per-column work, within seconds."""
    path = table_file(tmp_path, wide_numeric(10_000))
    started = time.perf_counter()
    run_bad(trained, capsys, add(path, "wide", "--id", "person"), f"at most {MAX_PARAMETERS - 1}")
    assert time.perf_counter() - started < 20  # measured ~2 s, mostly reading the CSV
    assert staging_left(trained) == []


def test_data_add_names_the_categorical_columns_that_make_a_table_too_wide(trained, capsys, tmp_path):
    path = table_file(tmp_path, wide_categorical())
    run_bad(trained, capsys, add(path, "wide", "--id", "person"), f"(at most {MAX_PARAMETERS}); widest text columns: 'c")


def test_data_add_suggests_id_for_an_id_like_column(trained, capsys, tmp_path):
    """The typical user error: the id column not given, so it is read as a categorical feature."""
    frame = synthetic_people().assign(person=[f"P{i}" for i in range(600)])
    run_bad(trained, capsys, add(table_file(tmp_path, frame), "more"), "looks like an id: pass it as the id column "
            "with --id person")


def test_failed_save_and_dead_writers_leave_no_staging(trained, capsys, tmp_path, monkeypatch):
    """A save that fails mid-way removes its staging folder; one left by a killed writer (a pid that
    is gone) is removed by the next command, and a table parked by a writer killed between its two
    renames is put back."""
    import unlearning.tabular.data as tables
    from unlearning.tabular.files import table_from_frame

    data = trained / "data"
    csv = table_file(tmp_path, synthetic_people(60), "fresh.csv")

    def disk_full(staging, directory):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(tables, "swap_in", disk_full)
        with pytest.raises(OSError):
            tables.save_table(table_from_frame("fresh", synthetic_people(60), "label", "person"),
                              data / "fresh")
    assert staging_left(trained) == [] and not (data / "fresh").exists()

    child = os.fork()  # a pid that certainly existed and is now gone
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    (data / f".people.new-{child}-abc").mkdir()
    (data / f".people.new-{child}-abc" / "records.csv").write_text("half written")
    legacy = data / ".people.new-k2j3h4"  # named by an older version: no pid, an hour old
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    live = data / f".people.new-{os.getppid()}-xyz"  # a writer still running: left alone
    live.mkdir()
    assert main(add(csv, "fresh", "--id", "person")) == 0
    assert staging_left(trained) == [live.name]
    live.rmdir()

    # killed between the renames: data/fresh is missing, the old table is parked in .fresh.old-*
    parked = data / f".fresh.old-{child}-def"
    parked.mkdir()
    os.replace(data / "fresh", parked / "table")
    from tasks.data import load_dataset

    assert len(load_dataset(trained, "fresh").frame) == 60
    assert staging_left(trained) == []


@pytest.mark.parametrize("argv, expect", [
    (["--lam", "-1"], "option --lam: -1.0 is not > 0.0; use a finite number > 0.0 (default 0.001)"),
    (["--lam", "inf"], "option --lam: inf is not a finite number"),
    (["--delta", "2"], "option --delta: 2.0 is not < 1.0"),
    (["--epsilon", "0"], "option --epsilon: 0.0 is not > 0.0"),
    (["--budget", "nan"], "option --budget: nan is not a finite number"),
    (["--seed", "-3"], "option --seed: -3 is not >= 0; use a whole number >= 0 (default 0)"),
    (["--seconds", "-1"], "option --seconds: -1.0 is not > 0.0"),
], ids=["negative lam", "infinite lam", "delta above 1", "zero epsilon", "nan budget", "negative seed",
        "negative seconds"])
def test_bad_train_options_say_what_to_fix(trained, capsys, argv, expect):
    os.chdir(trained)
    capsys.readouterr()
    before = snapshot(trained)
    assert main(["train", "people", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err.removeprefix('error: ')}" and "\n" not in err
    assert expect in err, err
    assert "pydantic" not in err and "further information" not in err and "http" not in err
    assert snapshot(trained) == before
