"""The main job (`make run` = `specroll main --out out/main`): the whole product in a few minutes on a
laptop-class CPU, from embedded defaults.

1. synthesize an RL rollout trace from a preset (and its statistics);
2. simulate AR and every speculation family on a what-if cluster (one Simulator: the same trace
   and acceptance draws for every policy);
3. tune one family briefly on other acceptance seeds (SQLite study) and simulate the tuned policy;
4. validate on the real model: SmolLM2-135M on this CPU, AR and a policy, real vs simulated;
5. one HTML report over everything, and one screen of results.

Each stage calls the library function the matching subcommand calls, with Python objects, and
keeps the stage's one-screen summary in DIR/logs/STAGE.txt; status lines and progress bars go to
the terminal (stderr) as the stages run. The defaults are embedded below (DEFAULTS); `--config
FILE` overrides any of them, one table level deep.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from specroll.analysis._report import build_report
from specroll.analysis._validate import ValidateConfig, format_summary, validate
from specroll.core.config import ConfigModel, parse
from specroll.core.fileio import read_toml, write_json
from specroll.core.progress import say
from specroll.core.results import Summary, register_summary
from specroll.policies import make_policy
from specroll.simulator import SimConfig, Simulator, tune_family, tune_setup
from specroll.traces import format_stats, read_trace, synthesize_to_file, trace_stats

# What-if cluster: 8 H100 engines serving a 7B policy, a math workload with a 16k cap (DAS/Seer-like).
DEFAULTS: dict[str, Any] = {
    "trace": {"preset": "math-16k", "prompts": 64, "samples": 16, "steps": 3, "seed": 1},
    "cluster": {
        "seed": 1,
        "cluster": {"engines": 8, "tp": 1, "max_batch": 256, "dispatch": "round-robin"},
        "model": {"name": "qwen2.5-7b", "profile": "h100-sxm:qwen2.5-7b"},
        "acceptance": {"source": "parametric", "model": "decay", "alpha": 0.8, "alpha_end": 0.6,
                       "decay_tokens": 8192, "kmax": 8, "confidence": True},
        "train": {"passes": 8, "mfu": 0.4},
    },
    "policies": [
        {"name": "ar"}, {"name": "fixed", "params": {"k": 2}}, {"name": "fixed", "params": {"k": 4}},
        {"name": "fixed", "params": {"k": 8}}, {"name": "threshold"}, {"name": "das"}, {"name": "tlt"},
        {"name": "seer"}, {"name": "adaptive"}, {"name": "mdp"}, {"name": "oracle"},
    ],
    # Tuned on another acceptance seed than the evaluation (seed 1) and on fewer steps: a few minutes.
    "tune": {"family": "das", "trials": 16, "seeds": [2], "steps": 2},
    "validate": {
        # Calibrated now, on this machine (~1.5 min): a shipped CPU profile is off by the machine's
        # drift since it was measured (+17 % on one fresh clone, iteration time alone).
        "profile": "calibrate", "repeats": 1, "seed": 0,
        "workload": {"model": "smollm2-135m", "device": "cpu", "prompts": 2, "samples": 4, "steps": 2,
                     "max_new_tokens": 96, "max_batch": 8, "temperature": 0.7},
        "drafter": {"name": "suffix"},
        "policies": [{"name": "fixed", "params": {"k": 4}}],
    },
}
STAGES = ("tune", "validate", "report")


class TraceStage(ConfigModel):
    preset: str
    prompts: int = Field(ge=1)
    samples: int = Field(ge=1)
    steps: int = Field(ge=1)
    seed: int = 0


class PolicyEntry(ConfigModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + "".join(f"-{k}{v}" for k, v in sorted(self.params.items()))


class TuneStage(ConfigModel):
    family: str
    trials: int = Field(ge=1)
    seeds: list[int] = Field(min_length=1)
    steps: int = Field(ge=1)


class MainConfig(ConfigModel):
    """The main job's stages; ``cluster`` is a simulate config without its workload and policy,
    ``validate`` a validate config (their own models check them)."""

    trace: TraceStage
    cluster: dict[str, Any]
    policies: list[PolicyEntry] = Field(min_length=1)
    tune: TuneStage
    validation: dict[str, Any] = Field(alias="validate")  # "validate" would shadow BaseModel.validate
    skip: list[Literal["tune", "validate", "report"]] = Field(default_factory=list)


def load_main_config(path: str | Path | None) -> MainConfig:
    """DEFAULTS with the tables of ``path`` (TOML) merged over them (one level deep per stage)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        for key, value in read_toml(path).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key].update(value)
            else:
                cfg[key] = value
    return parse(MainConfig, cfg, file=None if path is None else str(path))


