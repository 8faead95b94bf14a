"""Every registered policy, on random multi-engine states: ints in [0, kmax], shape (n,)."""

import zlib

import numpy as np
import pytest

from specroll.calibration import load_profile
from specroll.policies import POLICIES, Feedback, PolicyState, make_policy


def random_state(rng, n_engines, kmax, with_conf, with_match=True):
    sizes = rng.integers(0, 40, n_engines)
    engine = np.repeat(np.arange(n_engines), sizes).astype(np.int32)
    n = engine.size
    drafted = rng.integers(0, kmax + 1, n).astype(np.int32)
    s = PolicyState(
        engine=engine, request=np.arange(n), generated=rng.integers(0, 4000, n),
        prompt_len=rng.integers(1, 500, n),
        predicted_len=np.where(rng.random(n) < 0.3, np.nan, rng.uniform(1, 4096, n)),
        last_drafted=drafted, last_accepted=(drafted * rng.random(n)).astype(np.int32),
        accept_ema=np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
        batch_size=sizes.astype(np.int32), kv_used=rng.random(n_engines),
        iteration=rng.integers(0, 1000, n_engines), last_iter_time=rng.random(n_engines) * 0.05,
        kmax=kmax, max_len=4096, step=int(rng.integers(0, 5)),
        match_len=rng.integers(0, kmax + 3, n) if with_match else None,
    )
    if with_conf:
        conf = rng.random((n, kmax)).astype(np.float32)
        lens = rng.integers(0, kmax + 1, n)
        conf[np.arange(kmax)[None, :] >= lens[:, None]] = 0.0
        conf[rng.random(n) < 0.2] = np.nan  # some requests without a signal
        s.conf_fn = lambda: conf
    return s


@pytest.mark.parametrize("name", sorted(POLICIES.names()))
def test_every_policy_returns_valid_draft_lengths(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    kwargs = {"max_batch": 64} if name == "mdp" else {}
    p = make_policy(name, **kwargs)
    if p.needs_cost:
        p.bind_cost(load_profile("h100-sxm:qwen2.5-1.5b"))
    for trial in range(12):
        kmax = int(rng.integers(1, 12))
        E = int(rng.integers(1, 9))
        p.reset(E)
        s = random_state(rng, E, kmax, with_conf=trial % 2 == 0)
        k = p.decide(s)
        assert isinstance(k, np.ndarray) and k.shape == (s.n,), name
        assert np.issubdtype(k.dtype, np.integer), (name, k.dtype)
        assert (k >= 0).all() and (k <= kmax).all(), (name, k, kmax)
        acc = np.minimum(k, rng.integers(0, kmax + 1, s.n))
        p.observe(s, Feedback(k=k, accepted=acc, iter_time=rng.random(E) * 0.03))
        # a decision is a function of the state: the stateless families give the same answer again
        if name not in ("tlt", "diffuspec"):  # the stateful feedback controllers
            assert (p.decide(s) == k).all(), name
