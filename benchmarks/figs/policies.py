"""The policy table (docs/policies.md)."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import Figure, source_line

JSON = "docs/results/policy_table.json"


def _pct(x: float) -> str:
    return "0" if x == 0 else f"{100 * x:+.1f} %"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def policy_table(data: dict[str, Any]) -> str:
    rows = data["rows"]
    fixed = [r for r in rows if r["label"].startswith("fixed")]
    best_k = min(fixed, key=lambda r: r["total_s"]) if fixed else None
    lines = [f"Simulated: {data['scenario']}.", "",
             "| policy | total_s | rollout_s | speedup (total) | speedup (rollout) | "
             "gap to oracle (rollout) | gap to oracle (total) | iterations | drafted/token | "
             "accepted/drafted |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        label = f"**{r['label'].rstrip(' *')}** (best K)" if r is best_k else r["label"]
        acc = f"{r['accepted'] / r['drafted']:.2f}" if r["drafted"] else "–"
        lines.append(f"| {label} | {r['total_s']:.1f} | {r['rollout_s']:.1f} | {r['speedup_total']:.2f}x | "
                     f"{r['speedup_rollout']:.2f}x | {_pct(r['gap_rollout'])} | {_pct(r['gap_total'])} | "
                     f"{r['iterations']:,} | {r['drafted'] / r['tokens']:.2f} | {acc} |")
    lines.append("")
    for t in data.get("tuning", []):
        params = ", ".join(f"{k} {_value(v)}" for k, v in t["best_params"].items())
        seeds = ", ".join(map(str, t["tune_seeds"]))
        lines.append(f"- tuned {t['family']} ({t['n_complete']} trials on seeds {seeds}; objective "
                     f"{t['best_value_s']:.1f} s): {params}")
    tuned = [r for r in rows if r["label"].endswith("(tuned)")]
    if tuned and best_k:
        best = min(tuned, key=lambda r: r["total_s"])
        ahead = best_k["total_s"] - best["total_s"]
        met = best["gap_rollout"] <= 0.10 and ahead > 0
        lines += ["", "Goal (the tuned policy within 10 % of the oracle's rollout phase and better than "
                      f"every fixed K), on this simulation: `{best['label']}` is {_pct(best['gap_rollout'])} "
                      "above the "
                      f"oracle's rollout phase and {ahead:.1f} s ({100 * ahead / best_k['total_s']:.1f} %) "
                      f"faster per step than the best fixed K (`{best_k['label']}`): "
                      f"{'met' if met else 'not met'} in simulation (not a GPU measurement)."]
    lines += ["", source_line(data, JSON)]
    return "\n".join(lines)


FIGURES: tuple[Figure, ...] = (
    Figure("policy-table", JSON, "python benchmarks/bench_policy_table.py --scale 1 --trials 40 "
           "--tune das,threshold,mdp --fresh --json docs/results/policy_table.json", ("docs/policies.md",),
           policy_table),
)
