"""Tuning a policy family against simulated RL step time: the objective (simulators built once per
(trace, seed), every trial replayed on all of them) around the Optuna study of policies._tuner.

    setup = load_tune_config("examples/tune.toml")
    outcome = tune_family(setup, "das", trials=40, out="out/tune")

The policies package owns the study (search spaces, storage, best_policy.json); this module owns
what a trial measures, because measuring needs the simulator.

CONFIG is a simulate config with an optional ``[tune]`` table (see :class:`TuneTable`).
Objective: the simulated total time of all RL steps (``summary.makespan_s`` = the sum of the steps'
rollout + training + weight-sync time), averaged over every (trace, seed) pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from specroll.core.config import ConfigModel, parse
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_json, read_toml, write_json
from specroll.core.progress import progress, say
from specroll.policies import POLICIES, Policy, make_policy, policy_from_dict, search_space, tune
from specroll.simulator._config import SimConfig
from specroll.simulator._simulate import Simulator
from specroll.simulator._workload import load_trace
from specroll.traces import PRESETS

OBJECTIVE = "mean over runs of makespan_s (rollout + train + sync, all steps), seconds"


class TuneTable(ConfigModel):
    """The ``[tune]`` table of a tuning config."""

    seeds: list[int] | None = Field(None, min_length=1, description="acceptance seeds averaged over "
                                    "(default: the config's seed)")
    traces: list[str | dict[str, Any]] | None = Field(None, min_length=1, description="workloads: a "
                                                      "trace path, a preset name or a workload table")
    steps: int | None = Field(None, ge=1, description="RL steps per simulation (overrides workload.steps)")
    family: str | None = Field(None, description="default for --family")
    trials: int | None = Field(None, ge=1, description="default for --trials")
    params: dict[str, Any] = Field(default_factory=dict, description="pinned parameters (like --param)")


@dataclass
class TuneSetup:
    """A tuning config: the simulators to average over and the [tune] options."""

    configs: list[SimConfig]
    labels: list[str]
    table: TuneTable = field(default_factory=TuneTable)
    file: str | None = None
    simulators: list[Simulator] = field(default_factory=list)

    def build(self) -> None:
        """Load each (trace, seed) Simulator once; share the profile, and the trace across seeds."""
        profile = None
        traces: dict[str, Any] = {}
        for cfg in progress(self.configs, desc="load simulators", unit="sim"):
            w = cfg.workload
            # A preset without its own seed draws its trace from the config seed: one trace per seed.
            key = repr((w.trace, w.preset, w.prompts, w.samples, w.steps,
                        w.seed if w.trace is None and w.seed is not None else
                        (None if w.trace is not None else cfg.seed)))
            if key not in traces:
                traces[key] = load_trace(cfg)
            sim = Simulator(cfg, profile=profile, trace=traces[key])
            profile = sim.profile
            self.simulators.append(sim)

    def evaluate(self, policy: Policy) -> list[dict[str, float]]:
        """Per simulator: makespan_s (all steps, incl. training) and rollout_s, of a fresh copy of policy."""
        out = []
        for sim in self.simulators:
            # A fresh policy per run: stateful families (bandits) must not carry state across runs.
            s = sim.run(policy_from_dict(policy.to_dict()), show_progress=False).summary
            out.append({"makespan_s": float(s["makespan_s"]), "rollout_s": float(s["rollout_s"])})
        return out

    def objective(self, policy: Policy) -> float:
        runs = self.evaluate(policy)
        return sum(r["makespan_s"] for r in runs) / len(runs)


def load_tune_config(path: str | Path, *, seeds: list[int] | None = None) -> TuneSetup:
    """Read CONFIG.toml: its [tune] table and one SimConfig per (trace, seed)."""
    return tune_setup(read_toml(path), file=str(path), seeds=seeds)


def tune_setup(raw: dict[str, Any], *, file: str | None = None, seeds: list[int] | None = None) -> TuneSetup:
    """The same from a config as Python data (``raw``: the TOML's tables)."""
    raw = dict(raw)
    table = parse(TuneTable, raw.pop("tune", {}), file=file, prefix="tune")
    base = SimConfig.from_dict(raw, file=file)  # validates everything but [tune]
    seeds = seeds if seeds is not None else (table.seeds or [base.seed])
    configs, labels = [], []
    for i, entry in enumerate(table.traces or [None]):
        workload = _workload_variant(dict(raw.get("workload", {})), entry, file, f"tune.traces[{i}]")
        if table.steps is not None:
            workload["steps"] = table.steps
        for seed in seeds:
            configs.append(SimConfig.from_dict({**raw, "workload": workload, "seed": seed}, file=file))
            src = workload.get("trace") or workload.get("preset")
            labels.append(f"{src} seed={seed}")
    return TuneSetup(configs, labels, table, file)


def _workload_variant(base: dict[str, Any], entry: Any, file: str | None, where: str) -> dict[str, Any]:
    """The config's [workload] with its source replaced by one [tune].traces entry."""
    if entry is None:
        return base
    rest = {k: v for k, v in base.items() if k not in ("trace", "preset")}
    if isinstance(entry, str):
        here = Path(file).parent if file else Path(".")
        if entry in PRESETS.names() and not (here / entry).is_file():
            return {**rest, "preset": entry}
        return {**rest, "trace": entry}
    if "trace" in entry or "preset" in entry:
        return {**rest, **entry}
    return {**base, **entry}


def tuning_pins(family: str, setup: TuneSetup, extra: dict[str, Any]) -> dict[str, Any]:
    """The pinned parameters: the [tune] table's, then the caller's (``--param``)."""
    pins = {**setup.table.params, **extra}
    if family == "mdp":
        # The MDP's table must span the batch sizes simulated (its cost is the run's own profile).
        pins.setdefault("max_batch", setup.configs[0].cluster.max_batch)
    return pins


@dataclass
class TuneOutcome:
    """What a tuning run found, beside the files it wrote (best_policy.json, history, summary)."""

    family: str
    result: Any
    """policies.TuneResult: best_policy, best_value, n_complete, ..."""
    summary: dict[str, Any]
    means: dict[str, float]
    pins: dict[str, Any]
    labels: list[str]


def tune_family(setup: TuneSetup, family: str | None = None, *, trials: int | None = None,
                out: str | Path, storage: str | None = None, study: str | None = None, seed: int = 0,
                pins: dict[str, Any] | None = None) -> TuneOutcome:
    """Tune ``family`` (default [tune].family) for ``trials`` (default [tune].trials) into ``out``."""
    family = family or setup.table.family
    trials = trials if trials is not None else setup.table.trials
    if not family:
        raise SpecrollError("no policy family to tune", field="--family",
                            fix=f"pass --family NAME (one of {', '.join(POLICIES.names())}) or set "
                                "[tune].family")
    if trials is None:
        raise SpecrollError("no trial count", field="--trials", fix="pass --trials N or set [tune].trials")
    POLICIES.get(family, field="--family")
    # The cheap checks first: simulators take a while to load.
    if not search_space(family):
        raise SpecrollError(f"policy family '{family}' has no tunable parameters", field="--family",
                            fix=f"tune one of: {', '.join(f for f in POLICIES.names() if search_space(f))}")
    if int(trials) < 1:
        raise SpecrollError("need at least one trial", field="--trials", fix="pass --trials N with N >= 1")
    pins = tuning_pins(family, setup, pins or {})
    defaults = make_policy(family, **pins)  # checks the pinned names and values up front
    say(f"tune {family}: {len(setup.configs)} simulation(s) per trial ({', '.join(setup.labels)})")
    if not setup.simulators:
        setup.build()
    base = {"defaults": setup.evaluate(defaults), "ar": setup.evaluate(make_policy("ar"))}
    means = {k: sum(r["makespan_s"] for r in v) / len(v) for k, v in base.items()}
    res = tune(setup.objective, family, n_trials=int(trials), out_dir=out, storage=storage,
               study_name=study, seed=seed, fixed=pins)
    best_runs = setup.evaluate(res.best_policy)
    runs = [{"label": lab, "best": b, "defaults": d, "ar": a}
            for lab, b, d, a in zip(setup.labels, best_runs, base["defaults"], base["ar"], strict=True)]
    summary_path = Path(out) / "tune_summary.json"
    summary = read_json(summary_path)
    summary.update({
        "config": setup.file, "objective": OBJECTIVE,
        "pinned": pins, "defaults_value_s": means["defaults"], "ar_value_s": means["ar"],
        "defaults_policy": defaults.to_dict(), "runs": runs, "sampler_seed": seed,
    })
    write_json(summary_path, summary)
    return TuneOutcome(family, res, summary, means, pins, list(setup.labels))
