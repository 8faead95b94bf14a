"""Engine-side systems in the simulator: tree drafts (STAND), PEARL's overlap, self-speculation and
diffusion drafters in simulations, and the fast path's bit-identity for each of them."""

import copy

import numpy as np
import pytest

from specroll.calibration import IterationBatch, load_profile
from specroll.core.errors import SpecrollError
from specroll.policies import make_policy
from specroll.simulator import (
    EngineSpec,
    ParametricAcceptance,
    SimConfig,
    Simulator,
    StepKernel,
    TraceAcceptance,
)

from .test_simulate import SMALL
from .test_window import _assert_same, _rollouts, _run, _with_trace_columns


def small(**sections) -> dict:
    """The SMALL test config as a dict, with sections merged in."""
    import tomllib

    d = tomllib.loads(SMALL.format(dispatch="round-robin"))
    for name, sec in sections.items():
        if isinstance(sec, dict) and isinstance(d.get(name), dict):
            d[name].update(sec)
        else:
            d[name] = sec
    return d


def run(d: dict, policy=None, fast: bool = True) -> dict:
    sim = Simulator(SimConfig.from_dict(copy.deepcopy(d)), fast=fast)
    return sim.run(policy, show_progress=False).summary.to_json()


def conserved(s: dict) -> bool:
    return s["rollouts"] + s["request_iterations"] + s["accepted_tokens"] == s["tokens"]


# --- tree drafts ---------------------------------------------------------------------------------

def test_one_branch_tree_is_the_chain_bit_for_bit():
    rng = np.random.default_rng(1)
    ro = _rollouts(rng, 60)
    a = ParametricAcceptance(model="decay", alpha=0.8, kmax=6).prepare(ro, 2)
    b = ParametricAcceptance(model="decay", alpha=0.8, kmax=6, tree_width=1).prepare(ro, 2)
    assert np.array_equal(a.match, b.match) and b.tree_width == 1


def test_parametric_tree_takes_the_best_of_independent_branches():
    """w independent branches: P(m_t >= d) = 1 - (1 - alpha^d)^w (a position is matched at depth d if
    any branch is still alive there), and the tree's m_t is never below its first branch's."""
    rng = np.random.default_rng(0)
    ro = _rollouts(rng, 400, max_len=4000)
    ro.response_len[:] = 4000
    alpha, kmax = 0.6, 8
    chain = ParametricAcceptance(alpha=alpha, kmax=kmax).prepare(ro, 5)
    tree = ParametricAcceptance(alpha=alpha, kmax=kmax, tree_width=3).prepare(ro, 5)
    assert tree.tree_width == 3
    assert (tree.match >= chain.match).all()
    # positions far from each response's end (where m_t is clipped)
    off = ro.offsets
    far = np.concatenate([np.arange(off[i], off[i + 1] - kmax - 1) for i in range(ro.n)])
    m = tree.match[far].astype(np.int64)
    for d in (1, 2, 3, 5):
        expect = 1.0 - (1.0 - alpha ** d) ** 3
        assert np.mean(m >= d) == pytest.approx(expect, abs=0.01), d
        # the per-depth acceptance of the best branch: P(m >= d | m >= d - 1), above alpha and falling
        if d > 1:
            cond = np.mean(m >= d) / np.mean(m >= d - 1)
            assert alpha < cond == pytest.approx(expect / (1.0 - (1.0 - alpha ** (d - 1)) ** 3), abs=0.02)


class Recorder:
    """A cost model that records the batches it prices (10 ms + 0.1 ms per query token)."""

    def __init__(self) -> None:
        self.batches: list[IterationBatch] = []

    def iteration_time(self, b):
        self.batches.append(b)
        return np.where(np.asarray(b.n) > 0, 0.01 + 1e-4 * np.asarray(b.q_sum), 0.0)

    def prefill_time(self, prompt_lens):
        return 0.0


def test_tree_verify_prices_w_times_k_nodes_and_tree_attention():
    from specroll.simulator import StepRollouts

    ro = StepRollouts(step=0, prompt_id=np.arange(2), sample=np.zeros(2, np.int64),
                      prompt_len=np.array([100, 300]), response_len=np.array([50, 50]),
                      finished=np.ones(2, bool))
    acc = ParametricAcceptance(alpha=0.5, kmax=4, tree_width=3).prepare(ro, 0)
    cost = Recorder()
    StepKernel(ro, acc, np.zeros(2, np.int64), np.arange(2), np.full(2, np.nan), EngineSpec(1, 8, 10**6),
               cost, make_policy("fixed", k=4), step=0, rid_base=0, max_len=50, fast=False).run()
    first = cost.batches[0]
    w, k, ctx = 3, 4, np.array([100.0, 300.0])
    assert first.n[0] == 2 and first.draft_tokens[0] == 2 * w * k
    assert first.q_sum[0] == 2 * (w * k + 1) and first.q_max[0] == w * k + 1
    # the pending token sees the context and itself; a node at depth d sees the context, the pending
    # token and its d ancestors-or-self
    pairs = sum((w * k + 1) * c + 1 + w * sum(1 + d for d in range(1, k + 1)) for c in ctx)
    assert first.qc_sum[0] == pairs


