import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.simulator import ParametricAcceptance, StepRollouts, TraceAcceptance
from specroll.simulator._acceptance import match_from_failures


def _rollouts(lens, step=0):
    n = len(lens)
    return StepRollouts(step=step, prompt_id=np.arange(n) // 4, sample=np.arange(n) % 4,
                        prompt_len=np.full(n, 10), response_len=np.asarray(lens, np.int64),
                        finished=np.ones(n, bool))


def test_match_from_failures_matches_a_naive_scan():
    rng = np.random.default_rng(0)
    fail = rng.random(500) < 0.3
    got = match_from_failures(fail, 5)
    for t in range(500):
        run = 0
        while t + run < 500 and not fail[t + run] and run < 5:
            run += 1
        assert got[t] == run


def test_parametric_match_respects_cap_and_response_end():
    ro = _rollouts([1, 2, 50, 300])
    acc = ParametricAcceptance(alpha=0.9, kmax=6).prepare(ro, seed=3)
    for r, (lo, hi) in enumerate(zip(acc.offsets[:-1], acc.offsets[1:])):
        m = acc.match[lo:hi].astype(int)
        t = np.arange(hi - lo)
        assert (m <= 6).all() and (m <= (hi - lo) - 1 - t).all(), r


def test_parametric_draws_are_keyed_per_rollout_not_by_order():
    lens = [40, 70, 90, 120]
    ro = _rollouts(lens)
    perm = [2, 0, 3, 1]
    ro2 = StepRollouts(step=0, prompt_id=ro.prompt_id[perm], sample=ro.sample[perm],
                       prompt_len=ro.prompt_len[perm], response_len=ro.response_len[perm],
                       finished=ro.finished[perm])
    src = ParametricAcceptance(alpha=0.7, kmax=8, spread=0.5)
    a, b = src.prepare(ro, seed=1), src.prepare(ro2, seed=1)
    for j, r in enumerate(perm):
        assert np.array_equal(a.match[a.offsets[r]:a.offsets[r + 1]], b.match[b.offsets[j]:b.offsets[j + 1]])
    c = src.prepare(ro, seed=2)
    assert not np.array_equal(a.match, c.match)


def test_parametric_iid_acceptance_rate_is_alpha():
    ro = _rollouts([200_000])
    acc = ParametricAcceptance(alpha=0.75, kmax=1).prepare(ro, seed=0)
    # m_t with kmax=1 is the acceptance indicator of token t.
    assert abs(acc.match[:-2].mean() - 0.75) < 0.01


def test_confidence_signal_predicts_acceptance():
    ro = _rollouts([100_000])
    src = ParametricAcceptance(alpha=0.7, kmax=1, spread=1.0, confidence=True, conf_noise=0.05)
    acc = src.prepare(ro, seed=0)
    pos = np.arange(99_000)
    conf = acc.conf_at(pos)[:, 0]
    ok = acc.match[pos] > 0
    assert ok[conf > 0.9].mean() > ok[conf < 0.5].mean() + 0.3


def test_trace_replay_clips_to_kmax_and_end():
    ro = _rollouts([3, 4])
    ro.match["suffix"] = (np.array([9, 9, 9, 1, 0, 2, 2], np.int16), np.array([0, 3, 7]))
    ro.kmax["suffix"] = 8
    acc = TraceAcceptance(drafter="suffix", kmax=2).prepare(ro, seed=0)
    assert acc.match[:7].tolist() == [2, 1, 0, 1, 0, 1, 0]


def test_trace_replay_without_column_is_a_clear_error():
    with pytest.raises(SpecrollError, match="no column 'match_suffix'.*Fix: run `specroll trace match`"):
        TraceAcceptance(drafter="suffix").prepare(_rollouts([3]), seed=0)


def test_bad_parametric_parameters():
    with pytest.raises(SpecrollError, match="alpha"):
        ParametricAcceptance(alpha=1.5)
    with pytest.raises(SpecrollError, match="unknown parametric model"):
        ParametricAcceptance(model="weird")



@pytest.mark.parametrize("model", ["iid", "decay", "beta"])
def test_parametric_match_equals_a_direct_per_position_reference(model):
    from specroll.simulator._keys import position_bits, rollout_keys

    ro = _rollouts([1, 7, 300, 2000, 45, 5000])
    src = ParametricAcceptance(model=model, alpha=0.8, alpha_end=0.4, decay_tokens=700, kmax=5)
    acc = src.prepare(ro, seed=9)
    lens = ro.response_len
    t = np.concatenate([np.arange(n) for n in lens])
    if model == "iid":
        p = np.full(t.size, 0.8)
    elif model == "decay":
        p = 0.4 + (0.8 - 0.4) * np.exp(-t.astype(np.float64) / 700)
    else:
        p = np.repeat(src._request_alpha(ro, 9), lens)
    thr = np.minimum(p * 2.0**32, 2.0**32 - 1).astype(np.uint32)
    bits = position_bits(rollout_keys(9, ro.step, ro.prompt_id, ro.sample, stream=1), lens)
    fail = bits >= thr
    fail[np.cumsum(lens) - 1] = True
    assert np.array_equal(acc.match[:t.size], match_from_failures(fail, 5))
