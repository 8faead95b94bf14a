"""Lossy acceptance (Judge decoding, entropy-adaptive decoding, SPEC-RL's lenience and cached-rollout
reuse): decisions on crafted positions, exact reductions when lossless, counting against direct
replays, and the fast path."""

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import make_policy
from specroll.simulator import (
    LossyAcceptance,
    LossyPositions,
    ParametricAcceptance,
    StepRollouts,
    TraceAcceptance,
)
from specroll.simulator._lossy import chain_match

from .test_systems_engines import conserved, run, small
from .test_window import _assert_same, _rollouts, _run, _with_trace_columns


def test_chain_walk_on_crafted_positions():
    # positions:  0  1  2  3  4  5  6  7  8  9
    base = np.array([2, 1, 0, 1, 0, 0, 3, 2, 1, 0, 0, 0, 0, 0], np.int8)
    skip = np.array([0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.int8)
    limit = np.minimum(np.arange(10) + 8, 9)  # kmax 8, the response's last position 9
    m = chain_match(base, skip, limit, 0)
    # from 0: native 0,1 -> mismatch at 2, skipped -> 3 native -> mismatch at 4, skipped 4,5 -> 6,7,8
    # native -> 9 is the end, but kmax caps m_0 at 8; from 5: mismatch at 5 with no skip -> 0
    assert m.tolist() == [8, 8, 7, 6, 5, 0, 3, 2, 1, 0]
    flags = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], np.int8)
    cum = np.concatenate([[0], np.cumsum(flags)])
    lp = LossyPositions(base=base, skip=skip, cum=cum)
    # accepting a tokens from 0: lossy positions crossed are 2, 4, 5
    assert [lp.count(np.array([0]), np.array([a])) for a in (2, 3, 5, 6, 9)] == [0, 1, 2, 3, 3]
    assert lp.count(np.array([3, 6]), np.array([2, 3])) == 1  # from 3: position 4 only


def _ro(n=80, L=1500, seed=0):
    rng = np.random.default_rng(seed)
    ro = _rollouts(rng, n, max_len=L)
    ro.prev_len = rng.integers(0, L, n)
    return ro


def _replay_lossy(acc, ro, k):
    """Per request, a fixed-k policy from position 1: accepted a = min(k, m'), and a lossy token is
    an accepted position the base source did not match (base m = 0 there: for the parametric source
    that is exactly a failed draw)."""
    lossy = 0
    base = acc.lossy.base
    for i in range(ro.n):
        off, L = int(acc.offsets[i]), int(ro.response_len[i])
        pos = off + 1
        while pos < off + L:
            a = min(k, int(acc.match[pos]))
            lossy += int((base[pos:pos + a] == 0).sum())
            pos += a + 1
    return lossy


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_judge_accepts_mismatches_with_probability_p(p):
    ro = _ro()
    src = ParametricAcceptance(alpha=0.6, kmax=6)
    base = src.prepare(ro, 4)
    acc = LossyAcceptance(src, "judge", p=p).prepare(ro, 4)
    if p == 0.0:
        assert np.array_equal(acc.match, base.match)
    else:
        assert (acc.match >= base.match).all() and (acc.match > base.match).any()
    # p = 1: every draft is accepted (up to kmax and the response end)
    if p == 1.0:
        t = np.arange(int(ro.offsets[-1]))
        end = np.repeat(ro.offsets[1:], ro.response_len) - 1
        assert np.array_equal(acc.match[:t.size], np.minimum(6, end - t).astype(np.int8))
    # the judge's share of the mismatches it saw
    mism = (base.match[:-7] == 0) & (acc.lossy.skip[:-7] > 0)
    if 0 < p < 1:
        seen = base.match[:-7] == 0
        assert mism.sum() / seen.sum() == pytest.approx(p, abs=0.03)


@pytest.mark.parametrize("fast", [False, True])
def test_lossy_tokens_counted_by_the_kernel_equal_a_direct_replay(fast):
    ro = _ro(n=60, L=800, seed=2)
    acc = LossyAcceptance(ParametricAcceptance(alpha=0.6, kmax=6), "judge", p=0.4).prepare(ro, 1)
    out = _run(ro, acc, make_policy("fixed", k=4), fast=fast, engines=3, max_batch=8, kv=10**9,
               cost=__import__("calibration").load_profile("h100-sxm:qwen2.5-7b"),
               predicted=np.full(ro.n, np.nan))
    assert out.lossy == _replay_lossy(acc, ro, 4) > 0


