"""The engine on the exact-arithmetic toy model: speculation reproduces AR decoding bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specroll.policies import Policy, make_policy
from specroll.real_backend._engine import Engine
from specroll.real_backend._toy import ToyLM
from specroll.real_backend._workload import RolloutRequest


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
        # an accepted run never includes a response's last token: that one is the target's own
        assert d["accepted"] == min(expect, len(true), len(script) - 1 - t), d


def test_batch_shrinks_and_slots_are_reused():
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8, max_batch=2)
    decode = [r for r in ar.iterations if r["phase"] == "decode"]
    assert max(r["batch_size"] for r in decode) == 2
    assert decode[-1]["batch_size"] == 1
    assert len(ar.rollouts) == 7
    # Records are internally consistent: query tokens = batch + drafted on decode iterations.
    for r in decode:
        assert r["q_sum"] == r["batch_size"] + r["drafted"]
        assert r["new_tokens"] == r["accepted"] + r["batch_size"]  # accepted + 1 per request, always


def test_cap_and_eos():
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8, max_new=12)
    for r in ar.rollouts:
        assert 1 <= len(r.tokens) <= 12
        assert r.finished == (r.tokens[-1] == 0)
        assert 0 not in r.tokens[:-1]
        if not r.finished:
            assert len(r.tokens) == 12


class RecordingPolicy(Policy):
    """Test double: drafts (request id mod 4) tokens, reads draft_conf, and records what it saw."""

    name = "recording"

    def __init__(self, read_conf: bool) -> None:
        super().__init__()
        self.read_conf = read_conf
        self.states: list = []
        self.feedback: list = []
        self.resets = 0

    def reset(self, n_engines):
        self.resets += 1

    def decide(self, state):
        if self.read_conf:
            assert state.draft_conf.shape == (state.n, state.kmax)
        self.states.append(state)
        return (state.request % 4).astype(np.int32)

    def observe(self, state, feedback):
        self.feedback.append(feedback)


@pytest.mark.parametrize("read_conf", [False, True])
def test_policy_sees_the_engine_state(read_conf):
    ar = run(make_policy("ar"), ScriptDrafter({}), 0.8)
    scripts = {r.request.rid: r.tokens for r in ar.rollouts}
    drafter = ScriptDrafter(scripts, kmax=5)
    pol = RecordingPolicy(read_conf)
    reqs = make_requests(7)
    model = ToyLM(seed=3)
    eng = Engine(model, model.make_cache(3, 8 + 40 + 6), max_batch=3, max_new_tokens=40, eos_ids=[0],
                 seed=11, temperature=0.8, sampler=hash_sampler)
    out = eng.run_step(reqs, pol, drafter, step=2, predicted_len=np.arange(7) * 10.0)
    assert pol.resets == 1 and len(pol.states) == len(pol.feedback) == len(
        [r for r in out.iterations if r["phase"] == "decode"])
    by_it: dict = {}
    for d in out.decisions:
        by_it.setdefault(d["iteration"], []).append(d)
    for it, (st, fb) in enumerate(zip(pol.states, pol.feedback)):
        decs = by_it[it]
        assert st.step == 2 and st.kmax == 5 and st.max_len == 40 and st.iteration[0] == it
        assert st.batch_size[0] == st.n == len(decs) <= 3
        assert list(st.request) == [d["rid"] for d in decs]
        assert list(st.generated) == [d["generated"] for d in decs]
        assert list(st.predicted_len) == [10.0 * d["rid"] for d in decs]
        assert list(st.prompt_len) == [len(reqs[d["rid"]].prompt_tokens) for d in decs]
        assert 0 < st.kv_used[0] <= 1 and st.match_len is None
        assert list(fb.k) == [d["k"] for d in decs] and list(fb.accepted) == [d["accepted"] for d in decs]
        assert (fb.k <= st.request % 4).all() and fb.iter_time.shape == (1,) and fb.iter_time[0] > 0
        if it > 0:
            prev = {d["rid"]: d for d in by_it[it - 1]}
            for i, rid in enumerate(st.request):
                if rid in prev:
                    assert st.last_drafted[i] == prev[rid]["k"]
                    assert st.last_accepted[i] == prev[rid]["accepted"]
                    assert st.last_iter_time[0] > 0
    # Same tokens as AR whatever the policy.
    assert [r.tokens for r in out.rollouts] == [r.tokens for r in ar.rollouts]
    # Proposals are only gathered when someone needs them: by draft_conf, or for a k > 0 draft.
    gathered = sum(r["draft_tokens"] > 0 for r in out.iterations if r["phase"] == "decode")
    assert gathered == len(pol.states) or not read_conf
