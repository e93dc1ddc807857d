"""Exposure (science.md §3): the rank on synthetic log-perplexities, the skew-normal extrapolation,
candidate spaces, and the batched teacher-forced log-perplexity against a one-sequence reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from unlearning.text.exposure import (
    FormatSpace,
    exposure,
    extrapolated_exposure,
    log_perplexities,
    log_perplexity,
    rank_exposure,
)
from unlearning.text.charlm import CharLSTM, Vocab


# --- rank -----------------------------------------------------------------------------------------

def test_secret_best_of_all_has_maximal_exposure():
    refs = np.arange(1.0, 16.0) + 10  # R \ {s}: 15 others, |R| = 16
    assert rank_exposure(5.0, refs, space_bits=4) == 4.0


def test_secret_worst_of_all_has_zero_exposure():
    refs = np.arange(15.0)  # all 15 others are more likely
    assert rank_exposure(100.0, refs, space_bits=4) == 0.0


def test_secret_at_the_median_has_one_bit():
    refs = np.arange(1023.0)  # |R| = 1024, the secret strictly between 511 and 512 others
    assert rank_exposure(511.5, refs, space_bits=10) == pytest.approx(10 - math.log2(513), abs=1e-12)
    assert rank_exposure(511.5, refs, space_bits=10) == pytest.approx(1.0, abs=0.01)


def test_rank_counts_strictly_smaller_so_ties_favour_the_secret():
    # |R| = 6: one candidate strictly more likely, three tied with the secret → rank 2
    refs = [1.0, 2.0, 2.0, 2.0, 3.0]
    assert rank_exposure(2.0, refs, space_bits=math.log2(6)) == pytest.approx(math.log2(6) - 1)
    # a model that cannot tell candidates apart: every one of them is "first"
    assert rank_exposure(7.0, [7.0] * 63, space_bits=6) == 6.0


def test_enumeration_may_include_the_secret_itself():
    refs = np.arange(16.0)  # all of R, the secret's own value 3.0 among them
    assert rank_exposure(3.0, refs, space_bits=4) == pytest.approx(4 - math.log2(4))


def test_never_seen_secret_has_expected_exposure_one_over_ln2():
    """Averaged over every member of R taken as the secret, exposure = log₂N − log₂(N!)/N → 1/ln 2."""
    rng = np.random.default_rng(0)
    N = 4096
    lps = rng.normal(200, 15, N)
    values = [rank_exposure(lps[i], np.delete(lps, i), space_bits=12) for i in range(N)]
    exact = 12 - math.lgamma(N + 1) / math.log(2) / N
    assert np.mean(values) == pytest.approx(exact, abs=1e-9)
    assert np.mean(values) == pytest.approx(1 / math.log(2), abs=0.01)


def test_interpolation_from_a_sample():
    sample = np.concatenate([np.full(10, 1.0), np.full(990, 100.0)])  # 1 % of R below the secret
    got = rank_exposure(50.0, sample, space_bits=40)
    assert got == pytest.approx(40 - math.log2(1 + 2**40 * 0.01), abs=1e-9)  # ≈ log₂ 100
    assert got == pytest.approx(math.log2(100), abs=1e-6)
    assert rank_exposure(0.5, sample, space_bits=40) == 40.0  # below the whole sample: max, capped
    assert rank_exposure(500.0, sample, space_bits=40) == 0.0


# --- extrapolation --------------------------------------------------------------------------------

def test_extrapolation_matches_the_normal_tail_and_is_capped():
    refs = np.random.default_rng(1).normal(200, 15, 20_000)
    assert extrapolated_exposure(200.0, refs, 53.2) == pytest.approx(1.0, abs=0.05)
    two_sigma = -math.log2(stats.norm.cdf(-2))
    assert extrapolated_exposure(170.0, refs, 53.2) == pytest.approx(two_sigma, abs=0.3)
    # memorised: far in the left tail; uncapped this would be hundreds of bits
    assert extrapolated_exposure(6.5, refs, 53.2) == 53.2
    assert extrapolated_exposure(400.0, refs, 53.2) == pytest.approx(0.0, abs=1e-6)


def test_extrapolation_fits_skew():
    a, loc, scale = 4.0, 150.0, 40.0
    refs = stats.skewnorm.rvs(a, loc=loc, scale=scale, size=20_000, random_state=2)
    x = 160.0
    want = -stats.skewnorm.logcdf(x, a, loc=loc, scale=scale) / math.log(2)
    assert extrapolated_exposure(x, refs, 100.0) == pytest.approx(want, rel=0.05)


# --- candidate spaces -----------------------------------------------------------------------------

def test_format_space_of_a_card():
    space = FormatSpace.of("4539 1488 0343 6467")
    assert space.template == "#### #### #### ####"
    assert space.bits == pytest.approx(16 * math.log2(10))  # 53.15
    sample = space(500, np.random.default_rng(0))
    assert len(sample) == 500 and len(set(sample)) == 500
    assert all(len(s) == 19 and s[4] == s[9] == s[14] == " " and s.replace(" ", "").isdigit() for s in sample)


def test_format_space_enumerates_small_spaces():
    space = FormatSpace.of("a-7")
    members = list(space.enumerate())
    assert len(members) == 260 == round(2**space.bits)
    assert len(set(members)) == 260 and "q-3" in members


# --- log-perplexity -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm():
    vocab = Vocab.from_text("abcdefghij 0123456789-:")
    model = CharLSTM.from_config(dict(vocab_size=len(vocab), embed=8, hidden=16, layers=2), seed=3)
    return model.eval(), vocab


def reference_bits(model, vocab, prefix, candidate):
    """One forward pass over prefix+candidate, summing log₂ p of the candidate's characters."""
    ids = vocab.encode(prefix + candidate)[None]
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    logp = F.log_softmax(logits[0], dim=-1)  # (P+L−1, V)
    pos = torch.arange(len(prefix) - 1, len(prefix) + len(candidate) - 1)
    return float(-logp[pos, ids[0, pos + 1]].sum()) / math.log(2)


