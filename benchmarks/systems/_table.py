"""Runs a ``scenarios(base)`` list on the reference config and prints one table (a stand-in for the
lead's driver, to run one half alone): makespan, rollout time, speedup over AR on the same config,
lossy and off-policy fractions, wall time. Load average printed before and after."""

from __future__ import annotations

import copy
import os
import time
from typing import Any


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_table(scenarios: Any, config: str, scale: float = 1.0, only: str = "") -> list[dict[str, Any]]:
    from simulator import SimConfig, Simulator
    from specroll.fileio import read_toml

    os.environ.setdefault("SPECROLL_PROGRESS", "0")
    base = read_toml(config)
    if scale != 1.0:
        base["workload"]["prompts"] = max(1, int(round(base["workload"]["prompts"] * scale)))
    print(f"load average before: {_load()}")
    ar_cfg = copy.deepcopy(base)
    ar_cfg["policy"] = {"name": "ar", "params": {}}
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
        s = Simulator(SimConfig.from_dict(sc["config"])).run(show_progress=False).summary
        assert bool(s["lossy"]) == bool(sc["lossy"]), sc["name"]
        rows.append({"name": sc["name"], "system": sc["system"], "s": s, "wall": time.perf_counter() - t0})
    print(f"{'name':<18} {'system':<52} {'makespan_s':>10} {'rollout_s':>9} {'speedup':>7} "
          f"{'lossy':>7} {'offpol':>7} {'wall_s':>7}")
    for r in rows:
        s = r["s"]
        print(f"{r['name']:<18} {r['system'][:52]:<52} {s['makespan_s']:>10.1f} {s['rollout_s']:>9.1f} "
              f"{ar['makespan_s'] / s['makespan_s']:>6.2f}x {s.get('lossy_fraction', 0.0):>7.3f} "
              f"{s.get('off_policy_fraction', 0.0):>7.3f} {r['wall']:>7.1f}", flush=True)
    print(f"load average after: {_load()}")
    return rows
