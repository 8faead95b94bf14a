import numpy as np
import pytest

from specroll.calibration import IterationBatch, load_profile
from specroll.policies import POLICIES, make_policy
from specroll.simulator import EngineSpec, ParametricAcceptance, StepKernel, StepRollouts


class ToyCost:
    """A tiny cost model: 10 ms + 0.1 ms per query token (0 for an idle engine)."""

    def iteration_time(self, b):
        return np.where(np.asarray(b.n) > 0, 0.01 + 1e-4 * np.asarray(b.q_sum), 0.0)

    def prefill_time(self, prompt_lens):
        return 1e-5 * float(np.sum(prompt_lens))


def _rollouts(lens, prompt=10):
    n = len(lens)
    return StepRollouts(step=0, prompt_id=np.arange(n), sample=np.zeros(n, np.int64),
                        prompt_len=np.full(n, prompt, np.int64), response_len=np.asarray(lens, np.int64),
                        finished=np.ones(n, bool))


def _run(ro, acc, policy, engines=1, max_batch=256, kv=10**9, cost=None):
    eng = np.arange(ro.n) % engines
    return StepKernel(ro, acc, eng, np.argsort(eng, kind="stable"), np.full(ro.n, np.nan),
                      EngineSpec(engines, max_batch, kv), cost or ToyCost(), policy, step=0, rid_base=0,
                      max_len=int(ro.response_len.max())).run()


@pytest.mark.parametrize("alpha,k", [(0.6, 3), (0.8, 4), (0.9, 7)])
def test_single_request_matches_closed_form(alpha, k):
    ro = _rollouts([60_000])
    acc = ParametricAcceptance(alpha=alpha, kmax=8).prepare(ro, seed=11)
    out = _run(ro, acc, make_policy("fixed", k=k))
    per_iter = (ro.response_len.sum() - 1) / out.request_iterations  # token 0 comes from the prefill
    expected = (1 - alpha ** (k + 1)) / (1 - alpha)
    assert abs(per_iter - expected) / expected < 0.02
    assert out.drafted == k * out.request_iterations


def _naive_iterations(ro, acc, k):
    its = []
    for r in range(ro.n):
        t, it = 1, 0  # the prefill sampled token 0
        while t < ro.response_len[r]:
            t += min(k, int(acc.match[acc.offsets[r] + t])) + 1
            it += 1
        its.append(it)
    return np.array(its)


def test_kernel_matches_a_per_request_loop_with_queueing_and_preemption():
    rng = np.random.default_rng(3)
    ro = _rollouts(rng.integers(1, 400, 300), prompt=20)
    acc = ParametricAcceptance(alpha=0.7, kmax=8).prepare(ro, seed=5)
    # small batches force queueing; a small KV budget forces preemption and re-admission
    out = _run(ro, acc, make_policy("fixed", k=3), engines=7, max_batch=16, kv=1500)
    assert out.preemptions.sum() > 0
    assert np.array_equal(out.iterations, _naive_iterations(ro, acc, 3))
    assert (out.end_s > out.start_s).all()


@pytest.mark.parametrize("name", POLICIES.names())
def test_tokens_are_conserved_for_every_policy(name):
    rng = np.random.default_rng(1)
    ro = _rollouts(rng.integers(1, 2000, 200))
    acc = ParametricAcceptance(alpha=0.7, kmax=8).prepare(ro, seed=2)
    policy = make_policy(name)
    # Families that price decisions with the profile need a real one (the toy cost has no drafters).
    cost = {"cost": load_profile("h100-sxm:qwen2.5-7b")} if policy.needs_cost else {}
    out = _run(ro, acc, policy, engines=4, max_batch=32, **cost)
    # each prefill emits token 0 and every iteration accepted + 1 tokens: exact token identity
    assert ro.n + out.request_iterations + out.accepted == int(ro.response_len.sum())
    assert out.iterations.sum() == out.request_iterations
    # each rollout ends exactly at its trace length: between (L-1)/(kmax+1) and L-1 iterations
    assert (out.iterations <= ro.response_len - 1).all()
    assert (out.iterations * (acc.kmax + 1) >= ro.response_len - 1).all()
    assert 0 <= out.accepted <= out.drafted
    assert np.isfinite(out.end_s).all()


def test_ar_makespan_of_a_static_batch_is_the_sum_of_its_iteration_times():
    profile = load_profile("h100-sxm:qwen2.5-7b")
    lens = np.array([5, 17, 40, 40, 333, 1000])
    ro = _rollouts(lens, prompt=100)
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, seed=0)
    out = _run(ro, acc, make_policy("ar"), cost=profile)
    expected = profile.prefill_time(ro.prompt_len)  # which also samples every response's token 0
    for i in range(int(lens.max()) - 1):
        alive = lens - 1 > i  # decode i feeds token i over the prompt and tokens 0..i-1
        batch = IterationBatch.from_requests(np.ones(alive.sum()), 100 + np.full(alive.sum(), i))
        expected += float(profile.iteration_time(batch)[0])
    assert out.rollout_s == pytest.approx(expected, rel=1e-9)
    assert out.iterations.tolist() == (lens - 1).tolist()
    assert out.drafted == 0


def test_prefill_is_charged_per_engine_as_the_profile_prices_it():
    profile = load_profile("h100-sxm:qwen2.5-7b")
    ro = _rollouts([50, 60, 70, 80, 90, 100], prompt=300)
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, seed=0)
    out = _run(ro, acc, make_policy("ar"), engines=3, cost=profile)
    for e in range(3):
        assert out.engine_prefill_s[e] == pytest.approx(profile.prefill_time(ro.prompt_len[out.engine == e]),
                                                        rel=1e-12)


@pytest.mark.parametrize("fast", [False, True])
def test_prefill_is_the_cost_models_prefill_time_however_many_engines_admit_together(fast):
    # ToyCost prices a prefill (1e-5 s per prompt token) unlike an iteration with q = context (10 ms +
    # 0.1 ms per token). Admissions of several engines in one iteration were once priced as such an
    # iteration, so a run's times depended on how admissions happened to coincide.
    ro = _rollouts([50, 60, 70, 80, 90, 100], prompt=300)
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, seed=0)
    for engines in (1, 3):
        eng = np.arange(ro.n) % engines
        out = StepKernel(ro, acc, eng, np.argsort(eng, kind="stable"), np.full(ro.n, np.nan),
                         EngineSpec(engines, 256, 10**9), ToyCost(), make_policy("ar"), step=0, rid_base=0,
                         max_len=100, fast=fast).run()
        for e in range(engines):
            assert out.engine_prefill_s[e] == ToyCost().prefill_time(ro.prompt_len[eng == e])


def test_a_one_token_response_ends_at_its_prefill_and_frees_its_slot():
    # max_batch 1: the first request (1 token) must leave at its prefill so the second is admitted
    ro = _rollouts([1, 5, 1, 1, 3], prompt=10)
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, seed=0)
    out = _run(ro, acc, make_policy("fixed", k=2), max_batch=1)
    assert out.iterations[[0, 2, 3]].tolist() == [0, 0, 0]
    assert (out.iterations[[1, 4]] >= 1).all()
    assert np.isfinite(out.end_s).all() and (out.end_s >= out.start_s).all()
    assert ro.n + out.request_iterations + out.accepted == int(ro.response_len.sum())
    # one request at a time, in order: each starts when the previous one ended
    assert np.array_equal(out.start_s[1:], out.end_s[:-1])
