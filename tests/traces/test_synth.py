"""Synthetic presets: determinism and the statistical properties each preset must show."""

import hashlib

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.traces import PRESETS, read_trace, synthesize, synthesize_to_file, trace_stats, with_overrides


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_bit_identical_files(tmp_path):
    a = tmp_path / "a.parquet"
    b = tmp_path / "b.parquet"
    synthesize_to_file(a, "math-16k", prompts=64, steps=3, seed=7)
    synthesize_to_file(b, "math-16k", prompts=64, steps=3, seed=7)
    assert _sha(a) == _sha(b)
    synthesize_to_file(b, "math-16k", prompts=64, steps=3, seed=8)
    assert _sha(a) != _sha(b)


def test_streamed_file_equals_in_memory_trace(tmp_path):
    path = tmp_path / "s.parquet"
    rows = synthesize_to_file(path, "tiny", seed=3)
    back = read_trace(path)
    mem = synthesize("tiny", seed=3)
    assert rows == len(mem) == len(back)
    assert back.table.equals(mem.table)
    assert back.meta == mem.meta


def test_steps_do_not_depend_on_total_steps():
    # each step has its own random stream: a longer run extends a shorter one
    short = synthesize("tiny", steps=2, seed=5)
    long = synthesize("tiny", steps=4, seed=5)
    assert np.array_equal(short.column("response_len"), long.select(step=[0, 1]).column("response_len"))


@pytest.mark.parametrize("name", ["math-16k", "code-8k", "reasoning-32k"])
def test_preset_statistical_properties(name):
    preset = PRESETS.get(name)
    trace = synthesize(name, prompts=1500, steps=5, seed=11)
    s = trace_stats(trace)
    assert trace.max_response_len == preset.max_response_len
    assert s["count"] == 1500 * preset.samples * 5
    # right-skewed, p99/p50 of an order of magnitude
    assert s["mean"] > 1.3 * s["p50"]
    assert 7 <= s["p99_over_p50"] <= 16
    # hard cap with non-trivial mass at it
    assert s["max"] == preset.max_response_len
    assert 0.01 <= s["clip_ratio"] <= 0.05
    # a few percent of requests carry a large share of the tokens
    assert s["top5_token_share"] >= 0.22 and s["top10_token_share"] >= 0.35
    # strong within-group correlation
    assert s["within_group_icc"] >= 0.5
    # stable ranks with a few movers
    assert s["rank_corr"] >= 0.8
    assert 0.01 <= s["rank_mover_fraction"] <= 0.12
    # slow upward drift of the scale
    assert 1.0 < s["mean_len_last_step"] / s["mean_len_first_step"] < 1.1


def _modes(lengths, bins=60):
    """Number of local maxima of a smoothed histogram of log length."""
    hist, _ = np.histogram(np.log(lengths), bins=bins)
    smooth = np.convolve(hist, np.ones(5) / 5, mode="same")
    peaks = (smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]) & (smooth[1:-1] > 0.2 * smooth.max())
    return int(peaks.sum())


def test_math_preset_is_multimodal():
    # two well separated modes when the within-mode spread is small; the preset is a blend of them
    sharp = with_overrides(PRESETS.get("math-16k"), sigma_prompt=0.2, sigma_within=0.2, runaway_rate=0.0)
    lengths = synthesize(sharp, prompts=2000, steps=1, seed=1).column("response_len")
    assert _modes(lengths) >= 2
    preset_lengths = synthesize("math-16k", prompts=2000, steps=1, seed=1).column("response_len")
    # the preset's mixture is wider than either single mode would make it
    single = with_overrides(PRESETS.get("math-16k"), mode_weights=(1.0,), mode_medians=(1500.0,))
    single_lengths = synthesize(single, prompts=2000, steps=1, seed=1).column("response_len")
    assert np.log(preset_lengths).std() > np.log(single_lengths).std()


def test_tiny_preset_is_small_and_valid():
    t = synthesize("tiny", seed=0)
    assert len(t) == 32 * 4 * 4 and t.max_response_len == 512
    assert (t.column("response_len") >= 1).all()


def test_bad_arguments():
    with pytest.raises(SpecrollError, match="unknown trace preset"):
        synthesize("nope")
    with pytest.raises(SpecrollError, match="prompts must be >= 1"):
        synthesize("tiny", prompts=-1)
    with pytest.raises(SpecrollError, match="unknown preset parameter"):
        with_overrides(PRESETS.get("tiny"), bogus=1)
