"""The MDP policy: optimality against brute force, threshold structure, lookup."""

import itertools

import numpy as np
import pytest

from specroll.calibration import load_profile
from specroll.core.errors import SpecrollError
from specroll.policies import make_policy, solve_mdp, threshold_structure
from tests.policies.test_families import state


def roofline(b, k):
    """A memory/compute roofline: fixed overhead + max(weights read, FLOPs of b (K+1) tokens)."""
    return 1e-3 + np.maximum(1e-2, 2e-4 * b * (k + 1))


def _ratio(policy, tau_b, r, trans):
    C = r.shape[0]
    chain = trans[np.arange(C), policy]
    w, v = np.linalg.eig(chain.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi = pi / pi.sum()
    return (pi * tau_b[policy]).sum() / (pi * r[np.arange(C), policy]).sum()


@pytest.mark.parametrize("persistence", [0.0, 0.6, 0.95])
def test_solution_is_the_best_stationary_policy_by_brute_force(persistence):
    alphas = np.array([0.3, 0.8, 0.95])
    K1 = 5
    batches = np.array([1.0, 8.0, 64.0])
    tau = roofline(batches[:, None], np.arange(K1)[None, :]) / batches[:, None]
    table, g = solve_mdp(tau, alphas, persistence)
    # Rebuild the model's transitions the same way to score every stationary policy.
    a = alphas[:, None]
    ks = np.arange(K1)
    r = np.cumsum(a ** ks[None, :], axis=1)
    step = persistence * np.eye(3) + (1 - persistence) / 3
    trans = np.zeros((3, K1, 3))
    for c, k in itertools.product(range(3), range(K1)):
        for j in range(k + 1):
            p = alphas[c] ** j * ((1 - alphas[c]) if j < k else 1.0)
            trans[c, k] += p * np.linalg.matrix_power(step, j + 1)[c]
    for bi in range(batches.size):
        best = min(_ratio(np.array(pol), tau[bi], r, trans) for pol in itertools.product(range(K1), repeat=3))
        assert g[bi] == pytest.approx(best, rel=1e-9)
        assert _ratio(table[bi], tau[bi], r, trans) == pytest.approx(best, rel=1e-9)


def test_optimal_k_has_the_threshold_structure():
    p = make_policy("mdp", cost_fn=roofline, max_batch=128, k_max=12)
    s = p.structure()
    assert s["ok"] and s["nondecreasing_in_confidence"] and s["nonincreasing_in_batch"], s["violations"]
    # and it is not trivial: long drafts at small batch and high confidence, few at large batch
    assert p.table[0, -1] > p.table[-1, -1] and p.table[0, -1] > p.table[0, 0]


def test_structure_check_reports_violations():
    bad = np.array([[1, 2, 1], [0, 3, 4]])
    s = threshold_structure(bad)
    assert not s["ok"]
    assert ("confidence", 0, 1) in s["violations"] and ("batch", 0, 1) in s["violations"]


def test_decide_looks_up_batch_and_confidence_bucket():
    p = make_policy("mdp", cost_fn=roofline, max_batch=64, k_max=8, conf_edges=[0.5, 0.9])
    conf = np.zeros((5, 8), np.float32)
    conf[:, 0] = [0.1, 0.95, 0.6, np.nan, np.nan]
    s = state([0, 0, 1, 1, 1], kmax=8, conf=conf, accept_ema=np.array([0, 0, 0, 0.95, np.nan]))
    s.batch_size = np.array([3, 40], np.int32)
    k = p.decide(s)
    b40 = int(np.searchsorted(p.batches, 40, side="right") - 1)  # 32: the grid point below
    assert p.batches[b40] == 32
    # NaN confidence -> acceptance EMA (0.95 -> top bucket), else alpha 0.7 -> middle bucket
    assert k.tolist() == [p.table[2, 0], p.table[2, 2], p.table[b40, 1], p.table[b40, 2], p.table[b40, 1]]


def test_profile_tables_are_cached_per_profile_and_the_policy_keeps_no_profile_name():
    h100, a100 = load_profile("h100-sxm:qwen2.5-7b"), load_profile("a100-80gb:qwen2.5-7b")
    a, b, c = (make_policy("mdp", max_batch=32) for _ in range(3))
    a.bind_cost(h100)
    b.bind_cost(load_profile("h100-sxm:qwen2.5-7b"))  # the same prices: the same table
    c.bind_cost(a100)
    assert a.table is b.table and a.structure()["ok"]
    assert c.table is not a.table
    assert "profile" not in b.to_dict()["params"]


def test_an_unbound_cost_policy_refuses_to_decide_and_an_old_profile_pin_is_an_error():
    p = make_policy("mdp", max_batch=8)
    with pytest.raises(SpecrollError, match="cost profile"):
        p.decide(state([0], kmax=4))
    with pytest.raises(SpecrollError, match="no parameter 'profile'"):
        make_policy("mdp", profile="h100-sxm:qwen2.5-7b")
