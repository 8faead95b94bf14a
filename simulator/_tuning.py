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

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from specroll.core.config import ConfigModel, parse
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_toml
from specroll.core.progress import progress, say
from specroll.policies import (
    POLICIES,
    Policy,
    default_params,
    make_policy,
    policy_from_dict,
    search_space,
    study_digest,
    tune,
)
from specroll.simulator._config import DISPATCH, SimConfig, dispatch_space
from specroll.simulator._simulate import Simulator
from specroll.simulator._tune_summary import TuneRun, TuneSummary
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
    cluster: bool = Field(False, description="also search the [cluster] dispatch rule's parameters "
                          "(their declared ranges), jointly with the policy's")


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
            for i in range(len(sim.steps)):  # the acceptance draws, once (workers fork with them)
                sim.acceptance(i)
            self.simulators.append(sim)

    @property
    def kmax(self) -> int | None:
        """The largest draft any of the simulations expresses (None: no simulation has steps)."""
        caps = [k for k in (sim.kmax for sim in self.simulators) if k is not None]
        return max(caps) if caps else None

    def identity(self) -> dict[str, Any]:
        """What this objective measures, for the study's identity (policies/_identity.py): readable
        fields, plus digests of what a path would not pin down (a trace file's bytes, the profile)."""
        cfg0 = self.configs[0]
        prof = self.simulators[0].profile if self.simulators else cfg0.load_profile()
        resolved = [_resolved(c) for c in self.configs]
        first = {k: v for k, v in resolved[0].items() if k not in ("seed", "workload")}
        return {
            "config_file": None if self.file is None else Path(self.file).name,
            "objective": OBJECTIVE,
            "seeds": sorted({c.seed for c in self.configs}),
            "steps": sorted({c.workload.steps for c in self.configs}, key=lambda v: (v is None, v)),
            "traces": list(dict.fromkeys(_trace_id(c) for c in self.configs)),
            "profile": {"name": Path(cfg0.profile_name()).name, "digest": study_digest(prof.to_dict())[:16]},
            "resolved": first,
            "configs_digest": study_digest(resolved),
        }

    def evaluate(self, policy: Policy, cluster: dict[str, Any] | None = None) -> list[dict[str, float]]:
        """Per simulator: makespan_s (all steps, incl. training) and rollout_s, of a fresh copy of policy
        (``cluster``: dispatch parameters to run with instead of the config's, keys ``cluster.NAME``)."""
        out = []
        for sim in self.simulators:
            keep = sim.config
            if cluster:
                sim.set_dispatch({k.removeprefix("cluster."): v for k, v in cluster.items()})
            try:
                # A fresh policy per run: stateful families (bandits) must not carry state across runs.
                s = sim.run(policy_from_dict(policy.to_dict()), show_progress=False).summary
            finally:
                if cluster:
                    sim.set_dispatch(keep.cluster)
            out.append({"makespan_s": float(s["makespan_s"]), "rollout_s": float(s["rollout_s"])})
        return out

    def objective(self, policy: Policy, cluster: dict[str, Any] | None = None) -> float:
        runs = self.evaluate(policy, cluster)
        return sum(r["makespan_s"] for r in runs) / len(runs)

    def cluster_space(self) -> dict[str, tuple[dict[str, Any], Any]]:
        """[tune] cluster = true: the dispatch rule's searched parameters, {cluster.NAME: (spec, the
        config's value)}; seer's chunk up to the workload's groups."""
        if not self.table.cluster:
            return {}
        cfg = self.configs[0]
        space = dispatch_space(cfg.cluster.dispatch)
        if not space:
            raise SpecrollError(f"dispatch {cfg.cluster.dispatch!r} has no tunable parameters",
                                file=self.file, field="tune.cluster",
                                fix="set [cluster] dispatch to one of "
                                    + ", ".join(d for d in DISPATCH if dispatch_space(d))
                                    + " or remove tune.cluster")
        out = {}
        for k, spec in space.items():
            default = self.simulators[0].chunk if k == "chunk" else cfg.cluster.param(k)
            if k == "chunk":
                spec = {**spec, "high": min(spec["high"], self.simulators[0].group)}
            if k == "long_engines":
                spec = {**spec, "high": min(spec["high"], cfg.cluster.engines - 1)}
            out[f"cluster.{k}"] = (spec, default)
        return out


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def _trace_id(cfg: SimConfig) -> str:
    w = cfg.workload
    if w.trace is not None:  # the content, not the path: another machine keeps it elsewhere
        return f"{Path(str(w.trace)).name} {_file_digest(cfg.trace_path())}"
    return f"{w.preset} prompts={w.prompts} samples={w.samples} seed={w.seed}"


