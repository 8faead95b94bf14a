"""DiffuSpec's adaptive draft-length controller (family ``diffuspec``) on crafted states and feedback."""

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import POLICIES, DiffuSpecPolicy, Feedback, make_policy
from specroll.policies._tuner import search_space

from .test_families import state


def feed(p, s, k, a):
    p.observe(s, Feedback(k=np.asarray(k), accepted=np.asarray(a), iter_time=np.zeros(s.n_engines)))


def test_registered_with_tunable_parameters():
    assert POLICIES.get("diffuspec") is DiffuSpecPolicy
    assert {"k_init", "k_max", "beta", "delta", "grow"} <= set(search_space("diffuspec"))
    assert make_policy("diffuspec").to_dict()["policy"] == "diffuspec"


def test_first_draft_is_k_init_then_follows_the_accepted_ema():
    p = make_policy("diffuspec", k_init=5, beta=0.5, delta=1.0, grow=2, k_max=16)
    s = state([0, 0, 1], kmax=16)
    assert p.decide(s).tolist() == [5, 5, 5]
    # request 0: 2 of 5 accepted -> A = 2 -> ceil(2 + 1) = 3; request 1: 0 of 5 -> A = 0 -> 1;
    # request 2 verified nothing (k = 0): stays at k_init
    feed(p, s, [5, 5, 0], [2, 0, 0])
    assert p.decide(s).tolist() == [3, 1, 5]
    # request 0 then 3 of 3 (full): A = 0.5*2 + 0.5*3 = 2.5 -> 4, and full -> max(4, 3 + 2) = 5
    # request 1: 1 of 1 (full): A = 0.5 -> 2, max(2, 1 + 2) = 3
    feed(p, s, [3, 1, 0], [3, 1, 0])
    assert p.decide(s).tolist() == [5, 3, 5]
    # a rejection after growth: 0 of 5 -> A = 1.25 -> ceil(2.25) = 3, no growth
    feed(p, s, [5, 3, 0], [0, 3, 0])
    assert p.decide(s).tolist()[0] == 3


def test_clipped_to_k_min_k_max_and_the_drafters_kmax():
    p = make_policy("diffuspec", k_init=30, k_min=2, k_max=12, grow=8)
    s = state([0, 1], kmax=10)
    assert p.decide(s).tolist() == [10, 10]  # k_init above kmax
    feed(p, s, [10, 10], [10, 0])  # full -> 10 + 8, clipped; none accepted -> A = 0 -> 1 -> k_min
    assert p.decide(s).tolist() == [10, 2]
    s2 = state([0, 1], kmax=16)
    assert p.decide(s2).tolist() == [12, 2]


def test_requests_are_independent_and_keyed_by_request_id():
    p = make_policy("diffuspec", k_init=4, beta=1.0, delta=0.0, grow=0)
    s = state([0, 0, 1, 1], kmax=16, request=np.array([7, 3, 12, 5]))
    feed(p, s, [4, 4, 4, 4], [1, 2, 3, 0])
    assert p.decide(s).tolist() == [1, 2, 3, 1]  # A = a (beta 1), L = ceil(A), k_min 1
    # the same requests in another order (another engine layout): the same decisions per request
    s2 = state([0, 1, 1, 2], kmax=16, request=np.array([5, 12, 7, 3]))
    assert p.decide(s2).tolist() == [1, 3, 1, 2]
    p.reset(3)  # a new RL step forgets
    assert p.decide(s2).tolist() == [4, 4, 4, 4]


def test_higher_acceptance_gives_longer_drafts_in_steady_state():
    """Fed the feedback of geometric acceptance at rate alpha, the controller settles at longer drafts
    for a better drafter."""
    rng = np.random.default_rng(0)
    means = []
    for alpha in (0.5, 0.8, 0.95):
        p = make_policy("diffuspec", k_max=32)
        s = state(np.zeros(200, np.int32), kmax=32)
        ks = []
        for _ in range(60):
            k = p.decide(s)
            run = rng.geometric(1 - alpha, s.n) - 1  # accepted run before the first rejection
            feed(p, s, k, np.minimum(k, run))
            ks.append(k.mean())
        means.append(np.mean(ks[20:]))
    assert means[0] < means[1] < means[2]


@pytest.mark.parametrize("bad", [{"k_min": 5, "k_max": 4}, {"beta": 0.0}, {"delta": -1.0}, {"grow": -1},
                                 {"k_init": 2.5}])
def test_bad_parameters_are_errors(bad):
    with pytest.raises(SpecrollError):
        make_policy("diffuspec", **bad)
