"""trace_stats on crafted traces with known answers; plots."""

import numpy as np
import pytest

from specroll.traces import (
    Trace,
    TraceMeta,
    intraclass_correlation,
    plot_trace,
    synthesize,
    top_share,
    trace_stats,
)


def _trace(step, pid, lengths, cap):
    n = len(lengths)
    sample = np.zeros(n, dtype=np.int32)
    keys = {}
    for i, k in enumerate(zip(step, pid)):
        sample[i] = keys.get(k, 0)
        keys[k] = sample[i] + 1
    lengths = np.asarray(lengths)
    return Trace.from_columns(TraceMeta(max_response_len=cap), dict(
        step=step, prompt_id=pid, sample=sample, prompt_len=np.ones(n), response_len=lengths,
        finished=lengths < cap))


def test_quantiles_clip_and_token_share():
    lengths = np.arange(1, 101)  # 1..100, cap 100: one rollout clipped
    t = _trace(np.zeros(100, int), np.arange(100), lengths, cap=100)
    s = trace_stats(t)
    assert s["count"] == 100 and s["max"] == 100 and s["cap"] == 100
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    assert s["clip_ratio"] == pytest.approx(0.01)
    # longest 10 rollouts: 91..100 = 955 of 5050 tokens
    assert s["top10_token_share"] == pytest.approx(955 / 5050)
    assert np.isnan(s["rank_mover_fraction"])  # a single step


def test_icc_perfect_and_zero():
    groups = np.repeat(np.arange(50), 4)
    perfect = np.repeat(np.linspace(1, 5, 50), 4)
    assert intraclass_correlation(perfect, groups) == pytest.approx(1.0)
    # identical group means, all variance within groups -> ICC <= 0 (estimator can go negative)
    within = np.tile([1.0, 2.0, 3.0, 4.0], 50)
    assert intraclass_correlation(within, groups) <= 0.0


def test_rank_movers_known_answer():
    # 8 prompts, 1 sample each; step 1 swaps the shortest and the longest prompt: 2 of 8 move
    base = np.array([10, 20, 30, 40, 50, 60, 70, 80])
    moved = base.copy()
    moved[[0, 7]] = moved[[7, 0]]
    step = np.repeat([0, 1], 8)
    pid = np.tile(np.arange(8), 2)
    t = _trace(step, pid, np.concatenate([base, moved]), cap=1000)
    s = trace_stats(t)
    assert s["rank_mover_fraction"] == pytest.approx(2 / 8)
    assert np.isnan(s["within_group_icc"])  # one sample per group: undefined
    assert s["mean_len_first_step"] == s["mean_len_last_step"] == 45


def test_top_share_minimum_one():
    assert top_share(np.array([1, 1, 8]), 0.01) == pytest.approx(0.8)


def test_plots_written(tmp_path):
    paths = plot_trace(synthesize("tiny", seed=0), tmp_path / "plots")
    assert [p.name for p in paths] == ["lengths_hist.png", "lengths_by_step.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = sorted(x.name for x in (tmp_path / "plots").iterdir())
    assert names == ["lengths_by_step.png", "lengths_hist.png"]  # no temp files left
