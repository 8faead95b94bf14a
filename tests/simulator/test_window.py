"""The windowed fast path (simulator/_window.py) against the iteration-by-iteration kernel: every
output must be the same bit for bit, whatever the policy, queueing, preemption, acceptance source,
cost model and window length."""

import json

import numpy as np
import pytest

import specroll.simulator._window as window
import specroll.simulator._windowparts as windowparts
from specroll.calibration import CostProfile, load_profile
from specroll.calibration._costmodel import allreduce_time
from specroll.policies import make_policy
from specroll.simulator import (
    WALL_KEYS,
    EngineSpec,
    ParametricAcceptance,
    SimConfig,
    Simulator,
    StepKernel,
    StepRollouts,
    TraceAcceptance,
)

from .test_simulate import SMALL


class ToyCost:
    """10 ms + 0.1 ms per query token (0 for an idle engine)."""

    def iteration_time(self, b):
        return np.where(np.asarray(b.n) > 0, 0.01 + 1e-4 * np.asarray(b.q_sum), 0.0)

    def prefill_time(self, prompt_lens):
        return 1e-5 * float(np.sum(prompt_lens))


def _profile(**coef):
    """The H100 what-if profile with some coefficients changed (padded backends, per-request costs)."""
    d = load_profile("h100-sxm:qwen2.5-7b").to_dict()
    d["coefficients"] = {**d["coefficients"], **coef}
    return CostProfile.from_dict(d)


def _rollouts(rng, n, max_len=3000, prompt=(20, 400)):
    return StepRollouts(step=0, prompt_id=np.arange(n), sample=np.zeros(n, np.int64),
                        prompt_len=rng.integers(*prompt, n), response_len=rng.integers(1, max_len, n),
                        finished=np.ones(n, bool))


def _with_trace_columns(rng, ro, kmax=6):
    """match_/conf_ columns with varying proposal lengths (0..kmax) and m_t <= proposal length."""
    total = int(ro.response_len.sum())
    plen = rng.integers(0, kmax + 1, total)
    ro.match["suffix"] = ((rng.random(total) * (plen + 1)).astype(np.int16), ro.offsets)
    conf = rng.uniform(0.05, 1.0, (total, kmax)).astype(np.float32)
    conf[np.arange(kmax)[None, :] >= plen[:, None]] = 0.0
    ro.conf["suffix"] = (conf.ravel(), ro.offsets * kmax)
    ro.kmax["suffix"] = kmax
    return ro


def _run(ro, acc, policy, *, fast, engines, max_batch, kv, cost, predicted):
    eng = np.arange(ro.n) % engines
    return StepKernel(ro, acc, eng, np.argsort(eng, kind="stable"), predicted,
                      EngineSpec(engines, max_batch, kv), cost, policy, step=0, rid_base=7,
                      max_len=int(ro.response_len.max()), timeline_points=300, fast=fast).run()