@register_summary
class MainSummary(Summary):
    """main_summary.json: the simulated table, the tuned policy, the validation's figures."""

    kind: Literal["main"] = "main"
    cluster: str
    """what the simulated rows ran on, e.g. '8 x h100-sxm:qwen2.5-7b'."""
    simulated: dict[str, dict[str, Any]]
    tuned: str | None = None
    validation: dict[str, dict[str, Any]] | None = None
    validation_overall_error: float | None = None
    report: str | None = None
    stage_wall_s: dict[str, float]


class _Stages:
    """Runs the stages in order, timing each and keeping its summary text in logs/NAME.txt."""

    def __init__(self, out: Path, n: int) -> None:
        self.out, self.n, self.i = out, n, 0
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.wall: dict[str, float] = {}

    def begin(self, what: str) -> float:
        self.i += 1
        say(f"[{self.i}/{self.n}] {what}")
        return time.perf_counter()

    def log(self, name: str, text: str) -> None:
        (self.logs / f"{name}.txt").write_text(text.rstrip() + "\n")


def run_main(out: str | Path, config: str | Path | None = None, *,
             skip: tuple[str, ...] = ()) -> MainSummary:
    """Run the main job into ``out``; return (and write) main_summary.json."""
    cfg = load_main_config(config)
    skip = tuple(skip) + tuple(cfg.skip)
    out = Path(out)
    st = _Stages(out, 5)
    t = cfg.trace
    trace_path = out / "trace.parquet"
    t0 = st.begin(f"synthesize {t.prompts} prompts x {t.samples} samples x {t.steps} steps of '{t.preset}'")
    rows = synthesize_to_file(trace_path, t.preset, t.prompts, t.samples, t.steps, t.seed)
    stats = trace_stats(read_trace(trace_path, columns=[]))
    write_json(out / "trace_stats.json", stats)
    st.log("trace", f"wrote {trace_path}: {rows:,} rollouts\n{format_stats(stats)}")
    st.wall["trace"] = time.perf_counter() - t0

    sim_dict = {**copy.deepcopy(cfg.cluster), "workload": {"trace": str(trace_path.resolve())},
                "policy": {"name": "ar"}}
    base = SimConfig.from_dict(sim_dict)
    where = f"{base.cluster.engines} x {base.profile_name()}"
    t0 = st.begin(f"simulate {len(cfg.policies)} policies on {where}")
    sim = Simulator(base)
    rows_out: dict[str, dict[str, Any]] = {}
    for p in cfg.policies:
        rows_out[p.label] = _simulate(sim, make_policy(p.name, **p.params), out / "sim" / p.label, st,
                                      f"simulate-{p.label}")
    st.wall["simulate"] = time.perf_counter() - t0

    tuned = None
    if "tune" not in skip:
        tu = cfg.tune
        t0 = st.begin(f"tune '{tu.family}' ({tu.trials} trials, seeds {tu.seeds}; SQLite study)")
        setup = tune_setup({**copy.deepcopy(sim_dict), "tune": {"seeds": tu.seeds, "steps": tu.steps}})
        outcome = tune_family(setup, tu.family, trials=tu.trials, out=out / "tune")
        st.log("tune", f"best {outcome.result.best_value:.3f} s (defaults {outcome.means['defaults']:.3f} s, "
                       f"ar {outcome.means['ar']:.3f} s)\nbest policy {outcome.result.best_policy.to_dict()}")
        tuned = f"tuned-{tu.family}"
        rows_out[tuned] = _simulate(sim, outcome.result.best_policy, out / "sim" / tuned, st,
                                    f"simulate-{tuned}")
        st.wall["tune"] = time.perf_counter() - t0

    validation: dict[str, Any] = {}
    if "validate" not in skip:
        vcfg = ValidateConfig.from_dict(cfg.validation)
        w = vcfg.workload
        t0 = st.begin(f"validate on the real model: {w.get('model')} on {w.get('device')}, "
                      f"{w.get('prompts')} prompts x {w.get('samples')} samples x {w.get('steps')} steps"
                      + (" (calibrates this CPU first: about three minutes)" if vcfg.profile == "calibrate"
                         else ""))
        v = validate(vcfg, out / "validate")
        st.log("validate", format_summary(v))
        keep = ("makespan_real_s", "makespan_sim_s", "makespan_error", "speedup_measured",
                "speedup_predicted")
        validation = {"validation": {k: {kk: p[kk] for kk in keep} for k, p in v["policies"].items()},
                      "validation_overall_error": v["makespan_error"]["overall"]}
        st.wall["validate"] = time.perf_counter() - t0

    report = None
    if "report" not in skip:
        t0 = st.begin("HTML report")
        res = build_report(out, out / "report")
        report = str(res.index)
        st.log("report", f"wrote {res.index} ({len(res.runs)} outputs, {len(res.pngs)} PNGs)")
        st.wall["report"] = time.perf_counter() - t0

    summary = MainSummary(cluster=where, simulated=_relative(rows_out), tuned=tuned, report=report,
                          stage_wall_s=st.wall, **validation)
    summary.write(out / "main_summary.json")
    return summary