@pytest.mark.parametrize("source", ["parametric", "trace"])
@pytest.mark.parametrize("name,params", [("fixed", {"k": 3}), ("das", {"k_long": 5}),
                                         ("pearl", {"k_max": 6})])
def test_fast_path_equals_the_loop_for_trees(source, name, params):
    rng = np.random.default_rng(4)
    ro = _rollouts(rng, 120, max_len=2000)
    if source == "trace":
        ro = _with_trace_columns(rng, ro)
        ro.tree_width["suffix"] = 2
        acc = TraceAcceptance(drafter="suffix").prepare(ro, seed=0)
        assert acc.tree_width == 2
    else:
        src = ParametricAcceptance(model="decay", alpha=0.85, alpha_end=0.5, kmax=8, tree_width=3)
        acc = src.prepare(ro, 3)
    pred = ro.response_len * rng.uniform(0.5, 1.5, ro.n)
    a, b = (_run(ro, acc, make_policy(name, **params), fast=fast, engines=5, max_batch=16, kv=6000,
                 cost=load_profile("h100-sxm:qwen2.5-7b"), predicted=pred) for fast in (False, True))
    _assert_same(a, b)
    assert a.drafted > 0


def test_tree_drafts_cut_iterations_in_a_simulation():
    chain = run(small())
    tree = run(small(acceptance={"tree_width": 3}))
    assert tree["request_iterations"] < chain["request_iterations"] and conserved(tree)
    # drafted counts verified nodes: 3 per depth
    assert tree["drafted_tokens"] > 2 * chain["drafted_tokens"]


# --- drafters priced by forward passes in simulations --------------------------------------------

def test_pearl_overlap_costs_the_max_of_drafting_and_verifying():
    free = run(small())
    serial = run(small(drafter={"kind": "model", "model": "qwen2.5-0.5b"}))
    pearl = run(small(drafter={"kind": "model", "model": "qwen2.5-0.5b", "overlap": True}))
    assert free["rollout_s"] <= pearl["rollout_s"] < serial["rollout_s"]
    # the same iterations and tokens: only the clock differs
    for key in ("request_iterations", "tokens", "accepted_tokens", "drafted_tokens"):
        assert free[key] == serial[key] == pearl[key]
    assert pearl["drafter"]["overlap"] is True


def test_pearl_policy_runs_on_the_fast_path_bit_identically():
    d = small(drafter={"kind": "model", "model": "qwen2.5-0.5b", "overlap": True},
              policy={"name": "pearl", "params": {"k_max": 6, "max_batch": 32}})
    a, b = run(d, fast=True), run(d, fast=False)
    for key in ("wall_s", "acceptance_wall_s", "kernel_wall_s", "tokens_per_wall_s"):
        a.pop(key), b.pop(key)
    assert a == b and conserved(a)


@pytest.mark.parametrize("layers", [4, 14])
def test_layer_skip_drafter_slows_iterations_by_its_partial_forwards(layers):
    free = run(small())
    s = run(small(drafter={"kind": "layers", "layers": layers}))
    assert s["rollout_s"] > free["rollout_s"] and s["request_iterations"] == free["request_iterations"]
    fewer = run(small(drafter={"kind": "layers", "layers": 2}))
    assert fewer["rollout_s"] < s["rollout_s"]


def test_diffuspec_with_a_parallel_drafter_runs_on_the_loop_and_conserves_tokens():
    d = small(drafter={"kind": "parallel", "model": "qwen2.5-0.5b"},
              policy={"name": "diffuspec", "params": {}})
    s = run(d)
    assert conserved(s) and s["drafted_tokens"] > 0
    seq = run(small(drafter={"kind": "model", "model": "qwen2.5-0.5b"},
                    policy={"name": "diffuspec", "params": {}}))
    # the same decisions (the controller sees the same acceptance); a parallel draft costs less
    assert seq["request_iterations"] == s["request_iterations"] and s["rollout_s"] < seq["rollout_s"]


def test_bad_drafter_table_names_the_config_field(tmp_path):
    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(small(drafter={"kind": "layers", "layers": 99}), file="sim.toml")
    assert exc.value.field == "drafter.layers" and exc.value.file == "sim.toml"
    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(small(drafter={"kind": "parallel", "model": "qwen2.5-0.5b", "blok": 4}),
                            file="s.toml")
    assert exc.value.field == "drafter.blok"
