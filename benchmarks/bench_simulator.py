"""Simulated tokens per wall second of the simulator on the reference scenario, and at 4x fewer
and 4x more rollouts (same 64 engines), single process, one RL step each.

    .venv/bin/python benchmarks/bench_simulator.py [--config examples/reference.toml] [--policy NAME]
        [--steps 1] [--repeat 1] [--tail-png out/tail.png]

Wall time covers everything a run does after loading: acceptance draws, dispatch, the kernel,
the SimPy cluster and the summary (trace synthesis and profile loading are excluded).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPECROLL_PROGRESS", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "examples/reference.toml"))
    ap.add_argument("--policy", default=None, help="policy name (default: the config's)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs per scale; the best is reported")
    ap.add_argument("--tail-png", default=None, help="also plot active batch size over time, AR vs the "
                    "policy, for 8 engines of the reference step, to this PNG")
    args = ap.parse_args()

    from policies import make_policy
    from simulator import SimConfig, Simulator

    base = SimConfig.from_toml(args.config)
    base.workload.steps = args.steps
    policy = make_policy(args.policy) if args.policy else base.make_policy()
    print(f"policy {policy!r}, {base.cluster.engines} engines, {base.workload.preset}, "
          f"acceptance {base.acceptance.source} {base.acceptance.params}")
    print(f"{'scale':>6} {'rollouts':>9} {'tokens':>12} {'kern_it':>8} {'accept_s':>9} {'kernel_s':>9} "
          f"{'wall_s':>8} {'Mtok/s':>8} {'us/kern_it':>10}")
    for scale in (0.25, 1.0, 4.0):
        cfg = copy.deepcopy(base)
        cfg.workload.prompts = max(1, int(round(base.workload.prompts * scale)))
        best = None
        for _ in range(args.repeat):
            sim = Simulator(cfg)  # fresh: acceptance draws are timed, not cached
            s = sim.run(policy, show_progress=False).summary
            if best is None or s["wall_s"] < best["wall_s"]:
                best = s
        s = best
        print(f"{scale:>6g} {s['rollouts']:>9,} {s['tokens']:>12,} {s['kernel_iterations']:>8,} "
              f"{s['acceptance_wall_s']:>9.3f} {s['kernel_wall_s']:>9.3f} {s['wall_s']:>8.3f} "
              f"{s['tokens_per_wall_s'] / 1e6:>8.1f} "
              f"{1e6 * s['kernel_wall_s'] / s['kernel_iterations']:>10.1f}")
    if args.tail_png:
        from simulator import batch_size_over_time, plot_batch_size

        data = batch_size_over_time(base, [make_policy("ar"), policy], engines=8)
        print(f"wrote {plot_batch_size(data, args.tail_png)}")


if __name__ == "__main__":
    main()
