"""TLT (tail activation + bucketed bandit) and Seer (marginal-benefit budget) decisions."""

import numpy as np

from specroll.policies import Feedback, make_policy
from tests.policies.test_families import state


def test_tlt_waits_for_a_small_batch_for_patience_iterations_per_engine():
    p = make_policy("tlt", batch_threshold=2, patience=2, budgets=[4], epsilon=0.0)
    p.reset(2)
    s = state([0, 0, 0, 1, 1])  # engine 0: batch 3 (big), engine 1: batch 2 (small)
    assert p.decide(s).tolist() == [0, 0, 0, 0, 0]  # engine 1 small for 1 iteration
    assert p.decide(s).tolist() == [0, 0, 0, 4, 4]  # 2 consecutive -> on
    s.batch_size[0] = 2
    assert p.decide(s).tolist()[:3] == [0, 0, 0]
    p.reset(2)  # a new RL step: off again
    assert p.decide(state([0, 1])).tolist() == [0, 0]


def test_tlt_bandit_learns_the_best_budget_per_bucket():
    p = make_policy("tlt", batch_threshold=8, patience=1, budgets=[1, 4], bucket_edges=[2, 8], epsilon=0.1,
                    seed=3)
    p.reset(1)
    s = state([0, 0])  # batch 2 -> bucket 0
    picks = []
    for _ in range(200):
        k = p.decide(s)
        picks.append(int(k[0]))
        # budget 4 yields 3 accepted per request in the same time; budget 1 yields 1
        acc = np.minimum(k, 3)
        p.observe(s, Feedback(k=k, accepted=acc, iter_time=np.array([0.01])))
    assert picks[:2] == [1, 4] or picks[:2] == [4, 1]  # untried arms first
    assert picks[-100:].count(4) > 85  # greedy on the better arm, ~epsilon/2 exploration
    assert p.pulls[0, 1].sum() == 0  # the other bucket was never used


def test_tlt_is_reproducible_with_a_seed():
    def run(seed):
        p = make_policy("tlt", patience=1, epsilon=0.5, seed=seed)
        p.reset(3)
        s = state([0, 1, 2])
        out = []
        for _ in range(30):
            k = p.decide(s)
            p.observe(s, Feedback(k=k, accepted=k // 2, iter_time=np.full(3, 0.02)))
            out.append(k.copy())
        return np.concatenate(out)
    assert (run(1) == run(1)).all() and not (run(1) == run(2)).all()


def test_seer_drafts_by_marginal_gain_within_each_engines_budget():
    conf = np.array([[0.9, 0.9, 0.9, 0.9],    # gains .9 .81 .73 .66
                     [0.6, 0.5, 0.9, 0.9],    # gains .6 .3 .27 .243
                     [0.95, 0.95, 0.2, 0.0],  # gains .95 .90 .18 0
                     [0.9, 0.9, 0.9, 0.9]], np.float32)
    s = state([0, 0, 0, 1], kmax=4, conf=conf)
    # unbounded budget: every token with gain >= 0.25
    assert make_policy("seer", tokens_per_iter=-1, min_gain=0.25).decide(s).tolist() == [4, 3, 2, 4]
    # engine 0 (batch 3) may verify 3 + 4 = 7 tokens: 4 draft tokens, best gains: .95 .9 .9 .81
    k = make_policy("seer", tokens_per_iter=7, min_gain=0.25).decide(s)
    assert k.tolist() == [2, 0, 2, 4]


def test_seer_without_confidence_uses_acceptance_ema():
    s = state([0, 0], kmax=8, accept_ema=np.array([0.9, 0.5]))
    # gains a^j >= 0.3: 0.9 -> j <= 11 (capped 8); 0.5 -> j <= 1
    assert make_policy("seer", tokens_per_iter=-1, min_gain=0.3).decide(s).tolist() == [8, 1]
