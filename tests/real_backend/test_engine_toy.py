"""The engine on the exact-arithmetic toy model: speculation reproduces AR decoding bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_policy
from real_backend._engine import Engine
from real_backend._toy import ToyLM
from real_backend._workload import RolloutRequest


def hash_sampler(logits, seed, keys, positions, temperature, top_p):
    """Test double of keyed sampling: Gumbel-max with noise from a hash of (seed, key, position)."""
    if temperature == 0:
        return logits.argmax(-1)
    b, q, v = logits.shape
    x = (keys[:, None, None] * 1_000_003 + positions[:, :, None] * 7919 + seed * 104_729
         + torch.arange(v)[None, None, :] * 2_654_435_761) % (2**31 - 1)
    x = (x * 48271) % (2**31 - 1)
    u = (x.double() + 0.5) / (2**31 - 1)
    return (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)


class ScriptDrafter:
    """Test double: proposes the continuation of a fixed script for each request, with a corrupted
    token every ``corrupt_every`` positions, so that acceptance runs of every length occur."""

    def __init__(self, scripts: dict[int, list[int]], kmax: int = 5, corrupt_every: int = 4) -> None:
        self.scripts, self.kmax, self.corrupt_every = scripts, kmax, corrupt_every
        self.seen: dict[int, list[int]] = {}
        self.ended: list[int] = []

    def begin(self, rid, prompt_id, prompt_tokens):
        self.seen[rid] = []

    def extend(self, rid, tokens):
        self.seen[rid].extend(int(t) for t in tokens)

    def propose(self, rid):
        pos = len(self.seen[rid])
        cont = list(self.scripts.get(rid, [])[pos:pos + self.kmax])
        for i in range(len(cont)):
            if (pos + i) % self.corrupt_every == self.corrupt_every - 1:
                cont[i] = (cont[i] + 1) % 48
        return np.asarray(cont, dtype=np.int64), np.linspace(0.9, 0.5, len(cont)).astype(np.float32)

    def end(self, rid):
        self.ended.append(rid)


def make_requests(n: int, seed: int = 0) -> list[RolloutRequest]:
    rng = np.random.default_rng(seed)
    prompts = [tuple(int(t) for t in rng.integers(1, 48, rng.integers(3, 9))) for _ in range(n)]
    return [RolloutRequest(i, 0, i // 2, i % 2, p) for i, p in enumerate(prompts)]


def run(policy, drafter, temperature, max_batch=3, max_new=40, requests=None):
    model = ToyLM(seed=3)
    cache = model.make_cache(max_batch, 8 + max_new + drafter.kmax + 1)
    eng = Engine(model, cache, max_batch=max_batch, max_new_tokens=max_new, eos_ids=[0], seed=11,
                 temperature=temperature, sampler=hash_sampler)
    return eng.run_step(requests or make_requests(7), policy, drafter)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_speculation_equals_autoregressive_bit_for_bit(temperature):
    ar = run(make_policy("ar"), ScriptDrafter({}), temperature)
    scripts = {r.request.rid: r.tokens for r in ar.rollouts}
    ends = {r.finished for r in ar.rollouts}
    assert ends == {True, False}, "the workload must exercise both EOS and the cap"
    for k in (1, 3, 5):
        drafter = ScriptDrafter(scripts, kmax=5)
        spec = run(make_policy("fixed", k=k), drafter, temperature)
        assert [r.tokens for r in spec.rollouts] == [r.tokens for r in ar.rollouts]
        assert [r.finished for r in spec.rollouts] == [r.finished for r in ar.rollouts]
        accepted = sum(rec["accepted"] for rec in spec.iterations)
        assert accepted > 0, "drafts from the AR script must be accepted"
        assert len(spec.iterations) < len(ar.iterations)
        assert sorted(drafter.ended) == sorted(scripts)


def test_acceptance_matches_the_script():
    """With drafts = the true continuation corrupted every 4th position, the accepted count of
    each iteration is exactly the length of the correct prefix of the draft."""
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8)
    scripts = {r.request.rid: r.tokens for r in ar.rollouts}
    drafter = ScriptDrafter(scripts, kmax=5, corrupt_every=4)
    spec = run(make_policy("fixed", k=5), drafter, 0.8)
    for d in spec.decisions:
        t, script = d["generated"], scripts[d["rid"]]
        true = script[t:t + d["k"]]
        expect = 0
        for i in range(len(true)):
            if (t + i) % 4 == 3:
                break
            expect += 1
        assert d["accepted"] == min(expect, len(true)), d


def test_batch_shrinks_and_slots_are_reused():
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8, max_batch=2)
    decode = [r for r in ar.iterations if r["phase"] == "decode"]
    assert max(r["batch_size"] for r in decode) == 2
    assert decode[-1]["batch_size"] == 1
    assert len(ar.rollouts) == 7
    # Records are internally consistent: query tokens = batch + drafted on decode iterations.
    for r in decode:
        assert r["q_sum"] == r["batch_size"] + r["drafted"]
        assert r["new_tokens"] == r["accepted"] + r["batch_size"] or r["new_tokens"] < r["q_sum"]


def test_cap_and_eos():
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8, max_new=12)
    for r in ar.rollouts:
        assert 1 <= len(r.tokens) <= 12
        assert r.finished == (r.tokens[-1] == 0)
        assert 0 not in r.tokens[:-1]
        if not r.finished:
            assert len(r.tokens) == 12
