"""`specroll simulate CONFIG.toml --out DIR`: replay a workload on a simulated rollout cluster.

    specroll simulate examples/reference.toml --out out/ref
    specroll simulate examples/reference.toml --out out/ar --policy ar
    specroll simulate examples/reference.toml --out out/k6 --policy fixed --param k=6
    specroll simulate examples/reference.toml --out out/best --policy-file study/best_policy.json

Writes DIR/summary.json (makespan, per-step rollout/train times, tokens, iterations, accepted and
wasted draft tokens, GPU busy fraction, wall time), DIR/requests.parquet (per rollout: engine,
start, end, iterations) and DIR/engines.parquet (per engine over time: batch size, iteration time).
"""

from __future__ import annotations

import argparse
from typing import Any

from specroll.core.kv import parse_pairs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate RL steps of a rollout cluster under a speculation policy",
                       description="Simulate RL steps of a rollout cluster under a speculation policy.")
    p.add_argument("config", help="simulation config (TOML); see examples/reference.toml")
    p.add_argument("--out", required=True, help="output folder")
    add_policy_options(p)
    p.set_defaults(func=_run)


def add_policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="policy name (overrides [policy].name)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="policy parameter (repeatable; overrides [policy].params)")
    p.add_argument("--policy-file", default=None, help="best_policy.json from the tuner (overrides both)")
    p.add_argument("--seed", type=int, default=None, help="seed for acceptance draws and synthetic traces")


def load_config(args: argparse.Namespace) -> Any:
    """The config with the command line's policy and seed overrides applied (validated)."""
    from specroll.simulator import SimConfig

    cfg = SimConfig.from_toml(args.config)
    if args.policy_file:
        from specroll.policies import load_policy_file

        spec = load_policy_file(args.policy_file).to_dict()
        cfg.policy.name, cfg.policy.params = spec["policy"], dict(spec["params"])
    if args.policy is not None:
        if args.policy != cfg.policy.name:
            cfg.policy.params = {}
        cfg.policy.name = args.policy
    cfg.policy.params.update(parse_pairs(args.param))
    if args.seed is not None:
        cfg.seed = args.seed
        cfg.workload.seed = args.seed
    cfg.validate()
    return cfg


def _run(args: argparse.Namespace) -> int:
    from specroll.simulator import simulate

    cfg = load_config(args)
    result = simulate(cfg)
    paths = result.write(args.out)
    print(result.format())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
