"""make_timing_step: times the engine's forward on batches of given query and context lengths."""

from __future__ import annotations

import pytest
import torch

from calibration import MODEL_SHAPES
from real_backend import make_timing_step
from specroll.errors import SpecrollError


@pytest.fixture(scope="module")
def step():
    return make_timing_step("smollm2-135m", "cpu", "float32", max_batch=3, max_ctx=64, random_weights=True)


def test_runs_the_model_forward_and_reports_its_shape(step, monkeypatch):
    assert step.shape == MODEL_SHAPES.get("smollm2-135m")
    calls = []
    real_forward = step.model.forward

    def spy(tokens, slots, start, cache, **kw):
        calls.append((tuple(tokens.shape), start.tolist()))
        return real_forward(tokens, slots, start, cache, **kw)

    monkeypatch.setattr(step.model, "forward", spy)
    seconds = step.run([1, 4, 2], [10, 0, 33])
    assert isinstance(seconds, float) and seconds > 0
    # One forward, rows right-padded to the longest query, starting at each row's context length.
    assert calls == [((3, 4), [10, 0, 33])]


@pytest.mark.slow  # drawing 0.5 B random weights takes several seconds on 2 cores
def test_random_weight_timing_shape_of_a_bigger_model():
    step = make_timing_step("qwen2.5-0.5b", "cpu", "float32", max_batch=1, max_ctx=16, random_weights=True)
    assert step.shape == MODEL_SHAPES.get("qwen2.5-0.5b")
    assert step.model.cfg.qkv_bias
    assert step.run([2], [5]) > 0


@pytest.mark.parametrize("q, c", [([1, 1], [3]), ([], []), ([1] * 4, [0] * 4), ([0], [3]), ([8], [60])])
def test_bad_batches_are_clear_errors(step, q, c):
    with pytest.raises(SpecrollError):
        step.run(q, c)


def test_bad_arguments():
    with pytest.raises(SpecrollError, match="unknown model"):
        make_timing_step("gpt-17", random_weights=True)
    with pytest.raises(SpecrollError, match="no trained weights"):
        make_timing_step("qwen2.5-7b", random_weights=False, max_ctx=16)
    if not torch.cuda.is_available():
        with pytest.raises(SpecrollError, match="CUDA"):
            make_timing_step("smollm2-135m", device="cuda", random_weights=True, max_ctx=16)


def test_each_timed_step_samples_every_query_position_like_the_engine(step, monkeypatch):
    import real_backend._sampling as sampling

    seen = []

    def spy(logits, seed, keys, positions, temperature, top_p):
        seen.append((tuple(logits.shape[:2]), positions.tolist(), temperature))
        return torch.zeros(logits.shape[:2], dtype=torch.int64)

    monkeypatch.setattr(sampling, "keyed_sample", spy)
    step.run([1, 3], [5, 0])
    # (n, q_max) rows sampled at the workload's temperature, at each row's own positions.
    assert seen == [((2, 3), [[5, 6, 7], [0, 1, 2]], 0.7)]
    seen.clear()
    step.temperature = None  # the forward alone
    try:
        step.run([1, 3], [5, 0])
    finally:
        step.temperature = 0.7
    assert seen == []