def test_batched_log_perplexities_equal_one_sequence_reference(lm):
    model, vocab = lm
    cands = ["0123", "9", "55-55", "ab", "7777", "x1"]  # mixed lengths; 'x' is unknown
    got = log_perplexities(model, vocab, "code: ", cands, batch=2)
    want = [reference_bits(model, vocab, "code: ", c) for c in cands]
    assert got.tolist() == pytest.approx(want, abs=1e-4)
    assert log_perplexity(model, vocab, "code: ", "55-55") == pytest.approx(want[2], abs=1e-4)


def test_log_perplexity_needs_a_prefix(lm):
    with pytest.raises(ValueError, match="prefix"):
        log_perplexities(lm[0], lm[1], "", ["1"])


def test_exposure_exact_path_agrees_with_the_rank_of_an_enumeration(lm):
    model, vocab = lm
    space = FormatSpace("###")
    rep = exposure(model, vocab, "pin ", "042", space, n_candidates=1000)
    assert rep.method == "exact" and rep.n_references == 999
    lps = log_perplexities(model, vocab, "pin ", list(space.enumerate())).numpy()
    s = lps[42]
    assert rep.secret_lp == pytest.approx(s, abs=1e-6)
    assert rep.exposure == pytest.approx(3 * math.log2(10) - math.log2(1 + np.sum(lps < s)), abs=1e-9)


def test_small_spaces_are_enumerated_even_beyond_the_sample_size(lm):
    model, vocab = lm
    rep = exposure(model, vocab, "pin ", "0420", n_candidates=100)  # |R| = 10⁴ ≤ exact_up_to
    assert rep.method == "exact" and rep.n_references == 9999


def test_exposure_extrapolates_large_spaces(lm):
    model, vocab = lm
    rep = exposure(model, vocab, "pin ", "0420 1234", n_candidates=500, seed=1)
    assert rep.method == "extrapolation" and rep.space_bits == pytest.approx(8 * math.log2(10))
    assert 0.0 <= rep.exposure <= rep.space_bits and rep.n_references == 500


def test_a_failed_fit_falls_back_to_the_rank():
    from unlearning.text.exposure import SkewNormalFit

    refs = np.arange(100.0)
    got = extrapolated_exposure(-1.0, refs, 20.0, fit=SkewNormalFit(float("nan"), 0.0, 1.0))
    assert got == rank_exposure(-1.0, refs, 20.0) == 20.0
