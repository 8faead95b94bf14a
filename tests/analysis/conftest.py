"""Small real outputs of every specroll command the report renders (built once per session).

Simulations, the plan and the tuning study are real runs on the `tiny` preset and a 4-engine
cluster; the rollout is a real run of the toy model with a drafter that replays the prompt's
previous rollout; the validate folder is synthetic, built to the contract `specroll validate`
writes (docs/report.md), because validate itself needs both backends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SMALL = """
seed = 3
[cluster]
engines = 4
max_batch = 32
[model]
name = "qwen2.5-7b"
profile = "h100-sxm:qwen2.5-7b"
[workload]
preset = "tiny"
prompts = 16
samples = 4
steps = 2
[policy]
name = "fixed"
params = { k = 3 }
[acceptance]
source = "parametric"
alpha = 0.7
kmax = 6
"""


class HistoryDrafter:
    """Proposes the continuation of the prompt's latest earlier rollout at the same position
    (deterministic: depends only on the history and the request's own length)."""

    name, kmax = "history", 6

    def __init__(self) -> None:
        self.hist: dict[int, np.ndarray] = {}
        self.req: dict[int, list[int]] = {}

    def start_step(self, step: int) -> None: ...

    def add_rollout(self, step, prompt_id, prompt_tokens, response_tokens) -> None:
        self.hist[prompt_id] = np.asarray(response_tokens, dtype=np.int64)

    def begin(self, rid, prompt_id, prompt_tokens) -> None:
        self.req[rid] = [prompt_id, 0]

    def extend(self, rid, tokens) -> None:
        self.req[rid][1] += len(tokens)

    def propose(self, rid):
        pid, g = self.req[rid]
        h = self.hist.get(pid, np.zeros(0, np.int64))[g:g + self.kmax]
        return h, np.full(len(h), 0.8, np.float32)

    def end(self, rid) -> None:
        self.req.pop(rid, None)


def write_validate_fixture(folder: Path, *, seed: int = 0) -> dict:
    """A validate output following the contract: summary.json (kind validate, per-policy errors,
    speedups) and comparison.parquet (one row per policy, repeat, step), with known biases."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    # policy -> (real step makespan in s, simulator bias): the 'das' one is deliberately >10 % off
    truth = {"ar": (12.0, 0.03), "fixed": (7.0, -0.05), "das": (6.0, 0.14)}
    rows = []
    for pol, (base, bias) in truth.items():
        for rep in range(3):
            for step in range(4):
                real = base * (1 + 0.08 * rng.standard_normal())
                sim = real * (1 + bias + 0.01 * rng.standard_normal())
                it_real = int(base * 40)
                rows.append({"policy": pol, "repeat": rep, "step": step, "real_makespan_s": real,
                             "sim_makespan_s": sim, "real_iterations": it_real,
                             "sim_iterations": int(it_real * (1 + bias / 2)),
                             "real_accepted_per_iter": 0.0 if pol == "ar" else 2.1,
                             "sim_accepted_per_iter": 0.0 if pol == "ar" else 2.0,
                             "real_mean_iter_s": real / it_real, "sim_mean_iter_s": sim / it_real})
    pq.write_table(pa.Table.from_pylist(rows), folder / "comparison.parquet")
    pols, err = {}, {}
    for pol in truth:
        per_rep = []
        for rep in range(3):
            sel = [r for r in rows if r["policy"] == pol and r["repeat"] == rep]
            per_rep.append((sum(r["real_makespan_s"] for r in sel), sum(r["sim_makespan_s"] for r in sel)))
        real = float(np.mean([a for a, _ in per_rep]))
        sim = float(np.mean([b for _, b in per_rep]))
        errs = [b / a - 1 for a, b in per_rep]
        sel = [r for r in rows if r["policy"] == pol]
        pols[pol] = {"makespan_real_s": real, "makespan_sim_s": sim, "makespan_error": sim / real - 1,
                     "makespan_error_spread": [min(errs), max(errs)], "speedup_measured": None,
                     "speedup_predicted": None,
                     "iterations_real": sum(r["real_iterations"] for r in sel),
                     "iterations_sim": sum(r["sim_iterations"] for r in sel),
                     "accepted_per_iter_real": sel[0]["real_accepted_per_iter"],
                     "accepted_per_iter_sim": sel[0]["sim_accepted_per_iter"],
                     "mean_iter_s_real": float(np.mean([r["real_mean_iter_s"] for r in sel])),
                     "mean_iter_s_sim": float(np.mean([r["sim_mean_iter_s"] for r in sel])),
                     "prefill_s_real": 0.4, "prefill_s_sim": 0.38,
                     "error_terms": {"iteration_time": (sim / real - 1) * 0.6,
                                     "iteration_count": (sim / real - 1) * 0.3,
                                     "admission": (sim / real - 1) * 0.1}}
        err[pol] = pols[pol]["makespan_error"]
    meas, pred = {}, {}
    for pol in truth:
        if pol != "ar":
            meas[pol] = pols["ar"]["makespan_real_s"] / pols[pol]["makespan_real_s"]
            pred[pol] = pols["ar"]["makespan_sim_s"] / pols[pol]["makespan_sim_s"]
            pols[pol]["speedup_measured"], pols[pol]["speedup_predicted"] = meas[pol], pred[pol]
    err["overall"] = max(err.values(), key=abs)  # as validate: the error of largest magnitude
    summary = {"kind": "validate", "device": "cpu", "model": "smollm2-135m", "repeats": 3,
               "profile": {"ref": "cpu:smollm2-135m", "device": "cpu", "heldout_mape": 0.033,
                           "timed_step": "engine"},
               "policies": pols, "makespan_error": err, "speedup_measured": meas,
               "speedup_predicted": pred, "outputs_identical": True}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@pytest.fixture(scope="session")
def outputs(tmp_path_factory) -> Path:
    """A folder holding one output of every kind (and two simulations to compare)."""
    from specroll.cli import main
    from specroll.policies import make_policy
    from specroll.real_backend import RolloutConfig, rollout
    from specroll.simulator import SimConfig, Simulator, TuneSetup, tune_family
    from specroll.traces import synthesize, write_trace

    root = tmp_path_factory.mktemp("outputs")
    cfg_path = root.parent / f"{root.name}-config.toml"
    cfg_path.write_text(SMALL)
    sim = Simulator(SimConfig.from_toml(cfg_path))
    for name, policy in (("sim_ar", make_policy("ar")), ("sim_fixed", make_policy("fixed", k=3))):
        sim.run(policy, show_progress=False).write(root / name)
    setup = TuneSetup([sim.config], ["small"], simulators=[sim])  # what `specroll tune` writes
    tune_family(setup, "threshold", trials=8, out=root / "tune", seed=0)
    assert main(["plan", str(cfg_path), "--step-time", "1000", "--out", str(root / "plan")]) == 0
    cfg = RolloutConfig(model="toy", prompts=3, samples=2, steps=2, max_new_tokens=32, max_batch=8, seed=2,
                        temperature=0.3, policy="fixed", params={"k": 4}, drafter="history")
    rollout(cfg, drafter=HistoryDrafter()).write(root / "rollout")
    write_validate_fixture(root / "validate")
    (root / "traces").mkdir()
    write_trace(synthesize("tiny", prompts=16, samples=4, steps=2, seed=1), root / "traces" / "t.parquet")
    return root


@pytest.fixture
def copy_of(outputs, tmp_path):
    """Copy one output folder of the session's set, to damage it without touching the others."""
    def _copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(outputs / name, dst)
        return dst
    return _copy
