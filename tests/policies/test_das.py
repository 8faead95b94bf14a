"""DAS: length classes, budgets growing as the batch shrinks, the long-first quota, closed form."""

import numpy as np
import pytest

from specroll.policies import das_optimal_k, make_policy
from specroll.policies._das import makespan_factor
from specroll.policies._history import LONG, MEDIUM, SHORT
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


def _length_class_reference(pred, gen, max_len, long_frac, short_frac):
    """length_class as first written (masked assignments), kept to pin the faster version."""
    pred = np.asarray(pred, dtype=np.float64)
    expected = np.fmax(pred, np.asarray(gen, dtype=np.float64))
    cls = np.full(pred.shape, MEDIUM, dtype=np.int8)
    cls[~np.isnan(pred) & (expected < short_frac * max_len)] = SHORT
    cls[expected >= long_frac * max_len] = LONG
    return cls


def _random_state(rng, n=400, engines=6, kmax=8, max_len=1000):
    engine = np.sort(rng.integers(0, engines, n)).astype(np.int32)
    pred = rng.uniform(0, 1.2 * max_len, n)
    pred[rng.random(n) < 0.3] = np.nan
    s = state(engine, kmax=kmax, predicted_len=pred, generated=rng.integers(0, max_len, n))
    s.max_len = max_len
    s.batch_size = np.maximum(s.batch_size, rng.integers(1, 300, s.batch_size.size)).astype(np.int32)
    return s


@pytest.mark.parametrize("fracs", [(0.5, 0.125), (0.3, 0.3), (0.2, 0.6), (0.9, 0.0)])
def test_length_class_matches_the_reference(fracs):
    from specroll.policies._history import length_class

    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 1200, 3000)
    pred[rng.random(3000) < 0.3] = np.nan
    gen = rng.integers(0, 1000, 3000)
    got = length_class(pred, gen, 1000, long_frac=fracs[0], short_frac=fracs[1])
    assert got.dtype == np.int8
    assert np.array_equal(got, _length_class_reference(pred, gen, 1000, *fracs))


PARAMS = [{}, {"growth": 1.0, "k_long": 8, "full_batch": 64}, {"mode": "closed_form", "alpha": 0.8},
          {"token_quota": 256, "k_medium": 3}, {"long_frac": 0.3, "short_frac": 0.3}]


@pytest.mark.parametrize("params", PARAMS)
def test_decision_holds_until_the_horizon(params):
    # The simulator's windowed kernel contract: the same decision for any generated' in [generated,
    # horizon) elementwise (engine sets unchanged), and a class change exactly at the horizon.
    from specroll.policies._history import length_class

    p = make_policy("das", **params)
    rng = np.random.default_rng(7)
    for _ in range(20):
        s = _random_state(rng)
        k, h, _ = p.decide_with_horizon(s)
        assert np.array_equal(k, p.decide(s))
        assert (h > s.generated).all()
        gen0 = s.generated.copy()
        room = np.minimum(h, 10**6) - 1 - gen0
        s.generated = gen0 + (rng.random(gen0.size) * (room + 1)).astype(np.int64)
        assert np.array_equal(p.decide(s), k)
        lf, sf = p.params.long_frac, p.params.short_frac
        finite = h < np.iinfo(np.int64).max
        before = length_class(s.predicted_len, gen0, s.max_len, long_frac=lf, short_frac=sf)
        at = length_class(s.predicted_len, np.where(finite, h, gen0), s.max_len, long_frac=lf, short_frac=sf)
        assert (at[finite] != before[finite]).all() and (before[~finite] == LONG).all()


def _das_reference(p, s):
    """DASPolicy.decide as first written (per-request where()s, np.isin), kept to pin the faster one."""
    from specroll.policies._alloc import serve_quota

    p = p.params
    k_max = min(int(p.k_max), s.kmax)
    cls = _length_class_reference(s.predicted_len, s.generated, s.max_len, p.long_frac, p.short_frac)
    b = np.maximum(s.batch_size, 1).astype(np.float64)
    if p.mode == "schedule":
        scale = np.maximum(1.0, p.full_batch / b) ** p.growth
        k_long_e = np.minimum(np.round(p.k_long * scale), k_max)
    else:
        spec = np.bincount(s.engine, weights=(cls != 0), minlength=s.n_engines)
        rho = (p.base_tokens + p.per_request_tokens * b) / np.maximum(spec, 1.0)
        k_long_e = das_optimal_k(p.alpha, rho, k_max).astype(np.float64)
        scale = k_long_e / max(p.k_long, 1)
    k_med_e = np.minimum(np.round(p.k_medium * scale), k_max)
    want = np.where(cls == LONG, k_long_e[s.engine], np.where(cls == MEDIUM, k_med_e[s.engine], 0.0))
    if p.token_quota < 0:
        return np.where(np.isin(cls, (LONG, MEDIUM)), want, 0).astype(np.int32)
    quota = np.maximum(p.token_quota - s.batch_size, 0).astype(np.float64)
    return serve_quota(want, s.engine, quota, cls, (LONG, MEDIUM))


@pytest.mark.parametrize("params", PARAMS)
def test_decide_matches_the_reference(params):
    p = make_policy("das", **params)
    rng = np.random.default_rng(3)
    for _ in range(10):
        s = _random_state(rng, kmax=int(rng.integers(1, 17)))
        got = p.decide(s)
        assert got.dtype == np.int32 and np.array_equal(got, _das_reference(p, s))


def test_class_horizon_when_long_overrides_short():
    from specroll.policies._history import class_horizon, length_class

    pred = np.array([100.0, 100.0, np.nan, 700.0])
    gen = np.array([0, 150, 0, 0])
    cls = length_class(pred, gen, 1000, long_frac=0.2, short_frac=0.6)
    h = class_horizon(cls, 1000, long_frac=0.2, short_frac=0.6)
    assert cls.tolist() == [SHORT, SHORT, MEDIUM, LONG]
    assert h[:3].tolist() == [200, 200, 200]
    assert (length_class(pred[:3], h[:3], 1000, long_frac=0.2, short_frac=0.6) == LONG).all()


@pytest.mark.parametrize("params", PARAMS)
def test_decision_of_the_others_holds_while_the_batch_stays_at_the_floor(params):
    # Contract: requests may leave an engine without changing the others' decisions as long as
    # the engine's batch size stays >= its floor (the batch size itself when it depends on who
    # stays: token quota, closed form).
    p = make_policy("das", **params)
    rng = np.random.default_rng(9)
    for _ in range(20):
        s = _random_state(rng, engines=4)
        s.batch_size = np.bincount(s.engine, minlength=4).astype(np.int32)
        k, _, floor = p.decide_with_horizon(s)
        assert floor.shape == (4,) and (floor <= np.maximum(s.batch_size, 1)).all() and (floor >= 1).all()
        if p.params.token_quota >= 0 or p.params.mode != "schedule":
            assert np.array_equal(floor, s.batch_size)
        # drop random requests of each engine, down to its floor at most
        room = (s.batch_size - floor)[s.engine]
        drop = rng.random(s.n) < 0.5
        rank = np.arange(s.n) - np.searchsorted(s.engine, s.engine)
        keep = ~(drop & (rank < room))
        sub = state(s.engine[keep], kmax=s.kmax, predicted_len=s.predicted_len[keep],
                    generated=s.generated[keep])
        sub.max_len = s.max_len
        sub.batch_size = np.bincount(s.engine[keep], minlength=4).astype(np.int32)
        assert (sub.batch_size >= floor).all()
        assert np.array_equal(p.decide(sub), k[keep])
