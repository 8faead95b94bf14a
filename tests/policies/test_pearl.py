"""PEARL's draft window (family ``pearl``): as many draft tokens as fit in one verification."""

import numpy as np
import pytest

from specroll.calibration import IterationBatch, load_profile
from specroll.core.errors import SpecrollError
from specroll.policies import PearlPolicy, make_policy, pearl_window

from .test_families import state


def test_window_is_the_largest_draft_that_fits_in_the_verification():
    verify = np.array([[10.0, 10.0, 10.0, 10.0, 10.0],     # flat verify, 3 s per draft step -> 3
                       [10.0, 11.0, 12.0, 13.0, 14.0],     # 3.5 s/step: 4 * 3.5 = 14 <= 14 -> 4
                       [10.0, 10.0, 10.0, 10.0, 10.0]])    # a draft step slower than a verify -> 1
    step = np.array([3.0, 3.5, 20.0])
    assert pearl_window(verify, step, 4).tolist() == [3, 4, 1]
    assert pearl_window(verify, step, 4, margin=2.0).tolist() == [4, 4, 1]


def test_window_from_the_profile_grows_with_the_batch_and_matches_the_cost_model():
    p = make_policy("pearl", draft_model="qwen2.5-0.5b", ctx_len=2048, k_max=16, max_batch=256)
    p.bind_cost(load_profile("h100-sxm:qwen2.5-7b"))
    g = p.gamma
    assert g.shape == (256,) and g.min() >= 1 and g.max() <= 16
    assert g[255] >= g[0]  # verification slows with the batch, a small draft model's step much less
    # check one entry against the profile directly: gamma drafts fit, gamma + 1 do not (unless k_max)
    prof = load_profile("h100-sxm:qwen2.5-7b")
    drafty = prof.with_drafter({"kind": "model", "model": "qwen2.5-0.5b"})

    def t(profile, b, k):
        return float(profile.iteration_time(IterationBatch.from_requests(
            np.full(b, k + 1.0), np.full(b, 2048.0), draft=np.full(b, float(k))))[0])

    for b in (1, 32, 200):
        k = int(g[b - 1])
        step = t(drafty, b, 1) - t(prof, b, 1)
        assert k * step <= t(prof, b, k) * (1 + 1e-9)
        if k < 16:
            assert (k + 1) * step > t(prof, b, k + 1)


def test_decisions_per_engine_batch_and_the_fast_path_floor():
    p = make_policy("pearl", k_max=16, max_batch=256)
    p.bind_cost(load_profile("h100-sxm:qwen2.5-7b"))
    s = state([0] * 3 + [1] * 200, kmax=8)
    k, horizon, floor = p.decide_with_horizon(s)
    assert horizon is None
    assert k.tolist() == [min(int(p.gamma[2]), 8)] * 3 + [min(int(p.gamma[199]), 8)] * 200
    # floor: the decision holds for every batch size from floor up to the current one
    for e, b in ((0, 3), (1, 200)):
        f = int(floor[e])
        assert 1 <= f <= b and (p.gamma[f - 1:b] == p.gamma[b - 1]).all()
        if f > 1:
            assert p.gamma[f - 2] != p.gamma[b - 1]
    assert isinstance(p, PearlPolicy)


def test_bad_parameters_are_errors():
    with pytest.raises(SpecrollError) as exc:
        make_policy("pearl", draft_model="nope")
    assert exc.value.field == "draft_model"
    with pytest.raises(SpecrollError):
        make_policy("pearl", margin=0.0)