def _assert_same(a, b):
    for name in ("engine", "start_s", "end_s", "iterations", "preemptions", "engine_busy_s",
                 "engine_iterations", "engine_prefill_s"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("drafted", "accepted", "request_iterations", "kernel_iterations"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.timeline.keys() == b.timeline.keys()
    for name in a.timeline:
        assert a.timeline[name].dtype == b.timeline[name].dtype, name
        assert np.array_equal(a.timeline[name], b.timeline[name]), name


POLICIES = [("ar", {}), ("fixed", {"k": 3}), ("das", {}), ("das", {"growth": 1.0, "k_long": 8}),
            ("das", {"mode": "closed_form"}), ("das", {"token_quota": 40, "k_medium": 3})]
CLUSTERS = [  # engines, max_batch, kv capacity: plain, queueing + preemption, one engine
    (4, 64, 10**9), (7, 16, 2500), (1, 256, 10**9)]
COSTS = {"toy": ToyCost, "h100": lambda: load_profile("h100-sxm:qwen2.5-7b"),
         "padded": lambda: _profile(a=0.6, b=0.7, t_request=2e-5, t_token=1e-6, p=3.0)}


@pytest.mark.parametrize("cluster", CLUSTERS, ids=["plain", "queue+preempt", "one-engine"])
@pytest.mark.parametrize("name,params", POLICIES, ids=[f"{n}{p}" for n, p in POLICIES])
def test_fast_path_equals_the_iteration_loop(name, params, cluster):
    rng = np.random.default_rng(11)
    ro = _rollouts(rng, 150)
    src = ParametricAcceptance(model="decay", alpha=0.85, alpha_end=0.5, decay_tokens=800, kmax=8)
    acc = src.prepare(ro, 3)
    # predictions: noisy lengths, some unknown (das classes: Short, Medium, Long, and horizons)
    pred = ro.response_len * rng.uniform(0.5, 1.5, ro.n)
    pred[rng.random(ro.n) < 0.2] = np.nan
    engines, max_batch, kv = cluster
    out = {}
    for fast in (False, True):
        out[fast] = _run(ro, acc, make_policy(name, **params), fast=fast, engines=engines,
                         max_batch=max_batch, kv=kv, cost=load_profile("h100-sxm:qwen2.5-7b"), predicted=pred)
    if cluster[2] < 10**9:
        assert out[True].preemptions.sum() > 0
    _assert_same(out[False], out[True])


@pytest.mark.parametrize("cost", sorted(COSTS))
@pytest.mark.parametrize("source", ["parametric", "trace"])
def test_fast_path_equals_the_iteration_loop_for_costs_and_sources(cost, source):
    rng = np.random.default_rng(5)
    ro = _rollouts(rng, 90, max_len=1500)
    if source == "trace":  # per-position proposal lengths clip the drafts
        acc = TraceAcceptance(drafter="suffix").prepare(_with_trace_columns(rng, ro), seed=0)
        assert acc.proposal_len is not None
    else:
        acc = ParametricAcceptance(alpha=0.7, kmax=5).prepare(ro, seed=1)
    pred = ro.response_len * rng.uniform(0.7, 1.3, ro.n)
    for name, params in (("fixed", {"k": 4}), ("das", {"k_long": 5, "k_medium": 2})):
        a, b = (_run(ro, acc, make_policy(name, **params), fast=fast, engines=3, max_batch=24, kv=6000,
                     cost=COSTS[cost](), predicted=pred) for fast in (False, True))
        _assert_same(a, b)


@pytest.mark.parametrize("choices", [[1], [3], [256]], ids=["W=1", "W=3", "W=256"])
def test_results_do_not_depend_on_the_window_length(monkeypatch, choices):
    rng = np.random.default_rng(2)
    ro = _rollouts(rng, 120)
    acc = ParametricAcceptance(alpha=0.8, kmax=8).prepare(ro, seed=4)
    pred = ro.response_len * rng.uniform(0.5, 1.5, ro.n)

    def run():
        return _run(ro, acc, make_policy("das", growth=0.8), fast=True, engines=5, max_batch=16, kv=3000,
                    cost=load_profile("h100-sxm:qwen2.5-7b"), predicted=pred)

    ref = run()
    monkeypatch.setattr(windowparts, "W_CHOICES", np.array(choices))
    _assert_same(ref, run())


def test_policies_without_the_contract_take_the_iteration_loop():
    for name in ("tlt", "adaptive", "oracle", "threshold"):
        assert not window.has_fast_path(make_policy(name)), name
    for name in ("ar", "fixed", "das"):
        assert window.has_fast_path(make_policy(name)), name


@pytest.mark.parametrize("policy", ["das", "fixed"])
def test_simulator_summary_and_tables_are_identical_on_both_paths(tmp_path, policy):
    path = tmp_path / "c.toml"
    params = "{ k = 3 }" if policy == "fixed" else "{ k_long = 5, growth = 1.0 }"
    path.write_text(SMALL.format(dispatch="least-loaded").replace('name = "fixed"', f'name = "{policy}"')
                    .replace("{ k = 3 }", params))
    cfg = SimConfig.from_toml(path)
    res = {fast: Simulator(cfg, fast=fast).run(show_progress=False) for fast in (False, True)}
    for fast, r in res.items():
        r.write(tmp_path / str(fast))
    a, b = (json.loads((tmp_path / str(f) / "summary.json").read_text()) for f in (False, True))
    for key in WALL_KEYS:
        a.pop(key), b.pop(key)
    assert a == b
    for name in ("requests.parquet", "engines.parquet"):
        assert (tmp_path / "False" / name).read_bytes() == (tmp_path / "True" / name).read_bytes()


def _forward_time_reference(coef, k, n, q_sum, q_max, c_sum, c_max, qc_sum):
    """The cost model's formula written out in full (before the fast path's exact shortcuts)."""
    a, b = coef["a"], coef["b"]
    kv_tokens = a * c_sum + (1.0 - a) * n * c_max
    q_tok = b * q_sum + (1.0 - b) * n * q_max
    pairs = a * qc_sum + (1.0 - a) * n * q_max * (c_max + 0.5 * (q_max + 1.0))
    t_bytes = (k.weight_bytes + k.kv_bytes_per_token * kv_tokens) / (k.mem_bw * coef["e_bw"])
    t_flops = (k.linear_flops_per_token * q_tok / coef["e_f"]
               + k.attention_flops_per_pair * pairs / coef["e_attn"]) / k.peak_flops
    p = coef["p"]
    big = np.maximum(t_bytes, t_flops)
    roof = big * ((t_bytes / big) ** p + (t_flops / big) ** p) ** (1.0 / p)
    t = coef["t_fixed"] + coef["t_request"] * n + coef["t_token"] * q_tok + roof
    if k.tp > 1:
        t = t + allreduce_time(k, q_tok)
    return t


@pytest.mark.parametrize("coef", [{}, {"a": 0.7}, {"b": 0.5}, {"t_request": 1e-5, "t_token": 3e-7},
                                  {"p": 16.0}, {"p": 1.0}])
def test_cost_model_shortcuts_give_the_same_bits(coef):
    from specroll.calibration._costmodel import forward_time

    prof = _profile(**coef)
    rng = np.random.default_rng(0)
    n = rng.integers(1, 300, 5000).astype(float)
    q_max = rng.integers(1, 17, n.size).astype(float)
    q_sum = np.minimum(n * q_max, n + rng.integers(0, 2000, n.size))
    c_max = rng.integers(1, 40000, n.size).astype(float)
    c_sum = np.floor(n * c_max * rng.random(n.size)) + n
    qc_sum = np.floor(q_sum * c_sum / n)
    args = (prof.coefficients, prof._consts, n, q_sum, q_max, c_sum, c_max, qc_sum)
    assert np.array_equal(forward_time(*args), _forward_time_reference(*args))
    # the equal-terms tie (ratio 1 on both sides)
    t = forward_time(prof.coefficients, prof._consts, n[:1], q_sum[:1], q_max[:1], c_sum[:1], c_max[:1],
                     qc_sum[:1])
    assert np.isfinite(t).all()


def test_window_helpers_against_direct_loops():
    rng = np.random.default_rng(4)
    P = np.cumsum(rng.integers(0, 4, (20, 30)), axis=0)  # non-decreasing down each column
    cols = np.arange(30)
    last = rng.integers(0, 20, 30)
    target = rng.integers(0, 40, 30)
    got = windowparts.first_at_least(P, cols, target, last)
    for c in cols:
        hits = [r for r in range(1, last[c] + 1) if P[r, c] >= target[c]]
        assert got[c] == (hits[0] if hits else last[c] + 1)
    # engines chasing 5, 5, 2 and 0 iterations over 3, 1, 4 and 2 columns
    lim, cnt = np.array([5, 5, 2, 0]), np.array([3, 1, 4, 2])
    seg = np.cumsum(cnt) - cnt
    X = rng.integers(0, 100, (6, 10))
    sums = windowparts.banded_reduceat(np.add, X, seg, windowparts.row_bands(lim, cnt), 6)
    for e in range(4):
        for r in range(6):
            want = X[r, seg[e]:seg[e] + cnt[e]].sum() if r <= lim[e] else 0
            assert sums[r, e] == want
