"""`specroll tune CONFIG.toml --family NAME --trials N --out DIR`: search a policy family's parameters.

    specroll tune examples/tune.toml --family das --trials 40 --out out/tune-das
    specroll tune examples/tune.toml --family threshold --trials 40 --param k_min=0 --out out/tune-thr
    specroll tune examples/tune.toml --trials 200 --workers 2 --out out/tune-das
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
command resumes the study: finished trials are kept, only the missing ones run; a study refuses a
run that measures something else (another config, seeds, pins: pass a new --study or --out).
--workers N runs N processes on the study; on several machines, run the same command with the
same --storage URL and --study name on each. Ctrl-C keeps the finished trials (exit 130).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from specroll.core.kv import parse_pairs


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
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on the study (default 1; see docs/policies.md for many machines)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from specroll.simulator import load_tune_config, tune_family

    setup = load_tune_config(args.config)
    outcome = tune_family(setup, args.family, trials=args.trials, out=args.out, storage=args.storage,
                          study=args.study, seed=args.seed, pins=parse_pairs(args.param, "--param"),
                          workers=args.workers)
    print(_format(outcome, args))
    return 0


def _format(outcome: Any, args: argparse.Namespace) -> str:
    family, res, mean, pins, summary = (outcome.family, outcome.result, outcome.means, outcome.pins,
                                        outcome.summary)
    def vs(x: float) -> str:
        return f"{100.0 * (res.best_value - x) / x:+.1f} %"

    best = {k: v for k, v in res.best_policy.to_dict()["params"].items() if k not in pins}
    rollout = [r.best.rollout_s for r in summary.runs]
    lines = [
        f"specroll tune: {family} on {args.config}, {len(outcome.labels)} run(s) per trial: "
        + ", ".join(outcome.labels),
        "objective: mean simulated time of all RL steps (rollout + train + sync), seconds",
        f"trials: {res.n_complete} complete ({summary.trials_run_now} run now, {summary.workers} "
        f"worker(s), {summary.trials_per_min:.1f} trials/min), study {summary.study} in {summary.storage}",
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
    if summary.clipped:
        lines.append(f"search space clipped to the simulated kmax {summary.kmax}: " + ", ".join(
            f"{k} {c['declared'][0]}..{c['declared'][1]} -> {c['searched'][0]}..{c['searched'][1]}"
            for k, c in summary.clipped.items()))
    out = Path(args.out)
    lines.append(f"wrote {out / 'best_policy.json'}, {out / 'history.parquet'}, {out / 'tune_summary.json'}"
                 + ("" if args.storage else f", {out / 'study.db'}"))
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
