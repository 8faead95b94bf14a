"""DAS: length classes, budgets growing as the batch shrinks, the long-first quota, closed form."""

import numpy as np
import pytest

from policies import das_optimal_k, make_policy
from policies._das import makespan_factor
from policies._history import LONG, MEDIUM, SHORT
from tests.policies.test_families import state


def _classes_state(engine, batch=None):
    s = state(engine, kmax=16, predicted_len=np.array([900.0, 300.0, 50.0, np.nan] * (len(engine) // 4)),
              generated=np.full(len(engine), 10))
    if batch is not None:
        s.batch_size = np.asarray(batch, np.int32)
    return s


def test_classes_get_their_budgets_and_short_never_speculates():
    p = make_policy("das", k_long=6, k_medium=2, growth=0.0)
    # predicted 900 of 1000 -> Long, 300 -> Medium, 50 -> Short, unknown -> Medium
    assert p.decide(_classes_state([0, 0, 0, 0])).tolist() == [6, 2, 0, 2]


def test_budgets_grow_as_the_batch_shrinks():
    p = make_policy("das", k_long=4, k_medium=1, growth=0.5, full_batch=64, k_max=16)
    big = p.decide(_classes_state([0, 0, 0, 0, 1, 1, 1, 1], batch=[64, 4]))
    # engine 0 at full batch: base budgets; engine 1 at 4: x sqrt(16) = 4
    assert big.tolist() == [4, 1, 0, 1, 16, 4, 0, 4]


def test_quota_is_served_long_first_per_engine():
    p = make_policy("das", k_long=8, k_medium=4, growth=0.0, token_quota=14)
    s = _classes_state([0, 0, 0, 0, 1, 1, 1, 1], batch=[4, 20])
    k = p.decide(s)
    # engine 0: quota 14-4 = 10 draft tokens: Long takes 8, two Mediums share 2 -> 1 each
    assert k[:4].tolist() == [8, 1, 0, 1]
    # engine 1: batch 20 > quota: no drafts at all
    assert k[4:].tolist() == [0, 0, 0, 0]
    assert (np.bincount(s.engine, weights=k) <= np.maximum(14 - s.batch_size, 0)).all()


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("rho", [0.5, 1.0, 2.0, 10.0, 64.0, 500.0])
def test_closed_form_matches_brute_force_minimum(alpha, rho):
    ks = np.arange(0, 33)
    brute = ks[np.argmin(makespan_factor(ks, alpha, rho))]
    got = int(das_optimal_k(alpha, rho, 32))
    assert makespan_factor(got, alpha, rho) == pytest.approx(makespan_factor(brute, alpha, rho), rel=1e-12)


def test_closed_form_budget_shrinks_with_rho_per_speculating_request():
    # more speculating requests per unit of base cost -> drafts are relatively dearer -> smaller k
    k = das_optimal_k(0.8, np.array([1000.0, 100.0, 10.0, 1.0]), 32)
    assert (np.diff(k) <= 0).all() and k[0] > k[-1]
    p = make_policy("das", mode="closed_form", alpha=0.8, base_tokens=64, per_request_tokens=1, k_long=6,
                    k_medium=3)
    out = p.decide(_classes_state([0, 0, 0, 0]))
    # 3 speculating requests, B=4: rho = (64 + 4) / 3
    k_long = int(das_optimal_k(0.8, 68 / 3, 16))
    assert out.tolist() == [k_long, round(3 * k_long / 6), 0, round(3 * k_long / 6)]
    assert SHORT < MEDIUM < LONG