def _resolved(cfg: SimConfig) -> dict[str, Any]:
    """The config with every default filled in, and no machine-specific path."""
    d = cfg.to_dict()
    if d["workload"].get("trace") is not None:
        d["workload"]["trace"] = _trace_id(cfg)
    d["model"]["profile"] = Path(cfg.profile_name()).name
    return d


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
    """policies.TuneResult: best_policy, best_value, n_complete, history (DataFrame), ..."""
    summary: TuneSummary
    means: dict[str, float]
    pins: dict[str, Any]
    labels: list[str]


def tune_family(setup: TuneSetup, family: str | None = None, *, trials: int | None = None,
                out: str | Path, storage: str | None = None, study: str | None = None, seed: int = 0,
                pins: dict[str, Any] | None = None, workers: int = 1) -> TuneOutcome:
    """Tune ``family`` (default [tune].family) for ``trials`` (default [tune].trials) into ``out``,
    with ``workers`` processes on the study (each forked with the simulators built here)."""
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
    if int(workers) < 1:
        raise SpecrollError(f"need at least one worker, got {workers}", field="--workers",
                            fix="pass --workers N with N >= 1")
    pins = tuning_pins(family, setup, pins or {})
    make_policy(family, **pins)  # checks the pinned names and values up front
    say(f"tune {family}: {len(setup.configs)} simulation(s) per trial ({', '.join(setup.labels)})")
    if not setup.simulators:
        setup.build()
    kmax = setup.kmax
    extra = setup.cluster_space()
    res = tune(setup.objective, family, n_trials=int(trials), out_dir=out, storage=storage,
               study_name=study, seed=seed, fixed=pins, identity=setup.identity(), kmax=kmax,
               workers=int(workers), extra_space=extra or None)
    best_cluster = {k: v for k, v in res.best_params.items() if k in extra}
    # The defaults as the study's first trial ran them: draft lengths clipped to what is simulated.
    defaults = make_policy(family, **{**default_params(family, pins, res.search_space), **pins})
    base = {"defaults": setup.evaluate(defaults), "ar": setup.evaluate(make_policy("ar"))}
    means = {k: sum(r["makespan_s"] for r in v) / len(v) for k, v in base.items()}
    best_runs = setup.evaluate(res.best_policy, best_cluster)
    runs = [TuneRun(label=lab, best=b, defaults=d, ar=a)
            for lab, b, d, a in zip(setup.labels, best_runs, base["defaults"], base["ar"], strict=True)]
    complete = res.history[res.history["state"] == "COMPLETE"] if len(res.history) else res.history
    summary = TuneSummary(
        family=family, study=res.study, storage=res.storage, config=setup.file, objective=OBJECTIVE,
        n_complete=res.n_complete, trials_run_now=res.trials_run_now, workers=res.workers,
        sampler_seed=seed, best_value_s=res.best_value, best_trial=res.best_trial,
        best_params=res.best_params, pinned=pins, defaults_value_s=means["defaults"],
        defaults_policy=defaults.to_dict(), ar_value_s=means["ar"],
        values=[float(v) for v in complete["value"]] if len(complete) else [], runs=runs, kmax=kmax,
        search_space=res.search_space, clipped=res.clipped, identity=res.identity, wall_s=res.wall_s,
        trials_per_min=60.0 * res.trials_run_now / res.wall_s if res.wall_s > 0 else 0.0)
    summary.write(Path(out) / "tune_summary.json")
    return TuneOutcome(family, res, summary, means, pins, list(setup.labels))
