"""`specroll tune CONFIG.toml --family NAME --trials N --out DIR`: search a policy family's parameters.

    specroll tune examples/tune.toml --family das --trials 40 --out out/tune-das
    specroll tune examples/tune.toml --family threshold --trials 40 --param k_min=0 --out out/tune-thr
    specroll tune cfg.toml --family das --trials 200 --storage postgresql://host/db --study das-7b --out d

CONFIG is a simulate config (see docs/simulator.md) with an optional ``[tune]`` table:

```toml
[tune]
seeds = [2, 3, 4]                # acceptance seeds averaged over (default: the config's seed)
traces = ["tiny", "run.parquet", { preset = "code-8k", prompts = 64 }]   # workloads (default: [workload])
steps = 2                        # RL steps per simulation (overrides workload.steps)
family = "das"                   # default for --family
trials = 40                      # default for --trials
params = { mode = "schedule" }   # pinned parameters (like --param)
```

Objective: the simulated total time of all RL steps (``summary.makespan_s`` = the sum of the
steps' rollout + training + weight-sync time), averaged over every (trace, seed) pair. Each
(trace, seed) Simulator is built once and replays every trial (its acceptance draws cached).
Writes DIR/best_policy.json (for `specroll simulate/rollout --policy-file`), DIR/history.parquet,
DIR/tune_summary.json and the study (SQLite DIR/study.db unless --storage). Re-running the same
command resumes the study: finished trials are kept, only the missing ones run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError

_TUNE_KEYS = ("seeds", "traces", "steps", "family", "trials", "params")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune a policy family's parameters against simulated RL step time",
                       description="Search a policy family's tunable parameters (Optuna) against the "
                                   "simulated total RL step time of a config, averaged over its [tune] "
                                   "traces and seeds.")
    p.add_argument("config", help="simulation config (TOML) with an optional [tune] table")
    p.add_argument("--family", default=None, help="policy family to tune (default: [tune].family)")
    p.add_argument("--trials", type=int, default=None,
                   help="total finished trials wanted in the study (default: [tune].trials)")
    p.add_argument("--storage", default=None,
                   help="study storage: SQLAlchemy URL or journal:PATH (default: sqlite DIR/study.db)")
    p.add_argument("--study", default=None, help="study name (default: specroll-FAMILY)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (TPE)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="pin a policy parameter (repeatable; not searched)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)


@dataclass
class TuneSetup:
    """A tuning config: the simulators to average over and the [tune] options."""

    configs: list[Any]
    labels: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    simulators: list[Any] = field(default_factory=list)

    def build(self) -> None:
        """Load each (trace, seed) Simulator once; share the profile, and the trace across seeds."""
        from specroll.core.progress import progress
        from specroll.simulator import Simulator
        from specroll.simulator._workload import load_trace

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

    def evaluate(self, policy: Any) -> list[dict[str, float]]:
        """Per simulator: makespan_s (all steps, incl. training) and rollout_s, of a fresh copy of policy."""
        from specroll.policies import policy_from_dict

        out = []
        for sim in self.simulators:
            # A fresh policy per run: stateful families (bandits) must not carry state across runs.
            s = sim.run(policy_from_dict(policy.to_dict()), show_progress=False).summary
            out.append({"makespan_s": float(s["makespan_s"]), "rollout_s": float(s["rollout_s"])})
        return out

    def objective(self, policy: Any) -> float:
        runs = self.evaluate(policy)
        return sum(r["makespan_s"] for r in runs) / len(runs)


def load_tune_config(path: str | Path, *, seeds: list[int] | None = None) -> TuneSetup:
    """Read CONFIG.toml, strip its [tune] table and build one SimConfig per (trace, seed)."""
    from specroll.core.fileio import read_toml
    from specroll.simulator import SimConfig

    raw = read_toml(path)
    tune_tbl = raw.pop("tune", {})
    if not isinstance(tune_tbl, dict):
        raise SpecrollError("must be a table", file=path, field="tune", fix="write [tune]")
    bad = sorted(set(tune_tbl) - set(_TUNE_KEYS))
    if bad:
        raise SpecrollError(f"unknown key 'tune.{bad[0]}'", file=path, field=f"tune.{bad[0]}",
                            fix=f"use one of: {', '.join(_TUNE_KEYS)}")
    base = SimConfig.from_dict(raw, file=str(path))  # validates everything but [tune]
    seeds = seeds if seeds is not None else tune_tbl.get("seeds", [base.seed])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise SpecrollError(f"must be a non-empty list of integers, got {seeds!r}", file=path,
                            field="tune.seeds", fix="write seeds = [1, 2, 3]")
    steps = tune_tbl.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise SpecrollError(f"must be a positive integer, got {steps!r}", file=path, field="tune.steps")
    entries = tune_tbl.get("traces", [None])
    if not isinstance(entries, list) or not entries:
        raise SpecrollError("must be a non-empty list", file=path, field="tune.traces",
                            fix='write traces = ["tiny", "run.parquet", {preset = "code-8k"}]')
    configs, labels = [], []
    for i, entry in enumerate(entries):
        workload = _workload_variant(dict(raw.get("workload", {})), entry, Path(path), f"tune.traces[{i}]")
        if steps is not None:
            workload["steps"] = steps
        for seed in seeds:
            d = {**raw, "workload": workload, "seed": seed}
            configs.append(SimConfig.from_dict(d, file=str(path)))
            src = workload.get("trace") or workload.get("preset")
            labels.append(f"{src} seed={seed}")
    options = {k: tune_tbl[k] for k in ("family", "trials", "params") if k in tune_tbl}
    if "params" in options and not isinstance(options["params"], dict):
        raise SpecrollError("must be a table", file=path, field="tune.params", fix="write params = { k = 4 }")
    return TuneSetup(configs, labels, options)


def _workload_variant(base: dict[str, Any], entry: Any, path: Path, where: str) -> dict[str, Any]:
    """The config's [workload] with its source replaced by one [tune].traces entry."""
    if entry is None:
        return base
    from specroll.traces import PRESETS

    rest = {k: v for k, v in base.items() if k not in ("trace", "preset")}
    if isinstance(entry, str):
        if entry in PRESETS.names() and not (path.parent / entry).is_file():
            return {**rest, "preset": entry}
        return {**rest, "trace": entry}
    if isinstance(entry, dict):
        if "trace" in entry or "preset" in entry:
            return {**rest, **entry}
        return {**base, **entry}
    raise SpecrollError(f"expected a trace path, a preset name or a workload table, got {entry!r}",
                        file=path, field=where)