@pytest.mark.parametrize("method,params", [("judge", {"p": 0.3}),
                                           ("entropy", {"fraction": 0.4, "run_tokens": 6, "disagree": 0.2}),
                                           ("spec-rl", {"lenience": 2.0}),
                                           ("spec-rl", {"lenience": 1.5, "reuse_alpha": 0.98})])
@pytest.mark.parametrize("source", ["parametric", "trace"])
def test_fast_path_equals_the_loop_with_lossy_acceptance(method, params, source):
    rng = np.random.default_rng(3)
    ro = _ro(n=100, L=1200, seed=3)
    if source == "trace":
        ro = _with_trace_columns(rng, ro)
        src = TraceAcceptance(drafter="suffix")
    else:
        src = ParametricAcceptance(model="decay", alpha=0.8, alpha_end=0.5, decay_tokens=600, kmax=8)
    acc = LossyAcceptance(src, method, **params).prepare(ro, 2)
    pred = ro.response_len * rng.uniform(0.5, 1.5, ro.n)
    for name, pp in (("fixed", {"k": 4}), ("das", {"k_long": 6})):
        a, b = (_run(ro, acc, make_policy(name, **pp), fast=fast, engines=4, max_batch=12, kv=5000,
                     cost=__import__("calibration").load_profile("h100-sxm:qwen2.5-7b"), predicted=pred)
                for fast in (False, True))
        _assert_same(a, b)
        assert a.lossy == b.lossy > 0


def test_entropy_runs_cover_the_requested_fraction_and_disagree_at_the_requested_rate():
    ro = _ro(n=200, L=3000, seed=5)
    ro.response_len[:] = 3000
    src = ParametricAcceptance(alpha=0.3, kmax=16)
    lossless = LossyAcceptance(src, "entropy", fraction=0.3, run_tokens=10, disagree=0.0).prepare(ro, 0)
    skip = lossless.lossy.skip[:int(ro.offsets[-1])]
    assert np.mean(skip > 0) == pytest.approx(0.3, abs=0.02)
    # a run's first position holds its length (capped at kmax): mean ~ run_tokens, truncated at 16
    first = np.flatnonzero((skip > 0) & (np.concatenate([[0], skip[:-1]]) == 0))
    geo = np.minimum(np.random.default_rng(0).geometric(0.1, 100000), 16).mean()
    assert skip[first].mean() == pytest.approx(geo, rel=0.1)
    assert np.diff(lossless.lossy.cum).sum() == 0  # disagree 0: nothing lossy
    lossy = LossyAcceptance(src, "entropy", fraction=0.3, run_tokens=10, disagree=0.25).prepare(ro, 0)
    # disagreement changes which accepted tokens are wrong, not what is accepted
    assert np.array_equal(lossy.match, lossless.match)
    flags = np.diff(lossy.lossy.cum)[:skip.size]
    assert flags[skip > 0].mean() == pytest.approx(0.25, abs=0.02) and flags[skip == 0].sum() == 0
    # the last token of every response stays the target's own: no run reaches it
    assert (skip[ro.offsets[1:] - 1] == 0).all() and (skip[ro.offsets[1:] - 2] <= 1).all()


def test_spec_rl_lenience_one_reduces_exactly_to_match_length_acceptance():
    ro = _ro(n=120, L=2000, seed=7)
    src = ParametricAcceptance(model="decay", alpha=0.9, alpha_end=0.7, decay_tokens=1000, kmax=8)
    base = src.prepare(ro, 3)
    spec = LossyAcceptance(src, "spec-rl", lenience=1.0)
    assert not spec.may_be_lossy
    acc = spec.prepare(ro, 3)
    assert np.array_equal(acc.match, base.match)
    assert acc.pre_lossy.sum() == 0 and np.diff(acc.lossy.cum).sum() == 0
    # the cached rollout's reused prefix is the ordinary match from position 0, uncapped by kmax:
    # the first position the parametric source rejects (m = 0 there), within the cached length
    for i in range(ro.n):
        off, L, prev = int(acc.offsets[i]), int(ro.response_len[i]), int(ro.prev_len[i])
        m = base.match[off:off + L]
        first_miss = int(np.argmax(m == 0)) if (m == 0).any() else L
        assert acc.start_gen[i] - 1 == min(first_miss, prev, L - 1), i
    assert acc.prefill_len.tolist() == (ro.prompt_len + ro.prev_len).tolist()
    assert acc.pre_drafted.tolist() == ro.prev_len.tolist()


