"""Scheduling around the tail: RhymeRL's HistoPipe and StreamRL's long-tail dispatch on crafted
predictions, partial rollouts (CoPRIS) step by step, and TLT's drafter trained on idle engines."""

import math

import numpy as np
import pytest

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
from specroll.simulator._workload import dispatch

from .test_systems_engines import conserved, run, small
from .test_window import ToyCost

# --- dispatch ------------------------------------------------------------------------------------


def test_histopipe_deals_ranks_in_a_serpentine_that_alternates_across_steps():
    pred = np.array([10.0, 80, 30, 70, 20, 60, 40, 50])  # ranks: 80 70 60 50 40 30 20 10
    eng0, q0 = dispatch(pred, 2, "histopipe", step=0)
    by_rank = eng0[np.argsort(-pred, kind="stable")]
    assert by_rank.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
    eng1, _ = dispatch(pred, 2, "histopipe", step=1)
    assert eng1[np.argsort(-pred, kind="stable")].tolist() == [1, 0, 0, 1, 1, 0, 0, 1]
    # every engine gets the same total of predicted work, and admits its longest first
    assert np.bincount(eng0, weights=pred).tolist() == [180.0, 180.0]
    for e in (0, 1):
        mine = q0[eng0[q0] == e]
        assert (np.diff(pred[mine]) <= 0).all()
    # unknown history: trace order, still a serpentine
    eng, _ = dispatch(np.full(6, np.nan), 3, "histopipe", step=0)
    assert eng.tolist() == [0, 1, 2, 2, 1, 0]


def test_long_dedicated_sends_the_predicted_tail_to_reserved_engines():
    pred = np.array([100.0, 5, 90, 10, 20, 15, 30, 25, 12, 8])
    eng, queue = dispatch(pred, 4, "long-dedicated", long_engines=1, long_frac=0.2)
    assert sorted(np.flatnonzero(eng == 0).tolist()) == [0, 2]  # the two longest
    assert set(eng[pred < 90].tolist()) <= {1, 2, 3}
    loads = np.bincount(eng, weights=pred, minlength=4)[1:]
    assert loads.max() - loads.min() <= 15  # LPT over the others
    assert sorted(queue.tolist()) == list(range(10))
    two, _ = dispatch(pred, 4, "long-dedicated", long_engines=2, long_frac=0.2)
    assert set(two[[0, 2]].tolist()) == {0, 1}


@pytest.mark.parametrize("kind", ["histopipe", "long-dedicated"])
def test_new_dispatch_kinds_simulate_and_conserve_tokens(kind):
    extra = {"long_engines": 1, "long_frac": 0.1} if kind == "long-dedicated" else {}
    s = run(small(cluster={"dispatch": kind, **extra}))
    assert conserved(s) and s["dispatch"] == kind


def test_bad_dispatch_keys_are_errors():
    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(small(cluster={"dispatch": "long-dedicated", "long_engines": 4}), file="a.toml")
    assert exc.value.field == "cluster.long_engines"
    with pytest.raises(SpecrollError):
        SimConfig.from_dict(small(cluster={"long_frac": 1.5}))


# --- partial rollouts ----------------------------------------------------------------------------


def _ro(lengths, prompt=20):
    n = len(lengths)
    return StepRollouts(step=0, prompt_id=np.arange(n), sample=np.zeros(n, np.int64),
                        prompt_len=np.full(n, prompt), response_len=np.asarray(lengths, np.int64),
                        finished=np.ones(n, bool))


def test_a_stop_time_freezes_engines_and_records_progress():
    ro = _ro([50, 400, 60, 300, 70, 500])
    acc = ParametricAcceptance(alpha=0.5, kmax=4).prepare(ro, 0)
    eng = np.array([0, 0, 0, 1, 1, 1])

    def kern(stop_at, fast=True):
        return StepKernel(ro, acc, eng, np.arange(6), np.full(6, np.nan), EngineSpec(2, 2, 10**6), ToyCost(),
                          make_policy("fixed", k=2), step=0, rid_base=0, max_len=500, stop_at=stop_at,
                          fast=fast)

    full = kern(None).run()
    stop = float(np.sort(full.end_s)[2])  # the third completion
    k = kern(stop)
    assert k.fast  # the windowed path cuts its windows at the stop time
    out = k.run()
    loop = kern(stop, fast=False).run()
    for name in ("start_s", "end_s", "iterations", "progress", "engine_busy_s", "engine_iterations"):
        assert np.array_equal(getattr(out, name), getattr(loop, name), equal_nan=True), name
    done = np.isfinite(out.end_s)
    assert done.sum() >= 3
    assert np.array_equal(out.end_s[done], full.end_s[done])  # the same run up to the stop
    # engines started nothing after the stop; what ran keeps its progress
    assert np.isnan(out.start_s[~np.isfinite(full.start_s) | (full.start_s > stop)]).all()
    ran = ~done & np.isfinite(out.start_s)
    assert (out.progress[ran] > 0).all() and (out.progress[ran] < ro.response_len[ran]).all()
    assert (out.progress[~ran] == -1).all()
    assert (out.engine_busy_s <= stop + 0.02).all() and out.engine_busy_s.max() >= stop


PARTIAL = {"enabled": True, "concurrency": 64}


def test_partial_rollouts_stop_each_step_at_its_target_and_resume_the_rest():
    d = small(partial=PARTIAL)
    d["workload"]["steps"] = 3
    s = run(d)
    steps = s["steps"]
    target = 64  # the trace's rollouts per step (16 prompts x 4 samples)
    assert all(st["completed_rollouts"] >= target for st in steps[:-1])
    assert steps[0]["off_policy_fraction"] == 0.0  # nothing was carried into the first step
    assert any(st["off_policy_tokens"] > 0 for st in steps[1:])
    assert s["off_policy_fraction"] == s["off_policy_tokens"] / s["completed_tokens"] > 0
    for st in steps:
        assert st["rollouts"] + st["request_iterations"] + st["accepted_tokens"] == st["tokens"]
    assert conserved(s)


