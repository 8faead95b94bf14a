"""The literature drafters and rules on SmolLM2-135M (CPU fp32, slow): the lossless ones reproduce
autoregressive decoding token for token, the lossy ones count exactly what they change.

Skips without the GGUF (see test_engine_model.py). Chains are lossless bit for bit, so their
tokens must equal AR's. Trees (``stand``) are verified as token trees: the non-first branches attend
over other cache columns than a chain, so their logits equal AR's up to float rounding and a keyed
sample may flip at a near-tie (docs/systems/drafters.md): for them the test asks agreement, the
fraction of AR's tokens reproduced, not equality.
"""

from __future__ import annotations

import pytest

from specroll.real_backend import RolloutConfig, rollout
from tests.real_backend.test_engine_model import smol  # noqa: F401  (the module-scoped fixture)

CFG = dict(model="smollm2-135m", prompts=2, samples=2, steps=2, max_new_tokens=40, max_batch=4, seed=3,
           temperature=0.7)


def tokens(res):
    return res.trace.table.column("token_ids").to_pylist()


@pytest.mark.slow
def test_new_drafters_and_lenience_one_equal_ar(smol):  # noqa: F811
    ar = rollout(RolloutConfig(**CFG, policy="ar", drafter="none"), backend=smol)
    runs = [dict(drafter="omni", policy="adaptive"),
            dict(drafter="prevrollout", policy="fixed", params={"k": 8}, accept="lenient",
                 accept_params={"lenience": 1.0}),
            dict(drafter="layerskip", drafter_params={"layers": 22, "kmax": 3}, policy="fixed",
                 params={"k": 3})]
    for run in runs:
        res = rollout(RolloutConfig(**CFG, **run), backend=smol)
        assert tokens(res) == tokens(ar), run
        assert res.summary["lossy_tokens"] == 0 and not res.summary["lossy"]
        assert res.summary["drafted"] > 0, run
    stand = rollout(RolloutConfig(**CFG, drafter="stand", policy="fixed", params={"k": 4}), backend=smol)
    assert stand.trace.meta.extra["engine_drafter"]["verified_tree_width"] == 3
    assert stand.summary["drafted"] > 0 and not stand.summary["lossy"]
    pairs = [(a, b) for x, y in zip(tokens(stand), tokens(ar), strict=True) for a, b in zip(x, y)]
    assert sum(a == b for a, b in pairs) >= 0.99 * max(len(pairs), 1)


@pytest.mark.slow
def test_lossy_rules_on_the_real_model_count_what_they_change(smol):  # noqa: F811
    ar = rollout(RolloutConfig(**CFG, policy="ar", drafter="none"), backend=smol)
    for run in (dict(drafter="suffix", accept="judge", accept_params={"top_k": 4, "tau": 0.1}),
                dict(drafter="layerskip", drafter_params={"layers": 15, "kmax": 4}, accept="ead",
                     accept_params={"threshold": 3.0, "window": 2})):
        res = rollout(RolloutConfig(**CFG, policy="fixed", params={"k": 4}, **run), backend=smol)
        s = res.summary
        assert s["lossy"] and res.trace.meta.extra["lossy"]
        assert s["lossy_tokens"] == sum(d["lossy"] for d in res.decisions)
        assert (s["lossy_tokens"] > 0) == (tokens(res) != tokens(ar)), run