def test_spec_rl_lenience_accepts_a_mismatch_with_probability_one_minus_one_over_l():
    ro = _ro(n=100, L=2000, seed=8)
    src = ParametricAcceptance(alpha=0.7, kmax=8)
    base = src.prepare(ro, 1)
    l1 = LossyAcceptance(src, "spec-rl", lenience=1.0).prepare(ro, 1)
    l2 = LossyAcceptance(src, "spec-rl", lenience=2.0).prepare(ro, 1)
    seen = base.match[:int(ro.offsets[-1])] == 0
    assert (l2.lossy.skip[:seen.size][seen] > 0).mean() == pytest.approx(0.5, abs=0.03)
    assert (l2.start_gen >= l1.start_gen).all() and (l2.start_gen > l1.start_gen).any()
    assert l2.pre_lossy.sum() > 0 and (l2.pre_lossy <= l2.start_gen - 1).all()


def test_spec_rl_reuse_alpha_draws_its_own_agreement():
    ro = _ro(n=300, L=3000, seed=9)
    ro.prev_len[:] = 3000
    src = ParametricAcceptance(alpha=0.6, kmax=8)
    acc = LossyAcceptance(src, "spec-rl", lenience=1.0, reuse_alpha=0.99).prepare(ro, 0)
    r = acc.start_gen - 1
    # geometric: a run of agreements before the first disagreement, mean alpha / (1 - alpha) ~ 99
    assert r.mean() == pytest.approx(99, rel=0.15) and acc.pre_lossy.sum() == 0


def test_lossy_simulations_are_flagged_and_conserve_tokens():
    plain = run(small())
    assert plain["lossy"] is False and plain["lossy_fraction"] == 0.0 and plain["lossy_tokens"] == 0
    for lossy in ({"method": "judge", "p": 0.3},
                  {"method": "entropy", "fraction": 0.3, "run_tokens": 8, "disagree": 0.1},
                  {"method": "spec-rl", "lenience": 2.0}):
        s = run(small(lossy=lossy))
        assert s["lossy"] is True and 0 < s["lossy_fraction"] < 1 and conserved(s), lossy
        assert s["lossy_fraction"] == s["lossy_tokens"] / s["tokens"]
        assert s["request_iterations"] < plain["request_iterations"]
    off = run(small(lossy={"method": "judge", "p": 0.0}))
    assert off["lossy"] is False and off["request_iterations"] == plain["request_iterations"]
    assert off["makespan_s"] == plain["makespan_s"]


def test_spec_rl_lenience_one_in_a_simulation_is_lossless_and_reuses_prefixes():
    s = run(small(lossy={"method": "spec-rl", "lenience": 1.0}))
    assert s["lossy"] is False and s["lossy_tokens"] == 0 and conserved(s)
    no_reuse = run(small(lossy={"method": "spec-rl", "lenience": 1.0, "reuse": False}))
    plain = run(small())
    assert no_reuse["makespan_s"] == plain["makespan_s"]
    # step 2 verifies step 1's rollouts at admission: more drafted tokens, fewer iterations
    assert s["drafted_tokens"] > plain["drafted_tokens"]
    assert s["request_iterations"] <= plain["request_iterations"]


@pytest.mark.parametrize("bad", [{"method": "nope"}, {"method": "judge", "q": 0.1},
                                 {"method": "judge", "p": 2},
                                 {"method": "spec-rl", "lenience": 0.5}, {"p": 0.3}])
def test_bad_lossy_tables_are_errors(bad):
    from specroll.simulator import SimConfig

    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(small(lossy=bad), file="x.toml")
    assert exc.value.file == "x.toml" and exc.value.field.startswith("lossy")


def test_lossy_positions_survive_a_step_without_draws():
    # an empty step (no rollouts) prepares without error
    ro = StepRollouts(step=0, prompt_id=np.zeros(0, np.int64), sample=np.zeros(0, np.int64),
                      prompt_len=np.zeros(0, np.int64), response_len=np.zeros(0, np.int64),
                      finished=np.zeros(0, bool))
    acc = LossyAcceptance(ParametricAcceptance(kmax=4), "judge", p=0.5).prepare(ro, 0)
    assert acc.lossy.count(np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0
