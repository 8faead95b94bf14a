"""`specroll validate CONFIG.toml --out DIR`: does the simulator's answer hold on real hardware?

    specroll validate examples/validate-cpu.toml --out out/validate
    specroll validate examples/validate-cpu.toml --out out/v --policy-file out/tune/best_policy.json
    specroll validate examples/validate-cpu.toml --out out/v --repeats 1

Runs the workload for real under AR and each policy (repeated), checks the outputs are identical,
computes the drafter's match lengths on the recorded trace, simulates the same workload under the
same policies with a profile measured on this device, and compares makespan, iterations,
accepted tokens per iteration, iteration time and speedup. Writes DIR/summary.json
(``makespan_error`` per policy and overall, ``speedup_measured``, ``speedup_predicted``, error
terms), DIR/comparison.parquet (per policy, repeat and step), DIR/parity.png, the real runs
(DIR/real/POLICY/repN/) and the simulations (DIR/sim/POLICY/). See analysis/_validate.py.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="run a workload for real and in the simulator, and compare",
                       description="Run a workload on the real backend under AR and policies, simulate "
                                   "it under the same policies, and report the makespan error.")
    p.add_argument("config", help="validation config (TOML); see examples/validate-cpu.toml")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--policy-file", action="append", default=[], metavar="best_policy.json",
                   help="also validate this tuned policy (repeatable)")
    p.add_argument("--repeats", type=int, default=None, help="real runs per policy (overrides the config)")
    p.add_argument("--profile", default=None,
                   help="cost profile: builtin name, JSON, or 'calibrate' (overrides the config)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specroll.analysis import ValidateConfig, format_summary, validate
    from specroll.analysis._validate import PolicySpec

    cfg = ValidateConfig.from_toml(args.config)
    for i, f in enumerate(args.policy_file):
        cfg.policies.append(PolicySpec("", {}, f, label=f"tuned{i if i else ''}"))
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if args.profile is not None:
        cfg.profile = args.profile
    cfg.check()
    summary = validate(cfg, args.out)
    print(format_summary(summary))
    print(f"wrote {Path(args.out) / 'summary.json'}, comparison.parquet, parity.png, real/, sim/")
    return 0
