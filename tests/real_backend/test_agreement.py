"""Agreement of speculative rollouts with AR: exact on a CPU in float32 (a difference fails the run),
measured and reported elsewhere (a GPU's verify and decode kernels differ in the low bits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specroll.analysis import ValidateConfig, format_summary, validate
from specroll.calibration import load_profile
from specroll.core.errors import SpecrollError
from specroll.real_backend import KVCache, RolloutConfig, keyed_sample, rollout
from specroll.real_backend import _agreement as agreement_mod
from specroll.real_backend._agreement import agreement, format_agreement, is_strict, margin_fn
from specroll.traces import Trace, TraceMeta

from .test_model_common import TINY, tiny_model


def trace(responses: list[list[int]], samples: int = 1) -> Trace:
    n = len(responses)
    cols = {"step": np.zeros(n), "prompt_id": np.arange(n) // samples, "sample": np.arange(n) % samples,
            "prompt_len": np.full(n, 2), "response_len": np.array([len(r) for r in responses]),
            "finished": np.ones(n, dtype=bool), "prompt_token_ids": [[5, 6]] * n, "token_ids": responses}
    return Trace.from_columns(TraceMeta(max_response_len=16), cols)


def test_agreement_counts_tokens_before_each_first_divergence():
    ar = trace([[1, 2, 3, 4], [7, 7, 7], [9, 8], [4, 4, 4, 4, 4]])
    spec = trace([[1, 2, 3, 4], [7, 1, 7], [9, 8, 1], [4, 4, 4]])
    a = agreement(ar, spec)
    assert (a.rollouts, a.rollouts_identical, a.tokens) == (4, 1, 14)
    # identical 4 + diverged at 1 + AR stopped at 2 (spec went on) + spec stopped at 3 (AR went on)
    assert a.tokens_agreeing == 4 + 1 + 2 + 3
    assert [d["position"] for d in a.divergences] == [1, 2, 3]
    assert a.divergences[0]["ar_token"] == 7 and a.divergences[0]["token"] == 1
    assert a.divergences[1]["ar_token"] is None  # AR ended (EOS or cap) where the other went on
    d = a.to_dict()
    assert d["token_agreement"] == pytest.approx(10 / 14) and d["rollouts_identical_fraction"] == 0.25
    assert d["first_divergence_position"] == {"min": 1, "median": 2.0}
    assert "71.429 % of tokens, 1/4 rollouts identical" in format_agreement(d)
    assert agreement(ar, ar).identical and format_agreement(agreement(ar, ar).to_dict()).count("\n") == 0
    with pytest.raises(SpecrollError, match="different rollouts"):
        agreement(ar, trace([[1]]))


def test_strictness_is_cpu_float32_only():
    assert is_strict("cpu", "float32")
    assert not is_strict("cpu", "bfloat16") and not is_strict("cuda", "float32")
    assert not is_strict("cuda:1", "bfloat16")


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_margin_is_measured_where_ar_sampled(temperature):
    """The recomputed next-token distribution at a divergence gives back AR's own token and how far
    the keyed uniform (or, greedy, the runner-up) was from flipping it."""
    model = tiny_model(7)
    fn = margin_fn(model, seed=11, temperature=temperature, top_p=1.0, n_prompts=3, samples=2)
    prompt, prefix = [3, 1, 4, 1, 5], [9, 2, 6]
    got = fn(1, 2, 1, prompt, prefix)  # step 1, prompt 2, sample 1: rid = 1*3*2 + 2*2 + 1 = 11
    seq = torch.tensor([prompt + prefix])
    with torch.inference_mode():
        logits = model(seq, torch.tensor([0]), torch.tensor([0]), KVCache(TINY, 1, 16))[:, -1:]
    want = keyed_sample(logits, 11, torch.tensor([11]), torch.tensor([[len(prefix)]]), temperature)
    assert got["recomputed_token"] == int(want)
    p = torch.softmax(logits[0, 0] / (temperature or 1.0), -1)
    assert 0.0 <= got["margin"] <= float(p[int(want)]) / (1 if temperature == 0 else 2) + 1e-6


def test_rollout_against_ar_on_cpu_is_exact():
    base = dict(model="toy", prompts=2, samples=2, steps=2, max_new_tokens=30, max_batch=4, seed=1,
                temperature=0.8)
    res = rollout(RolloutConfig(**base, policy="fixed", params={"k": 3}, against_ar=True))
    a = res.summary["agreement"]
    assert a["identical"] and a["strict"] and a["token_agreement"] == 1.0
    assert a["ar_tokens"] == res.summary["tokens"]


def test_lossy_runs_report_agreement_instead_of_failing():
    base = dict(model="toy", prompts=3, samples=2, steps=3, max_new_tokens=40, max_batch=4, seed=5,
                temperature=0.8, drafter="prevrollout", policy="fixed", params={"k": 4})
    res = rollout(RolloutConfig(**base, accept="lenient", accept_params={"lenience": 4.0}, against_ar=True))
    a = res.summary["agreement"]
    assert not a["strict"] and not a["identical"] and 0.0 < a["token_agreement"] < 1.0
    assert all(d["position"] >= 0 for d in a["divergences"])


def test_validate_reports_instead_of_aborting_where_bits_may_differ(tmp_path, monkeypatch):
    """Off CPU-fp32 (simulated here by a lossy rule and a non-strict device) validate completes and
    reports each policy's agreement; on CPU-fp32 the same divergence fails the run."""
    workload = {"model": "toy", "prompts": 2, "samples": 3, "steps": 2, "max_new_tokens": 40,
                "max_batch": 4, "temperature": 0.8, "accept": "lenient", "accept_params": {"lenience": 4.0}}
    cfg = ValidateConfig.from_dict({"profile": "cpu:smollm2-135m", "repeats": 1, "seed": 3,
                                    "workload": workload, "drafter": {"name": "prevrollout"},
                                    "policies": [{"name": "fixed", "params": {"k": 4}}]})
    prof = load_profile("cpu:smollm2-135m")
    with pytest.raises(SpecrollError, match="differ from autoregressive"):
        validate(cfg, tmp_path / "strict", profile=prof)
    monkeypatch.setattr(agreement_mod, "is_strict", lambda device, dtype: False)
    s = validate(cfg, tmp_path / "v", profile=prof)
    a = s["agreement"]["fixed"]
    assert s["outputs_identical"] is False and not a["strict"] and a["token_agreement"] < 1.0
    assert "agreement with AR" in format_summary(s)
