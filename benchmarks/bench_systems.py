"""Every system from the literature that specroll expresses, simulated on the reference scenario, in
one table: makespan, speedup over AR on the same config, lossy and off-policy fractions
(docs/systems.md reproduces it).

The rows come from three halves, each a ``scenarios(base)`` list of complete simulate configs:

- benchmarks/systems/engines.py: PEARL, DiffuSpec, LayerSkip, STAND trees, TLT, Judge, EAD,
  SPEC-RL with the rates each paper's setting suggests (assumed, stated in each note);
- benchmarks/systems/drafters.py: OmniDraft, STAND, SPEC-RL, Judge, LayerSkip, EAD with rates
  *measured* on SmolLM2-135M by benchmarks/systems/measure_drafters.py (names end in -smol);
- benchmarks/systems/scheduling.py: RhymeRL HistoPipe, StreamRL, CoPRIS partial rollouts.

    .venv/bin/python benchmarks/bench_systems.py [--scale 1] [--only pearl,copris] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks._meta import finish, rel, run_meta  # noqa: E402
from benchmarks.systems import drafters, engines, scheduling  # noqa: E402
from benchmarks.systems._table import run_table  # noqa: E402

HALVES = {"engines": engines, "drafters": drafters, "scheduling": scheduling}


def all_scenarios(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every half's scenarios, each tagged with its half; names must be unique across halves."""
    out: list[dict[str, Any]] = []
    for half, module in HALVES.items():
        out.extend({**sc, "half": half} for sc in module.scenarios(base))
    seen: dict[str, str] = {}
    for sc in out:
        if sc["name"] in seen:
            raise ValueError(f"scenario name {sc['name']!r} appears in both {seen[sc['name']]} "
                             f"and {sc['half']}")
        seen[sc["name"]] = sc["half"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "examples" / "reference.toml"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiple of the reference's prompts")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--json", default="",
                    help="also write the rows (name, system, half, summary figures) here")
    args = ap.parse_args()
    meta = run_meta()
    rows = run_table(all_scenarios, args.config, args.scale, args.only)
    if args.json:
        ar = rows[0]["s"]["makespan_s"]
        keep = ("makespan_s", "rollout_s", "lossy_fraction", "off_policy_fraction", "accepted_per_iter")
        table = [{"name": r["name"], "system": r["system"], "half": r.get("half") or "baseline",
                  "policy": r.get("policy"), "speedup": ar / r["s"]["makespan_s"],
                  **{k: r["s"][k] for k in keep if k in r["s"]}}
                 for r in rows]
        Path(args.json).write_text(json.dumps({"meta": finish(meta), "config": rel(args.config),
                                               "scale": args.scale, "rows": table}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
