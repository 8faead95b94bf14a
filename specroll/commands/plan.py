"""`specroll plan CONFIG.toml --step-time 600 --out DIR`: fewest engines meeting a step-time target.

Searches engine counts (doubling, then bisection; each candidate a full simulation), once
without speculation and once with the config's policy, and prints and writes the table
(DIR/plan.json).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="fewest engines that meet an RL step-time target, with and without "
                       "speculation", description="Fewest engines that meet an RL step-time target.")
    p.add_argument("config", help="simulation config (TOML)")
    p.add_argument("--step-time", type=float, required=True, help="target mean RL step time, seconds")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-engines", type=int, default=4096, help="give up above this many engines")
    from specroll.commands.simulate import add_policy_options

    add_policy_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specroll.commands.simulate import load_config
    from specroll.core.fileio import write_json
    from specroll.simulator import format_plan, plan

    cfg = load_config(args)
    rows = plan(cfg, args.step_time, max_engines=args.max_engines)
    text = format_plan(rows, args.step_time, cfg)
    write_json(Path(args.out) / "plan.json", {
        "step_time_s": args.step_time, "tp": cfg.cluster.tp, "model": cfg.model.name,
        "profile": cfg.profile_name(),
        "rows": [{"label": r.label, "policy": r.policy, "engines": r.engines, "step_s": r.step_s,
                  "tried": {str(k): v for k, v in r.tried.items()}} for r in rows]})
    print(text)
    return 0
