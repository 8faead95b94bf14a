"""Benchmark scenarios of the scheduling systems around the long tail that the simulator expresses:
RhymeRL's HistoPipe, StreamRL's long-tail dispatch and CoPRIS's partial rollouts.

``scenarios(base)`` takes the reference simulate config as a dict (examples/reference.toml parsed)
and returns one entry per system: ``{"name", "system", "config", "lossy", "note"}``, ``config`` a
complete simulate config. Each keeps the reference's speculation (its policy and acceptance) and
changes only the scheduling, so the rows compare with the reference row. Run alone:

    .venv/bin/python benchmarks/systems/scheduling.py [--scale 1] [--only copris]
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install


def _with_cluster(base: dict[str, Any], **keys: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg.setdefault("cluster", {}).update(keys)
    return cfg


def scenarios(base: dict[str, Any]) -> list[dict[str, Any]]:
    """One simulate config per scheduling system, derived from the reference config ``base``."""
    cl = base.get("cluster", {})
    engines = int(cl.get("engines", 8))
    w = base.get("workload", {})
    per_step = int(w.get("prompts", 0) or 0) * int(w.get("samples", 0) or 0) or None
    copris = copy.deepcopy(base)
    # CoPRIS keeps a fixed number of rollouts in flight: here the step's batch, 128 per engine on the
    # reference (its batch of 8,192 over 64 engines), and stops a step once a batch's worth is done.
    conc = per_step if per_step else engines * int(cl.get("max_batch", 256)) // 2
    copris["partial"] = {"enabled": True, "concurrency": conc}
    return [
        {"name": "histopipe", "system": "RhymeRL HistoPipe",
         "config": _with_cluster(base, dispatch="histopipe"), "lossy": False,
         "note": "rollouts ranked by their prompt's history length, dealt to engines in a serpentine whose "
                 "direction alternates by step, longest admitted first (RhymeRL's HistoSpec drafting is the "
                 "reference's speculation here)"},
        {"name": "streamrl", "system": "StreamRL long-tail dispatch",
         "config": _with_cluster(base, dispatch="long-dedicated", long_engines=max(1, engines // 8),
                                 long_frac=0.05),
         "lossy": False,
         "note": "the 5 % longest-predicted rollouts (prompt history) on engines // 8 dedicated engines, the "
                 "rest LPT on the others; no disaggregation or streaming to the trainer (synchronous steps)"},
        {"name": "copris", "system": "CoPRIS (partial rollouts)",
         "config": copris, "lossy": False,
         "note": f"{conc} rollouts in flight; a step stops once a batch's worth completed, the "
                 "unfinished resume next step under new weights (KV recomputed); off-policy = their earlier "
                 "tokens. Rollouts still unfinished after the last step are not counted in the makespan"},
    ]


def main() -> None:
    from benchmarks.systems._table import main_for

    main_for(scenarios, __doc__, str(ROOT / "examples" / "reference.toml"))


if __name__ == "__main__":
    main()
