"""Shared by the systems benchmarks: ``derive`` (a scenario's config from the reference), ``run_table``
(run a ``scenarios(base)`` list on the reference config and print one table: makespan, rollout time,
speedup over AR on the same config, lossy and off-policy fractions, wall time; load average before
and after) and ``main_for`` (the command line each half uses to run alone). benchmarks/bench_systems.py
runs every half in one table."""

from __future__ import annotations

import copy
import os
import time
from typing import Any


def derive(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with sections replaced (a None value removes the section)."""
    cfg = copy.deepcopy(base)
    for name, value in sections.items():
        if value is None:
            cfg.pop(name, None)
        else:
            cfg[name] = copy.deepcopy(value)
    return cfg


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_table(scenarios: Any, config: str, scale: float = 1.0, only: str = "") -> list[dict[str, Any]]:
    from specroll.core.fileio import read_toml
    from specroll.simulator import SimConfig, Simulator

    os.environ.setdefault("SPECROLL_PROGRESS", "0")
    base = read_toml(config)
    if scale != 1.0:
        base["workload"]["prompts"] = max(1, int(round(base["workload"]["prompts"] * scale)))
    print(f"load average before: {_load()}")
    ar_cfg = derive(base, policy={"name": "ar", "params": {}})
    t0 = time.perf_counter()
    ar = Simulator(SimConfig.from_dict(ar_cfg)).run(show_progress=False).summary
    rows = [{"name": "ar", "system": "autoregressive (reference)", "s": ar, "wall": time.perf_counter() - t0}]
    ref = Simulator(SimConfig.from_dict(copy.deepcopy(base))).run(show_progress=False).summary
    rows.append({"name": "reference", "system": f"reference ({base['policy']['name']})", "s": ref,
                 "wall": ref["wall_s"]})
    wanted = {x for x in only.split(",") if x}
    for sc in scenarios(base):
        if wanted and sc["name"] not in wanted:
            continue
        t0 = time.perf_counter()
        s, policy = best_run(sc)
        assert bool(s["lossy"]) == bool(sc["lossy"]), sc["name"]
        rows.append({"name": sc["name"], "system": sc["system"], "half": sc.get("half"), "s": s,
                     "policy": policy, "wall": time.perf_counter() - t0})
    print(f"{'name':<22} {'system':<50} {'makespan_s':>10} {'rollout_s':>9} {'speedup':>7} "
          f"{'lossy':>7} {'offpol':>7} {'wall_s':>7}")
    for r in rows:
        s = r["s"]
        print(f"{r['name']:<22} {r['system'][:50]:<50} {s['makespan_s']:>10.1f} {s['rollout_s']:>9.1f} "
              f"{ar['makespan_s'] / s['makespan_s']:>6.2f}x {s.lossy_fraction:>7.3f} "
              f"{s.off_policy_fraction:>7.3f} {r['wall']:>7.1f}", flush=True)
    print(f"load average after: {_load()}")
    return rows


def best_run(sc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A scenario's summary, under its config's policy, or under the best of its ``best_of``
    candidates (one Simulator: the same trace and acceptance draws for each), and that policy."""
    from specroll.policies import make_policy
    from specroll.simulator import SimConfig, Simulator

    sim = Simulator(SimConfig.from_dict(sc["config"]))
    candidates = sc.get("best_of") or [sc["config"]["policy"]]
    runs = [(sim.run(make_policy(p["name"], **p.get("params", {})), show_progress=False).summary, p)
            for p in candidates]
    return min(runs, key=lambda r: r[0].makespan_s)


def main_for(scenarios: Any, doc: str | None, default_config: str) -> None:
    """Command line of one half: ``[--config C] [--scale X] [--only a,b]``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=default_config)
    ap.add_argument("--scale", type=float, default=1.0, help="multiple of the reference's prompts")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    args = ap.parse_args()
    run_table(scenarios, args.config, args.scale, args.only)