def test_off_policy_tokens_are_the_progress_carried_from_earlier_steps(tmp_path):
    d = small(partial=PARTIAL)
    d["workload"]["steps"] = 3
    res = Simulator(SimConfig.from_dict(d)).run(show_progress=False)
    t = {k: v.to_numpy() for k, v in res.requests.items()}
    key = (t["origin_step"].astype(np.int64) << 40) + (t["prompt_id"] << 8) + t["sample"]
    for st in res.summary["steps"]:
        now = t["step"] == st["step"]
        done = now & np.isfinite(t["end_s"])
        # a completed rollout's tokens before this step = its tokens after the previous step
        prev = t["step"] == st["step"] - 1
        after = dict(zip(key[prev].tolist(), t["tokens_after"][prev].tolist()))
        before = [after.get(k, 0) for k in key[done].tolist()]
        assert sum(before) == st["off_policy_tokens"] == int(t["tokens_before"][done].sum())
        assert int(t["response_len"][done].sum()) == st["completed_tokens"]
    res.write(tmp_path)  # the extra columns are written
    assert (tmp_path / "requests.parquet").is_file()


def test_partial_rollouts_are_identical_on_both_kernel_paths_and_deterministic():
    d = small(partial=PARTIAL, policy={"name": "das", "params": {"k_long": 5}})
    d["workload"]["steps"] = 3
    a, b, c = run(d, fast=True), run(d, fast=False), run(d, fast=True)
    for x in (a, b, c):
        for key in ("wall_s", "acceptance_wall_s", "kernel_wall_s", "tokens_per_wall_s"):
            x.pop(key)
    assert a == b == c


def test_partial_without_a_surplus_is_the_plain_run():
    """With one step in the trace there is nothing beyond the step's own batch to start, so the
    step completes all of it: the same numbers as the plain simulation."""
    d = small()
    d["workload"]["steps"] = 1
    plain = run(d)
    d["partial"] = {"enabled": True}
    part = run(d)
    assert part["makespan_s"] == plain["makespan_s"] and part["tokens"] == plain["tokens"]
    assert part["off_policy_fraction"] == 0.0 and part["unfinished_at_end"] == 0
    for key in ("request_iterations", "accepted_tokens", "drafted_tokens", "rollouts"):
        assert part[key] == plain[key], key


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"target": -3}, {"enabled": "yes"}])
def test_bad_partial_tables_are_errors(bad):
    with pytest.raises(SpecrollError) as exc:
        SimConfig.from_dict(small(partial=bad), file="p.toml")
    assert exc.value.field.startswith("partial") and exc.value.file == "p.toml"


# --- TLT's adaptive drafter ----------------------------------------------------------------------

TLT = {"source": "adaptive-drafter", "alpha0": 0.4, "alpha_max": 0.9, "tokens_scale": 2e5,
       "train_tokens_per_s": 1e4, "drop": 0.25, "kmax": 6}


def test_drafter_learning_curve_and_the_drop_at_each_update():
    from specroll.simulator import AdaptiveDrafterAcceptance

    src = AdaptiveDrafterAcceptance(**{k: v for k, v in TLT.items() if k != "source"})
    assert src.alpha() == pytest.approx(0.4)
    rec = src.end_step(10.0)  # 10 idle engine-seconds: 1e5 tokens, 75 % kept
    assert rec == {"drafter_alpha": pytest.approx(0.4), "drafter_train_tokens": pytest.approx(1e5)}
    assert src.tokens == pytest.approx(7.5e4)
    assert src.alpha() == pytest.approx(0.9 - 0.5 * math.exp(-7.5e4 / 2e5))
    src.start_run()
    assert src.alpha() == pytest.approx(0.4) and src.tokens == 0.0
    with pytest.raises(SpecrollError):
        AdaptiveDrafterAcceptance(alpha=0.5)


def test_idle_engines_train_the_drafter_and_raise_the_next_steps_acceptance():
    d = small(acceptance=TLT)
    d["acceptance"].pop("alpha")
    d["workload"]["steps"] = 3
    sim = Simulator(SimConfig.from_dict(d))
    res = sim.run(show_progress=False)
    s = res.summary
    tokens = 0.0
    for st in s["steps"]:
        # training takes every engine-second between an engine's last rollout and the barrier
        idle = st["rollout_s"] * s["engines"] - st["engine_busy_s"]
        assert st["drafter_train_s"] == pytest.approx(idle)
        assert st["drafter_alpha"] == pytest.approx(0.9 - 0.5 * math.exp(-tokens / 2e5))
        tokens = (tokens + idle * 1e4) * 0.75
    alphas = [st["drafter_alpha"] for st in s["steps"]]
    assert alphas[0] < alphas[1] < alphas[2]
    assert s["drafter_train_s"] == pytest.approx(sum(st["drafter_train_s"] for st in s["steps"]))
    tr = res.training
    assert float((tr["end_s"] - tr["start_s"]).sum()) == pytest.approx(s["drafter_train_s"])
    # state per run: the same Simulator again gives the same summary; another policy trains on
    # other idle time, so its later steps see another acceptance
    again = sim.run(show_progress=False).summary
    assert again.deterministic() == s.deterministic()
    other = sim.run(make_policy("ar"), show_progress=False).summary
    assert other["steps"][0]["drafter_alpha"] == alphas[0]
    assert other["steps"][1]["drafter_alpha"] != alphas[1]
    assert conserved(s) and conserved(other)