def _pins(family: str, setup: TuneSetup, cli: dict[str, Any]) -> dict[str, Any]:
    pins = {**setup.options.get("params", {}), **cli}
    if family == "mdp":
        # The MDP's cost model must be the one simulated, unless the user says otherwise.
        cfg = setup.configs[0]
        pins.setdefault("profile", cfg.profile_name())
        pins.setdefault("max_batch", cfg.cluster.max_batch)
    return pins


def _run(args: argparse.Namespace) -> int:
    from specroll.commands.trace import parse_params
    from specroll.core.fileio import write_json
    from specroll.core.progress import say
    from specroll.policies import POLICIES, make_policy
    from specroll.policies._tuner import search_space, tune

    setup = load_tune_config(args.config)
    family = args.family or setup.options.get("family")
    trials = args.trials if args.trials is not None else setup.options.get("trials")
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
    pins = _pins(family, setup, parse_params(args.param))
    defaults = make_policy(family, **pins)  # checks the pinned names and values up front
    say(f"tune {family}: {len(setup.configs)} simulation(s) per trial ({', '.join(setup.labels)})")
    setup.build()
    base = {"defaults": setup.evaluate(defaults), "ar": setup.evaluate(make_policy("ar"))}
    mean = {k: sum(r["makespan_s"] for r in v) / len(v) for k, v in base.items()}
    res = tune(setup.objective, family, n_trials=int(trials), out_dir=args.out, storage=args.storage,
               study_name=args.study, seed=args.seed, fixed=pins)
    best_runs = setup.evaluate(res.best_policy)
    runs = [{"label": lab, "best": b, "defaults": d, "ar": a}
            for lab, b, d, a in zip(setup.labels, best_runs, base["defaults"], base["ar"], strict=True)]
    summary_path = Path(args.out) / "tune_summary.json"
    from specroll.core.fileio import read_json

    summary = read_json(summary_path)
    summary.update({
        "config": str(args.config), "objective": "mean over runs of makespan_s (rollout + train + sync, "
                                                 "all steps), seconds",
        "pinned": pins, "defaults_value_s": mean["defaults"], "ar_value_s": mean["ar"],
        "defaults_policy": defaults.to_dict(), "runs": runs, "sampler_seed": args.seed,
    })
    write_json(summary_path, summary)
    print(_format(family, res, mean, pins, setup, args, summary))
    return 0


def _format(family: str, res: Any, mean: dict[str, float], pins: dict[str, Any], setup: TuneSetup,
            args: argparse.Namespace, summary: dict[str, Any]) -> str:
    def vs(x: float) -> str:
        return f"{100.0 * (res.best_value - x) / x:+.1f} %"

    best = {k: v for k, v in res.best_policy.to_dict()["params"].items() if k not in pins}
    rollout = [r["best"]["rollout_s"] for r in summary["runs"]]
    lines = [
        f"specroll tune: {family} on {args.config}, {len(setup.configs)} run(s) per trial: "
        + ", ".join(setup.labels),
        "objective: mean simulated time of all RL steps (rollout + train + sync), seconds",
        f"trials: {res.n_complete} complete ({summary['trials_run_now']} run now), study "
        f"{summary['study']}",
        "",
        f"{'':<10} {'value_s':>10} {'best vs':>9}",
        f"{'best':<10} {res.best_value:>10.3f} {'':>9}",
        f"{'defaults':<10} {mean['defaults']:>10.3f} {vs(mean['defaults']):>9}",
        f"{'ar':<10} {mean['ar']:>10.3f} {vs(mean['ar']):>9}",
        f"best rollout phase: {sum(rollout) / len(rollout):.3f} s mean over runs",
        "",
        "best params: " + ", ".join(f"{k}={_short(v)}" for k, v in best.items()),
    ]
    if pins:
        lines.append("pinned: " + ", ".join(f"{k}={_short(v)}" for k, v in pins.items()))
    out = Path(args.out)
    lines.append(f"wrote {out / 'best_policy.json'}, {out / 'history.parquet'}, {out / 'tune_summary.json'}"
                 + ("" if args.storage else f", {out / 'study.db'}"))
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
