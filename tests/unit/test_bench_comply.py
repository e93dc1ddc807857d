"""bench.comply imports without side effects, parses its options, refuses bad ones with exit 2, and
its "same results" comparison ignores where a reference was timed but nothing else."""

import os

import pytest

from bench import comply


def test_defaults_run_inline_first_and_one_worker_per_model_up_to_the_cores():
    args = comply.parse_args([])
    assert args.scenarios == ["tabular", "images"]
    assert args.runners == ["inline", "dask"]
    assert args.workers == min(2, os.cpu_count() or 1)
    args = comply.parse_args(["--runners", "dask", "--models", "3", "--workers", "2"])
    assert args.runners == ["inline", "dask"] and args.models == 3 and args.workers == 2


@pytest.mark.parametrize("argv", [["--scenarios", "audio"], ["--runners", "ray"], ["--runners", "threads"], ["--models", "0"],
                                  ["--workers", "0"], ["--epochs", "0"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        comply.parse_args(argv)
    assert stop.value.code == 2
    assert "bench.comply" in capsys.readouterr().err


def test_same_results_ignores_reference_timing_only():
    facts = {"R1": {"verified": True, "model_version": "2", "fidelity": {"agreement": 1.0}, "checks": [],
                    "retrain_s": 3.0}}
    inline = {"facts": facts}
    timed_elsewhere = {"facts": {"R1": {**facts["R1"], "retrain_s": 9.0}}}
    other_metric = {"facts": {"R1": {**facts["R1"], "fidelity": {"agreement": 0.99}}}}
    assert comply.same_results(timed_elsewhere, inline)
    assert not comply.same_results(other_metric, inline)
