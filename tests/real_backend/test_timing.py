"""make_timing_step: times the engine's forward on batches of given query and context lengths."""

from __future__ import annotations

import pytest
import torch

from specroll.calibration import MODEL_SHAPES
from specroll.core.errors import SpecrollError
from specroll.real_backend import make_timing_step


@pytest.fixture(scope="module")
def step():
    return make_timing_step("smollm2-135m", "cpu", "float32", max_batch=3, max_ctx=64, random_weights=True)


def _spy_forward(step, monkeypatch):
    calls = []
    real_forward = step.model.forward

    def spy(tokens, slots, start, cache, **kw):
        calls.append((tuple(tokens.shape), start.tolist()))
        return real_forward(tokens, slots, start, cache, **kw)

    monkeypatch.setattr(step.model, "forward", spy)
    return calls


def _spy_sampler(step, monkeypatch):
    """Record what the engine samples (the engine is built on the first run)."""
    step.run([1], [1])
    engine = step._engine
    seen = []
    real = engine.sampler

    def spy(logits, seed, keys, positions, temperature, top_p):
        seen.append((tuple(logits.shape[:2]), positions.tolist(), temperature))
        return real(logits, seed, keys, positions, temperature, top_p)

    monkeypatch.setattr(engine, "sampler", spy)
    return seen


def test_engine_mode_times_the_engines_verify_iteration(step, monkeypatch):
    assert step.shape == MODEL_SHAPES.get("smollm2-135m")
    seen = _spy_sampler(step, monkeypatch)
    calls = _spy_forward(step, monkeypatch)
    seconds = step.run([1, 4, 2], [10, 0, 33])
    assert isinstance(seconds, float) and seconds > 0
    # One forward, rows right-padded to the longest query (k_i = q_i - 1 scripted drafts), starting
    # at each row's context length; then every query position sampled at the workload temperature.
    assert calls == [((3, 4), [10, 0, 33])]
    assert seen == [((3, 4), [[1, 2, 3, 4]] * 3, 0.7)]


def test_engine_mode_prices_a_prefill_as_the_engine_runs_it(step, monkeypatch):
    seen = _spy_sampler(step, monkeypatch)
    calls = _spy_forward(step, monkeypatch)
    step.run([5, 3], [0, 0])
    # The whole prompts in one forward, one sampled token per prompt (its first response token).
    assert calls == [((2, 5), [0, 0])]
    assert seen == [((2, 1), [[0], [0]], 0.7)]


def test_forward_mode_times_the_forward_alone(monkeypatch):
    step = make_timing_step("smollm2-135m", "cpu", "float32", max_batch=2, max_ctx=64, random_weights=True,
                            mode="forward")
    calls = _spy_forward(step, monkeypatch)
    assert step.run([1, 3], [5, 0]) > 0
    assert calls == [((2, 3), [5, 0])]
    assert step._engine is None  # no engine, no sampling
    with pytest.raises(SpecrollError, match="timing mode"):
        make_timing_step("smollm2-135m", "cpu", "float32", max_batch=1, max_ctx=16, random_weights=True,
                         mode="graph")


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
