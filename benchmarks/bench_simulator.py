"""Simulated tokens per wall second of the simulator on the reference scenario, and at 4x fewer and
4x more rollouts (same 64 engines), single process, one RL step each by default.

    .venv/bin/python benchmarks/bench_simulator.py [--config examples/reference.toml] [--policy NAME]
        [--param k=v ...] [--steps 1] [--repeat 3] [--scales 0.25,1,4] [--kernel window|loop]
        [--tail-png out/tail.png]

Wall time covers everything a run does after loading: acceptance draws, dispatch, the kernel,
the SimPy cluster and the summary (trace synthesis and profile loading are excluded). Each scale
is run ``--repeat`` times on a fresh Simulator (so the acceptance draws are timed too) and the
fastest run is shown; ``x4 wall`` is the wall-time ratio to the previous scale (4x the rollouts:
about 4 means cost grows linearly). The load average is printed beside the figures: on a shared
machine, rerun when it is high. ``--kernel loop`` runs the iteration-by-iteration kernel (the
windowed fast path's reference) for comparison.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

from specroll.core.kv import parse_pairs

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks._meta import finish, rel, run_meta  # noqa: E402

os.environ.setdefault("SPECROLL_PROGRESS", "0")


def _param(text: str) -> tuple[str, object]:
    (key, value), = parse_pairs([text]).items()
    return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "examples/reference.toml"))
    ap.add_argument("--policy", default=None, help="policy name (default: the config's policy and params)")
    ap.add_argument("--param", action="append", default=[], type=_param, help="policy parameter k=v")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per scale; the fastest is reported")
    ap.add_argument("--scales", default="0.25,1,4", help="comma-separated multiples of the rollouts")
    ap.add_argument("--kernel", choices=("window", "loop"), default="window",
                    help="window: the fast path where the policy allows it; loop: one iteration at a time")
    ap.add_argument("--tail-png", default=None, help="also plot active batch size over time, AR vs the "
                    "policy, for 8 engines of the reference step, to this PNG")
    ap.add_argument("--json", default=None, help="also write the table (and how it was made) here")
    args = ap.parse_args()
    meta = run_meta()

    import numpy as np

    from specroll.policies import make_policy
    from specroll.simulator import SimConfig, Simulator

    base = SimConfig.from_toml(args.config)
    base.workload.steps = args.steps
    if args.policy:
        policy = make_policy(args.policy, **dict(args.param))
    else:
        base.policy.params.update(dict(args.param))
        policy = base.make_policy()
    print(f"policy {policy!r}")
    print(f"{base.cluster.engines} engines, {base.workload.preset}, {args.steps} step(s), acceptance "
          f"{base.acceptance.source} {base.acceptance.params}, kernel {args.kernel}, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"load average before: {_load()}")
    print(f"{'scale':>6} {'rollouts':>9} {'tokens':>12} {'kern_it':>8} {'accept_s':>9} {'kernel_s':>9} "
          f"{'wall_s':>8} {'cpu_s':>7} {'Mtok/s':>7} {'x4 wall':>8}")
    prev = None
    rows = []
    for scale in (float(x) for x in args.scales.split(",")):
        cfg = copy.deepcopy(base)
        cfg.workload.prompts = max(1, int(round(base.workload.prompts * scale)))
        best = None
        for _ in range(args.repeat):
            sim = Simulator(cfg, fast=args.kernel == "window")  # fresh: acceptance draws are timed
            cpu0 = time.process_time()
            s = sim.run(policy, show_progress=False).summary.to_json()
            s["cpu_s"] = time.process_time() - cpu0
            if best is None or s["wall_s"] < best["wall_s"]:
                best = s
        s = best
        ratio = f"{s['wall_s'] / prev:>8.2f}" if prev else f"{'':>8}"
        rows.append({"scale": scale, "wall_ratio_prev": s["wall_s"] / prev if prev else None,
                     **{k: s[k] for k in ("rollouts", "tokens", "kernel_iterations", "acceptance_wall_s",
                                          "kernel_wall_s", "wall_s", "cpu_s", "tokens_per_wall_s")}})
        prev = s["wall_s"]
        print(f"{scale:>6g} {s['rollouts']:>9,} {s['tokens']:>12,} {s['kernel_iterations']:>8,} "
              f"{s['acceptance_wall_s']:>9.3f} {s['kernel_wall_s']:>9.3f} {s['wall_s']:>8.3f} "
              f"{s['cpu_s']:>7.3f} {s['tokens_per_wall_s'] / 1e6:>7.1f} {ratio}", flush=True)
    print(f"load average after: {_load()}")
    if args.json:
        out = {"meta": finish(meta), "config": rel(args.config), "policy": repr(policy), "steps": args.steps,
               "repeat": args.repeat, "kernel": args.kernel, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.tail_png:
        from specroll.simulator import batch_size_over_time, plot_batch_size

        data = batch_size_over_time(base, [make_policy("ar"), policy], engines=8)
        print(f"wrote {plot_batch_size(data, args.tail_png)}")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
