"""bench/device.py runs where it can: a device the machine lacks is one line (exit 2), and the
GPT-style row says it is not available when unlearning.text.hf is not installed, instead of failing."""

from __future__ import annotations

import sys

import pytest
import torch

from bench import device as bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_device_is_one_line(capsys):
    assert bench.main(["--device", "cuda", "--scenarios", "images"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "CUDA is not available" in err


def test_the_gpt_row_is_skipped_without_the_hf_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "unlearning.text.hf", None)  # as if the module were absent
    assert bench.main(["--device", "cpu", "--scenarios", "hf"]) == 0
    out = capsys.readouterr().out
    assert "hf: not available" in out
    assert "| scenario | device |" in out  # the table is still printed (here without rows)
