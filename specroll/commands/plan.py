"""`specroll plan CONFIG.toml --step-time 600 --out DIR`: fewest engines meeting a step-time target.

Searches engine counts (doubling, then bisection; each candidate a full simulation), once
without speculation and once with the config's policy, and prints and writes the table
(DIR/plan.json). Exit code 0 when every row meets the target, 3 when one does not within
--max-engines (the table then says the best step time found and, extrapolated, how many engines
would meet it), 2 on bad input.
"""

from __future__ import annotations

import argparse

NOT_MET = 3  # exit code: a row's target is not met within --max-engines


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
    from specroll.simulator import format_plan, plan, plan_summary

    cfg = load_config(args)
    rows = plan(cfg, args.step_time, max_engines=args.max_engines)
    summary = plan_summary(rows, args.step_time, cfg)
    summary.write(Path(args.out) / "plan.json")
    print(format_plan(rows, args.step_time, cfg))
    return 0 if summary.met else NOT_MET
