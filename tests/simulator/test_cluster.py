"""The cluster as discrete events (simulator/_cluster.py, _dynamic.py, _sync.py, _async.py): engines as
SimPy processes over the kernel, the dynamic dispatch rules by hand on two engines, conservation
under every rule and mode, exact staleness, determinism and one clear error per bad table."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from specroll.core.errors import SpecrollError
from specroll.policies import make_policy
from specroll.simulator import (
    EngineSpec,
    ParametricAcceptance,
    SimConfig,
    Simulator,
    StepKernel,
    StepRollouts,
)
from specroll.simulator._config import DISPATCH
from specroll.simulator._sync import SyncLoop

from .test_systems_engines import run, small
from .test_window import ToyCost

IT = 0.01 + 1e-4  # ToyCost: one request, one query token (AR)
PF = 1e-5 * 10  # ToyCost: the prefill of a 10-token prompt


def _ro(lengths, prompts=None):
    n = len(lengths)
    return StepRollouts(step=0, prompt_id=np.arange(n) if prompts is None else np.asarray(prompts),
                        sample=np.zeros(n, np.int64), prompt_len=np.full(n, 10),
                        response_len=np.asarray(lengths, np.int64), finished=np.ones(n, bool))


def _step(lengths, dispatch, *, engines=2, max_batch=1, pred=None, prompts=None, fast=True, **cluster):
    """One synchronous step of the real rollout phase (SyncLoop._rollout) under ToyCost and AR:
    a response of L tokens takes its prefill (token 0) and L - 1 iterations of IT seconds."""
    ro = _ro(lengths, prompts)
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, 0)
    cfg = SimConfig.from_dict(small(cluster={"engines": engines, "max_batch": max_batch, "dispatch": dispatch,
                                             **cluster}))
    sim = SimpleNamespace(config=cfg, spec=EngineSpec(engines, max_batch, 10**6), profile=ToyCost(),
                          max_len=int(max(lengths)), fast=fast, chunk=cluster.get("chunk", 1))
    env = simpy.Environment()
    loop = SyncLoop(sim, env, make_policy("ar"), None, None)
    pred = np.full(ro.n, np.nan) if pred is None else np.asarray(pred, np.float64)
    box = {}

    def proc():
        box["out"], _ = yield from loop._rollout(0, ro, acc, pred, None, None)

    env.run(until=env.process(proc()))
    return box["out"], env.now


def test_static_round_robin_by_hand():
    out, t = _step([3, 10, 2, 2], "round-robin")
    # engine 0: rollouts 0 then 2; engine 1: rollouts 1 then 3
    assert out.engine.tolist() == [0, 1, 0, 1]
    assert out.end_s[0] == pytest.approx(PF + 2 * IT)
    assert out.end_s[2] == pytest.approx(2 * PF + 3 * IT)
    assert out.end_s[1] == pytest.approx(PF + 9 * IT)
    assert out.end_s[3] == pytest.approx(2 * PF + 10 * IT)
    assert t == pytest.approx(out.end_s.max())


def test_queue_gives_the_next_rollout_to_the_first_free_slot_by_hand():
    out, t = _step([3, 10, 2, 2], "queue")
    # start: 0 -> engine 0, 1 -> engine 1; engine 0 frees first (at PF + 2 IT) and takes 2, then 3
    assert out.engine.tolist() == [0, 1, 0, 0]
    assert out.start_s[2] == pytest.approx(PF + 2 * IT)
    assert out.end_s[2] == pytest.approx(2 * PF + 3 * IT)
    assert out.start_s[3] == pytest.approx(out.end_s[2])
    assert out.end_s[3] == pytest.approx(3 * PF + 4 * IT)
    assert t == pytest.approx(PF + 9 * IT)  # the step ends with rollout 1, not with 3 behind it
    # longest predicted first: 1 and 0 start, 2 and 3 follow on engine 1 (rollout 0's engine)
    out, _ = _step([3, 10, 2, 2], "queue", pred=[3, 10, 2, 2], queue_order="longest")
    assert out.engine.tolist() == [1, 0, 1, 1]


def test_seer_sends_chunks_to_the_least_kv_engine_at_each_round_by_hand():
    # two prompts of two samples; chunks of one sample, the longer-predicted prompt first
    lengths, prompts = [3, 3, 12, 12], [0, 0, 1, 1]
    out, t = _step(lengths, "seer", max_batch=2, pred=[3, 3, 12, 12], prompts=prompts, chunk=1,
                   interval_s=0.05)
    # round at 0: prompt 1's samples to engines 0 and 1 (the least KV in use each time), then
    # prompt 0's to engines 0 and 1 as well (each has one free slot)
    assert out.engine.tolist() == [0, 1, 0, 1]
    assert np.allclose(out.start_s, 0.0)
    # no slot frees before the chunks run out: the same as a static deal of these four
    out2, _ = _step(lengths, "seer", max_batch=1, pred=[3, 3, 12, 12], prompts=prompts, chunk=1,
                    interval_s=0.05)
    # one slot each: 2 -> engine 0, 3 -> engine 1 at 0; both free at PF + 11 IT (0.1112 s);
    # the scheduler's rounds at 0.05, 0.10, 0.15: the round at 0.15 hands out rollouts 0 and 1
    assert out2.engine[[2, 3]].tolist() == [0, 1]
    assert out2.start_s[2] == out2.start_s[3] == 0.0
    assert out2.end_s[2] == pytest.approx(PF + 11 * IT)
    assert out2.start_s[0] == pytest.approx(0.15) and out2.start_s[1] == pytest.approx(0.15)
    assert out2.end_s[0] == pytest.approx(0.15 + PF + 2 * IT)


def test_rollpacker_defers_predicted_long_prompts_to_a_long_round():
    d = small(cluster={"dispatch": "rollpacker", "long_threshold": 0.05})
    d["workload"]["steps"] = 2
    res = Simulator(SimConfig.from_dict(d)).run(show_progress=False)
    req = res.requests
    first = req[req.step == 0]
    cap = Simulator(SimConfig.from_dict(d)).max_len
    mean = first.groupby("prompt_id").response_len.mean()  # the history after step 0 (window 4)
    long = set(mean.index[mean > 0.05 * cap].tolist())
    assert long and len(long) < first.prompt_id.nunique()
    rounds = sorted(req.step.unique().tolist())
    assert rounds == [0, 1, 2]
    assert set(req[req.step == 2].prompt_id.unique().tolist()) == long  # the long round
    assert not (set(req[req.step == 1].prompt_id.unique().tolist()) & long)
    assert len(req) == 2 * len(first)  # every rollout of both trace steps ran once
    s = res.summary
    assert s["rollouts"] + s["request_iterations"] + s["accepted_tokens"] == s["tokens"]


def test_the_static_path_is_the_plain_kernel_bit_for_bit():
    """A static step through the engine processes gives what one StepKernel.run() gives."""
    d = small()
    d["workload"]["steps"] = 1
    sim = Simulator(SimConfig.from_dict(d))
    res = sim.run(make_policy("fixed", k=3), show_progress=False)
    ro, acc = sim.steps[0], sim.acceptance(0)
    E = sim.spec.n_engines
    eng = np.arange(ro.n) % E
    out = StepKernel(ro, acc, eng, np.argsort(eng, kind="stable"), np.full(ro.n, np.nan), sim.spec,
                     sim.profile, make_policy("fixed", k=3), step=ro.step, rid_base=0,
                     max_len=sim.max_len).run()
    req = res.requests
    assert np.array_equal(req.end_s.to_numpy(), out.end_s)
    assert np.array_equal(req.start_s.to_numpy(), out.start_s)
    assert res.summary["steps"][0]["rollout_s"] == float(out.engine_busy_s.max())
    assert res.summary["request_iterations"] == out.request_iterations


# --- every rule and mode ----------------------------------------------------------------------------

MODES = [("sync", {}), ("async", {"staleness": 0}), ("async", {"staleness": 2}),
         ("async", {"staleness": 1, "sync": "drain"})]


def _config(dispatch, mode, rl, partial=False):
    d = small(cluster={"dispatch": dispatch, "max_batch": 8})
    d["workload"]["steps"] = 3
    if mode == "async":
        d["rl"] = {"mode": "async", **rl}
    if partial:
        d["partial"] = {"enabled": True, "concurrency": 16}
    return d


CASES = [(disp, "sync", {}) for disp in DISPATCH] + [("queue", m, rl) for m, rl in MODES[1:]]


@pytest.mark.parametrize("dispatch,mode,rl", CASES)
def test_every_rollout_finishes_once_and_tokens_are_conserved(dispatch, mode, rl):
    d = _config(dispatch, mode, rl)
    sim = Simulator(SimConfig.from_dict(d))
    res = sim.run(show_progress=False)
    s, req = res.summary, res.requests
    trace = sum(ro.n for ro in sim.steps)
    assert len(req) == trace and np.isfinite(req.end_s).all()
    # each trace rollout exactly once, with its own length (as a multiset: prompts repeat across steps)
    ran = sorted(zip(req.prompt_id.tolist(), req["sample"].tolist(), req.response_len.tolist()))
    want = sorted((p, q, L) for ro in sim.steps
                  for p, q, L in zip(ro.prompt_id.tolist(), ro.sample.tolist(), ro.response_len.tolist()))
    assert ran == want
    assert s["tokens"] == sum(int(ro.response_len.sum()) for ro in sim.steps) == int(req.response_len.sum())
    assert s["rollouts"] + s["request_iterations"] + s["accepted_tokens"] == s["tokens"]
    assert (req.end_s >= req.start_s).all() and (req.end_s <= s["makespan_s"] + 1e-9).all()


@pytest.mark.parametrize("dispatch,mode,rl", [
    ("queue", "sync", {}), ("seer", "sync", {}), ("rollpacker", "sync", {}),
    ("queue", "async", {"staleness": 1}), ("queue", "async", {"staleness": 2, "sync": "drain"})])
def test_both_kernel_paths_agree_and_runs_are_deterministic(dispatch, mode, rl):
    d = _config(dispatch, mode, rl)
    pol = {"name": "das", "params": {"k_long": 5}}
    d["policy"] = pol
    a = run(d, fast=True)
    b = run(d, fast=False)
    c = run(d, fast=True)
    for x in (a, b, c):
        for key in ("wall_s", "acceptance_wall_s", "kernel_wall_s", "tokens_per_wall_s"):
            x.pop(key)
    # the timeline is sampled per engine on the windowed path and per kernel iteration on the loop
    assert a == c
    assert {k: v for k, v in a.items() if k != "kernel_iterations"} == \
        {k: v for k, v in b.items() if k != "kernel_iterations"}


@pytest.mark.parametrize("staleness", [0, 1, 2, 3])
@pytest.mark.parametrize("sync", ["interrupt", "drain"])
def test_staleness_is_never_exceeded(staleness, sync):
    d = _config("queue", "async", {"staleness": staleness, "sync": sync, "batch": 24})
    res = Simulator(SimConfig.from_dict(d)).run(show_progress=False)
    s, req = res.summary, res.requests
    assert (req.staleness <= staleness).all() and (req.staleness >= 0).all()
    assert s["staleness_max"] <= staleness
    assert all(st["staleness_max"] <= staleness for st in s["train_steps"])
    assert sum(st["rollouts"] for st in s["train_steps"]) == len(req)
    assert sum(v["tokens"] for v in s["versions"]) == s["tokens"]  # every token under one version
    assert 0.0 <= s["off_policy_fraction"] <= 1.0
    if staleness == 0:
        # synchronous RL without a barrier of its own: each batch is what its version started
        assert s["off_policy_fraction"] == 0.0
        assert (req.train_step == req.start_version).all()


def test_async_is_faster_than_sync_and_reports_its_figures(tmp_path):
    d = _config("queue", "sync", {})
    d["train"] = {"gpus": 4}
    sync = run(d)
    d["rl"] = {"mode": "async", "staleness": 2}
    res = Simulator(SimConfig.from_dict(d)).run(show_progress=False)
    s = res.summary
    assert s["makespan_s"] < sync["makespan_s"]
    assert s["off_policy_fraction"] > 0 and s["rl"]["staleness"] == 2
    assert 0 < s["engine_busy_fraction"] <= 1 and 0 < s["trainer_busy_fraction"] <= 1
    assert len(res.versions) == len(s["train_steps"]) + 1
    assert (res.versions.end_s >= res.versions.start_s).all()
    res.write(tmp_path)
    assert (tmp_path / "versions.parquet").is_file()


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sections,field", [
    ({"cluster": {"dispatch": "lottery"}}, "cluster.dispatch"),
    ({"rl": {"mode": "eventually"}}, "rl.mode"),
    ({"rl": {"mode": "async", "staleness": -1}}, "rl.staleness"),
    ({"rl": {"staleness": 2}}, "rl.staleness"),  # a sync run has no staleness
    ({"rl": {"mode": "async", "sync": "later"}}, "rl.sync"),
    ({"cluster": {"dispatch": "queue", "chunk": 2}}, "cluster.chunk"),  # seer's key
    ({"cluster": {"dispatch": "seer", "interval_s": 0.0}}, "cluster.interval_s"),
    ({"rl": {"mode": "async"}}, "cluster.dispatch"),  # async needs the central pool
    ({"rl": {"mode": "async"}, "cluster": {"dispatch": "queue"}, "partial": {"enabled": True}},
     "partial.enabled"),
    ({"cluster": {"dispatch": "seer"}, "partial": {"enabled": True}}, "cluster.dispatch"),
])
def test_bad_cluster_and_rl_tables_are_one_clear_error(sections, field):
    d = small()
    for name, sec in sections.items():
        d.setdefault(name, {}).update(sec)
    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(copy.deepcopy(d), file="c.toml")
    assert exc.value.field == field and exc.value.file == "c.toml" and exc.value.fix


def test_a_chunk_larger_than_the_group_is_an_error():
    d = small(cluster={"dispatch": "seer", "chunk": 5})  # groups of 4 samples
    with pytest.raises(SpecrollError) as exc:
        Simulator(SimConfig.from_dict(d, file="c.toml"))
    assert exc.value.field == "cluster.chunk" and "4" in exc.value.fix


# --- tuning the dispatch ------------------------------------------------------------------------------

def test_dispatch_parameters_are_tuned_with_the_policy(tmp_path):
    from specroll.simulator import tune_family, tune_setup

    d = small(cluster={"dispatch": "seer", "max_batch": 8})
    d["tune"] = {"cluster": True, "family": "das", "trials": 4}
    setup = tune_setup(d, file=str(tmp_path / "t.toml"))
    outcome = tune_family(setup, out=tmp_path / "out")
    best = outcome.summary.best_params
    assert {"cluster.chunk", "cluster.interval_s", "k_long"} <= set(best)
    assert 1 <= best["cluster.chunk"] <= 4  # up to the workload's groups
    assert outcome.result.best_policy.to_dict()["params"]["k_long"] == best["k_long"]
    # the first trial is the config's own dispatch parameters, so the best is never worse than them
    first = outcome.result.history.sort_values("number").iloc[0]
    assert first["param_cluster.chunk"] == 1 and first["param_cluster.interval_s"] == 0.25
    assert outcome.summary.best_value_s <= float(first["value"])
    setup.configs[0].cluster.dispatch = "round-robin"
    with pytest.raises(SpecrollError) as exc:
        setup.cluster_space()
    assert exc.value.field == "tune.cluster"
