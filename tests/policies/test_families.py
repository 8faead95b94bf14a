"""Decisions of the simple families (threshold, adaptive, oracle) on crafted states."""

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import PolicyState, make_policy


def state(engine, kmax=8, conf=None, **kw):
    """A PolicyState over requests on the given engines; keyword arrays override the defaults."""
    engine = np.asarray(engine, np.int32)
    n, E = engine.size, int(engine.max()) + 1 if engine.size else 1
    f = dict(
        engine=engine, request=np.arange(n), generated=np.full(n, 10), prompt_len=np.full(n, 5),
        predicted_len=np.full(n, np.nan), last_drafted=np.zeros(n, np.int32),
        last_accepted=np.zeros(n, np.int32), accept_ema=np.full(n, np.nan),
        batch_size=np.bincount(engine, minlength=E).astype(np.int32), kv_used=np.zeros(E),
        iteration=np.zeros(E, np.int64), last_iter_time=np.zeros(E), kmax=kmax, max_len=1000,
    )
    f.update({k: np.asarray(v) if isinstance(v, list) else v for k, v in kw.items()})
    s = PolicyState(**f)
    if conf is not None:
        c = np.asarray(conf, np.float32)
        s.conf_fn = lambda: c
    return s


def test_threshold_stops_when_rejection_probability_exceeds_h():
    conf = [[0.99, 0.99, 0.9, 0.5, 0.5, 0, 0, 0],   # prod: .99 .98 .88 .44 -> k=3 at h=0.2
            [0.5, 0.9, 0.9, 0.9, 0, 0, 0, 0],       # first token already risky -> k_min
            [1, 1, 1, 1, 1, 1, 1, 1]]                # certain -> kmax
    p = make_policy("threshold", h=0.2, k_min=1, k_max=16)
    assert p.decide(state([0, 0, 1], conf=conf)).tolist() == [3, 1, 8]
    assert make_policy("threshold", h=0.2, k_min=0).decide(state([0, 0, 1], conf=conf)).tolist() == [3, 0, 8]
    assert make_policy("threshold", h=0.6, k_max=5).decide(state([0, 0, 1], conf=conf)).tolist() == [4, 3, 5]


def test_threshold_without_confidence_uses_the_acceptance_ema_or_kmax():
    s = state([0, 0, 1], accept_ema=np.array([np.nan, 0.9, 0.5]))
    # geometric: largest k with 1 - a^k <= h=0.7 -> a=0.7 (prior): 3, a=0.9: 11 -> kmax 8, a=0.5: 1
    assert make_policy("threshold", h=0.7).decide(s).tolist() == [3, 8, 1]
    assert make_policy("threshold", fallback="kmax", k_max=6).decide(s).tolist() == [6, 6, 6]
    with pytest.raises(SpecrollError, match="fallback"):
        make_policy("threshold", fallback="nope")


def test_aimd_grows_on_full_acceptance_and_halves_on_rejection():
    s = state([0, 0, 1, 1], kmax=16, last_drafted=np.array([0, 4, 6, 1], np.int32),
              last_accepted=np.array([0, 4, 2, 0], np.int32))
    assert make_policy("adaptive", mode="aimd", k_init=4).decide(s).tolist() == [4, 5, 3, 1]
    s.last_drafted[:] = 16
    s.last_accepted[:] = 16
    assert make_policy("adaptive").decide(s).tolist() == [16] * 4  # capped at kmax


def test_ema_mode_drafts_expected_accepted_run_plus_margin():
    s = state([0, 1, 1], kmax=16, accept_ema=np.array([np.nan, 0.5, 0.8]))
    # r/(1-r) + 1: 0.5 -> 2, 0.8 -> 5; no history -> k_init
    assert make_policy("adaptive", mode="ema", margin=1.0, k_init=3).decide(s).tolist() == [3, 2, 5]


def test_oracle_drafts_the_match_length_and_refuses_without_it():
    s = state([0, 1, 1], kmax=4, match_len=np.array([0, 3, 9]))
    assert make_policy("oracle").decide(s).tolist() == [0, 3, 4]
    with pytest.raises(SpecrollError, match="only the simulator"):
        make_policy("oracle").decide(state([0]))
    assert not make_policy("oracle").deployable