def _simulate(sim: Simulator, policy: Any, folder: Path, st: _Stages, log: str) -> dict[str, Any]:
    res = sim.run(policy)
    res.write(folder)
    st.log(log, res.format())
    s = res.summary
    return {"makespan_s": s.makespan_s, "rollout_s": s.rollout_s, "train_s": s.train_s,
            "steps": len(s.steps), "accepted_per_iter": s.mean_accepted_per_iteration,
            "gpu_busy": s.gpu_busy_fraction}


def _relative(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Speedup over AR and the gap to the no-waste oracle, where both are in the table."""
    ar = rows.get("ar", {}).get("makespan_s")
    oracle = rows.get("oracle", {}).get("makespan_s")
    for r in rows.values():
        r["speedup"] = ar / r["makespan_s"] if ar else None
        r["vs_oracle"] = r["makespan_s"] / oracle - 1.0 if oracle else None
    return rows


def format_main(s: MainSummary) -> str:
    """The one-screen table the main job ends with."""
    rows = s.simulated
    steps = next(iter(rows.values()))["steps"] if rows else 1
    lines = [f"Simulated on {s.cluster}: mean RL step time per policy (rollout + train), {steps} steps",
             f"  {'policy':<16} {'step s':>8} {'rollout s':>9} {'speedup':>8} {'vs oracle':>9} "
             f"{'acc/iter':>8} {'GPU busy':>8}"]
    for label, r in sorted(rows.items(), key=lambda kv: kv[1]["makespan_s"], reverse=True):
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.3f}x"
        vo = "-" if r["vs_oracle"] is None else f"{100 * r['vs_oracle']:+.1f}%"
        mark = "  <- tuned" if label == s.tuned else ""
        lines.append(f"  {label:<16} {r['makespan_s'] / steps:>8.1f} {r['rollout_s'] / steps:>9.1f} {sp:>8} "
                     f"{vo:>9} {r['accepted_per_iter']:>8.2f} {r['gpu_busy']:>8.2f}{mark}")
    lines.append("  speedup: AR's step time over the policy's; vs oracle: step time above the no-waste "
                 "oracle's; acc/iter: accepted draft tokens per request iteration")
    if s.validation:
        lines += ["", "Real model on this machine vs the simulator (specroll validate):",
                  f"  {'policy':<16} {'real s':>8} {'sim s':>8} {'error':>7} {'speedup real':>12} "
                  f"{'predicted':>9}"]
        for k, p in s.validation.items():
            sm = "-" if p["speedup_measured"] is None else f"{p['speedup_measured']:.3f}x"
            spp = "-" if p["speedup_predicted"] is None else f"{p['speedup_predicted']:.3f}x"
            lines.append(f"  {k:<16} {p['makespan_real_s']:>8.2f} {p['makespan_sim_s']:>8.2f} "
                         f"{100 * p['makespan_error']:>+6.1f}% {sm:>12} {spp:>9}")
    if s.report:
        lines += ["", f"report: {s.report}"]
    return "\n".join(lines)
